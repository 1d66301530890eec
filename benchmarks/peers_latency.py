"""NumPy written by hand as a one-row latency peer of ``latency.py`` (the peer ``numpy``, in a
worker process of its own): the network's products, ReLU and softmax as NumPy expressions, on
the weights that fastnn's worker saved (``FastnnPeer.save_weights``), as a user without a
framework would write the forward pass. Only numpy and the standard library.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from peers_adapters import Peer  # noqa: E402


class NumpyPeer(Peer):
    def __init__(self, threads, options):
        self.weights = None

    def info(self):
        return {"summary": f"numpy {np.__version__}: x @ W + b, ReLU and softmax written by hand",
                "blas": "NumPy's own BLAS"}

    def load_weights(self, path):
        """W, b of each Dense layer, in order, from ``FastnnPeer.save_weights``' file."""
        with np.load(path) as f:
            self.weights = [f[f"arr_{i}"] for i in range(len(f.files))]
        return len(self.weights) // 2

    def one_row_call(self, mode, row):
        weights = self.weights

        def run():
            h = row
            for i in range(0, len(weights) - 2, 2):
                h = np.maximum(h @ weights[i] + weights[i + 1], 0)
            z = h @ weights[-2] + weights[-1]
            e = np.exp(z - z.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)
        return run


PEER_CLASSES = {"numpy": NumpyPeer}
