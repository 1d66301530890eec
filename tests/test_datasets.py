"""Tests of fastnn.datasets: the MNIST and digits loaders, downloads, and the Dataset class.

The real-MNIST tests read the folder named by the environment variable FASTNN_DATA (e.g.
``FASTNN_DATA=/path/to/data``, holding ``mnist/*.gz``) and are skipped without it. Everything
else runs on small IDX files written to tmp_path, and never touches the network.
"""
import gzip
import hashlib
import io
import os
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from fastnn.datasets import mnist
from fastnn.datasets import MNIST_URL, Dataset, load_digits, load_mnist

MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def _real_mnist_folder():
    """FASTNN_DATA/mnist when it holds the four MNIST files, else None."""
    root = os.environ.get("FASTNN_DATA")
    folder = Path(root, "mnist") if root else None
    return folder if folder and all((folder / name).is_file() for name in MNIST_FILES) else None


REAL_MNIST = _real_mnist_folder()
requires_mnist = pytest.mark.skipif(
    REAL_MNIST is None,
    reason="MNIST files not found: set FASTNN_DATA to a folder holding mnist/*-ubyte.gz "
           "(e.g. FASTNN_DATA=/path/to/data)")


@pytest.fixture
def no_local_mnist(tmp_path, monkeypatch):
    """No MNIST anywhere: FASTNN_DATA is an empty folder, and the user cache a new one (returned)."""
    monkeypatch.setenv("FASTNN_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "fastnn" / "mnist"


# --------------------------------------------------------------------------------------------
# Small synthetic MNIST files
# --------------------------------------------------------------------------------------------

def _idx_bytes(array, magic):
    """``array`` (uint8) as an IDX file: big-endian magic number and dimensions, then the data."""
    header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_gz(path, data):
    with gzip.open(path, "wb") as f:
        f.write(data)


def _write_tiny_mnist(folder, n_train=5, n_test=3):
    """Four valid IDX files with pixel values ``(image index * 7 + pixel index) % 256``."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = ((np.arange(n)[:, None] * 7 + np.arange(784)) % 256).reshape(n, 28, 28)
        labels = np.arange(n) % 10
        _write_gz(folder / f"{prefix}-images-idx3-ubyte.gz", _idx_bytes(images, 2051))
        _write_gz(folder / f"{prefix}-labels-idx1-ubyte.gz", _idx_bytes(labels, 2049))
    return folder


def test_tiny_mnist_is_parsed_and_scaled(tmp_path):
    folder = _write_tiny_mnist(tmp_path / "mnist")
    x_train, y_train, x_test, y_test = load_mnist(data_dir=tmp_path)
    assert x_train.shape == (5, 784) and x_test.shape == (3, 784)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    expected = ((np.arange(5)[:, None] * 7 + np.arange(784)) % 256) / 255
    np.testing.assert_allclose(x_train, expected, rtol=1e-7)
    np.testing.assert_array_equal(y_train, [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(y_test, [0, 1, 2])
    # data_dir may also name the folder holding the files itself.
    np.testing.assert_array_equal(load_mnist(data_dir=folder)[0], x_train)


def test_load_mnist_returns_copies_that_do_not_reach_the_cache(tmp_path):
    _write_tiny_mnist(tmp_path)
    x_train, y_train, _, _ = load_mnist(data_dir=tmp_path)
    x_train[:] = -1
    y_train[:] = -1
    again_x, again_y, _, _ = load_mnist(data_dir=tmp_path)
    assert again_x.min() == 0 and again_y.min() == 0


def test_replaced_file_is_read_again(tmp_path):
    _write_tiny_mnist(tmp_path, n_train=5)
    assert load_mnist(data_dir=tmp_path)[0].shape == (5, 784)
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    _write_tiny_mnist(tmp_path, n_train=4)
    os.utime(labels, ns=(0, 0))  # make sure the stamp changes even on a coarse-clock filesystem
    assert load_mnist(data_dir=tmp_path)[0].shape == (4, 784)


@pytest.mark.parametrize("corrupt, message", [
    (lambda data: b"\x00\x00\x08\x02" + data[4:], "magic number 2050, expected 2051"),
    (lambda data: data[:-100], "truncated or corrupt"),
    (lambda data: data[:10], "truncated"),
])
def test_corrupt_idx_file_is_a_value_error_naming_the_file(tmp_path, corrupt, message):
    _write_tiny_mnist(tmp_path)
    images = tmp_path / "train-images-idx3-ubyte.gz"
    _write_gz(images, corrupt(gzip.decompress(images.read_bytes())))
    with pytest.raises(ValueError, match=message) as error:
        load_mnist(data_dir=tmp_path)
    assert str(images) in str(error.value)


@pytest.mark.parametrize("damage", [lambda gz: gz[: len(gz) // 2], lambda gz: b"plain text, not gzip"])
def test_cut_or_non_gzip_file_is_a_value_error_naming_the_file(tmp_path, damage):
    _write_tiny_mnist(tmp_path)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(damage(labels.read_bytes()))
    with pytest.raises(ValueError, match="not a readable gzip file") as error:
        load_mnist(data_dir=tmp_path)
    assert str(labels) in str(error.value)


def test_image_and_label_counts_must_agree(tmp_path):
    _write_tiny_mnist(tmp_path)
    _write_gz(tmp_path / "t10k-labels-idx1-ubyte.gz", _idx_bytes(np.zeros(2), 2049))
    with pytest.raises(ValueError, match="holds 2 labels but .* holds 3 images"):
        load_mnist(data_dir=tmp_path)


def test_explicit_data_dir_without_the_files_is_not_silently_replaced(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_dir=") as error:
        load_mnist(data_dir=tmp_path)
    assert "train-images-idx3-ubyte.gz" in str(error.value) and MNIST_URL in str(error.value)


# --------------------------------------------------------------------------------------------
# Downloading (the network is replaced: there is none here)
# --------------------------------------------------------------------------------------------

def test_failed_download_says_where_it_looked_and_how_to_set_fastnn_data(no_local_mnist, monkeypatch):
    def offline(url):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(mnist, "_open_url", offline)
    with pytest.raises(FileNotFoundError) as error:
        load_mnist()
    message = str(error.value)
    assert "FASTNN_DATA" in message and MNIST_URL in message and "no network" in message
    assert str(no_local_mnist) in message
    assert str(Path(os.environ["FASTNN_DATA"]) / "mnist") in message
    # A Dataset asking for MNIST gets the same error, not another dataset in its place.
    with pytest.raises(FileNotFoundError, match="FASTNN_DATA"):
        Dataset("mnist")


def test_python_m_fastnn_offline_prints_the_whole_error_then_trains_on_the_digits(no_local_mnist, monkeypatch,
                                                                                  capsys):
    """Was: only the error's first line, without where it looked or the FASTNN_DATA hint."""
    from fastnn import __main__

    def offline(url):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(mnist, "_open_url", offline)
    assert __main__.main(["--epochs", "1"]) == 0
    out, err = capsys.readouterr()
    with pytest.raises(FileNotFoundError) as error:
        load_mnist()
    assert str(error.value) in err and "set the environment variable FASTNN_DATA=DIR" in err
    assert "the 8x8 digits bundled with fastnn" in err
    assert out.startswith("Dataset(name='digits'")


def test_download_with_a_wrong_checksum_is_rejected_and_leaves_no_file(no_local_mnist, monkeypatch):
    monkeypatch.setattr(mnist, "_open_url", lambda url: io.BytesIO(b"not the MNIST file"))
    with pytest.raises(RuntimeError, match="SHA-256 mismatch") as error:
        load_mnist()
    assert MNIST_URL + "train-images-idx3-ubyte.gz" in str(error.value)
    assert list(no_local_mnist.iterdir()) == []


def test_download_with_the_right_checksums_fills_the_cache_once(tmp_path, no_local_mnist, monkeypatch):
    served = _write_tiny_mnist(tmp_path / "server")
    monkeypatch.setattr(mnist, "_MNIST_SHA256", {
        name: hashlib.sha256((served / name).read_bytes()).hexdigest() for name in MNIST_FILES})
    requested = []

    def serve(url):
        requested.append(url)
        return io.BytesIO((served / url.removeprefix(MNIST_URL)).read_bytes())
    monkeypatch.setattr(mnist, "_open_url", serve)

    x_train, y_train, x_test, _ = load_mnist()
    assert x_train.shape == (5, 784) and x_test.shape == (3, 784)
    np.testing.assert_array_equal(y_train, [0, 1, 2, 3, 4])
    assert requested == [MNIST_URL + name for name in MNIST_FILES]
    assert sorted(p.name for p in no_local_mnist.iterdir()) == sorted(MNIST_FILES)
    load_mnist()
    assert len(requested) == 4  # the second call found the files in the cache


# --------------------------------------------------------------------------------------------
# Real MNIST
# --------------------------------------------------------------------------------------------

@requires_mnist
def test_mnist_shapes_dtypes_range_and_labels():
    x_train, y_train, x_test, y_test = load_mnist()
    assert x_train.shape == (60000, 784) and x_test.shape == (10000, 784)
    assert x_train.dtype == x_test.dtype == np.float32
    assert y_train.dtype == y_test.dtype == np.int64
    assert x_train.flags.c_contiguous and x_train.flags.writeable
    assert x_train.min() == 0 and x_train.max() == 1 and x_test.min() == 0 and x_test.max() == 1
    np.testing.assert_array_equal(y_train[:5], [5, 0, 4, 1, 9])
    np.testing.assert_array_equal(y_test[:5], [7, 2, 1, 0, 4])
    np.testing.assert_array_equal(np.bincount(y_train),
                                  [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
    np.testing.assert_array_equal(np.bincount(y_test), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])


@requires_mnist
def test_mnist_first_image_matches_a_direct_parse():
    raw = gzip.decompress((REAL_MNIST / "train-images-idx3-ubyte.gz").read_bytes())
    first_image = np.frombuffer(raw, dtype=np.uint8, count=784, offset=16)  # header: 4 int32
    x_train = load_mnist()[0]
    assert x_train[0].sum() * 255 == pytest.approx(int(first_image.sum()), rel=1e-6)
    np.testing.assert_array_equal(np.rint(x_train[0] * 255), first_image)


@requires_mnist
def test_mnist_dataset_sizes_and_validation_split():
    x_train, y_train, x_test, y_test = load_mnist()
    ds = Dataset("MNIST", train_size=1000, test_size=200, validation_size=0.1, batch_size=64)
    assert (len(ds), len(ds.x_val), len(ds.x_test)) == (900, 100, 200)
    assert ds.input_dim == 784 and ds.num_classes == 10 and ds.name == "mnist"
    # The first rows of each standard split; validation is the end of the training rows.
    np.testing.assert_array_equal(ds.x_train, x_train[:900])
    np.testing.assert_array_equal(ds.y_val, y_train[900:1000])
    np.testing.assert_array_equal(ds.x_test, x_test[:200])
    np.testing.assert_array_equal(ds.y_test, y_test[:200])
    assert ds.num_batches() == 15 and ds.num_batches("test") == 4

    full = Dataset(validation_size=5000, dtype="float64")
    assert (len(full), len(full.y_val), len(full.y_test)) == (55000, 5000, 10000)
    assert full.x_train.dtype == np.float64
    assert repr(full) == ("Dataset(name='mnist', train=55000, validation=5000, test=10000, input_dim=784, "
                          "num_classes=10, batch_size=50, dtype=float64)")


@requires_mnist
@pytest.mark.parametrize("argument, value, maximum", [("train_size", 60001, 60000), ("test_size", 10001, 10000)])
def test_mnist_sizes_beyond_the_split_name_argument_and_maximum(argument, value, maximum):
    with pytest.raises(ValueError, match=f"{argument} must be <= {maximum}"):
        Dataset("mnist", **{argument: value})


@requires_mnist
def test_mnist_data_dir_argument_finds_the_same_files():
    np.testing.assert_array_equal(load_mnist(data_dir=REAL_MNIST.parent)[1], load_mnist(data_dir=REAL_MNIST)[1])


# --------------------------------------------------------------------------------------------
# Bundled digits
# --------------------------------------------------------------------------------------------

def test_digits_shape_range_and_label_counts():
    x, y = load_digits()
    assert x.shape == (1797, 64) and x.dtype == np.float32 and y.dtype == np.int64
    assert x.min() == 0 and x.max() == 1
    np.testing.assert_array_equal(x * 16, np.rint(x * 16))  # pixel counts 0..16, scaled
    np.testing.assert_array_equal(np.bincount(y), [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])
    np.testing.assert_array_equal(y[:10], np.arange(10))


def test_digits_dataset_defaults_to_a_1497_300_split_with_the_last_rows_as_test():
    x, y = load_digits()
    ds = Dataset("digits")
    assert (len(ds), len(ds.x_val), len(ds.x_test)) == (1497, 0, 300)
    assert ds.x_val.shape == (0, 64) and ds.y_val.shape == (0,)
    np.testing.assert_array_equal(ds.x_test, x[-300:])
    np.testing.assert_array_equal(ds.y_train, y[:1497])
    assert ds.num_classes == 10 and ds.input_dim == 64 and ds.batch_size == 50


def test_digits_sizes():
    x, y = load_digits()
    ds = Dataset("digits", train_size=1000, test_size=500, validation_size=200)
    assert (len(ds), len(ds.x_val), len(ds.x_test)) == (800, 200, 500)
    np.testing.assert_array_equal(ds.x_val, x[800:1000])
    np.testing.assert_array_equal(ds.y_test, y[-500:])
    with pytest.raises(ValueError, match="train_size must be <= 1297"):
        Dataset("digits", train_size=1298, test_size=500)
    with pytest.raises(ValueError, match="test_size must be <= 1796"):
        Dataset("digits", test_size=1797)


def test_unknown_dataset_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="mnist, digits"):
        Dataset("cifar10")


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------

def _numbered(n_rows=103, **kwargs):
    """A Dataset whose row i is [i, -i] with label i, so batches show which rows they hold."""
    rows = np.arange(n_rows)
    return Dataset.from_arrays(np.stack([rows, -rows], axis=1), rows, **kwargs)


def test_an_epoch_yields_every_row_once_with_a_short_last_batch():
    ds = _numbered(batch_size=10, seed=0)
    batches = list(ds.batches())
    assert len(batches) == ds.num_batches() == 11
    assert [len(xb) for xb, _ in batches] == [10] * 10 + [3]
    xs = np.concatenate([xb for xb, _ in batches])
    ys = np.concatenate([yb for _, yb in batches])
    np.testing.assert_array_equal(np.sort(ys), np.arange(103))
    np.testing.assert_array_equal(xs[:, 0], ys)  # features and labels stay paired
    assert not np.array_equal(ys, np.arange(103))  # shuffled


def _epoch_labels(ds, **kwargs):
    return np.concatenate([yb for _, yb in ds.batches(**kwargs)])


def test_shuffling_is_reproducible_from_the_seed_and_new_each_epoch():
    first, second = _numbered(batch_size=8, seed=42), _numbered(batch_size=8, seed=42)
    epochs = [_epoch_labels(first) for _ in range(3)]
    for epoch in epochs:
        np.testing.assert_array_equal(epoch, _epoch_labels(second))
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    assert not np.array_equal(epochs[0], _epoch_labels(_numbered(batch_size=8, seed=43)))


def test_without_shuffle_batches_keep_row_order():
    np.testing.assert_array_equal(_epoch_labels(_numbered(batch_size=7, shuffle=False)), np.arange(103))
    np.testing.assert_array_equal(_epoch_labels(_numbered(batch_size=7, seed=1), shuffle=False), np.arange(103))


def test_validation_and_test_batches_are_in_order_by_default():
    ds = _numbered(batch_size=4, test_size=10, validation_size=5, shuffle=False)
    np.testing.assert_array_equal(_epoch_labels(ds, split="test"), np.arange(93, 103))
    np.testing.assert_array_equal(_epoch_labels(ds, split="validation"), np.arange(88, 93))
    assert ds.num_batches("test") == 3 and ds.num_batches("validation") == 2


def test_empty_split_yields_no_batches_and_unknown_split_is_an_error():
    ds = _numbered()
    assert list(ds.batches("validation")) == [] and ds.num_batches("validation") == 0
    with pytest.raises(ValueError, match="split must be one of 'train', 'validation', 'test'"):
        ds.batches("valid")


# --------------------------------------------------------------------------------------------
# from_arrays
# --------------------------------------------------------------------------------------------

def test_from_arrays_splits_test_then_validation_off_the_end():
    ds = _numbered(n_rows=100, test_size=0.2, validation_size=10, shuffle=False)
    np.testing.assert_array_equal(ds.y_train, np.arange(70))
    np.testing.assert_array_equal(ds.y_val, np.arange(70, 80))
    np.testing.assert_array_equal(ds.y_test, np.arange(80, 100))
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert (ds.num_classes, ds.input_dim, len(ds)) == (100, 2, 70)


def test_from_arrays_shuffles_before_splitting_keeping_rows_paired():
    ds = _numbered(n_rows=100, test_size=20, validation_size=0.1, seed=3)
    assert (len(ds), len(ds.y_val), len(ds.y_test)) == (72, 8, 20)
    all_y = np.concatenate([ds.y_train, ds.y_val, ds.y_test])
    np.testing.assert_array_equal(np.sort(all_y), np.arange(100))
    assert not np.array_equal(all_y, np.arange(100))
    np.testing.assert_array_equal(ds.x_test[:, 1], -ds.y_test)
    np.testing.assert_array_equal(_numbered(n_rows=100, test_size=20, seed=3).y_test,
                                  _numbered(n_rows=100, test_size=20, seed=3).y_test)


def test_from_arrays_with_explicit_test_arrays_images_and_float_targets():
    images = np.random.default_rng(0).random((6, 28, 28))
    targets = np.linspace(-1.0, 1.0, 6)
    ds = Dataset.from_arrays(images, targets, x_test=images[:2], y_test=targets[:2], dtype="float64")
    assert ds.x_train.shape == (6, 784) and ds.x_test.shape == (2, 784) and ds.x_train.dtype == np.float64
    np.testing.assert_array_equal(ds.y_train, targets)
    assert ds.num_classes is None and ds.name == "arrays"


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(x=np.zeros((4, 2)), y=np.zeros(3, int)), ValueError, "y has 3 rows but x has 4"),
    (dict(x=[[0.0, np.nan]] * 3, y=[0, 1, 2]), ValueError, "x contains NaN"),
    (dict(x=np.zeros((3, 2)), y=[0.0, np.inf, 1.0]), ValueError, "y contains NaN or infinite"),
    (dict(x=[["a", "b"]] * 3, y=[0, 1, 2]), TypeError, "x must hold real numbers"),
    (dict(x=np.array([[object()]] * 3), y=[0, 1, 2]), TypeError, "x must hold real numbers"),
    (dict(x=np.zeros((3, 2)), y=["a", "b", "c"]), TypeError, "y must hold numbers"),
    (dict(x=np.zeros((0, 2)), y=np.zeros(0, int)), ValueError, "x is empty"),
    (dict(x=np.zeros((3, 2)), y=[0, -1, 2]), ValueError, "y holds a negative class label"),
    (dict(x=np.zeros((3, 2)), y=[0, 1, 2], batch_size=0), ValueError, "batch_size must be >= 1"),
    (dict(x=np.zeros((3, 2)), y=[0, 1, 2], batch_size=2.5), TypeError, "batch_size must be an integer"),
    (dict(x=np.zeros((3, 2)), y=[0, 1, 2], test_size=1.0), ValueError, "test_size must be < 1"),
    (dict(x=np.zeros((3, 2)), y=[0, 1, 2], test_size=-1), ValueError, "test_size must be >= 0"),
    (dict(x=np.zeros((3, 2)), y=[0, 1, 2], test_size=3), ValueError, "test_size must be <= 2"),
    (dict(x=np.zeros((3, 2)), y=[0, 1, 2], test_size=1, validation_size=2), ValueError,
     "validation_size must be <= 1"),
    (dict(x=np.zeros((3, 2)), y=[0, 1, 2], seed=-1), ValueError, "seed must be >= 0"),
    (dict(x=np.zeros((3, 2)), y=[0, 1, 2], shuffle="no"), TypeError, "shuffle must be True or False"),
    (dict(x=np.zeros((3, 2)), y=[0, 1, 2], dtype="int8"), ValueError, "dtype must be"),
    (dict(x=np.zeros((3, 2)), y=[0, 1, 2], x_test=np.zeros((1, 2))), ValueError,
     "x_test and y_test must be given together"),
    (dict(x=np.zeros((3, 2)), y=[0, 1, 2], x_test=np.zeros((1, 2)), y_test=[0], test_size=0.5), ValueError,
     "either x_test and y_test, or test_size"),
    (dict(x=np.zeros((3, 2)), y=[0, 1, 2], x_test=np.zeros((1, 3)), y_test=[0]), ValueError,
     "x_test must have 2 features"),
    (dict(x=np.zeros((3, 2)), y=[0, 1, 2], x_test=np.zeros((1, 2)), y_test=[0.5]), ValueError,
     "y_test .* must be of the same kind as y"),
])
def test_from_arrays_rejects_bad_input_naming_the_argument(kwargs, error, message):
    with pytest.raises(error, match=message):
        Dataset.from_arrays(**kwargs)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(batch_size=0), ValueError, "batch_size must be >= 1"),
    (dict(train_size=0), ValueError, "train_size must be >= 1"),
    (dict(test_size=-5), ValueError, "test_size must be >= 0"),
    (dict(train_size=10.0), TypeError, "train_size must be an integer"),
    (dict(validation_size=1497), ValueError, "validation_size must be <= 1496"),
    (dict(validation_size=-0.1), ValueError, "validation_size must be >= 0"),
])
def test_named_dataset_rejects_bad_sizes_naming_the_argument(kwargs, error, message):
    with pytest.raises(error, match=message):
        Dataset("digits", **kwargs)
