"""The op namespaces a compiled graph runs on: engine, PyTorch, JAX, numpy and mpmath.

A compiled graph is ``f(ops, *inputs)`` (see :mod:`gradverify.fuzz.graph`);
``ops`` resolves each table op by name: the engine's functions, or the
counterparts in ``reference_impls`` (looked up by ``OpDef.ref``).  The numpy
and mpmath namespaces compute the graph's *mathematical* function: ``astype``
is the identity there, so a float32 graph has an exact reference.
"""
from __future__ import annotations

import functools

import numpy as np

import reference_impls
from gradverify.ops import TABLE


class Ops:
    """``ops.<op name>`` plus ``ops.const(array)`` (a constant) and ``ops.value(x)`` (a testable scalar)."""

    def __init__(self, name, lookup, const, value):
        self.name = name
        self._lookup = lookup
        self.const = const
        self.value = value

    def __getattr__(self, op_name):
        if op_name.startswith("_"):
            raise AttributeError(op_name)
        fn = self._lookup(op_name)
        setattr(self, op_name, fn)
        return fn

    def __repr__(self):
        return f"<{self.name} ops>"


def _reference_lookup(backend, op_name):
    return reference_impls.get(backend, TABLE[op_name].ref)


def _identity(x, dtype):
    return x


def _exact(lookup, op_name):
    return _identity if op_name == "astype" else lookup(op_name)


@functools.lru_cache(maxsize=None)
def namespace(backend: str, exact: bool = False) -> Ops:
    """The op namespace of ``backend``: engine, torch, jax, numpy or mpmath.

    ``exact`` makes ``astype`` the identity (always so for numpy and mpmath):
    the graph's mathematical function, computed at the inputs' precision.
    """
    if exact and backend in ("engine", "torch", "jax"):
        ops = namespace(backend)
        return Ops(f"{backend} (exact)", functools.partial(_exact, ops._lookup), ops.const, ops.value)
    if backend == "engine":
        from gradverify.engine import functional

        return Ops("engine", functools.partial(getattr, functional), functional.constant, lambda x: float(x.data))
    if backend == "torch":
        from gradverify.check.backends import import_torch

        torch = import_torch()
        return Ops("torch", functools.partial(_reference_lookup, "torch"), torch.as_tensor, lambda x: x.detach().item())
    if backend == "jax":
        import jax.numpy as jnp

        # Under jax.vjp/jvp a value is a tracer: comparable in an `if`, but float() would fail.
        return Ops("jax", functools.partial(_reference_lookup, "jax"), jnp.asarray, lambda x: x)
    if backend == "numpy":
        return Ops("numpy", functools.partial(_exact, functools.partial(_reference_lookup, "numpy")), np.asarray,
                   lambda x: float(np.real(x)))
    if backend == "mpmath":
        return Ops("mpmath", functools.partial(_exact, functools.partial(_reference_lookup, "mpmath")),
                   reference_impls.to_mp,
                   lambda x: float(np.asarray(x, dtype=object).item()))
    raise ValueError(f"backend: expected engine, torch, jax, numpy or mpmath, got {backend!r}")


def bind(graph_fn, backend: str, exact: bool = False):
    """``graph_fn`` with ``backend``'s namespace filled in: a function of the inputs alone."""
    ops = namespace(backend, exact)
    return lambda *inputs: graph_fn(ops, *inputs)
