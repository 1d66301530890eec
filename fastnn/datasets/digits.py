"""The 1,797 8x8 digits bundled in ``fastnn/data/digits.csv.gz``, decoded into uint8."""
import functools
import gzip
import importlib.resources

import numpy as np

# The digits have no standard train/test split: by default their last 300 rows are the test set.
_DIGITS_TEST_ROWS = 300
_DIGITS_MAX_PIXEL = 16


@functools.cache
def _digits_uint8():
    """The bundled digits as read-only uint8 ``(pixels (1797, 64), labels (1797,))``."""
    resource = importlib.resources.files("fastnn") / "data" / "digits.csv.gz"
    with resource.open("rb") as compressed, gzip.open(compressed, "rt") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.uint8)
    table.flags.writeable = False
    return table[:, :-1], table[:, -1]
