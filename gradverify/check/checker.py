"""``check_grad``: compare a function's analytical derivatives with error-bounded numerical oracles.

What is checked
---------------
reverse mode
    VJPs with random cotangents whose entries are ``±[0.5, 1.5]`` (never 1,
    so a backward that ignores its incoming gradient fails); one of them
    is run twice through the same retained graph, as torch's gradcheck
    does, so a backward that mutates what it saved or keeps state on ctx
    between calls fails.
forward mode
    JVPs along random ±1 directions, where the backend has forward mode.
consistency
    ``<c, J u> = <J^T c, u>`` between the two modes (no finite differences).
order 2
    the same checks on ``x -> J(x)^T c``, the derivative of the derivative.

Modes
-----
"full"
    the whole numerical Jacobian (one three-stage Richardson estimate per
    input element, six evaluations, batched with vmap where the library has
    it) against the analytical Jacobian (one VJP per output element, with a
    non-unit cotangent), entry by entry.
"fast"
    random projections: along a direction ``u`` (±1 per element, scaled by
    each element's magnitude) a three-stage Richardson estimate of
    ``<c, J u>`` costs six evaluations whatever the input size.  Because
    ``|u_j| = 1`` for every element, an error confined to one entry moves the
    projection by the full size of that error, so one direction is the
    default (``directions`` asks for more).  When a projection fails, the
    failing element is localised by bisection (two projections per level).
    Where the allowance of the first projection (on the sum of its terms'
    sizes) exceeds its smallest terms, a second one weighs every term alike.
"auto"
    "full" while it costs at most ``FULL_BUDGET`` evaluations, else "fast".

Each comparison is judged against :func:`oracles.gradient_bound`: the
oracle's own error estimate plus a rounding allowance for the dtype the
analytical derivative was computed in (256 ulps; for float16 and bfloat16
2 ulps of the entry), scaled by the size of the terms (each Jacobian entry's
own size, the output's size, the curvature), widened where an entry fails by
the measured rounding of its AD value (for float16 and bfloat16: its
distance from the same AD computed in float64); a float32, float16 or
bfloat16 function is differentiated numerically in float64 (on the CPU for
tensors on another device).  With ``reference=`` the allowance is twice the
reference implementation's own error instead.  The oracle's
error includes the function's measured evaluation noise.  Where a
comparison fails, the oracle is first refined over other steps (its error
widened by any disagreement between steps); if it still fails and the one-sided derivatives
differ (a kink), the verdict is "pass" when the analytical value lies between
them (a valid subgradient) and "inconclusive" otherwise, naming the element
and both one-sided values.
"""
from __future__ import annotations

import numpy as np

from . import oracles
from .backends import backend_for
from .errors import GradientMismatch
from .fast import FAST_DIRECTIONS, fast_check
from .full import full_check
from .problem import MODES, Problem, flatten, unflatten, validate_options
from .result import CheckResult, Entry, Rows, constant_names, entry_status, verdict_of

FULL_BUDGET = 6000
"""Largest number of function evaluations "auto" spends on a full Jacobian."""


def check_grad(fn, *inputs, mode="auto", order=1, backend="auto", atol=None, rtol=None, seed=0, grad_fn=None,
               vjp_fn=None, jvp_fn=None, domains=None, directions=FAST_DIRECTIONS, check_forward=True, strict=False,
               reference=None):
    """Check the derivatives of ``fn`` at ``inputs`` against error-bounded numerical oracles.

    Parameters
    ----------
    fn:
        a function of the inputs returning one tensor or a tuple of tensors.
    inputs:
        floating-point engine tensors, torch tensors, jax arrays, or numpy
        arrays (then ``grad_fn`` or ``vjp_fn`` supplies the derivative, see
        :class:`gradverify.check.backends.NumpyBackend`); never modified.
        torch and jax inputs and outputs may be complex (checked in the
        library's convention); infinite entries are held fixed (see
        :mod:`gradverify.check.semantics`).
    mode:
        "full" (whole Jacobian), "fast" (random projections) or "auto".
    order:
        1, or 2 to check the derivatives of the derivatives as well.
    backend:
        "auto" (from the inputs' types), "engine", "torch", "jax" or "numpy".
    atol, rtol:
        override the dtype-derived rounding allowance; the oracle's own error
        estimate is always added.
    seed:
        seeds the random cotangents and directions.
    domains:
        optional ``gradverify.ops.Domain`` (or None) per input: steps never
        leave it.
    directions:
        random projections per check in "fast" mode.
    check_forward:
        also check forward mode (and its consistency with reverse mode)
        where the backend has it.
    strict:
        also check the floating outputs the library does not differentiate
        (torch's requires_grad=False ones), against a zero derivative.
    reference:
        optionally, another implementation of the same function (same
        library and inputs), e.g. the plain-PyTorch one of a fused kernel.
        Then the reverse-mode comparisons (the Jacobian in "full" mode, the
        projections in "fast" mode), forward mode's and, with ``order=2``,
        those of the derivative pass where ``fn``'s error is at most
        ``REFERENCE_FACTOR`` (2) times the reference's own error in the same
        dtype, as flash-attention's tests judge kernels, instead of a fixed
        number of ulps.  float16 and bfloat16 functions are always judged
        against the function evaluated in float64 on the CPU.

    Returns a :class:`CheckResult`.  Raises TypeError / ValueError naming the
    argument for bad arguments (non-float or NaN inputs, mixed libraries,
    outputs that are not tensors),
    :class:`~gradverify.check.NondeterministicFunction` when two calls at the
    point differ (checked first, last and after any failed comparison), :class:`~gradverify.check.MutatedInput` when ``fn`` writes
    into an input, and NotImplementedError for ``order=2`` on numpy functions.
    """
    validate_options(fn, mode, order, directions, atol, rtol, seed, domains, strict)
    be = backend_for(inputs, backend, grad_fn=grad_fn, vjp_fn=vjp_fn, jvp_fn=jvp_fn)
    if reference is not None and not callable(reference):
        raise TypeError(f"reference: expected a callable, got {type(reference).__name__}")
    problem = Problem(fn, inputs, be, atol, rtol, seed, domains, strict, reference)
    if problem.nothing_to_check:
        return CheckResult(problem.nothing_verdict, problem.nothing_to_check, [], mode, order, be.name,
                           str(problem.dtype), problem.evaluations, [], list(problem.notes))
    chosen = mode
    if mode == "auto":
        full_cost = 6 * sum(problem.sizes) + sum(problem.output_sizes)
        chosen = "full" if full_cost <= FULL_BUDGET else "fast"
    rows = Rows()
    # Near overflow, bounds legitimately become inf (nothing is then claimed); do not warn about it.
    with np.errstate(over="ignore"):
        (full_check if chosen == "full" else fast_check)(problem, rows, check_forward, directions)
    problem.confirm_deterministic("at the end of the check")
    evaluations, notes, records = problem.evaluations, list(problem.notes), list(rows.records)
    checks = list(rows.checks)
    if order == 2:
        second, symmetry = _second_order(problem, be, inputs, chosen, atol, rtol, seed, domains, directions,
                                         check_forward, reference)
        records += [entry._replace(check=f"order 2: {entry.check}") for entry in second.records + symmetry.records]
        evaluations += second.evaluations
        notes += [f"order 2: {n}" for n in second.notes]
        checks += [f"order 2: {c}" for c in second.checks + symmetry.checks]
    verdict, reason = verdict_of(records)
    return CheckResult(verdict, reason, records, chosen, order, be.name, str(problem.dtype), evaluations, checks,
                       notes)


def _second_order(problem, be, inputs, mode, atol, rtol, seed, domains, directions, check_forward, reference):
    """(result of checking x -> J(x)^T c like any function, rows of its Hessian's symmetry); with a
    ``reference``, against x -> J_ref(x)^T c."""
    cotangents = problem.view.full_cotangents(unflatten(problem.random_cotangent(), problem.output_shapes,
                                                        problem.output_dtypes()))
    try:
        derivative = be.derivative_function(problem.view.selected(problem.fn), cotangents)
        if reference is not None:
            reference = be.derivative_function(problem.view.selected(reference), cotangents)
    except NotImplementedError as unavailable:
        raise NotImplementedError(f"order=2: {unavailable}") from None
    # strict: a derivative output that torch leaves without a graph (a saved value detached) is declared
    # constant, and that declaration is what order 2 checks.
    result = check_grad(derivative, *inputs, mode=mode, order=1, backend=be, atol=atol, rtol=rtol, seed=seed + 1,
                        domains=domains, directions=directions, check_forward=check_forward, strict=True,
                        reference=reference)
    symmetry = Rows()
    derivative_problem = Problem(derivative, inputs, be, atol, rtol, seed + 2, domains, strict=True)
    if derivative_problem.nothing_to_check:
        pass  # the derivative's own check above says why (a 16-bit derivative that cannot run in float64)
    elif derivative_problem.output_sizes == derivative_problem.sizes:
        _hessian_symmetry(derivative_problem, symmetry, directions)
    else:  # entries left out (infinite inputs, NaN gradients) break the square of the Hessian
        result.notes.append("the Hessian's symmetry is not checked: the derivative's checked entries are not its "
                            "inputs' free entries")
    return result, symmetry


def _hessian_symmetry(problem, rows, directions):
    """An identity free of finite differences: the Jacobian H of x -> J(x)^T c is the Hessian of <c, f>.

    So <u, H v> = <v, H u> for any u, v, each side from one VJP of the
    derivative (reverse over reverse).  A second-order rule that treats a
    saved value as a constant breaks it wherever that value has a partner
    (d/dy of df/dx stays right while d/dx of df/dy loses a term), even where
    finite differences cannot resolve the derivatives.
    """
    scales = flatten(problem.scales)
    for k in range(directions):
        u, v = problem.random_signs() * scales, problem.random_signs() * scales
        hu, hv = problem.vjp(u), problem.vjp(v)  # H^T u and H^T v
        left, right = float(v @ hu), float(u @ hv)
        # As for forward/reverse consistency: the derivative's size bounds the rounding of its terms; an
        # ill-conditioned function (a matrix inverse) rounds them ~ eps * condition, which jitter measures.
        magnitude = np.abs(v) @ np.abs(hu) + np.abs(u) @ np.abs(hv) + (np.abs(u) + np.abs(v)) @ problem.output_scale
        spread = problem.ad_spread(lambda point: [v @ problem.vjp(u, point), u @ problem.vjp(v, point)],
                                   [left, right]).sum()
        bound = problem.bound(right, oracles.SAFETY * spread, magnitude)
        rows.add("symmetry <u, H v> = <v, H u>", left, right, bound, entry_status([left], [right], bound),
                 constant_names("<u, H v>", "u, v", f"direction {k}"))


def assert_grad(fn, *inputs, **options):
    """Like :func:`check_grad`, raising :class:`GradientMismatch` (an AssertionError) unless the verdict is "pass".

    Returns the :class:`CheckResult` when it passes.
    """
    result = check_grad(fn, *inputs, **options)
    if not result.passed:
        raise GradientMismatch(result)
    return result


__all__ = ["check_grad", "assert_grad", "CheckResult", "Entry", "MODES", "FULL_BUDGET", "FAST_DIRECTIONS"]
