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

Where MNIST is looked for
-------------------------
The four files ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz`` are looked for, in order, in:

1. ``data_dir`` when it is given (its ``mnist/`` subfolder, then the folder itself), and nowhere
   else: an explicit folder that lacks the files is an error, not a reason to use another copy;
2. otherwise ``$FASTNN_DATA`` (its ``mnist/`` subfolder, then the folder itself), then the user
   cache ``$XDG_CACHE_HOME/fastnn/mnist`` (by default ``~/.cache/fastnn/mnist``). When neither
   holds them, the missing files are downloaded into the cache from :data:`MNIST_URL`, and each
   is kept only if its SHA-256 digest matches the published one.
"""
import functools
import gzip
import hashlib
import http.client
import importlib.resources
import math
import numbers
import os
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from .saving import atomic_write
from .validation import check_dtype, check_features, check_float, check_int, check_labels

__all__ = ["Dataset", "load_digits", "load_mnist", "MNIST_URL"]

MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"

_MNIST_TRAIN_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
_MNIST_TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

# SHA-256 of the files as served at MNIST_URL (the digests TensorFlow Datasets records for these
# URLs; the yann.lecun.com originals are byte-identical). Only downloads are checked against
# them: a local copy may have been recompressed, which changes the gzip bytes but not the
# images, so local files are trusted and validated by their IDX structure instead.
_MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}

_DOWNLOAD_TIMEOUT_S = 60
_DOWNLOAD_CHUNK_BYTES = 1 << 20

# An IDX magic number is two zero bytes, the element type (0x08: unsigned byte) and the number
# of dimensions: images are (count, rows, columns), labels (count,).
_IDX_MAGIC = {"images": 0x0803, "labels": 0x0801}  # 2051 and 2049
_MNIST_SIDE = 28
_MNIST_CLASSES = 10

# The digits have no standard train/test split: by default their last 300 rows are the test set.
_DIGITS_TEST_ROWS = 300
_DIGITS_MAX_PIXEL = 16

_DATASET_NAMES = ("mnist", "digits")
_SPLITS = ("train", "validation", "test")


# --------------------------------------------------------------------------------------------
# Reading the files
# --------------------------------------------------------------------------------------------

def _read_idx(path, kind):
    """The gzipped IDX file ``path`` of ``kind`` 'images' or 'labels', as a read-only uint8 array.

    Raises ValueError naming the file when it is not gzip data, carries another magic number, or
    holds fewer or more bytes than its header announces (a truncated download, say).
    """
    magic = _IDX_MAGIC[kind]
    try:
        with gzip.open(path, "rb") as stream:
            raw = stream.read()
    # Not gzip or a bad CRC: BadGzipFile; cut off mid-stream: EOFError; damaged deflate data: zlib.error.
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise ValueError(f"{path} is not a readable gzip file ({exc})") from exc
    ndim = magic & 0xFF
    header_bytes = 4 + 4 * ndim
    if len(raw) < header_bytes:
        raise ValueError(f"{path} is truncated: {len(raw)} bytes, too short for the "
                         f"{header_bytes}-byte header of an IDX {kind} file")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise ValueError(f"{path} is not an IDX {kind} file: magic number {found}, expected {magic}")
    shape = tuple(int(n) for n in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    if len(raw) != header_bytes + math.prod(shape):
        raise ValueError(f"{path} is truncated or corrupt: its header announces {kind} of shape "
                         f"{shape} ({header_bytes + math.prod(shape)} bytes), but it holds {len(raw)} bytes")
    # frombuffer over immutable bytes: the array is read-only, which the cache relies on.
    return np.frombuffer(raw, dtype=np.uint8, offset=header_bytes).reshape(shape)


def _read_mnist_split(folder, images_name, labels_name):
    """Images (n, 784) and labels (n,) of one MNIST split, read-only uint8, checked to agree."""
    images = _read_idx(folder / images_name, "images")
    labels = _read_idx(folder / labels_name, "labels")
    if images.shape[1:] != (_MNIST_SIDE, _MNIST_SIDE):
        raise ValueError(f"{folder / images_name} holds images of {images.shape[1]}x{images.shape[2]} "
                         f"pixels, expected {_MNIST_SIDE}x{_MNIST_SIDE}")
    if len(labels) != len(images):
        raise ValueError(f"{folder / labels_name} holds {len(labels)} labels but "
                         f"{folder / images_name} holds {len(images)} images")
    if labels.size and labels.max() >= _MNIST_CLASSES:
        raise ValueError(f"{folder / labels_name} holds label {labels.max()}, expected 0..{_MNIST_CLASSES - 1}")
    return images.reshape(len(images), -1), labels


@functools.lru_cache(maxsize=2)
def _read_mnist_folder(folder, file_stamps):
    """``((train_images, train_labels), (test_images, test_labels))`` from ``folder``, read-only uint8.

    Cached so that every Dataset after the first skips decompressing 47 MB of images. Only the
    uint8 arrays are kept (55 MB); callers convert the rows they need. ``file_stamps`` (size and
    modification time of each file) is part of the cache key only, so a replaced file is read again.
    """
    folder = Path(folder)
    return (_read_mnist_split(folder, *_MNIST_TRAIN_FILES),
            _read_mnist_split(folder, *_MNIST_TEST_FILES))


def _mnist_uint8(data_dir):
    """The cached read-only uint8 MNIST arrays, located (and downloaded) as the module docstring says."""
    folder = _locate_mnist(data_dir).resolve()
    stats = [(folder / name).stat() for name in _MNIST_SHA256]
    return _read_mnist_folder(str(folder), tuple((s.st_size, s.st_mtime_ns) for s in stats))


@functools.cache
def _digits_uint8():
    """The bundled digits as read-only uint8 ``(pixels (1797, 64), labels (1797,))``."""
    resource = importlib.resources.files(__package__) / "data" / "digits.csv.gz"
    with resource.open("rb") as compressed, gzip.open(compressed, "rt") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.uint8)
    table.flags.writeable = False
    return table[:, :-1], table[:, -1]


def _scaled(pixels, max_value, dtype):
    """A new C-contiguous ``dtype`` array of ``pixels / max_value``."""
    scaled = pixels.astype(dtype)
    scaled /= max_value
    return scaled


# --------------------------------------------------------------------------------------------
# Finding and downloading MNIST
# --------------------------------------------------------------------------------------------

def _candidate_folders(root):
    """``root/mnist`` and ``root`` itself: a data root, or a folder holding the files directly."""
    root = Path(root).expanduser()
    return [root / "mnist", root]


def _holds_mnist(folder):
    return all((folder / name).is_file() for name in _MNIST_SHA256)


def _cache_folder():
    """``$XDG_CACHE_HOME/fastnn/mnist``, or ``~/.cache/fastnn/mnist``."""
    xdg_cache = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG base directory spec says a relative path must be ignored.
    root = Path(xdg_cache) if os.path.isabs(xdg_cache) else Path.home() / ".cache"
    return root / "fastnn" / "mnist"


def _locate_mnist(data_dir):
    """The folder holding the four MNIST files; downloads them into the user cache if need be."""
    if data_dir is not None:
        searched = _candidate_folders(data_dir)
        for folder in searched:
            if _holds_mnist(folder):
                return folder
        raise FileNotFoundError(
            f"MNIST files not found in data_dir={str(data_dir)!r}: looked for "
            f"{', '.join(_MNIST_SHA256)} in {' and '.join(map(str, searched))}. "
            f"They can be downloaded from {MNIST_URL}")
    searched = _candidate_folders(os.environ["FASTNN_DATA"]) if os.environ.get("FASTNN_DATA") else []
    cache = _cache_folder()
    searched.append(cache)
    for folder in searched:
        if _holds_mnist(folder):
            return folder
    _download_mnist(cache, searched)
    return cache


def _open_url(url):
    """The HTTP response for ``url``; the one place that touches the network (tests replace it)."""
    return urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S)


def _download_mnist(cache, searched):
    """Download into ``cache`` each MNIST file it lacks, or raise FileNotFoundError saying what to do."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
        for name, sha256 in _MNIST_SHA256.items():
            if not (cache / name).is_file():
                _download_verified(MNIST_URL + name, cache / name, sha256)
    # URLError, HTTPError and timeouts are OSErrors; a connection cut mid-body is an HTTPException.
    except (OSError, http.client.HTTPException) as exc:
        raise FileNotFoundError(
            f"MNIST files not found, and downloading them failed ({type(exc).__name__}: {exc}).\n"
            f"Looked in: {', '.join(map(str, searched))}.\n"
            f"To use a copy of your own, put {', '.join(_MNIST_SHA256)} (from {MNIST_URL}) "
            f"in a folder DIR/mnist and set the environment variable FASTNN_DATA=DIR, "
            f"or pass data_dir=DIR.") from exc


def _download_verified(url, destination, sha256):
    """Download ``url`` to ``destination``, which appears only once the data's SHA-256 is ``sha256``.

    The bytes go through ``fastnn.saving.atomic_write`` (a temporary file beside ``destination``,
    flushed and fsynced, renamed into place only after the check), so an interrupted, corrupted
    or tampered download never leaves a file that a later call would trust. Raises RuntimeError
    on a digest mismatch.
    """
    def download(f):
        digest = hashlib.sha256()
        with _open_url(url) as response:
            while chunk := response.read(_DOWNLOAD_CHUNK_BYTES):
                digest.update(chunk)
                f.write(chunk)
        if digest.hexdigest() != sha256:
            raise RuntimeError(
                f"SHA-256 mismatch for {url}: expected {sha256}, got {digest.hexdigest()}. "
                "The download was discarded; retry, or download the file yourself and set FASTNN_DATA.")
    atomic_write(destination, download)


# --------------------------------------------------------------------------------------------
# Public loaders
# --------------------------------------------------------------------------------------------

def load_mnist(data_dir=None):
    """MNIST as ``(x_train, y_train, x_test, y_test)``.

    ``x_train`` (60000, 784) and ``x_test`` (10000, 784) are float32 pixels / 255 in [0, 1], each
    28x28 image flattened row by row; ``y_train`` and ``y_test`` are int64 labels 0..9.

    ``data_dir`` is a folder holding the four ``*.gz`` IDX files or a ``mnist/`` subfolder with
    them; without it the files are looked for in ``$FASTNN_DATA`` and the user cache, and
    downloaded there if need be (see the module docstring). The decoded files are cached for the
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


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------

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
