"""The ``Dataset`` class: train, validation and test arrays of a named dataset or of your own,
and their mini-batches."""
import math
import numbers

import numpy as np

from ..validation import check_dtype, check_features, check_float, check_int, check_labels
from .digits import _DIGITS_MAX_PIXEL, _DIGITS_TEST_ROWS, _digits_uint8
from .loaders import _scaled
from .mnist import _mnist_uint8

_DATASET_NAMES = ("mnist", "digits")
_SPLITS = ("train", "validation", "test")


def _check_size(value, name, available, minimum, why):
    """``value`` as a row count in [minimum, available]; ``why`` explains the maximum in the error."""
    value = check_int(value, name, minimum=minimum)
    if value > available:
        raise ValueError(f"{name} must be <= {available} ({why}), got {value}")
    return value


def _held_out_rows(size, name, n_rows):
    """How many of ``n_rows`` rows ``size`` holds out: an int count, or a float fraction in [0, 1).

    A fraction is rounded to the nearest count. At least one row must be left for training.
    """
    if isinstance(size, numbers.Integral):
        return check_int(size, name, minimum=0, maximum=n_rows - 1)
    fraction = check_float(size, name, minimum=0.0, maximum=1.0, max_inclusive=False)
    count = round(fraction * n_rows)
    if count > n_rows - 1:
        raise ValueError(f"{name}={size} would hold out all {n_rows} rows, leaving none for training")
    return count


def _check_targets(y, name, n_rows):
    """``y`` with one entry per row of x: integer class labels become 1-D int64 (non-negative),
    other numeric targets (floats, one-hot rows) keep their dtype and shape and must be finite."""
    try:
        arr = np.asarray(y)
    except ValueError as exc:  # ragged nested lists
        raise ValueError(f"{name} must be a rectangular numeric array: {exc}") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold numbers, got an array of dtype {arr.dtype}")
    if arr.ndim == 0:
        raise ValueError(f"{name} must be an array with one entry per row of x, got a scalar")
    if arr.shape[0] != n_rows:
        raise ValueError(f"{name} has {arr.shape[0]} rows but x has {n_rows}: they must have the same length")
    if arr.ndim == 1 and arr.dtype.kind in "iu":
        return check_labels(arr, name, n_rows)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return np.ascontiguousarray(arr)


def _check_bool(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def _new_rng(seed):
    """The generator behind every shuffle of a Dataset: ``seed`` None (fresh entropy) or an int >= 0."""
    return np.random.default_rng(None if seed is None else check_int(seed, "seed", minimum=0))


class Dataset:
    """Train, validation and test arrays, with a mini-batch iterator.

    ``Dataset(name)`` loads a named dataset: ``"mnist"`` (60000 train / 10000 test images, see
    :func:`load_mnist`) or ``"digits"`` (the 1797 bundled 8x8 images, :func:`load_digits`).
    :meth:`from_arrays` wraps arrays of your own.

    Sizes (named datasets):

    * ``train_size`` / ``test_size``: the first that many rows of the standard train / test
      split; ``None`` takes all of it. A larger value than the split holds is a ValueError.
      ``"digits"`` has no standard split: its *last* ``test_size`` rows are the test set
      (``None``: 300), and ``train_size`` counts from its first row (``None``: all the rest, so
      ``Dataset("digits")`` is a 1497 / 300 split).
    * ``validation_size``: an int count, or a float fraction in [0, 1) of the training rows
      (rounded), carved from the *end* of the training rows as Keras' ``validation_split`` does.
      0 leaves ``x_val`` / ``y_val`` empty, with the right number of columns.

    ``data_dir`` is where to look for MNIST first (see :func:`load_mnist`); the digits ship with
    the package and ignore it. ``dtype`` ('float32' or 'float64') is the dtype of every x array.

    Attributes: ``x_train, y_train, x_val, y_val, x_test, y_test`` (x C-contiguous 2-D in
    ``dtype``; y int64 labels for the named datasets), ``name``, ``batch_size``, ``shuffle``,
    ``seed``, ``dtype``, ``input_dim`` (columns of x) and ``num_classes`` (largest label + 1
    when y holds integer class labels, else None). ``len(dataset)`` is the number of training rows.

    ``shuffle`` and ``seed`` govern :meth:`batches` (and the split in :meth:`from_arrays`): all
    shuffles draw from one ``numpy.random.Generator`` seeded with ``seed``, so a Dataset built
    with the same seed replays the same sequence of epochs.
    """

    def __init__(self, name="mnist", train_size=None, test_size=None, batch_size=50, validation_size=0,
                 shuffle=True, seed=None, data_dir=None, dtype="float32"):
        if not isinstance(name, str) or name.lower() not in _DATASET_NAMES:
            raise ValueError(f"unknown dataset name {name!r}: expected one of {', '.join(_DATASET_NAMES)}")
        name = name.lower()
        dtype = check_dtype(dtype)
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        shuffle = _check_bool(shuffle, "shuffle")
        rng = _new_rng(seed)
        if name == "mnist":
            x_train, y_train, x_test, y_test = self._mnist_rows(train_size, test_size, data_dir)
            max_pixel = 255
        else:
            x_train, y_train, x_test, y_test = self._digits_rows(train_size, test_size)
            max_pixel = _DIGITS_MAX_PIXEL
        n_fit = len(y_train) - _held_out_rows(validation_size, "validation_size", len(y_train))
        self._set_splits(
            name=name,
            x_train=_scaled(x_train[:n_fit], max_pixel, dtype), y_train=y_train[:n_fit].astype(np.int64),
            x_val=_scaled(x_train[n_fit:], max_pixel, dtype), y_val=y_train[n_fit:].astype(np.int64),
            x_test=_scaled(x_test, max_pixel, dtype), y_test=y_test.astype(np.int64),
            batch_size=batch_size, shuffle=shuffle, seed=seed, rng=rng, dtype=dtype)

    @staticmethod
    def _mnist_rows(train_size, test_size, data_dir):
        """The first ``train_size`` / ``test_size`` rows of MNIST's train / test split, as uint8."""
        (train_x, train_y), (test_x, test_y) = _mnist_uint8(data_dir)
        n_train = len(train_y) if train_size is None else _check_size(
            train_size, "train_size", len(train_y), 1, f"MNIST has {len(train_y)} training images")
        n_test = len(test_y) if test_size is None else _check_size(
            test_size, "test_size", len(test_y), 0, f"MNIST has {len(test_y)} test images")
        return train_x[:n_train], train_y[:n_train], test_x[:n_test], test_y[:n_test]

    @staticmethod
    def _digits_rows(train_size, test_size):
        """The digits' last ``test_size`` rows as test and first ``train_size`` rows as train, as uint8."""
        pixels, labels = _digits_uint8()
        n_rows = len(labels)
        n_test = _DIGITS_TEST_ROWS if test_size is None else _check_size(
            test_size, "test_size", n_rows - 1, 0, f"'digits' has {n_rows} rows and needs one for training")
        n_train = n_rows - n_test if train_size is None else _check_size(
            train_size, "train_size", n_rows - n_test, 1,
            f"'digits' has {n_rows} rows, of which test_size={n_test} are held out for testing")
        return pixels[:n_train], labels[:n_train], pixels[n_rows - n_test:], labels[n_rows - n_test:]

    @classmethod
    def from_arrays(cls, x, y, x_test=None, y_test=None, test_size=0.0, validation_size=0, batch_size=32,
                    shuffle=True, seed=None, dtype="float32"):
        """A Dataset over your own arrays.

        ``x`` is (rows, features) of finite numbers; images (rows, h, w) are flattened. ``y`` has
        one entry per row: 1-D integer class labels become int64 (and set ``num_classes``); other
        numeric targets (regression values, one-hot rows) are kept as given, checked finite.

        The test set is either ``x_test`` / ``y_test`` given explicitly, or ``test_size`` rows (an
        int count, or a float fraction in [0, 1), rounded) split off the *end* of ``x``; then
        ``validation_size`` rows (count or fraction of what remains) off the end of the rest.
        With ``shuffle`` the rows are permuted (from ``seed``) before anything is split off, so
        data sorted by class still gives representative splits; without it, or when nothing is
        split off, the rows keep their order. The arrays may share memory with ``x`` and ``y``
        when no conversion or shuffle is needed, as with ``numpy.asarray``.
        """
        dtype = check_dtype(dtype)
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        shuffle = _check_bool(shuffle, "shuffle")
        rng = _new_rng(seed)
        x = check_features(x, "x", dtype=dtype)
        y = _check_targets(y, "y", len(x))
        if (x_test is None) != (y_test is None):
            raise ValueError("x_test and y_test must be given together")
        if x_test is not None:
            if test_size != 0:
                raise ValueError(f"pass either x_test and y_test, or test_size (got {test_size!r}), not both")
            x_test = check_features(x_test, "x_test", width=x.shape[1], dtype=dtype)
            y_test = _check_targets(y_test, "y_test", len(x_test))
            if y_test.shape[1:] != y.shape[1:] or y_test.dtype.kind != y.dtype.kind:
                raise ValueError(f"y_test (shape {y_test.shape}, dtype {y_test.dtype}) must be of the same "
                                 f"kind as y (shape {y.shape}, dtype {y.dtype})")
            n_test = 0
        else:
            n_test = _held_out_rows(test_size, "test_size", len(x))
        n_val = _held_out_rows(validation_size, "validation_size", len(x) - n_test)
        if shuffle and n_test + n_val > 0:
            order = rng.permutation(len(x))
            x, y = x[order], y[order]
        n_rest = len(x) - n_test
        if x_test is None:
            x_test, y_test = x[n_rest:], y[n_rest:]
        n_fit = n_rest - n_val
        dataset = cls.__new__(cls)
        dataset._set_splits(
            name="arrays", x_train=x[:n_fit], y_train=y[:n_fit], x_val=x[n_fit:n_rest], y_val=y[n_fit:n_rest],
            x_test=x_test, y_test=y_test, batch_size=batch_size, shuffle=shuffle, seed=seed, rng=rng, dtype=dtype)
        return dataset

    def _set_splits(self, *, name, x_train, y_train, x_val, y_val, x_test, y_test,
                    batch_size, shuffle, seed, rng, dtype):
        self.name = name
        self.x_train, self.y_train = x_train, y_train
        self.x_val, self.y_val = x_val, y_val
        self.x_test, self.y_test = x_test, y_test
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.dtype = dtype
        self.input_dim = x_train.shape[1]
        # Integer targets are int64 class labels by now (named datasets, or _check_targets).
        holds_labels = y_train.ndim == 1 and y_train.dtype == np.int64
        self.num_classes = (max(int(y.max()) for y in (y_train, y_val, y_test) if y.size) + 1
                            if holds_labels else None)
        self._rng = rng

    def _split(self, split):
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {', '.join(map(repr, _SPLITS))}, got {split!r}")
        return {"train": (self.x_train, self.y_train),
                "validation": (self.x_val, self.y_val),
                "test": (self.x_test, self.y_test)}[split]

    def batches(self, split="train", shuffle=None):
        """Iterate over ``split`` ('train', 'validation' or 'test') as ``(xb, yb)`` mini-batches.

        Each row appears exactly once per call; the last batch is shorter when ``batch_size`` does
        not divide the rows (nothing is dropped, like PyTorch's ``drop_last=False``). ``shuffle``
        None means the Dataset's ``shuffle`` for 'train' and no shuffling for 'validation' and
        'test'. Every shuffled call draws a new permutation (a new epoch order), reproducibly from
        ``seed``; it is drawn when ``batches`` is called, not at the first ``next``. Unshuffled
        batches are views into the split's arrays, shuffled ones copies.
        """
        x, y = self._split(split)
        if shuffle is None:
            shuffle = self.shuffle and split == "train"
        order = self._rng.permutation(len(x)) if _check_bool(shuffle, "shuffle") else None
        return self._iterate(x, y, order, self.batch_size)

    @staticmethod
    def _iterate(x, y, order, batch_size):
        for start in range(0, len(x), batch_size):
            if order is None:
                yield x[start:start + batch_size], y[start:start + batch_size]
            else:
                rows = order[start:start + batch_size]
                yield x[rows], y[rows]

    def num_batches(self, split="train"):
        """The number of batches :meth:`batches` yields for ``split``, the last one counted if short."""
        return math.ceil(len(self._split(split)[0]) / self.batch_size)

    def __len__(self):
        return len(self.x_train)

    def __repr__(self):
        return (f"Dataset(name={self.name!r}, train={len(self.x_train)}, validation={len(self.x_val)}, "
                f"test={len(self.x_test)}, input_dim={self.input_dim}, num_classes={self.num_classes}, "
                f"batch_size={self.batch_size}, dtype={np.dtype(self.dtype).name})")
