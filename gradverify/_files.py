"""Writing files the user owns atomically: a failure leaves the previous file (or none), never a partial one."""
from __future__ import annotations

import os
import pathlib
import tempfile


def atomic_write(path, write_to) -> None:
    """Write through ``write_to(file)`` into a temporary file beside ``path``, then rename it over ``path``."""
    path = pathlib.Path(path)
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with handle:
            write_to(handle)
            handle.flush()
            os.fsync(handle.fileno())
        # Temporary files are private (0600); the result is an ordinary file, readable as the umask allows.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(handle.name, 0o666 & ~umask)
        os.replace(handle.name, path)
    except BaseException:
        pathlib.Path(handle.name).unlink(missing_ok=True)
        raise
