"""Fast mode: random projections <c, J u> (six evaluations each whatever the size), and a failing
projection localised to one input element by bisection."""
from __future__ import annotations

import math

import numpy as np

from . import oracles
from .compare import (DEEP_LADDER, REFINE_LADDER, block_max, follow_shrinking_steps, forward_and_consistency,
                      judge_kinks, jvp_or_none, reentrant_gradient)
from .problem import flatten, unflatten
from .result import constant_names, entry_status

EQUALIZED_RANGE = 2.0**-26
"""Smallest term, relative to the largest, that an equalized projection weighs alike (about the square root
of float64's epsilon: smaller steps on the other elements would leave the oracle's resolution)."""
FAST_DIRECTIONS = 1
"""Random projections in "fast" mode.  One suffices: with ±1 directions an error in any single entry moves
the projection by its full size; more directions guard against a spread error that happens to cancel."""


def fast_check(problem, rows, check_forward, directions):
    forward_available = check_forward and problem.backend.has_jvp
    for k in range(directions):
        direction = unflatten(problem.random_signs() * flatten(problem.scales), problem.shapes)
        cotangent = problem.random_cotangent()
        gradient = reentrant_gradient(problem, rows, cotangent) if k == 0 else problem.vjp(cotangent)
        estimate = problem.estimate(direction, oracles.RICHARDSON_STEP, 3)
        tangent_out = jvp_or_none(problem, flatten(estimate.direction)) if forward_available else None
        forward_available = tangent_out is not None
        projection_error = np.abs(cotangent) @ estimate.error
        forward_error = estimate.error
        if _fast_comparisons_fail(problem, estimate, cotangent, gradient, tangent_out):
            problem.measure_noise()
            estimate, tangent_out, projection_error, forward_error = _refined_projection(
                problem, direction, cotangent, gradient, forward_available)
        analytical, numerical, bound = _projection(problem, estimate, cotangent, gradient, projection_error,
                                                   problem.reference_vjp(cotangent))
        status = entry_status([analytical], [numerical], [bound])
        notes = np.array([""], dtype=object)
        deeper = None
        if status[0] == "fail":
            numerical, error, curvature, deeper = _deep_projection(
                problem, direction, cotangent, gradient, status, notes,
                (analytical, numerical, projection_error, np.abs(cotangent) @ estimate.curvature))
            magnitude = _projection_terms(problem, gradient, flatten(estimate.direction), cotangent)
            bound = float(problem.bound(numerical, error, magnitude + curvature))
            status[status == "fail"] = entry_status([analytical], [numerical], [bound])[status == "fail"]
            if deeper is not None:
                estimate, forward_error = deeper, deeper.error
                tangent_out = problem.jvp(flatten(estimate.direction)) if forward_available else None
            forward_available &= status[0] != "unresolved"
        judge_kinks(problem, status, notes, [analytical], [bound], direction, cotangent[None, :], deeper is not None)
        effective = flatten(estimate.direction)
        bound = _widen_failure(problem, status, analytical, numerical, bound,
                               lambda point: [np.sum(problem.vjp(cotangent, point) * effective)],
                               _projection_terms(problem, gradient, effective, cotangent), by_reference=True)
        rows.add("reverse (projection)", analytical, numerical, bound, status,
                 constant_names("<c, f>", "all", f"direction {k}"), notes)
        if status[0] in ("fail", "kink"):
            _localize(problem, rows, direction, cotangent, gradient)
        elif k == 0:
            _equalized_projection(problem, rows, direction, cotangent, gradient)
        if forward_available:
            forward_and_consistency(problem, rows, flatten(estimate.direction), estimate.value, forward_error,
                                     _forward_magnitude(problem, estimate), cotangent, gradient,
                                     kink_direction=direction, tangent_out=tangent_out, deep=deeper is not None)


def _equalized_projection(problem, rows, direction, cotangent, gradient):
    """A projection whose terms are of one size, where the first one's rounding allowance (on the sum of its
    terms' sizes) exceeds its smallest terms: an error there (a float32 Mish's tail, 1e-7 next to 1) would
    hide under the others.

    Each element's step is scaled down to the smallest term's size (no lower than :data:`EQUALIZED_RANGE` of
    the largest): every term then weighs alike.  The allowance drops the outputs' sizes, which no longer
    match the terms; a failure is widened by the measured rounding of the projection, as any other.
    """
    flat = flatten(direction)
    terms = np.abs(gradient * flat)
    positive = terms[(terms > 0) & np.isfinite(terms)]
    if not positive.size or positive.min() >= float(problem.bound(0.0, 0.0, positive.sum())):
        return
    smallest = max(positive.min(), EQUALIZED_RANGE * positive.max())
    weighted = unflatten(flat * np.minimum(1.0, smallest / np.where(terms > smallest, terms, smallest)),
                         problem.shapes)
    unsized = np.zeros_like(problem.output_scale)
    estimate = problem.estimate(weighted, oracles.RICHARDSON_STEP, 3)
    analytical, numerical, bound = _projection(problem, estimate, cotangent, gradient, output_scale=unsized)
    status = entry_status([analytical], [numerical], [bound])
    if status[0] == "fail":
        estimate = problem.estimate(weighted, oracles.RICHARDSON_STEP, 3, ladder=(1.0,) + REFINE_LADDER,
                                    own_noise=True)
        analytical, numerical, bound = _projection(problem, estimate, cotangent, gradient, output_scale=unsized)
        status = entry_status([analytical], [numerical], [bound])
    effective = flatten(estimate.direction)
    bound = _widen_failure(problem, status, analytical, numerical, bound,
                           lambda point: [np.sum(problem.vjp(cotangent, point) * effective)],
                           _projection_terms(problem, gradient, effective, cotangent, unsized))
    rows.add("reverse (equalized projection)", analytical, numerical, bound, status,
             constant_names("<c, f>", "all", "terms of one size"))
    if status[0] == "fail":
        _localize(problem, rows, weighted, cotangent, gradient, output_scale=unsized)


def _refined_projection(problem, direction, cotangent, gradient, forward_available):
    """Estimates over the refinement ladder: (estimate, J·v, projection error, forward errors), widened.

    Each step has its own effective direction, so the residuals (analytical
    minus numerical, which do not depend on the direction's last bits) are
    what the steps are compared on.
    """
    estimates = problem.estimates(direction, oracles.RICHARDSON_STEP, 3, ladder=(1.0,) + REFINE_LADDER,
                                  own_noise=True)
    tangents_out = [problem.jvp(flatten(e.direction)) if forward_available else None for e in estimates]
    residuals, errors = [], []
    for estimate, tangent_out in zip(estimates, tangents_out):
        analytical, numerical, _ = _projection(problem, estimate, cotangent, gradient)
        forward = [] if tangent_out is None else tangent_out - estimate.value
        residuals.append(np.concatenate([[analytical - numerical], forward]))
        errors.append(np.concatenate([[np.abs(cotangent) @ estimate.error],
                                      [] if tangent_out is None else estimate.error]))
    best, widened = oracles.widened_best(residuals, errors)
    return estimates[best], tangents_out[best], widened[0], widened[1:]


def _forward_magnitude(problem, estimate):
    """Rounding scale of forward-mode entries along a scaled direction: value, output size, curvature.

    The value's scale is the largest of its output tensor, as full mode's is its block's: an entry whose
    terms cancel (log_softmax at a probability that rounds to 1) keeps their rounding, not its own size's.
    """
    largest = block_max(np.abs(estimate.value)[None, :], problem.output_sizes)[0]
    return largest + problem.output_scale + estimate.curvature


def _fast_comparisons_fail(problem, estimate, cotangent, gradient, tangent_out):
    """Whether the projection or (when given) any forward entry misses its bound with this estimate."""
    analytical, numerical, bound = _projection(problem, estimate, cotangent, gradient)
    if entry_status([analytical], [numerical], [bound])[0] != "pass":
        return True
    if tangent_out is None:
        return False
    bound = problem.bound(estimate.value, estimate.error, _forward_magnitude(problem, estimate))
    return bool(np.any(entry_status(tangent_out, estimate.value, bound) != "pass"))


def _projection_terms(problem, gradient, effective, cotangent, output_scale=None):
    """The size of the terms a projection <J^T c, v> sums: its products' and the outputs' (as its allowance's)."""
    output_scale = problem.output_scale if output_scale is None else output_scale
    return np.sum(np.abs(gradient * effective)) + np.abs(cotangent) @ output_scale


def _widen_failure(problem, status, analytical, numerical, bound, side, term_scale, by_reference=False):
    """A failing comparison's bound widened by the measured rounding of ``side`` (its AD value at a point), and
    in float32 by the rounding of the terms its AD combines (``term_scale``): see :class:`~.problem.Problem`."""
    bound = problem.widen_failures(status, [analytical], [numerical], np.atleast_1d(bound), side, by_reference)
    return problem.widen_term_rounding(status, [analytical], [numerical], bound, side, np.atleast_1d(term_scale))


def _projection(problem, estimate, cotangent, gradient, error=None, reference_gradient=None, output_scale=None):
    """(analytical <J^T c, v>, numerical <c, J v>, bound) for the estimate's effective direction v.

    ``error`` overrides the oracle error of the projection (default: from the estimate); with
    ``reference_gradient`` (the reference implementation's J^T c) the allowance is relative to its error;
    ``output_scale`` overrides the outputs' sizes in the allowance.
    """
    effective = flatten(estimate.direction)
    terms = gradient * effective
    numerical = float(cotangent @ estimate.value)
    magnitude = (_projection_terms(problem, gradient, effective, cotangent, output_scale)
                 + np.abs(cotangent) @ estimate.curvature)
    error = np.abs(cotangent) @ estimate.error if error is None else error
    reference_error = None if reference_gradient is None else abs(float(reference_gradient @ effective) - numerical)
    bound = float(problem.bound(numerical, error, magnitude, reference_error))
    return float(np.sum(terms)), numerical, bound


def _localize(problem, rows, direction, cotangent, gradient, output_scale=None):
    """Bisect a failing projection down to one input element and report it (with its kink status);
    ``output_scale`` as for :func:`_projection`."""
    output_scale = problem.output_scale if output_scale is None else output_scale
    flat_direction = flatten(direction)
    candidates = np.flatnonzero(flat_direction)
    both_halves_failed = False
    while len(candidates) > 1:
        results = []
        for half in np.array_split(candidates, 2):
            masked = np.zeros_like(flat_direction)
            masked[half] = flat_direction[half]
            estimate = problem.estimate(unflatten(masked, problem.shapes), oracles.RICHARDSON_STEP, 3)
            analytical, numerical, bound = _projection(problem, estimate, cotangent, gradient,
                                                       output_scale=output_scale)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = abs(analytical - numerical) / bound
            results.append((ratio if math.isfinite(ratio) else math.inf, half))
        both_halves_failed |= all(r > 1 for r, _ in results)
        candidates = max(results, key=lambda r: r[0])[1]
    j = int(candidates[0])
    unit = problem.unit(j)
    estimate = problem.estimate(unit, oracles.RICHARDSON_STEP, 3, ladder=(1.0,) + REFINE_LADDER, own_noise=True)
    step = flatten(estimate.direction)[j]
    numerical = float(cotangent @ estimate.value) / step
    base = abs(gradient[j]) + np.abs(cotangent) @ output_scale / abs(step)
    curvature = np.abs(cotangent) @ estimate.curvature / abs(step)
    error = np.abs(cotangent) @ estimate.error / abs(step)
    bound = float(problem.bound(numerical, error, base + curvature))
    status = entry_status([gradient[j]], [numerical], [bound])
    notes = np.array(["localised by bisection" + ("; other elements differ too" if both_halves_failed else "")],
                     dtype=object)
    deeper = None
    if status[0] == "fail":
        numerical, error, curvature, deeper = _deep_projection(problem, unit, cotangent, gradient, status, notes,
                                                               (gradient[j], numerical, error, curvature), element=j)
        bound = float(problem.bound(numerical, error, base + curvature))
        status[status == "fail"] = entry_status([gradient[j]], [numerical], [bound])[status == "fail"]
    judge_kinks(problem, status, notes, [gradient[j]], [bound], unit, cotangent[None, :] / flatten(problem.scales)[j],
                 deeper is not None)
    bound = _widen_failure(problem, status, gradient[j], numerical, bound,
                           lambda point: [problem.vjp(cotangent, point)[j]], base)
    input_number, element = problem.input_name(j)
    rows.add("reverse (localised)", gradient[j], numerical, bound, status,
             constant_names("<c, f>", input_number, element), notes)


def _deep_projection(problem, direction, cotangent, gradient, status, notes, judged, element=None):
    """:func:`follow_shrinking_steps` for one failing projection ``<c, J v>`` along ``direction``.

    ``judged`` is (analytical, numerical, error, curvature term) of the
    comparison; with ``element`` the quantities are per unit of that input
    element (a localised check).  Returns the new (numerical, error,
    curvature term) and the deep :class:`~gradverify.check.oracles.Estimate`
    that replaced the judged one (None if it was not replaced); ``status``
    and ``notes`` are updated in place.
    """
    analytical = judged[0]
    deep = ([], [], [])
    estimates = problem.estimates(direction, oracles.RICHARDSON_STEP, 3, ladder=DEEP_LADDER)
    for estimate in estimates:
        if element is None:
            # Each step has its own effective direction: compare along the judged one.
            along, value, _ = _projection(problem, estimate, cotangent, gradient)
            value, per = value + (analytical - along), 1.0
        else:
            per = flatten(estimate.direction)[element]
            value = float(cotangent @ estimate.value) / per
        for collected, quantity in zip(deep, (value, np.abs(cotangent) @ estimate.error / abs(per),
                                              np.abs(cotangent) @ estimate.curvature / abs(per))):
            collected.append(np.array([quantity]))
    numerical, error, curvature = (np.array([q], dtype=np.float64) for q in judged[1:])
    follow_shrinking_steps(deep, status, notes, numerical, error, curvature)
    adopted = None
    if numerical[0] != judged[1]:
        # The deep estimate of every output, with the same error rule, for the forward-mode checks.
        middle, last = estimates[-2], estimates[-1]
        gap = np.abs(last.value - middle.value)
        adopted = oracles.Estimate(middle.value, np.maximum(np.minimum(middle.error, oracles.SAFETY * gap), gap),
                                   middle.direction, middle.step, middle.evaluations, middle.curvature)
    return float(numerical[0]), float(error[0]), float(curvature[0]), adopted
