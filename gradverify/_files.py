"""Files the user names: written atomically, checked before the work that fills them, read with bounded memory.

A failed or killed write leaves the previous file (or none), never a partial one; the temporary file of a
writer killed with ``kill -9`` is removed by the next writer to the same path.  I/O failures stay
:class:`OSError` with the path set, so a command line can print one line naming the path and the cause
(:func:`describe`).
"""
from __future__ import annotations

import errno
import os
import pathlib
import tempfile
import time
import zipfile

import numpy as np

try:
    import fcntl
except ImportError:  # not POSIX: no flock, so leftovers of killed writers stay
    fcntl = None

ARRAY_FLOOR_BYTES = 16 * 2**20
ARRAY_EXPANSION_LIMIT = 64
"""An array read from a zip member may declare at most max(ARRAY_FLOOR_BYTES, ARRAY_EXPANSION_LIMIT x the
member's stored bytes) unless large arrays are allowed: deflate expands honest float data by far less, while a
crafted member can declare terabytes in a few bytes."""


def describe(err: OSError, what: str = "") -> str:
    """One line: ``what PATH: cause`` (``cause`` from the OS, e.g. "No space left on device")."""
    path = err.filename if err.filename is not None else ""
    cause = err.strerror or str(err)
    return " ".join(part for part in (what, f"{path}:" if path != "" else "") if part) + f" {cause}".rstrip()


def _os_error(code: int, path, cause: str | None = None) -> OSError:
    return OSError(code, cause or os.strerror(code), str(path))


def check_output(path) -> pathlib.Path:
    """Raise OSError unless a file can be written at ``path``; called before the work whose report goes there.

    Checks that the name is not empty or too long, that its folder exists and takes new files, and that
    ``path`` is not a folder.  Nothing is created or changed.
    """
    if str(path) == "":
        raise _os_error(errno.ENOENT, "''", "an empty path names no file")
    path = pathlib.Path(path)
    if path.is_dir():
        raise _os_error(errno.EISDIR, path, "is a folder, expected a file")
    folder = path.parent
    if not folder.is_dir():
        raise _os_error(errno.ENOTDIR if folder.exists() else errno.ENOENT, path,
                        f"its folder {folder} {'is not a folder' if folder.exists() else 'does not exist'}")
    if len(os.fsencode(path.name)) > os.pathconf(folder, "PC_NAME_MAX"):
        raise _os_error(errno.ENAMETOOLONG, path)
    try:  # the folder takes new files (permissions, read-only mounts)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise _os_error(err.errno or errno.EACCES, path, f"its folder {folder} takes no new files: {err.strerror}") \
            from None
    if path.exists():
        with open(path, "ab"):
            pass
    return path


def atomic_write(path, write_to) -> None:
    """Write through ``write_to(file)`` into a temporary file beside ``path``, then rename it over ``path``.

    Before writing, temporary files of this same ``path`` that are older than this writer and that no
    live writer holds (their writer was killed) are removed.
    """
    path = pathlib.Path(path)
    started = time.time()
    try:
        handle = _held_temporary(path)
    except OSError as err:
        raise _naming(err, path) from err
    try:
        remove_leftovers(path.parent, _temporary_prefix(path), started)
        with handle:
            write_to(handle)
            handle.flush()
            os.fsync(handle.fileno())
            # Temporary files are private (0600); the result is an ordinary file, readable as the umask allows.
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(handle.name, 0o666 & ~umask)
            os.replace(handle.name, path)
    except BaseException as err:
        pathlib.Path(handle.name).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise _naming(err, path) from err
        raise


def _naming(err: OSError, path: pathlib.Path) -> OSError:
    """``err`` about ``path`` (the file the caller named), not about a temporary file or no file."""
    if err.filename == str(path):
        return err
    if err.errno:
        return OSError(err.errno, err.strerror or str(err), str(path))
    named = OSError(str(err))
    named.filename, named.strerror = str(path), str(err)
    return named


def write_text(path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda f: f.write(text.encode()))


def _temporary_prefix(path: pathlib.Path) -> str:
    return f".{path.name}."


def _held_temporary(path: pathlib.Path):
    """A new temporary file beside ``path``, flock-ed for as long as it is open (it marks a live writer)."""
    while True:
        handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=_temporary_prefix(path), suffix=".tmp",
                                             delete=False)
        if fcntl is None:
            return handle
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:  # a cleaner may have taken the file between its creation and the lock: then start again
            if os.stat(handle.name).st_ino == os.fstat(handle.fileno()).st_ino:
                return handle
        except FileNotFoundError:
            pass
        handle.close()


def remove_leftovers(folder: pathlib.Path, prefix: str, started: float) -> None:
    """Remove the temporary files ``folder/PREFIX*.tmp`` older than ``started`` that no live writer holds."""
    if fcntl is None:
        return
    for entry in os.scandir(folder):
        if not (entry.name.startswith(prefix) and entry.name.endswith(".tmp")):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_mtime >= started:
                continue
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while its writer lives
            if os.stat(entry.path).st_ino == os.fstat(fd).st_ino:
                os.unlink(entry.path)
        except OSError:
            pass
        finally:
            os.close(fd)


def _expansion_limit(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[int, int]:
    """``(stored bytes, the most bytes the member may expand to)``; the zip directory's sizes are the file's word."""
    archive.fp.seek(0, os.SEEK_END)
    stored = min(info.compress_size, archive.fp.tell())
    return stored, max(ARRAY_FLOOR_BYTES, ARRAY_EXPANSION_LIMIT * stored)


def _too_large(name: str, stored: int, declared: int, limit: int) -> ValueError:
    return ValueError(f"{name} expands {stored} stored bytes into {declared} bytes, over the limit of {limit} "
                      f"(max({ARRAY_FLOOR_BYTES}, {ARRAY_EXPANSION_LIMIT} x stored)); allow large arrays to read it")


def read_member(archive: zipfile.ZipFile, name: str, allow_large: bool = False) -> bytes:
    """The bytes of ``archive``'s member ``name``; ValueError if it expands past the limit (unless ``allow_large``)."""
    info = archive.getinfo(name)
    stored, limit = _expansion_limit(archive, info)
    if not allow_large and info.file_size > limit:
        raise _too_large(name, stored, info.file_size, limit)
    return archive.read(info)


def read_npy_member(archive: zipfile.ZipFile, name: str, allow_large: bool = False) -> np.ndarray:
    """The array stored in ``archive``'s member ``name`` (an ``.npy``), read without pickle.

    Raises ValueError, before allocating anything, when the header declares more bytes than the member
    holds, or more than ``max(ARRAY_FLOOR_BYTES, ARRAY_EXPANSION_LIMIT x its stored size)`` unless
    ``allow_large``: a crafted file never becomes a MemoryError or a decompression bomb.
    """
    info = archive.getinfo(name)
    stored, limit = _expansion_limit(archive, info)
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in readers:
            raise ValueError(f"{name} is an .npy of version {version}, expected 1.0 or 2.0")
        shape, _, dtype = readers[version](member)
        header = member.tell()
    if dtype.hasobject:
        raise ValueError(f"{name} holds Python objects, which are read only through pickle")
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if declared > info.file_size - header:
        raise ValueError(f"{name} declares {declared} bytes of data (shape {shape}, {dtype}) but holds "
                         f"{info.file_size - header}")
    if not allow_large and declared > limit:
        raise _too_large(name, stored, declared, limit)
    with archive.open(info) as member:
        return np.lib.format.read_array(member, allow_pickle=False)
