"""The model file: written atomically, read without pickle.

A saved model is a NumPy ``.npz`` archive: ``config`` (``MLP.get_config()`` as JSON text, stored
as bytes, with a format marker and version) and the arrays of the backend's training state
(``fastnn.backend.STATE``: ``params``, ``state1``, ``state2``, ``opt_steps``, ``rng``). Reading
uses ``allow_pickle=False``; ``fastnn.model.load_model`` rebuilds objects only through fastnn's
own constructors, which validate every argument, and hands the arrays to the backend's
``load_state``, which checks them against the architecture.

Writing never leaves a broken file behind: the archive goes to a temporary file in the same
folder, is flushed to the disk, and is then renamed over ``path`` in one step (``os.replace``),
so a crash at any moment leaves either the old file or the new one.
"""
import json
import os
import secrets
import zipfile

import numpy as np

FORMAT = "fastnn.model"
VERSION = 1


def shown(path):
    """``path`` as an error message shows it: 'model.npz', not PosixPath('model.npz')."""
    return os.fspath(path) if isinstance(path, os.PathLike) else path


def write_model_file(path, config, arrays):
    """Write ``config`` (JSON-able) and the named ``arrays`` to ``path`` (exactly that name; no
    suffix is added), atomically."""
    config = {"format": FORMAT, "version": VERSION, **config}
    text = np.frombuffer(json.dumps(config).encode(), dtype=np.uint8)
    atomic_write(path, lambda f: np.savez(f, config=text, **arrays))


def atomic_write(path, write):
    """Call ``write(f)`` on a binary file that becomes ``path`` only once it is complete and on
    the disk: a temporary file in the same folder, flushed and fsynced, then renamed over
    ``path`` (``os.replace``, atomic on POSIX and Windows). Every file fastnn writes goes
    through here: models, checkpoints, CSV logs, plots, ONNX files, downloads (the TensorBoard
    callback's append-only event logs aside, see its docstring)."""
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
    # os.open with mode 0o666 gives the file the permissions a plain open() would (the umask applies).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # KeyboardInterrupt too: never leave the temporary file behind
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    _sync_folder(folder)


def _sync_folder(folder):
    """Make the rename itself durable (POSIX); where folders cannot be opened (Windows), the
    rename is as durable as the file system makes it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_model_file(path):
    """(config, arrays) of a file written by ``write_model_file``; FileNotFoundError where there is
    no file, ValueError where it is not a readable fastnn model file of this version."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no model file at {shown(path)!r}")
    try:
        # Opened here, not by np.load: np.load leaves its own file open when the zip is damaged.
        with open(path, "rb") as f:
            archive = np.load(f, allow_pickle=False)
            if not isinstance(archive, np.lib.npyio.NpzFile):  # a lone .npy array
                raise ValueError(f"it holds one array of shape {archive.shape}, not an .npz archive")
            with archive:
                arrays = {k: archive[k] for k in archive.files}
        config = json.loads(arrays.pop("config").tobytes().decode())
    except (OSError, ValueError, zipfile.BadZipFile, KeyError, UnicodeDecodeError, EOFError) as exc:
        raise ValueError(f"{shown(path)!r} is not a readable fastnn model file: {exc}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f"{shown(path)!r} is not a fastnn model file (format marker missing)")
    if config.get("version") != VERSION:
        raise ValueError(f"{shown(path)!r} has format version {config.get('version')}, this fastnn reads {VERSION}")
    return config, arrays
