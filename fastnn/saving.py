"""The model file: written atomically, read without pickle.

A saved model is a NumPy ``.npz`` archive: ``config`` (``MLP.get_config()`` as JSON text, stored
as bytes, with a format marker and version) and the arrays of the backend's training state
(``fastnn.backend.STATE``: ``params``, ``state1``, ``state2``, ``opt_steps``, ``rng``), stored
uncompressed. Reading (``ModelFile``) checks the zip directory, the config and each array's
``.npy`` header against fixed bounds before it decompresses any array, so that a small file
cannot make the loader spend much time or memory; arrays are read with ``allow_pickle=False``.
``fastnn.model_io.load_model`` rebuilds objects only through fastnn's own constructors, which
validate every argument, checks the arrays' declared sizes against the architecture before it
reads them, and hands them to the backend's ``load_state``, which checks their values.

Writing never leaves a broken file behind: the archive goes to a temporary file in the same
folder, is flushed to the disk, and is then renamed over ``path`` in one step (``os.replace``),
so a crash at any moment leaves either the old file or the new one (``atomic_write`` says what a
process killed while writing can leave beside it).
"""
import json
import math
import os
import re
import secrets
import stat
import zipfile

import numpy as np

from .backend import STATE

FORMAT = "fastnn.model"
VERSION = 1
# The members of a model file: its config and the backend's training state.
MEMBERS = tuple(f"{name}.npy" for name in ("config",) + STATE)
# Bounds on what reading a file may cost, checked before anything is decompressed (``ModelFile``).
# A model of MAX_ELEMENTS float32 parameters takes 16 GiB a buffer, three buffers and the
# gradients 64 GiB: beyond any model fastnn trains on one machine.
MAX_ELEMENTS = 2**32
# A layer's config takes some 300 bytes of JSON: room for tens of thousands of layers.
MAX_CONFIG_BYTES = 16 * 2**20
# A model's config nests some 8 levels (model, layers, a layer, its config, an activation, its
# config); the parser and ``deserialize`` recurse once per level, and Python's stack allows ~1000.
MAX_CONFIG_DEPTH = 64
# fastnn stores members uncompressed (their total is at most the file's size); a file someone
# deflated may expand 8 times, plus 1 MiB: the memory a file can claim stays proportional to it.
MAX_EXPANSION = 8


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
    callback's append-only event logs aside, see its docstring).

    Where ``path`` is a symbolic link, the file it points to is replaced (the temporary file goes
    beside it) and the link stays. A file replaced keeps its permission bits (a private model stays
    private; its owner becomes the user who saves); a new file gets those of a plain ``open()``.

    No error leaves the temporary file behind (KeyboardInterrupt included). A process killed
    outright (SIGKILL, or a SIGTERM that Python does not handle) runs no cleanup: on Linux, where
    the file system supports it (ext4, XFS, Btrfs, tmpfs), the file is written without a name
    (``O_TMPFILE``) and linked as the temporary file only once complete, so a kill leaves nothing
    unless it falls between that link and the rename; elsewhere it can leave the temporary file,
    ``.<name>.<8 hex digits>.tmp`` beside the file, which is safe to delete."""
    path = os.path.realpath(os.fspath(path))  # through symbolic links: replace the file, not the link
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        mode = None  # no file yet
    fd = _open_unnamed(folder)
    if fd is not None:
        try:
            _write_and_replace(fd, False, tmp, path, mode, write)
        except _UnlinkableError:
            fd = None  # /proc refused the link (a hardened container): write again, with a name
    if fd is None:
        # os.open with mode 0o666 gives the file the permissions a plain open() would (the umask applies).
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        _write_and_replace(fd, True, tmp, path, mode, write)
    _sync_folder(folder)


class _UnlinkableError(OSError):
    """The unnamed file could not be given a name; nothing was left behind."""


def _write_and_replace(fd, named, tmp, path, mode, write):
    """``write`` into ``fd`` (a file named ``tmp``, or unnamed and linked as ``tmp`` once complete),
    fsync it, give it ``mode`` and rename it over ``path``; on any error remove ``tmp``."""
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                os.chmod(f.fileno() if os.chmod in os.supports_fd else tmp, mode)
            write(f)
            f.flush()
            os.fsync(f.fileno())
            if not named:
                try:
                    _link_unnamed(f.fileno(), os.path.dirname(tmp), os.path.basename(tmp))
                except OSError as exc:
                    raise _UnlinkableError(str(exc)) from exc
                named = True
        os.replace(tmp, path)
    except BaseException:  # KeyboardInterrupt too: never leave the temporary file behind
        if named:
            try:
                os.remove(tmp)
            except OSError:
                pass
        raise


def _open_unnamed(folder):
    """A file descriptor open for writing on a new file without a name in ``folder`` (Linux's
    ``O_TMPFILE``, linked by its /proc path once complete); None where that is not available."""
    if not hasattr(os, "O_TMPFILE") or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        return os.open(folder, os.O_TMPFILE | os.O_WRONLY, 0o666)
    except OSError:  # a file system without it (NFS, FUSE), or an older kernel
        return None


def _link_unnamed(fd, folder, name):
    """Give the unnamed file ``fd`` the ``name`` in ``folder``: linkat(AT_SYMLINK_FOLLOW) of its
    /proc path, which Python calls only when a folder's descriptor is passed."""
    folder_fd = os.open(folder, os.O_RDONLY)
    try:
        os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=folder_fd, follow_symlinks=True)
    finally:
        os.close(folder_fd)


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
    with ModelFile(path) as file:
        return file.config, file.read_arrays()


class ModelFile:
    """A model file opened for reading, checked before any array is decompressed.

    Opening reads the zip directory, the config and the header of each array, and nothing else:
    the members must be ``config`` and names of ``STATE`` only (``rng`` may be absent: files
    written before Dropout existed), each member exactly as large as its ``.npy`` header declares
    (dtype itemsize x element count + the header), no array of more than ``MAX_ELEMENTS``
    elements, the config no larger than ``MAX_CONFIG_BYTES`` nor nested deeper than
    ``MAX_CONFIG_DEPTH``, and all members together no larger than ``MAX_EXPANSION`` times the
    file plus 1 MiB (fastnn stores its members uncompressed, so its own files are never larger
    than on the disk). The caller checks ``headers`` against what the config describes before it
    calls ``read_arrays``. Every error is a ValueError that names the file.
    """

    def __init__(self, path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no model file at {shown(path)!r}")
        self.path = path
        self._file = open(path, "rb")  # ours to close: np.load leaves its file open when the zip is damaged
        self._archive = None
        try:
            self._guarded(self._open)
            self._check_config()
        except BaseException:
            self.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        if self._archive is not None:
            self._archive.close()
        self._file.close()

    def refused(self, why):
        """The ValueError for a file that is not a readable model file, saying ``why``."""
        return ValueError(f"{shown(self.path)!r} is not a readable fastnn model file: {why}")

    def _guarded(self, call, *args):
        """``call(*args)``, with any error of a damaged file turned into ``refused``'s ValueError."""
        try:
            return call(*args)
        except (OSError, ValueError, zipfile.BadZipFile, KeyError, UnicodeDecodeError, EOFError, RuntimeError,
                NotImplementedError) as exc:  # RuntimeError: encrypted; NotImplementedError: unknown compression
            raise self.refused(exc) from None

    def _open(self):
        if self._file.read(6) == b"\x93NUMPY":
            self._file.seek(0)
            shape = _npy_header(self._file, "the file")[0]
            raise ValueError(f"it holds one array of shape {shape}, not an .npz archive")
        self._file.seek(0)
        self._archive = zipfile.ZipFile(self._file)
        infos = self._archive.infolist()
        names = [info.filename for info in infos]
        for name in names:
            if name not in MEMBERS:
                raise ValueError(f"unexpected member {name!r} (a model file holds {list(MEMBERS)})")
        if len(set(names)) != len(names):
            raise ValueError("a member appears twice")
        if "config.npy" not in names:
            raise ValueError("there is no config")
        total = sum(info.file_size for info in infos)
        if total > MAX_EXPANSION * os.fstat(self._file.fileno()).st_size + 2**20:
            raise ValueError(f"its members would expand to {total} bytes, more than {MAX_EXPANSION} times the file "
                             "plus 1 MiB")
        self._infos = {info.filename[:-len(".npy")]: info for info in infos}
        self.headers = {name: self._header(info) for name, info in self._infos.items()}
        shape, dtype = self.headers.pop("config")
        if dtype != np.uint8 or len(shape) != 1 or shape[0] > MAX_CONFIG_BYTES:
            raise ValueError(f"the config must be at most {MAX_CONFIG_BYTES} bytes of JSON text, got {dtype} of "
                             f"shape {shape}")
        text = self._read("config").tobytes()
        depth = nesting_depth(text)
        if depth > MAX_CONFIG_DEPTH:
            raise ValueError(f"its config nests deeper than {MAX_CONFIG_DEPTH} levels ({depth})")
        self.config = json.loads(text.decode())

    def _header(self, info):
        """(shape, dtype) of one member, from the first bytes of its ``.npy`` header only."""
        with self._archive.open(info) as member:
            shape, dtype = _npy_header(member, repr(info.filename))
            header_bytes = member.tell()
        if dtype.hasobject:
            raise ValueError(f"{info.filename!r} holds Python objects (fastnn model files hold numbers only)")
        count = math.prod(shape)
        if count > MAX_ELEMENTS:
            raise ValueError(f"{info.filename!r} declares {count} elements, more than {MAX_ELEMENTS}")
        if info.file_size != header_bytes + count * dtype.itemsize:
            raise ValueError(f"{info.filename!r} holds {info.file_size} bytes where its header declares "
                             f"{header_bytes + count * dtype.itemsize}")
        return shape, dtype

    def _read(self, name):
        with self._archive.open(self._infos[name]) as member:
            return np.lib.format.read_array(member, allow_pickle=False)

    def read_arrays(self):
        """Decompress the arrays (every member but the config), by name."""
        return {name: self._guarded(self._read, name) for name in self.headers}

    def _check_config(self):
        config = self.config
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            raise ValueError(f"{shown(self.path)!r} is not a fastnn model file (format marker missing)")
        if config.get("version") != VERSION:
            raise ValueError(f"{shown(self.path)!r} has format version {config.get('version')}, this fastnn reads "
                             f"{VERSION}")


def _npy_header(f, what):
    """(shape, dtype) from the ``.npy`` header at ``f``'s position (``f`` left after it)."""
    version = np.lib.format.read_magic(f)
    if version not in ((1, 0), (2, 0)):
        raise ValueError(f"{what} has .npy format version {version}")
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(f)
    return shape, dtype


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def nesting_depth(text):
    """How deep the arrays and objects of the JSON ``text`` (bytes) nest, counted without parsing
    it (the parser and ``deserialize`` recurse once per level): brackets inside strings aside."""
    codes = np.frombuffer(_JSON_STRING.sub(b"", text), dtype=np.uint8)
    steps = (codes == ord("[")).astype(np.int64) + (codes == ord("{")) - (codes == ord("]")) - (codes == ord("}"))
    return int(np.cumsum(steps).max(initial=0))
