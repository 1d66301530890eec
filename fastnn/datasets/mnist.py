"""The MNIST files: where they are looked for, their download, and their decoding into uint8.

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
import math
import os
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from ..saving import atomic_write

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
