"""What the report ran on: versions, CPU, thread counts, date, command; and which backends are importable."""
from __future__ import annotations

import datetime
import importlib
import os
import platform

import numpy as np

import gradverify

OPTIONAL_BACKENDS = ("torch", "jax")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS")
NOT_INSTALLED = "not installed"
NOT_AVAILABLE = "not available in this build"


def backend_available(name: str) -> bool:
    """False when ``name`` is torch or jax and cannot be imported in this process."""
    if name not in OPTIONAL_BACKENDS:
        return True
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _blas() -> str:
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas['name']} {blas.get('version', '')}".strip()
    except (KeyError, TypeError):
        return "unknown"


def describe(command: str) -> dict:
    """The report header as an ordered mapping of label to text."""
    import matplotlib
    import mpmath
    import pandas

    versions = {
        "gradverify": gradverify.__version__,
        "python": platform.python_version(),
        "numpy": f"{np.__version__} ({_blas()})",
        "mpmath": mpmath.__version__,
        "pandas": pandas.__version__,
        "matplotlib": matplotlib.__version__,
    }
    threads = {"cores": str(os.cpu_count())}
    if backend_available("torch"):
        import torch

        versions["torch"] = torch.__version__
        threads["torch intra-op threads"] = str(torch.get_num_threads())
        threads["torch inter-op threads"] = str(torch.get_num_interop_threads())
    else:
        versions["torch"] = NOT_INSTALLED
    if backend_available("jax"):
        import jax

        versions["jax"] = f"{jax.__version__} ({jax.default_backend()})"
    else:
        versions["jax"] = NOT_INSTALLED
    for variable in THREAD_VARIABLES:
        threads[variable] = os.environ.get(variable, "unset")
    return {
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "CPU": f"{_cpu_model()}, {platform.machine()}, {platform.system()} {platform.release()}, "
        f"1-minute load average {os.getloadavg()[0]:.2f} at the start",
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items()),
        "threads": ", ".join(f"{k} {v}" for k, v in threads.items()),
    }
