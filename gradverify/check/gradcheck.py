"""``ge.autograd.gradcheck`` and ``gradgradcheck``: torch.autograd's signatures and conventions, on ``check_grad``.

The verdict is :func:`gradverify.check.check_grad`'s (error-bounded Richardson estimates, random non-unit
cotangents, forward mode and its consistency with reverse mode), judged with the caller's ``atol`` and
``rtol`` on top of the numerical estimate's own error.  ``eps`` is accepted for torch's signature: the steps
come from the estimate's error, not from a fixed ``eps``.  So do ``nondet_tol`` (a function whose repeated
calls differ fails, as ``check_grad`` refuses it), ``check_undefined_grad`` (engine seeds are always
tensors) and ``check_grad_dtypes`` (the engine casts every gradient to its input's dtype).
"""
from __future__ import annotations

import warnings

import numpy as np

import gradverify.engine as ge

from .checker import check_grad
from .errors import UncheckableFunction


class GradcheckError(RuntimeError):
    """Raised by :func:`gradcheck` and :func:`gradgradcheck` when a derivative does not match."""


def _as_tuple(values):
    return tuple(values) if isinstance(values, (tuple, list)) else (values,)


def _refuse(*options):
    """NotImplementedError for options of torch's signature that the engine lacks, set other than ``supported``."""
    for name, value, supported in options:
        if bool(value) != supported:
            raise NotImplementedError(f"{name}={value!r} is not supported by the engine's gradcheck")


def _differentiable_outputs(func, args):
    """``func`` returning the tuple of its outputs that require grad at ``args``, as torch's gradcheck checks.

    The outputs are chosen once, here (the checker also calls ``func`` without recording); where none
    requires grad, every floating output is kept, so the check finds their derivatives zero.
    """
    with ge.enable_grad():
        probe = _as_tuple(func(*args))
    keep = [k for k, y in enumerate(probe) if isinstance(y, ge.Tensor) and y.requires_grad] or [
        k for k, y in enumerate(probe) if isinstance(y, ge.Tensor) and y.is_floating_point()]

    def selected(*xs):
        outputs = _as_tuple(func(*xs))
        return tuple(outputs[k] for k in keep)

    return selected, [probe[k] for k in keep]


def _checked_inputs(inputs):
    """The inputs as a tuple and the positions of those that require grad (warning when not float64)."""
    inputs = _as_tuple(inputs)
    positions = [i for i, x in enumerate(inputs) if isinstance(x, ge.Tensor) and x.requires_grad]
    if not positions:
        raise ValueError("gradcheck expects at least one input tensor to require gradient, but none of them have "
                         "requires_grad=True.")
    for i in positions:
        if inputs[i].dtype != np.float64:
            warnings.warn(f"Input #{i} requires gradient and is not a double precision floating point. This check "
                          "will likely fail if all the inputs are not of double precision floating point.",
                          stacklevel=3)
    return inputs, positions


def _substituted(inputs, positions, values):
    args = list(inputs)
    for i, value in zip(positions, values):
        args[i] = value
    return args


def gradcheck(func, inputs, *, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True, nondet_tol=0.0,
              check_undefined_grad=True, check_grad_dtypes=False, check_batched_grad=False,
              check_batched_forward_grad=False, check_forward_ad=False, check_backward_ad=True, fast_mode=False,
              masked=None):
    """Check ``func``'s derivatives with respect to the ``inputs`` that require grad, as torch.autograd.gradcheck.

    Returns True; on a mismatch raises :class:`GradcheckError` (a RuntimeError) with ``check_grad``'s
    report, or returns False when ``raise_exception`` is false.  ``fast_mode`` checks random projections
    instead of the whole Jacobian; ``check_forward_ad`` also checks forward mode (NotImplementedError where
    a Function has no ``jvp``, as torch).  Inputs that require grad should be float64 (a warning otherwise).
    """
    _refuse(("check_batched_grad", check_batched_grad, False), ("masked", masked, False),
            ("check_batched_forward_grad", check_batched_forward_grad, False),
            ("check_backward_ad", check_backward_ad, True))
    inputs, positions = _checked_inputs(inputs)
    variables = [inputs[i] for i in positions]
    selected, _ = _differentiable_outputs(func, inputs)
    try:
        result = check_grad(lambda *values: selected(*_substituted(inputs, positions, values)), *variables,
                            mode="fast" if fast_mode else "full", backend="engine", atol=atol, rtol=rtol,
                            check_forward=check_forward_ad)
    except UncheckableFunction as refused:
        return _fail(f"gradcheck: {refused}", raise_exception)
    if check_forward_ad:
        for note in result.notes:
            if note.startswith("forward mode not checked"):
                raise NotImplementedError(note)
    if not result.passed:
        return _fail(f"gradcheck: {result}", raise_exception)
    return True


def _fail(message, raise_exception):
    if raise_exception:
        raise GradcheckError(message)
    return False


def gradgradcheck(func, inputs, grad_outputs=None, *, eps=1e-6, atol=1e-5, rtol=1e-3,
                  gen_non_contig_grad_outputs=False, raise_exception=True, nondet_tol=0.0, check_undefined_grad=True,
                  check_grad_dtypes=False, check_batched_grad=False, check_fwd_over_rev=False,
                  check_rev_over_rev=True, fast_mode=False, masked=False):
    """Check the second derivatives of ``func``, as torch.autograd.gradgradcheck.

    As torch, :func:`gradcheck` is run on ``(inputs, grad_outputs) -> the gradients of the inputs``
    (computed with ``create_graph=True``); ``grad_outputs`` defaults to random values in [-1, 1] (seeded),
    one per differentiable output.  ``check_fwd_over_rev`` also checks that function in forward mode.
    Returns True, raises :class:`GradcheckError`, or returns False when ``raise_exception`` is false.
    """
    _refuse(("gen_non_contig_grad_outputs", gen_non_contig_grad_outputs, False),
            ("check_rev_over_rev", check_rev_over_rev, True))
    inputs, positions = _checked_inputs(inputs)
    selected, outputs = _differentiable_outputs(func, inputs)
    if grad_outputs is None:
        rng = np.random.default_rng(0)
        grad_outputs = tuple(
            ge.Tensor(rng.uniform(-1, 1, y.shape).astype(y.dtype if y.is_floating_point() else np.float64),
                      requires_grad=True) for y in outputs)
    grad_outputs = _as_tuple(grad_outputs)
    n = len(positions)

    def gradients(*values):
        _, pullback = ge.func.vjp(lambda *xs: selected(*_substituted(inputs, positions, xs)), *values[:n])
        return pullback(values[n:])

    return gradcheck(gradients, tuple(inputs[i] for i in positions) + grad_outputs, atol=atol, rtol=rtol,
                     raise_exception=raise_exception, check_batched_grad=check_batched_grad,
                     check_forward_ad=check_fwd_over_rev, fast_mode=fast_mode, masked=masked)
