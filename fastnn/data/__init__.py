"""Data that ``fit`` reads a batch at a time: a ``Sequence`` (Keras' ``PyDataset``) or a Python
generator, for data sets larger than memory or made on the fly.

    >>> class Batches(fastnn.data.Sequence):
    ...     def __len__(self):                  # batches per epoch
    ...         return len(files)
    ...     def __getitem__(self, i):            # batch i: (x, y)
    ...         return load_x(files[i]), load_y(files[i])
    >>> model.fit(Batches(), epochs=3)

Any object with ``__len__`` and ``__getitem__`` returning ``(x, y)`` works the same, subclass
or not (a list or an array is data, not batches). ``fit`` reads the next batches on a background
thread while the compiled step trains on the previous ones (``fastnn.data.feed``).

This folder also holds the bundled data files (``digits.csv.gz``, see README.md).
"""
import numpy as np


class Sequence:
    """Batches by index, as Keras' ``PyDataset``: ``len(seq)`` batches per epoch, ``seq[i]`` the
    i-th, a tuple ``(x, y)`` (or ``(x, y, sample_weight)``); ``on_epoch_end()`` runs after each
    epoch (and after each validation pass over it), e.g. to shuffle what the batches hold.

    ``fit(shuffle=True)`` visits the batches in a new random order each pass, as Keras does;
    ``shuffle=False`` in index order. ``__getitem__`` runs on ``fit``'s loader thread."""

    def __len__(self):
        raise NotImplementedError("a Sequence defines __len__: the number of batches in an epoch")

    def __getitem__(self, index):
        raise NotImplementedError("a Sequence defines __getitem__(index): the batch (x, y)")

    def on_epoch_end(self):
        """Called after each epoch; nothing by default."""


def is_sequence(x):
    """Whether ``fit`` reads ``x`` as a Sequence of batches: a ``Sequence``, or an object with
    ``__len__`` and ``__getitem__`` that is not array-like (no ``shape`` or ``__array__``, not a
    list or tuple: those are data, as NumPy reads them)."""
    if isinstance(x, Sequence):
        return True
    if isinstance(x, (list, tuple, str, bytes, dict, np.ndarray)):
        return False
    return (hasattr(x, "__len__") and hasattr(x, "__getitem__") and not hasattr(x, "shape")
            and not hasattr(x, "__array__") and not hasattr(x, "__array_interface__"))


def is_iterator(x):
    """Whether ``fit`` reads ``x`` as a generator or iterator of batches."""
    return hasattr(x, "__next__") and hasattr(x, "__iter__") and not isinstance(x, np.ndarray)


def is_batch_source(x):
    """A Sequence or an iterator of batches, rather than arrays."""
    return is_sequence(x) or is_iterator(x)


__all__ = ["Sequence", "is_batch_source", "is_iterator", "is_sequence"]
