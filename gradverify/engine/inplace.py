"""In-place methods of :class:`Tensor` (``x += y``, ``p.sub_(g, alpha=lr)``, ``x[mask] = 0``, ``zero_()`` ...).

They change the tensor's memory, as PyTorch's do: the tensor keeps its
identity (a parameter updated with ``p -= lr * p.grad`` is still the model's
parameter) and its views see the change.  The engine records no in-place
operation, so while gradients are recorded they are refused for tensors that
take part in the graph (a leaf that requires grad is refused by PyTorch too);
under ``ge.no_grad()`` they are always allowed.  A backward through a node
recorded before such a change raises, as PyTorch's version counters make it.
"""
from __future__ import annotations

import numpy as np

from .tensor import MODE, Tensor, mark_modified


def _value(x):
    return x.data if isinstance(x, Tensor) else x


def _takes_part(x):
    """Whether ``x`` is recorded into a graph or carries forward-mode tangents right now."""
    if not isinstance(x, Tensor):
        return False
    return (MODE.grad_enabled and x.requires_grad) or (bool(MODE.forward_levels) and x._tangent is not None)


def _check_allowed(self, name, operands):
    if MODE.grad_enabled and self.requires_grad and self._ctx is None:
        raise RuntimeError(
            f"{name}: a leaf tensor that requires grad cannot be changed in place while gradients are recorded; "
            "update it under `with ge.no_grad():`, as in PyTorch"
        )
    if _takes_part(self) or any(_takes_part(x) for x in operands):
        raise RuntimeError(
            f"{name}: the engine does not record in-place operations on tensors that take part in a graph; "
            "write the out-of-place form (y = y + x) or run it under `with ge.no_grad():`"
        )


def in_place(name, change):
    """A method running ``change(array, *operand values, **options)`` on the tensor's own memory."""

    def method(self, *operands, **options):
        _check_allowed(self, name, operands + tuple(options.values()))
        if not self.data.flags.writeable:
            raise ValueError(f"{name}: this tensor's memory is read-only (a broadcast view, from expand() or "
                             "broadcast_to()); clone() it first")
        try:
            change(self.data, *[_value(x) for x in operands], **options)
        except (TypeError, ValueError) as err:
            shapes = ", ".join(str(np.shape(_value(x))) for x in operands)
            # (numpy's casting errors are TypeError subclasses that take other arguments.)
            raise (TypeError if isinstance(err, TypeError) else ValueError)(
                f"{name} on a tensor of shape {self.data.shape} and dtype {self.data.dtype} "
                f"(operands of shape {shapes or 'none'}): {err}"
            ) from None
        mark_modified(self)
        return self

    method.__name__ = name
    method.__doc__ = f"In-place {name}, as torch.Tensor.{name}; returns the tensor."
    return method


def _ufunc_in_place(ufunc):
    # same_kind: a float result is never truncated into an integer tensor (PyTorch raises there too).
    def change(array, other, alpha=1):
        ufunc(array, other if alpha == 1 else np.multiply(other, alpha), out=array, casting="same_kind")

    return change


def _clamp(array, min=None, max=None):
    if min is None and max is None:
        raise ValueError("at least one of min and max must be given")
    np.clip(array, _value(min), _value(max), out=array)


_ADD, _SUB = _ufunc_in_place(np.add), _ufunc_in_place(np.subtract)
_MUL, _DIV, _POW = _ufunc_in_place(np.multiply), _ufunc_in_place(np.true_divide), _ufunc_in_place(np.power)

IN_PLACE = {
    "add_": in_place("add_", _ADD),
    "sub_": in_place("sub_", _SUB),
    "mul_": in_place("mul_", _MUL),
    "div_": in_place("div_", _DIV),
    "pow_": in_place("pow_", _POW),
    "__iadd__": in_place("+=", _ADD),
    "__isub__": in_place("-=", _SUB),
    "__imul__": in_place("*=", _MUL),
    "__itruediv__": in_place("/=", _DIV),
    "__ipow__": in_place("**=", _POW),
    "clamp_": in_place("clamp_", _clamp),
    "clip_": in_place("clip_", _clamp),
    "copy_": in_place("copy_", lambda array, src: np.copyto(array, src, casting="unsafe")),
    "fill_": in_place("fill_", lambda array, value: array.fill(value)),
    "zero_": in_place("zero_", lambda array: array.fill(0)),
}
SET_ITEM = in_place("__setitem__", lambda array, index, value: array.__setitem__(index, value))
"""``x[index] = value`` given an index already in numpy's terms."""
