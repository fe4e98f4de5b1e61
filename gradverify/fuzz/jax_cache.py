"""A persistent XLA compilation cache for the JAX oracle.

JAX compiles every primitive for every new shape it sees, and random graphs
keep showing it new shapes: in a fresh process, compilation dominates a
campaign.  With this cache the compiled programs survive the process, so a
second campaign (or a CI job restoring the directory) reuses them.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

ENVIRONMENT_VARIABLE = "GRADVERIFY_JAX_CACHE"


def directory() -> Path:
    """``$GRADVERIFY_JAX_CACHE``, else ``$XDG_CACHE_HOME/gradverify/jax`` (``~/.cache`` by default)."""
    if os.environ.get(ENVIRONMENT_VARIABLE):
        return Path(os.environ[ENVIRONMENT_VARIABLE])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gradverify" / "jax"


def enable() -> Path:
    """Turn the persistent cache on for this process (every compiled program is kept); returns its directory.

    Raises OSError naming the folder and the variable that chose it when the folder cannot be made or written.
    """
    import jax

    path = directory()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        chosen_by = ENVIRONMENT_VARIABLE if os.environ.get(ENVIRONMENT_VARIABLE) else "XDG_CACHE_HOME or HOME"
        raise OSError(err.errno, f"{err.strerror} (the JAX compilation cache, chosen by ${chosen_by})",
                      err.filename or str(path)) from None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    return path
