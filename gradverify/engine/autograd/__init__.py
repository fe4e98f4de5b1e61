"""``ge.autograd``, as torch.autograd: ``grad`` and ``backward`` (gradients of outputs with respect to inputs),
``functional``, custom ``Function`` and ``gradcheck`` / ``gradgradcheck``."""
from __future__ import annotations

from ..core import Tensor, _accumulate_grad, _seed_gradient, run_backward


def _as_tuple(value, argname):
    items = (value,) if isinstance(value, Tensor) else tuple(value)
    for item in items:
        if not isinstance(item, Tensor):
            raise TypeError(f"{argname}: expected engine Tensors, got {type(item).__name__}")
    return items


def _roots_and_seeds(outputs, grad_outputs, argname):
    """The outputs that require grad and their cotangents (``grad_outputs`` may be None, one tensor or a sequence)."""
    if grad_outputs is None:
        grad_outputs = (None,) * len(outputs)
    elif isinstance(grad_outputs, Tensor):
        grad_outputs = (grad_outputs,)
    if len(grad_outputs) != len(outputs):
        raise ValueError(f"{argname} has {len(grad_outputs)} entries for {len(outputs)} outputs")
    roots, seeds = [], []
    for i, (out, g) in enumerate(zip(outputs, grad_outputs)):
        if not out.requires_grad:
            continue
        roots.append(out)
        seeds.append(_seed_gradient(out, g, f"{argname}[{i}]"))
    if not roots:
        raise RuntimeError("none of the outputs requires grad: they do not depend on any input that requires grad")
    return roots, seeds


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False, inputs=None):
    """Accumulate the gradients of ``tensors`` into the leaves' ``.grad``, as torch.autograd.backward.

    With ``inputs`` only those tensors (leaves or not) receive their gradient in ``.grad``.
    """
    roots, seeds = _roots_and_seeds(_as_tuple(tensors, "tensors"), grad_tensors, "grad_tensors")
    retain = create_graph if retain_graph is None else retain_graph
    if inputs is None:
        run_backward(roots, seeds, create_graph=create_graph, retain_graph=retain, accumulate=True)
        return
    inputs = _as_tuple(inputs, "inputs")
    for i, x in enumerate(inputs):
        if not x.requires_grad:
            raise RuntimeError(f"inputs[{i}] does not require grad: create it with requires_grad=True")
    results = run_backward(roots, seeds, create_graph=create_graph, retain_graph=retain, accumulate=False,
                           inputs=inputs)
    # As run_backward's own accumulation: no .grad may share memory with a seed or another .grad.
    shared = {id(s.array if s.array.base is None else s.array.base) for s in seeds}
    for x, g in zip(inputs, results):
        if g is not None:
            _accumulate_grad(x, g, create_graph, shared)


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
    roots, seeds = _roots_and_seeds(outputs, grad_outputs, "grad_outputs")
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

def Variable(data, requires_grad=False, volatile=False):  # noqa: N802  (torch's name)
    """torch's legacy ``Variable(tensor, requires_grad=...)``: a leaf tensor sharing ``data``'s memory."""
    if not isinstance(data, Tensor):
        raise TypeError(f"data: Variable wraps a Tensor, got {type(data).__name__}")
    return Tensor(data.array, requires_grad=requires_grad)


from . import functional  # noqa: E402  (after grad and backward, which the functional transforms call)
from .function import Function  # noqa: E402


def __getattr__(name):
    # gradcheck lives with the checker (gradverify.check.gradcheck), which imports the engine: resolved on
    # first use so that importing the engine never imports the checker.
    if name in ("gradcheck", "gradgradcheck", "GradcheckError"):
        from ...check import gradcheck as module

        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
