"""Memory over a long run: resident-set growth over 50 epochs in one ``fit``, and over 1,000
``fit`` calls in a loop (5 epochs and 100 calls under FASTNN_BENCH_QUICK, as parameters, so
that the two kinds of figure never share a graph). The work is ``soak.py``'s, which runs the
same two parts as a script and fails past 5 MB; here the figures are tracked over the history.

The growth is reported in whole MB: a flat run reads 0, and the sub-MB jitter of the allocator
(about 0.1 MB either way) would otherwise make every comparison of two flat runs a large ratio.
"""
from . import QUICK
from . import warm_numba_cache as setup_cache  # noqa: F401  (asv runs it once, first)
from .soak import epochs_growth, fit_calls_growth

EPOCHS = 5 if QUICK else 50
CALLS = 100 if QUICK else 1000


def warm_up():
    epochs_growth(2, rows=128)
    fit_calls_growth(2)


class Soak:
    params = [[EPOCHS], [CALLS]]
    param_names = ["epochs", "calls"]
    timeout = 900

    def setup(self, epochs, calls):
        warm_up()  # compiled kernels (or their cache load) are not growth

    def track_rss_growth_mb_epochs(self, epochs, calls):
        """Resident set at the end of the last epoch minus at the end of the first, in MB (whole
        MB), over one ``fit`` of 784-64-10 on 2,000 rows. Lower is better; 0 is flat."""
        return round(epochs_growth(epochs)[0] / 2**20)

    track_rss_growth_mb_epochs.unit = "MB"

    def track_rss_growth_mb_fit_calls(self, epochs, calls):
        """Resident set after the last of ``calls`` ``fit(epochs=1)`` calls minus after the first,
        in MB (whole MB), on 64 rows of a 20-32-3 classifier. Lower is better; 0 is flat."""
        return round(fit_calls_growth(calls)[0] / 2**20)

    track_rss_growth_mb_fit_calls.unit = "MB"
