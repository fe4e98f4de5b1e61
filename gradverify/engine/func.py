"""Function transforms in the style of ``torch.func``: grad, grad_and_value, vjp, jvp, jacrev, jacfwd, hessian, hvp,
and ``functional_call``.

grad, grad_and_value, value_and_grad, jacrev and vjp take pytrees as torch.func does: an argument they
differentiate may be a tensor or a dict, list or tuple of them nested to any depth (``dict(model.named_parameters())``),
and its gradient comes back in the same arrangement.
"""
from __future__ import annotations

import contextlib
import itertools
from collections import OrderedDict

import numpy as np

from . import autograd
from .api import stack, tensor, zeros_like
from .core import MODE, Tensor


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
            leaf = Tensor(a.array if isinstance(a, Tensor) else tensor(a).array, requires_grad=True)
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
    """``grad(fn)(*args)``: the gradient of a scalar-valued ``fn`` with respect to ``args[argnums]``.

    Each differentiated argument may be a pytree (dicts, lists and tuples of tensors); its gradient has its arrangement.
    """

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
    args, wanted, nested, arranged = _differentiable_args(args, argnums)
    with _enabled():
        result = fn(*args)
    value, aux = result if has_aux else (result, None)
    if not isinstance(value, Tensor) or value.array.size != 1:
        raise RuntimeError("grad: the function must return a one-element tensor")
    grads = _gradients(value, wanted, None, create_graph=nested)
    return value, arranged(zeros_like(w) if g is None else g for g, w in zip(grads, wanted)), aux


def _gradients(output, inputs, cotangent, **options):
    """autograd.grad of ``output``; None for every input when ``output`` does not depend on any (a linear
    function's second derivative), which the transforms return as zeros, as torch.func does."""
    if isinstance(output, Tensor) and not output.requires_grad:
        return (None,) * len(inputs)
    return autograd.grad(output, inputs, cotangent, allow_unused=True, **options)


def _differentiable_args(args, argnums):
    """``args`` with the leaves of the ``argnums`` entries replaced by inputs that require grad.

    Returns those args, the inputs, whether an enclosing transform differentiates through them
    (as :func:`_as_inputs`), and ``arranged(values)``, which arranges one value per input as the
    ``argnums`` entries are arranged (the entry itself for an int ``argnums``, else a tuple of them).
    """
    nums = _argnums_tuple(argnums, len(args))
    args = list(args)
    trees = [args[k] for k in nums]
    wanted, nested = _as_inputs([leaf for tree in trees for leaf in _leaves(tree)])
    inputs = iter(wanted)
    for k, tree in zip(nums, trees):
        args[k] = _rebuilt(tree, inputs)

    def arranged(values):
        values = iter(values)
        trees_of_values = tuple(_rebuilt(tree, values) for tree in trees)
        return trees_of_values[0] if isinstance(argnums, int) else trees_of_values

    return args, wanted, nested, arranged


def _leaves(tree):
    """The leaves of a pytree of dicts, lists and tuples, in order (a tensor or a number is one leaf)."""
    if isinstance(tree, dict):
        return [leaf for value in tree.values() for leaf in _leaves(value)]
    if isinstance(tree, (list, tuple)):
        return [leaf for item in tree for leaf in _leaves(item)]
    return [tree]


def _rebuilt(tree, leaves):
    """``tree`` with its leaves replaced, in order, by the next items of the iterator ``leaves``."""
    if isinstance(tree, dict):
        return (OrderedDict if isinstance(tree, OrderedDict) else dict)(
            (key, _rebuilt(value, leaves)) for key, value in tree.items())
    if isinstance(tree, (list, tuple)):
        items = [_rebuilt(item, leaves) for item in tree]
        return type(tree)(*items) if hasattr(tree, "_fields") else type(tree)(items)
    return next(leaves)


class _enabled:
    def __enter__(self):
        self.saved = MODE.grad_enabled
        MODE.grad_enabled = True

    def __exit__(self, *exc):
        MODE.grad_enabled = self.saved


def vjp(fn, *primals):
    """``(output, vjp_fn)`` where ``vjp_fn(cotangent)`` returns one cotangent per primal, arranged as the primal."""
    args, inputs, nested, arranged = _differentiable_args(primals, tuple(range(len(primals))))
    with _enabled():
        output = fn(*args)

    def vjp_fn(cotangent):
        grads = _gradients(output, inputs, cotangent, retain_graph=True, create_graph=nested)
        return arranged(zeros_like(x) if g is None else g for g, x in zip(grads, inputs))

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
        # Overflow warnings off, as in the backward pass (see run_backward): here once per call, not per op.
        with np.errstate(over="ignore"):
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
        args, wanted, nested, arranged = _differentiable_args(args, argnums)
        with _enabled():
            out = fn(*args)
        rows = [[] for _ in wanted]
        flat = out.reshape(-1)
        for i in range(flat.shape[0]):
            gs = _gradients(flat[i], wanted, None, retain_graph=True, create_graph=nested)
            for r, g, w in zip(rows, gs, wanted):
                r.append(zeros_like(w) if g is None else g)
        return arranged(stack(r).reshape(out.shape + w.shape) for r, w in zip(rows, wanted))

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


_MISSING = object()  # the place of a name a module does not have


def functional_call(module, parameter_and_buffer_dicts, args=None, kwargs=None, *, tie_weights=True, strict=False):
    """``module(*args, **kwargs)`` with its parameters and buffers replaced by the given tensors (torch.func's).

    ``parameter_and_buffer_dicts`` maps dotted names (``'0.weight'``, as ``named_parameters()``) to tensors,
    or is a sequence of such dicts with distinct keys.  The module's own tensors are put back afterwards,
    also when the call raises, so ``grad(lambda p: loss(functional_call(model, p, (x,))))(params)`` differentiates
    with respect to ``params`` and leaves the model as it was.  ``args`` is a tuple of arguments or one argument.
    With ``tie_weights`` a tensor given for one name of a tied parameter or buffer serves all its names
    (different tensors for them raise ValueError); with ``strict`` the names must be exactly the module's
    (RuntimeError otherwise).  A name the module lacks becomes an attribute during the call.  A value the
    module assigns to a given name during the call (a buffer it replaces) is written back into a given dict.
    """
    given = _merged(parameter_and_buffer_dicts)
    named = _untied(module, given) if tie_weights else given
    if strict:
        _check_names(module, named)
    if args is None:
        args = ()
    elif not isinstance(args, tuple):
        args = (args,)
    with _reparametrized(module, named, given):
        return module(*args, **(kwargs or {}))


def _merged(parameter_and_buffer_dicts):
    if isinstance(parameter_and_buffer_dicts, dict):
        return parameter_and_buffer_dicts
    if not isinstance(parameter_and_buffer_dicts, (list, tuple)) or not all(
        isinstance(d, dict) for d in parameter_and_buffer_dicts
    ):
        raise ValueError("parameter_and_buffer_dicts: expected a dict, or a list or tuple of dicts, got "
                         f"{type(parameter_and_buffer_dicts).__name__}")
    names = [name for d in parameter_and_buffer_dicts for name in d]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"{repeated} appeared in multiple dictionaries; behavior of functional call is ambiguous")
    return {name: value for d in parameter_and_buffer_dicts for name, value in d.items()}


def _all_named_tensors(module):
    return itertools.chain(module.named_parameters(remove_duplicate=False),
                           module.named_buffers(remove_duplicate=False))


def _untied(module, named):
    """``named`` with the value given for one name of a tied tensor set for all of its names."""
    names_of = {}
    for name, t in _all_named_tensors(module):
        names_of.setdefault(id(t), []).append(name)
    untied = dict(named)
    for names in names_of.values():
        given = [name for name in names if name in named]
        if len({id(named[name]) for name in given}) > 1:
            raise ValueError(f"functional_call got multiple values for keys {sorted(names)}, which are tied. "
                             "Consider using tie_weights=False")
        if given and len(names) > 1:
            untied.update((name, named[given[0]]) for name in names)
    return untied


def _check_names(module, named):
    valid = {name for name, _ in _all_named_tensors(module)}
    unexpected, missing = sorted(set(named) - valid), sorted(valid - set(named))
    errors = ([f"Unexpected key(s): {', '.join(map(repr, unexpected))}."] if unexpected else []) + (
        [f"Missing key(s): {', '.join(map(repr, missing))}."] if missing else [])
    if errors:
        raise RuntimeError(f"Error(s) in reparametrizing for {type(module).__name__}:\n\t" + "\n\t".join(errors))


@contextlib.contextmanager
def _reparametrized(module, named, given):
    originals = {}
    try:
        for name, value in named.items():
            originals[name] = _swap(module, name, value)
        yield
    finally:
        for name, original in reversed(originals.items()):
            current = _swap(module, name, original)
            if name in given:
                given[name] = current


def _swap(module, dotted_name, value):
    """Put ``value`` in the place of ``module``'s member ``dotted_name`` and return what was there.

    ``_MISSING`` stands for a member that is not there: swapped out, it is removed.
    """
    path, _, name = dotted_name.rpartition(".")
    owner = module
    for part in path.split(".") if path else ():
        child = owner._modules.get(part)
        if child is None:
            raise AttributeError(f"{type(owner).__name__} has no attribute `{part}`")
        owner = child
    if value is not _MISSING and value is not None and not isinstance(value, Tensor):
        raise TypeError(f"{dotted_name}: expected a Tensor, got {type(value).__name__}")
    registry = next((r for r in (owner._parameters, owner._buffers) if name in r), None)
    if registry is not None:
        original = registry[name]
        registry[name] = value
    else:
        original = getattr(owner, name, _MISSING)
        if original is not _MISSING and original is not None and not isinstance(original, Tensor):
            raise TypeError(f"attribute `{name}`: {original!r} is not an instance of Tensor")
    if value is _MISSING:
        object.__delattr__(owner, name)
    else:
        object.__setattr__(owner, name, value)
    return original
