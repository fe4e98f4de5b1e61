"""One engine function per op of the table, plus the few helpers the rules use.

Functions here take the table's attribute names (``axis``, ``keepdims``,
``shape`` ...).  The torch-shaped public API (``dim``, ``keepdim``) lives in
:mod:`gradverify.engine` and calls these.
"""
from __future__ import annotations

import numpy as np

from gradverify.ops import TABLE

from .tensor import Tensor, apply, lift


def _lift_all(inputs):
    like = next((x for x in inputs if isinstance(x, Tensor)), None)
    if like is None:
        like = Tensor(np.asarray(inputs[0]))
    return tuple(lift(x, like) for x in inputs)


def _make(op):
    def engine_op(*inputs, **attrs):
        return apply(op, _lift_all(inputs), attrs)

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


def swapaxes(x, a, b):
    """Exchange two axes (a permute)."""
    axes = list(range(x.ndim))
    axes[a], axes[b] = axes[b], axes[a]
    return apply(TABLE["permute"], (x,), {"axes": tuple(axes)})


def constant(array):
    """A tensor that does not require grad (masks, one-hot targets, weights)."""
    return Tensor(np.asarray(array))


def zeros_like(x):
    return Tensor(np.zeros_like(x.data))


def ones_like(x):
    return Tensor(np.ones_like(x.data))
