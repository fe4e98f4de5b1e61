"""Independent counterparts of every op in the table, in four backends.

For each op of :data:`gradverify.ops.TABLE` (looked up by ``OpDef.ref``) each
backend module defines a function of the same name and signature as the
table's forward, ``fn(*arrays, **attrs)``:

``torch``   torch tensors in and out, differentiable by autograd and ``torch.func``.
``jax``     jax arrays in and out, differentiable by ``jax.grad``/``jax.jvp``
            (importing it enables float64 in JAX).
``numpy``   plain numpy that also accepts complex input wherever the op is
            analytic, so complex-step differentiation works (branches are
            chosen by the real part).
``mpmath``  numpy object arrays of ``mpmath.mpf`` in and out, for
            high-precision values (see :func:`to_mp` and :func:`from_mp`).

torch and jax are imported only when their backend is first requested.
"""
from __future__ import annotations

import importlib
import math

import numpy as np

BACKENDS = ("torch", "jax", "numpy", "mpmath")

__all__ = ["BACKENDS", "get", "module", "to_backend", "to_numpy", "to_mp", "from_mp", "result_shape"]


def module(backend: str):
    """The module holding ``backend``'s counterparts (imported on first use)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    return importlib.import_module(f"{__name__}.{backend}_ops")


def get(backend: str, op_name: str):
    """The ``backend`` counterpart of the op whose ``ref`` is ``op_name``."""
    mod = module(backend)
    fn = getattr(mod, op_name, None)
    if not callable(fn) or op_name.startswith("_"):
        raise KeyError(f"reference_impls.{backend}_ops has no counterpart for op {op_name!r}")
    return fn


def to_backend(array, backend: str, dps: int = 30):
    """A numpy array as a fresh input of ``backend`` with the same dtype (mpmath: exact, at ``dps`` digits)."""
    module(backend)  # validates the name; importing jax_ops enables float64 before the array is made
    if backend == "torch":
        import torch

        return torch.tensor(np.array(array, order="C"))
    if backend == "jax":
        import jax.numpy as jnp

        return jnp.asarray(array)
    if backend == "mpmath":
        return to_mp(array, dps)
    return np.array(array, copy=True)


def to_numpy(value, dtype=None):
    """A backend's result as a numpy array (mpmath values rounded to ``dtype``, float64 by default)."""
    if type(value).__module__.startswith("torch"):
        value = value.detach().numpy(force=True)
    array = np.asarray(value)
    if array.dtype == object:
        return from_mp(array, np.float64 if dtype is None else dtype)
    return array if dtype is None else array.astype(dtype)


def to_mp(array, dps: int = 30):
    """A floating array as a numpy object array of ``mpmath.mpf`` at ``dps`` digits.

    The conversion is exact (a double fits in 30 digits).  Arrays that are not
    floating (class indices, conditions) are returned unchanged.
    """
    import mpmath

    array = np.asarray(array)
    if array.dtype.kind != "f":
        return array
    with mpmath.workdps(dps):
        flat = [mpmath.mpf(float(v)) for v in array.reshape(-1)]
    out = np.empty(array.shape, dtype=object)
    out.reshape(-1)[:] = flat
    return out


def from_mp(array, dtype=np.float64):
    """An object array of ``mpmath.mpf`` (or a single mpf) rounded to a numpy ``dtype`` array; a complex value
    (the real function is undefined there, e.g. sqrt of a negative) becomes NaN, as numpy gives."""
    import mpmath

    array = np.asarray(array, dtype=object)
    return np.array([math.nan if isinstance(v, mpmath.mpc) else float(v) for v in array.reshape(-1)],
                    dtype=dtype).reshape(array.shape)


def result_shape(numpy_fn, shape, *args, **kwargs):
    """The shape ``numpy_fn`` gives an array of ``shape`` (so backends share numpy's axis rules)."""
    return numpy_fn(np.broadcast_to(np.empty((), dtype=bool), shape), *args, **kwargs).shape
