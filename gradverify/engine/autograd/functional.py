"""``ge.autograd.functional``: jacobian, hessian, vjp, jvp, hvp and vhp with torch.autograd.functional's
signatures and return conventions, built on :mod:`gradverify.engine.func`."""
from __future__ import annotations

from .. import func
from ..api import ones_like
from ..core import Tensor


def _as_tuple(value, argname):
    """``value`` as a tuple of tensors, and whether it was one tensor (results then come back unwrapped)."""
    is_tensor = isinstance(value, Tensor)
    items = (value,) if is_tensor else tuple(value)
    for item in items:
        if not isinstance(item, Tensor):
            raise TypeError(f"{argname}: expected a Tensor or a tuple of Tensors, got {type(item).__name__}")
    return items, is_tensor


def _check_strict(strict):
    if strict:
        raise NotImplementedError("strict=True is not supported: the engine does not check for independent outputs")


def _finish(tensors, create_graph, unwrap):
    """Results as torch returns them: cut from the graph unless ``create_graph``, one tensor when the input was."""
    tensors = tuple(t if create_graph else t.detach() for t in tensors)
    return tensors[0] if unwrap else tensors


def _cotangents(v, like, argname):
    """``v`` as a tuple matching ``like``; None only when ``like`` is one single-element tensor."""
    if v is None:
        if len(like) != 1 or like[0].array.size != 1:
            raise RuntimeError(f"{argname}: may be None only when there is a single one-element tensor")
        return (ones_like(like[0]),)
    items, _ = _as_tuple(v, argname)
    if len(items) != len(like) or any(a.shape != b.shape for a, b in zip(items, like)):
        raise RuntimeError(f"{argname}: expected shapes {[t.shape for t in like]}, got {[t.shape for t in items]}")
    return items


def _single_output(fn, name):
    def call(*xs):
        out = fn(*xs)
        if not isinstance(out, Tensor):
            raise TypeError(f"{name}: func must return one Tensor, got {type(out).__name__}")
        return out

    return call


def vjp(func_, inputs, v=None, create_graph=False, strict=False):
    """``(func(*inputs), v · J)``, as torch.autograd.functional.vjp."""
    _check_strict(strict)
    inputs, unwrap = _as_tuple(inputs, "inputs")
    output, vjp_fn = func.vjp(_single_output(func_, "vjp"), *inputs)
    products = vjp_fn(_cotangents(v, (output,), "v")[0])
    return _finish((output,), create_graph, True), _finish(products, create_graph, unwrap)


def jvp(func_, inputs, v=None, create_graph=False, strict=False):
    """``(func(*inputs), J · v)``, as torch.autograd.functional.jvp."""
    _check_strict(strict)
    inputs, _ = _as_tuple(inputs, "inputs")
    output, product = func.jvp(_single_output(func_, "jvp"), inputs, _cotangents(v, inputs, "v"))
    return _finish((output,), create_graph, True), _finish((product,), create_graph, True)


def jacobian(func_, inputs, create_graph=False, strict=False, vectorize=False, strategy="reverse-mode"):
    """The Jacobian of ``func`` at ``inputs``, as torch.autograd.functional.jacobian.

    One tensor of shape ``output.shape + input.shape`` for one input and one output; a tuple over
    inputs, over outputs, or of tuples (outputs, then inputs) otherwise.
    """
    _check_strict(strict)
    if strategy not in ("reverse-mode", "forward-mode"):
        raise ValueError(f"strategy: expected 'reverse-mode' or 'forward-mode', got {strategy!r}")
    inputs, unwrap_inputs = _as_tuple(inputs, "inputs")
    outputs, unwrap_outputs = _as_tuple(func_(*inputs), "func's output")
    transform = func.jacrev if strategy == "reverse-mode" else func.jacfwd
    argnums = tuple(range(len(inputs)))
    rows = []
    for k in range(len(outputs)):
        def output_k(*xs, k=k):
            return _as_tuple(func_(*xs), "func's output")[0][k]

        rows.append(_finish(transform(output_k, argnums=argnums)(*inputs), create_graph, unwrap_inputs))
    return rows[0] if unwrap_outputs else tuple(rows)


def hessian(func_, inputs, create_graph=False, strict=False, vectorize=False, outer_jacobian_strategy="reverse-mode"):
    """The Hessian of a scalar ``func``, as torch.autograd.functional.hessian.

    One tensor for one input; for a tuple of inputs a tuple of tuples, block (i, j) of shape
    ``inputs[i].shape + inputs[j].shape``.
    """
    _check_strict(strict)
    inputs, unwrap = _as_tuple(inputs, "inputs")
    scalar = _single_output(func_, "hessian")

    def gradient(*xs):
        return func.grad(scalar, argnums=tuple(range(len(xs))))(*xs)

    blocks = jacobian(gradient, inputs, create_graph=create_graph, strategy=outer_jacobian_strategy)
    return blocks[0][0] if unwrap else blocks


def vhp(func_, inputs, v=None, create_graph=False, strict=False):
    """``(func(*inputs), v · H)`` for a scalar ``func``, as torch.autograd.functional.vhp."""
    _check_strict(strict)
    inputs, unwrap = _as_tuple(inputs, "inputs")
    scalar = _single_output(func_, "vhp")
    output = scalar(*inputs)
    _, vjp_fn = func.vjp(lambda *xs: _flat_gradient(scalar, xs), *inputs)
    products = vjp_fn(func._flat_concat(_cotangents(v, inputs, "v")))
    return _finish((output,), create_graph, True), _finish(products, create_graph, unwrap)


def hvp(func_, inputs, v=None, create_graph=False, strict=False):
    """``(func(*inputs), H · v)`` for a scalar ``func``, as torch.autograd.functional.hvp."""
    _check_strict(strict)
    inputs, unwrap = _as_tuple(inputs, "inputs")
    output, products = func.hvp(_single_output(func_, "hvp"), inputs, _cotangents(v, inputs, "v"))
    return _finish((output,), create_graph, True), _finish(products, create_graph, unwrap)


def _flat_gradient(scalar, xs):
    return func._flat_concat(func.grad(scalar, argnums=tuple(range(len(xs))))(*xs))
