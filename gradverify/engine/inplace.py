"""In-place methods of :class:`Tensor` (``x += y``, ``p.sub_(g, alpha=lr)``, ``x[mask] = 0``, ``zero_()`` ...).

They change the tensor's memory, as PyTorch's do: the tensor keeps its
identity (a parameter updated with ``p -= lr * p.grad`` is still the model's
parameter) and its views see the change.  While gradients are recorded, a
change to a tensor in the graph (``y = x.clone(); y[mask] = 0; y += b``) is
recorded as PyTorch records it: the tensor becomes the node of the out-of-place
op applied to its value before the change.  A leaf that requires grad is
refused, as in PyTorch.  A backward through a node recorded before such a
change (one that read the old values) raises, as PyTorch's version counters
make it.
"""
from __future__ import annotations

import numpy as np

from gradverify.ops import TABLE

from . import api
from . import functional as F
from .core import MODE, Tensor, _next_sequence_number, lift, mark_modified


def _value(x):
    return x.array if isinstance(x, Tensor) else x


def _takes_part(x):
    """Whether ``x`` is recorded into a graph or carries forward-mode tangents right now."""
    if not isinstance(x, Tensor):
        return False
    return (MODE.grad_enabled and x.requires_grad) or (bool(MODE.forward_levels) and x._tangent is not None)


def _must_record(self, name, operands):
    """Whether the change must be recorded in the graph (it is refused on a leaf that requires grad)."""
    if MODE.grad_enabled and self.requires_grad and self._ctx is None:
        raise RuntimeError(
            f"{name}: a leaf tensor that requires grad cannot be changed in place while gradients are recorded; "
            "update it under `with ge.no_grad():`, as in PyTorch"
        )
    return _takes_part(self) or any(_takes_part(x) for x in operands)


def _value_before(t):
    """A tensor standing in ``t``'s place in the graph with a copy of its values before a change."""
    before = Tensor(t.array.copy(), requires_grad=False)
    before.requires_grad, before._ctx, before._tangent = t.requires_grad, t._ctx, t._tangent
    if t._ctx is not None:
        before._seq = t._seq
    return before


def _record(self, recorded, operands, options):
    """Change ``self`` to ``recorded(value before, *operands, **options)``, which engine ops compute and record.

    ``self`` keeps its memory (its views and aliases see the new values) and becomes the result's
    node; the value before the change is a copy, so the rules of the ops that read it stay right.
    """
    before = _value_before(self)
    if self._ctx is not None and self._ctx[0].saves_output:
        mark_modified(before)  # the node that made ``self`` saved it: its backward must refuse, as PyTorch's
    result = recorded(before, *operands, **options)
    if result.array.shape != self.array.shape:
        raise ValueError(f"the result has shape {result.array.shape}, which does not fit in place")
    if result.array.dtype != self.array.dtype:
        if np.can_cast(result.array.dtype, self.array.dtype, casting="same_kind"):
            result = F.astype(result, dtype=self.array.dtype)
        else:
            raise TypeError(f"cannot cast the result of dtype {result.array.dtype} in place")
    np.copyto(self.array, result.array)
    mark_modified(self)
    self.requires_grad, self._ctx, self._tangent = result.requires_grad, result._ctx, result._tangent
    if result._ctx is not None:
        # Numbered after the change, so that the backward of this node does not see it as stale.
        self._seq = _next_sequence_number()


def in_place(name, change, recorded):
    """A method running ``change(array, *operand values, **options)`` on the tensor's own memory.

    While gradients are recorded and the tensor or an operand takes part in the graph, the
    change is ``recorded(value before, *operands, **options)`` computed with engine ops instead.
    """

    def method(self, *operands, **options):
        if not self.array.flags.writeable:
            raise ValueError(f"{name}: this tensor's memory is read-only (a broadcast view, from expand() or "
                             "broadcast_to()); clone() it first")
        try:
            if _must_record(self, name, operands + tuple(options.values())):
                _record(self, recorded, operands, options)
                return self
            change(self.array, *[_value(x) for x in operands], **options)
        except (TypeError, ValueError) as err:
            shapes = ", ".join(str(np.shape(_value(x))) for x in operands)
            # (numpy's casting errors are TypeError subclasses that take other arguments.)
            raise (TypeError if isinstance(err, TypeError) else ValueError)(
                f"{name} on a tensor of shape {self.array.shape} and dtype {self.array.dtype} "
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


def _recorded_binary(function):
    def recorded(before, other, alpha=1):
        return function(before, other if alpha == 1 else other * alpha)

    return recorded


def _filled(before, value):
    """``value`` broadcast to ``before``'s shape: what copy_ and fill_ leave (differentiable in ``value``)."""
    return F.broadcast_to(lift(value, before), shape=before.array.shape)


def _put(before, index, value):
    """``before`` with ``value`` at ``index``: x[index] = value as an op (each side gets its part of the gradient)."""
    chosen = np.zeros(before.array.shape, dtype=bool)
    chosen[index] = True
    target_shape = before.array[index].shape
    if np.count_nonzero(chosen) != int(np.prod(target_shape)):
        raise ValueError("the index repeats an element, so the value written last is not defined for the gradient")
    value = F.broadcast_to(lift(value, before), shape=target_shape)
    return F.where(F.constant(chosen), F.scatter_add(value, index=index, shape=before.array.shape), before)


_ADD, _SUB = _ufunc_in_place(np.add), _ufunc_in_place(np.subtract)
_MUL, _DIV, _POW = _ufunc_in_place(np.multiply), _ufunc_in_place(np.true_divide), _ufunc_in_place(np.power)
_RECORDED_ADD, _RECORDED_SUB = _recorded_binary(api.add), _recorded_binary(api.sub)
_RECORDED_MUL, _RECORDED_DIV = _recorded_binary(api.mul), _recorded_binary(api.div)
_RECORDED_POW = _recorded_binary(api.pow)

IN_PLACE = {
    "add_": in_place("add_", _ADD, _RECORDED_ADD),
    "sub_": in_place("sub_", _SUB, _RECORDED_SUB),
    "mul_": in_place("mul_", _MUL, _RECORDED_MUL),
    "div_": in_place("div_", _DIV, _RECORDED_DIV),
    "pow_": in_place("pow_", _POW, _RECORDED_POW),
    "__iadd__": in_place("+=", _ADD, _RECORDED_ADD),
    "__isub__": in_place("-=", _SUB, _RECORDED_SUB),
    "__imul__": in_place("*=", _MUL, _RECORDED_MUL),
    "__itruediv__": in_place("/=", _DIV, _RECORDED_DIV),
    "__ipow__": in_place("**=", _POW, _RECORDED_POW),
    "clamp_": in_place("clamp_", _clamp, api.clamp),
    "clip_": in_place("clip_", _clamp, api.clamp),
    "copy_": in_place("copy_", lambda array, src: np.copyto(array, src, casting="unsafe"), _filled),
    "fill_": in_place("fill_", lambda array, value: array.fill(value), _filled),
    "zero_": in_place("zero_", lambda array: array.fill(0), lambda before: F.zeros_like(before)),
    "relu_": in_place("relu_", lambda array: np.maximum(array, 0, out=array), api.relu),
}


def _unary_in_place(name):
    forward = TABLE[name].forward

    def change(array):
        np.copyto(array, forward(array), casting="same_kind")

    return in_place(f"{name}_", change, getattr(api, name))


IN_PLACE.update({f"{name}_": _unary_in_place(name) for name in ("exp", "log", "sqrt", "tanh", "sigmoid", "neg", "abs")})
SET_ITEM = in_place("__setitem__", lambda array, index, value: array.__setitem__(index, value), _put)
"""``x[index] = value`` given an index already in numpy's terms."""
