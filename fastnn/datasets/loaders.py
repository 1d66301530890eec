"""The public loaders: the decoded pixels of MNIST and of the digits as scaled float copies."""
from __future__ import annotations

import os

import numpy as np
from numpy.typing import NDArray

from .digits import _DIGITS_MAX_PIXEL, _digits_uint8
from .mnist import _mnist_uint8


def _scaled(pixels, max_value, dtype):
    """A new C-contiguous ``dtype`` array of ``pixels / max_value``."""
    scaled = pixels.astype(dtype)
    scaled /= max_value
    return scaled


def load_mnist(data_dir: str | os.PathLike[str] | None = None) -> tuple[NDArray[np.float32], NDArray[np.int64],
                                                                       NDArray[np.float32], NDArray[np.int64]]:
    """MNIST as ``(x_train, y_train, x_test, y_test)``.

    ``x_train`` (60000, 784) and ``x_test`` (10000, 784) are float32 pixels / 255 in [0, 1], each
    28x28 image flattened row by row; ``y_train`` and ``y_test`` are int64 labels 0..9.

    ``data_dir`` is a folder holding the four ``*.gz`` IDX files or a ``mnist/`` subfolder with
    them; without it the files are looked for in ``$FASTNN_DATA`` and the user cache, and
    downloaded there if need be (see ``fastnn.datasets.mnist``). The decoded files are cached for the
    life of the process, so later calls are fast; the arrays returned are fresh writable copies
    each time, so nothing a caller does to them reaches the cache.

    Raises FileNotFoundError when the files are missing and cannot be downloaded, RuntimeError
    when a download fails its SHA-256 check, ValueError naming the file when one is not a valid
    IDX file (wrong magic number, truncated).
    """
    (train_images, train_labels), (test_images, test_labels) = _mnist_uint8(data_dir)
    return (_scaled(train_images, 255, np.float32), train_labels.astype(np.int64),
            _scaled(test_images, 255, np.float32), test_labels.astype(np.int64))


def load_digits():
    """The 1,797 bundled 8x8 UCI handwritten digits as ``(x, y)``.

    ``x`` is float32 (1797, 64), pixel counts / 16 in [0, 1], each 8x8 image flattened row by row;
    ``y`` is int64 labels 0..9. The data ships inside the package (no download); the arrays are
    fresh writable copies.
    """
    pixels, labels = _digits_uint8()
    return _scaled(pixels, _DIGITS_MAX_PIXEL, np.float32), labels.astype(np.int64)
