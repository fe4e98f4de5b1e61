"""One engine function per op of the table, plus the few helpers the rules use.

Functions here take the table's attribute names (``axis``, ``keepdims``,
``shape`` ...).  The torch-shaped public API (``dim``, ``keepdim``) lives in
:mod:`gradverify.engine` and calls these.
"""
from __future__ import annotations

import functools

import numpy as np

from gradverify.ops import TABLE

# needs_cotangent: for the table's rules.
from .core import Tensor, apply, fast_function, lift_all, needs_cotangent  # noqa: F401


def _make(op):
    if op.kind in ("unary", "binary") and not op.attrs:
        return fast_function(op)

    def engine_op(*inputs, **attrs):
        for x in inputs:
            if not isinstance(x, Tensor):
                inputs = lift_all(inputs)
                break
        return apply(op, inputs, attrs)

    engine_op.__name__ = op.name
    engine_op.__qualname__ = op.name
    engine_op.__doc__ = op.doc or f"The table's {op.name!r} op on engine tensors."
    return engine_op


for _name, _op in TABLE.items():
    globals()[_name] = _make(_op)


def unsqueeze(x, axis):
    """Insert a size-1 axis at ``axis``."""
    return apply(TABLE["unsqueeze"], (x,), {"axis": axis})


def squeeze(x, axis=None):
    """Remove size-1 axes (only ``axis`` when given)."""
    return apply(TABLE["squeeze"], (x,), {"axis": axis})


def sum_to(x, shape):
    """Sum ``x`` over its broadcast axes down to ``shape``; ``x`` itself when it already has that shape."""
    if x.array.shape == tuple(shape):
        return x
    return apply(TABLE["sum_to"], (x,), {"shape": shape})


def swapaxes(x, a, b):
    """Exchange two axes (a permute)."""
    return apply(TABLE["permute"], (x,), {"axes": _swapped_axes(x.array.ndim, a, b)})


@functools.lru_cache(maxsize=256)
def _swapped_axes(ndim, a, b):
    axes = list(range(ndim or 1))  # a 0-d tensor takes dim 0 and -1 (and stays as it is), as in torch
    axes[a], axes[b] = axes[b], axes[a]
    return tuple(axes[:ndim])


def constant(array):
    """A tensor that does not require grad (masks, one-hot targets, weights)."""
    return Tensor(np.asarray(array))


def zeros_like(x):
    return Tensor(np.zeros_like(x.array))


def ones_like(x):
    return Tensor(np.ones_like(x.array))
