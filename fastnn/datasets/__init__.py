"""Datasets: MNIST (read from its IDX files, downloaded on first use) and the bundled 8x8 digits.

Conventions
-----------
* Features are C-contiguous 2-D arrays, one row per example, scaled to [0, 1]: MNIST pixels are
  divided by 255 (each 28x28 image flattened row by row to 784 columns), the digits' pixel
  counts by 16 (8x8 images, 64 columns).
* Labels are 1-D int64 class indices.
* Splits follow file order: ``train_size`` / ``test_size`` keep the *first* rows of the standard
  train / test split, and the validation rows are the *last* training rows (as with Keras'
  ``validation_split``), so a given configuration always yields the same rows.

Layout
------
* ``mnist``: finding, downloading and decoding the four MNIST files (where they are looked for
  is in its docstring);
* ``digits``: decoding the digits bundled in ``fastnn/data``;
* ``loaders``: ``load_mnist`` and ``load_digits``, the decoded pixels as scaled float copies;
* ``dataset``: the ``Dataset`` class, its splits and its mini-batches.
"""
from .dataset import Dataset
from .loaders import load_digits, load_mnist
from .mnist import MNIST_URL

__all__ = ["Dataset", "load_digits", "load_mnist", "MNIST_URL"]
