"""``ge.autograd.grad``: gradients of outputs with respect to chosen inputs (``torch.autograd.grad``)."""
from __future__ import annotations

from .tensor import Tensor, _seed_gradient, run_backward


def _as_tuple(value, argname):
    items = (value,) if isinstance(value, Tensor) else tuple(value)
    for item in items:
        if not isinstance(item, Tensor):
            raise TypeError(f"{argname}: expected engine Tensors, got {type(item).__name__}")
    return items


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False, allow_unused=False):
    """Return the sum over ``outputs`` of (grad_output · d output / d input), for each input.

    Leaves' ``.grad`` are left alone.  With ``create_graph`` the result is
    itself differentiable (higher order).  Raises when an input is not used by
    the outputs unless ``allow_unused``, as in PyTorch.
    """
    outputs = _as_tuple(outputs, "outputs")
    inputs = _as_tuple(inputs, "inputs")
    for i, x in enumerate(inputs):
        if not x.requires_grad:
            raise RuntimeError(f"inputs[{i}] does not require grad: create it with requires_grad=True")
    if grad_outputs is None:
        grad_outputs = (None,) * len(outputs)
    elif isinstance(grad_outputs, Tensor):
        grad_outputs = (grad_outputs,)
    if len(grad_outputs) != len(outputs):
        raise ValueError(f"grad_outputs has {len(grad_outputs)} entries for {len(outputs)} outputs")
    roots, seeds = [], []
    for i, (out, g) in enumerate(zip(outputs, grad_outputs)):
        if not out.requires_grad:
            continue
        roots.append(out)
        seeds.append(_seed_gradient(out, g, f"grad_outputs[{i}]"))
    if not roots:
        raise RuntimeError("none of the outputs requires grad: they do not depend on any input that requires grad")
    retain = create_graph if retain_graph is None else retain_graph
    results = run_backward(
        roots, seeds, create_graph=create_graph, retain_graph=retain, accumulate=False, inputs=inputs
    )
    for i, r in enumerate(results):
        if r is None and not allow_unused:
            raise RuntimeError(
                f"inputs[{i}] was not used to compute the outputs; pass allow_unused=True to get None for it"
            )
    return tuple(results)
