"""Function transforms in the style of ``torch.func``: grad, grad_and_value, vjp, jvp, jacrev, jacfwd, hessian, hvp."""
from __future__ import annotations

import itertools

import numpy as np

from . import autograd
from .api import stack, tensor, zeros_like
from .tensor import MODE, Tensor


def _as_inputs(args):
    """Inputs that require grad, and whether an enclosing transform differentiates through them.

    Tensors that already require grad (from an enclosing transform) stay
    connected, so the result must keep its graph (``create_graph``); forward
    tangents stay attached for forward-over-reverse.
    """
    out, nested = [], bool(MODE.forward_levels)
    for a in args:
        if isinstance(a, Tensor) and a.requires_grad:
            out.append(a)
            nested = True
        else:
            leaf = Tensor(a.data if isinstance(a, Tensor) else tensor(a).data, requires_grad=True)
            leaf._tangent = dict(a._tangent) if isinstance(a, Tensor) and a._tangent else None
            out.append(leaf)
    return out, nested


def _argnums_tuple(argnums, n):
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    for k in nums:
        if not -n <= k < n:
            raise ValueError(f"argnums: {k} is out of range for a function called with {n} arguments")
    return nums


def grad(fn, argnums=0, has_aux=False):
    """``grad(fn)(*args)``: the gradient of a scalar-valued ``fn`` with respect to ``args[argnums]``."""

    def grad_fn(*args):
        value, grads, aux = _value_and_grad(fn, argnums, has_aux, args)
        return (grads, aux) if has_aux else grads

    return grad_fn


def value_and_grad(fn, argnums=0, has_aux=False):
    """Like :func:`grad`, returning ``(value, gradient)``."""

    def vg(*args):
        value, grads, aux = _value_and_grad(fn, argnums, has_aux, args)
        return ((value, aux), grads) if has_aux else (value, grads)

    return vg


def grad_and_value(fn, argnums=0, has_aux=False):
    """Like :func:`grad`, returning ``(gradient, value)`` (``(gradient, (value, aux))`` with ``has_aux``), as torch.func."""

    def gv(*args):
        value, grads, aux = _value_and_grad(fn, argnums, has_aux, args)
        return (grads, (value, aux)) if has_aux else (grads, value)

    return gv


def _value_and_grad(fn, argnums, has_aux, args):
    args, wanted, nested = _differentiable_args(args, argnums)
    with _enabled():
        result = fn(*args)
    value, aux = result if has_aux else (result, None)
    if not isinstance(value, Tensor) or value.data.size != 1:
        raise RuntimeError("grad: the function must return a one-element tensor")
    grads = autograd.grad(value, wanted, create_graph=nested, allow_unused=True)
    grads = tuple(zeros_like(w) if g is None else g for g, w in zip(grads, wanted))
    return value, grads[0] if isinstance(argnums, int) else grads, aux


def _differentiable_args(args, argnums):
    """``args`` with the ``argnums`` entries replaced by inputs that require grad."""
    nums = _argnums_tuple(argnums, len(args))
    args = list(args)
    wanted, nested = _as_inputs([args[k] for k in nums])
    for k, w in zip(nums, wanted):
        args[k] = w
    return args, wanted, nested


class _enabled:
    def __enter__(self):
        self.saved = MODE.grad_enabled
        MODE.grad_enabled = True

    def __exit__(self, *exc):
        MODE.grad_enabled = self.saved


def vjp(fn, *primals):
    """``(output, vjp_fn)`` where ``vjp_fn(cotangent)`` returns one cotangent per primal."""
    inputs, nested = _as_inputs(primals)
    with _enabled():
        output = fn(*inputs)

    def vjp_fn(cotangent):
        grads = autograd.grad(output, inputs, cotangent, retain_graph=True, create_graph=nested, allow_unused=True)
        return tuple(zeros_like(x) if g is None else g for g, x in zip(grads, inputs))

    return output, vjp_fn


_jvp_ids = itertools.count(1)


def jvp(fn, primals, tangents):
    """Forward mode: ``(fn(*primals), J · tangents)`` with ``torch.func.jvp``'s contract.

    Composes with itself (jvp of jvp) and with the reverse-mode transforms in
    either order (jvp of grad, grad of jvp).
    """
    primals, tangents = tuple(primals), tuple(tangents)
    if len(primals) != len(tangents):
        raise ValueError(f"jvp: {len(primals)} primals but {len(tangents)} tangents")
    # A fresh id, not the nesting depth: tangents left on tensors by an earlier call never match a later one.
    level = next(_jvp_ids)
    inputs = []
    for i, (p, t) in enumerate(zip(primals, tangents)):
        # An alias, recorded like any op: the caller's tensor gets no tangent, gradients of an enclosing
        # grad still flow back to it, and the tangents of enclosing jvp calls carry over.
        x = _alias(p if isinstance(p, Tensor) else tensor(p))
        t = t if isinstance(t, Tensor) else tensor(t, dtype=x.dtype)
        if t.shape != x.shape:
            raise ValueError(f"tangents[{i}] has shape {t.shape} but primals[{i}] has shape {x.shape}")
        x._tangent = {**(x._tangent or {}), level: t}
        inputs.append(x)
    outer = MODE.forward_levels
    MODE.forward_levels = outer + (level,)
    try:
        output = fn(*inputs)
    finally:
        MODE.forward_levels = outer
    if not isinstance(output, Tensor):
        raise TypeError("jvp: the function must return one engine Tensor")
    tangent = None if output._tangent is None else output._tangent.pop(level, None)
    return output, zeros_like(output) if tangent is None else tangent


def _alias(x):
    """A graph-connected alias of ``x`` that can carry its own tangents."""
    return x.reshape(x.shape)


def jacrev(fn, argnums=0):
    """Jacobian by reverse mode: one VJP per output element."""

    def jac(*args):
        args, wanted, nested = _differentiable_args(args, argnums)
        with _enabled():
            out = fn(*args)
        rows = [[] for _ in wanted]
        flat = out.reshape(-1)
        for i in range(flat.shape[0]):
            gs = autograd.grad(flat[i], wanted, retain_graph=True, create_graph=nested, allow_unused=True)
            for r, g, w in zip(rows, gs, wanted):
                r.append(zeros_like(w) if g is None else g)
        jacs = tuple(stack(r).reshape(out.shape + w.shape) for r, w in zip(rows, wanted))
        return jacs[0] if isinstance(argnums, int) else jacs

    return jac


def jacfwd(fn, argnums=0):
    """Jacobian by forward mode: one JVP per input element."""

    def jac(*args):
        nums = _argnums_tuple(argnums, len(args))
        jacs = []
        base = [a if isinstance(a, Tensor) else tensor(a) for a in args]
        for k in nums:
            x = base[k]
            cols = []
            for j in range(int(np.prod(x.shape, dtype=np.int64))):
                e = np.zeros(x.shape, dtype=x.dtype)
                e.reshape(-1)[j] = 1.0
                tangents = [zeros_like(a) for a in base]
                tangents[k] = Tensor(e)
                out, col = jvp(fn, base, tangents)
                cols.append(col)
            jacs.append(stack(cols, dim=-1).reshape(out.shape + x.shape))
        return jacs[0] if isinstance(argnums, int) else tuple(jacs)

    return jac


def hessian(fn, argnums=0):
    """Hessian of a scalar function (reverse over reverse)."""
    return jacrev(grad(fn, argnums), argnums)


def hvp(fn, primals, tangents):
    """``(fn(*primals), H · tangents)``: forward-over-reverse Hessian-vector product."""
    primals, tangents = tuple(primals), tuple(tangents)
    value = fn(*primals)
    gradient = grad(fn, argnums=tuple(range(len(primals))))
    _, product = jvp(lambda *xs: _flat_concat(gradient(*xs)), primals, tangents)
    return value, _split_like(product, primals)


def _flat_concat(tensors):
    from .api import cat

    return cat([t.reshape(-1) for t in tensors])


def _split_like(flat, like):
    pieces, start = [], 0
    for p in like:
        n = int(np.prod(np.shape(p), dtype=np.int64))
        pieces.append(flat[start : start + n].reshape(np.shape(p)))
        start += n
    return tuple(pieces)
