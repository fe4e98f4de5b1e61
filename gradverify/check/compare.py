"""Comparisons shared by full and fast mode: forward mode and its consistency with reverse mode, and the
re-examination of a failing entry (much smaller steps; one-sided derivatives at a kink)."""
from __future__ import annotations

import math

import numpy as np

from . import oracles
from .problem import flatten, unflatten
from .result import REPEATED_BACKWARD, constant_names, entry_status

REENTRANCY_CHECK = f"reentrant backward {REPEATED_BACKWARD}"
NOT_REENTRANT = ("the backward is not reentrant: it mutates what it saved (an in-place op on a saved tensor) or "
                 "keeps state on ctx between calls")

REFINE_LADDER = (1 / 16, 16.0, 1 / 256, 1 / 4096)
"""Step multipliers tried when a first comparison fails, before judging."""
DEEP_LADDER = (2.0**-16, 2.0**-20, 2.0**-24, 2.0**-28, 2.0**-32)
"""Further step multipliers for entries whose estimates still move toward the analytical value at the
smallest step of REFINE_LADDER: an ill-conditioned function (a matrix inverse at condition 1e8) varies
on scales far below the usual steps, where a coarse step sees a smooth function with another slope."""
DEEP_AGREEMENT = 1e-4
"""Relative gap within which two neighbouring estimates of DEEP_LADDER count as one converged value."""
DEEP_CONTRADICTION = 1e-2
"""Smallest relative difference by which a deep estimate can overturn the current one.  An unconverged
estimate is off by orders of magnitude; requiring this much keeps rounding noise at the smallest steps
from ever explaining away a small real error."""
UNRESOLVED_AGREEMENT, UNRESOLVED_FACTOR = 0.1, 10.0
"""A failure is "unresolved" when two neighbouring deep estimates agree to 10% (noise at steps 16 times
apart almost never does) on a value 10 times the current estimate and its error: the steps have not
converged, but neither have they settled to the 1e-4 that would replace the estimate."""
POLE_GROWTH = 64.0
"""A failure is also "unresolved" when three deep estimates in a row, of one sign and beyond 10 times the
current estimate, each grow this much from the last.  Near a pole at distance d far below the step h a
central difference is -1/(d^2 - h^2) ~ 1/h^2: 256 times larger for each step 16 times smaller (a matrix
inverse at condition 1e13).  Rounding noise grows 16 times per step, with random signs."""
ONE_SIDED_LADDER = (1.0, 1 / 256)
"""Step multipliers of the one-sided derivatives that decide whether a failure sits on a kink."""


def reentrant_gradient(problem, rows, cotangent):
    """J^T c at the point, after running a second backward through the same graph and comparing (as torch's
    gradcheck does): a backward whose second pass differs, or raises, fails the check with a note saying so."""
    first, again = problem.vjp_twice(cotangent)
    try:
        second = again()
        note = f"a second backward through the same graph gives other gradients: {NOT_REENTRANT}"
    except Exception as error:  # noqa: BLE001  (whatever the second pass raises is the finding)
        second = np.full(first.shape, np.nan)
        note = (f"a second backward through the same graph raised {type(error).__name__}: {error}; "
                f"{NOT_REENTRANT}")
    # Reductions may run in another order on a second pass: rounding of the block's size is no finding.
    bound = problem.bound(second, 0.0, block_max(np.abs(first)[None, :], problem.sizes)[0])
    with np.errstate(invalid="ignore"):
        same = (np.abs(first - second) <= bound) | (first == second) | (np.isnan(first) & np.isnan(second))
    status, notes = np.full(same.shape, "pass", dtype=object), np.full(same.shape, "", dtype=object)
    status[~same], notes[~same] = "fail", note
    rows.add(REENTRANCY_CHECK, first, second, bound, status,
             lambda indices: [("<c, f>",) + problem.input_name(j) for j in indices], notes)
    return first


def _one_sided(problem, direction, weights, deep=False):
    """(left, right, spread): one-sided derivatives of ``weights @ f`` along ``direction`` and their error.

    ``weights`` is a matrix (one row per compared value) over the outputs,
    or ``(factor, indices)``: the rows ``indices`` of ``factor`` times the
    identity, never built (fast mode compares every output of a million).
    ``deep`` scales the steps down to :data:`DEEP_LADDER`'s, for values that
    only steps that small resolve.
    """
    scale = DEEP_LADDER[-2] * oracles.RICHARDSON_STEP / oracles.CENTRAL_STEP if deep else 1.0
    ladder = tuple(scale * factor for factor in ONE_SIDED_LADDER)
    left = problem.estimate(direction, oracles.CENTRAL_STEP, 3, ladder=ladder, one_sided=-1)
    right = problem.estimate(direction, oracles.CENTRAL_STEP, 3, ladder=ladder, one_sided=+1)
    return _weighted(weights, left.value), _weighted(weights, right.value), oracles.SAFETY * _weighted(
        weights, left.error + right.error, absolute=True)


def _weighted(weights, values, absolute=False):
    """``weights @ values`` for ``weights`` as :func:`_one_sided` takes them (``|weights|`` with ``absolute``)."""
    if isinstance(weights, tuple):
        factor, indices = weights
        return (abs(factor) if absolute else factor) * values[indices]
    return (np.abs(weights) if absolute else weights) @ values


ADDITIVITY_PARTS, ADDITIVITY_PARTITIONS = 8, 4
"""A direction is cut into this many random parts, this many times, to test its directional derivatives for
additivity (see :func:`_not_additive`): halves miss a tie group's middle too often (sort's 8,000 bfloat16 values
in ties of up to 33 have hundreds of such rows, each of which must be caught)."""
NOT_DIFFERENTIABLE = ("derivatives along parts of a direction do not add up to the derivative along it: fn is not "
                      "differentiable here, and AD's value is one piece's")
ADDITIVITY_GAP = 1e-2
"""Smallest residual, relative to the derivatives' sizes, that calls a derivative not additive: at a kink it is the
derivative's own size, while finite-difference noise stays far below."""


def _not_additive(problem, direction, weights):
    """Per row of ``weights``: is the derivative of ``weights @ f`` along ``direction`` d, central or from the right,
    other than the sum of its derivatives along the parts of some random partition of d's entries?

    At a point where fn is not differentiable, one-sided derivatives along d can agree while the derivative is not
    linear in d: sort's middle element of three tied values moves with the median of their directions, on either
    side.  AD returns one piece's Jacobian there (a permutation), which no finite difference along d reproduces.
    A partition that keeps the central derivative additive mostly breaks the right one's, and back.
    """
    flat, shapes = flatten(direction), [np.shape(d) for d in direction]
    moving = np.flatnonzero(flat)
    found = np.zeros(len(weights[1]) if isinstance(weights, tuple) else len(weights), dtype=bool)
    if len(moving) < 2:
        return found
    whole = _central_and_right(problem, direction)
    for _ in range(ADDITIVITY_PARTITIONS):
        labels = problem.rng.integers(0, ADDITIVITY_PARTS, len(moving))
        parts = []
        for label in np.unique(labels):
            part = np.zeros_like(flat)
            part[moving[labels == label]] = flat[moving[labels == label]]
            parts.append(_central_and_right(problem, unflatten(part, shapes)))
        for estimates in zip(whole, *parts):
            values = [_weighted(weights, e.value) for e in estimates]
            error = oracles.SAFETY * _weighted(weights, sum(e.error for e in estimates), absolute=True)
            found |= _apart(values[0], sum(values[1:]), error, sum(np.abs(v) for v in values[1:]))
    return found


def _central_and_right(problem, direction):
    """The central and the right-sided derivative estimates along ``direction``."""
    return [problem.estimate(direction, oracles.CENTRAL_STEP, 3),
            problem.estimate(direction, oracles.CENTRAL_STEP, 3, ladder=ONE_SIDED_LADDER, one_sided=+1)]


def _apart(value, expected, error, size):
    """Whether ``value`` and ``expected`` differ beyond ``error`` and by :data:`ADDITIVITY_GAP` of their sizes."""
    residual = np.abs(value - expected)
    with np.errstate(invalid="ignore"):
        return (residual > error) & (residual > ADDITIVITY_GAP * (np.abs(value) + size))


def rows_not_differentiable(problem, jacobian, error, rows, directions=ADDITIVITY_PARTITIONS):
    """Per output in ``rows``: does its derivative along a random direction d, central or from the right, differ
    from ``jacobian @ d`` (the numerical partial derivatives, ``error`` their errors), as at a tie of three or more
    sorted values, whose middle has equal one-sided partial derivatives (0) in every input?"""
    found = np.zeros(len(rows), dtype=bool)
    for _ in range(directions):
        d = problem.random_signs() * flatten(problem.scales)
        along = unflatten(d, problem.shapes)
        predicted = jacobian[rows] @ d
        for estimate in _central_and_right(problem, along):
            allowed = oracles.SAFETY * (estimate.error[rows] + error[rows] @ np.abs(d))
            found |= _apart(estimate.value[rows], predicted, allowed, np.abs(predicted))
    return found


def _kink_status(analytical, left, right, spread, bound):
    """Status and note of a failed comparison given the one-sided derivatives there.

    "fail" when they agree (no kink: the failure stands), "subgradient" when
    the analytical value (every one of them, given several) lies between
    them, "kink" (inconclusive) otherwise.  A NaN or infinite analytical value is no subgradient: it fails.
    """
    if not np.all(np.isfinite(analytical)):
        return "fail", ""
    if not (math.isfinite(left) and math.isfinite(right)) or abs(right - left) <= spread + bound:
        return "fail", ""
    note = f"one-sided derivatives differ: left {left:.10g}, right {right:.10g}"
    if all(min(left, right) - bound <= value <= max(left, right) + bound for value in np.atleast_1d(analytical)):
        return "subgradient", note + "; the analytical value lies between them (a valid subgradient)"
    return "kink", note + "; the analytical value lies outside them"


def judge_kinks(problem, status, notes, analytical, bound, direction, weights, deep=False):
    """Re-judge the failing entries of ``status`` (a 1-d array over ``weights``' rows) at a possible kink.

    ``weights`` is a matrix over the outputs or a number: that multiple of the identity.  An entry of
    ``analytical`` may hold several values (forward and reverse mode's), all of which must lie between.
    """
    failing = np.flatnonzero(status == "fail")
    if not len(failing):
        return
    rows = (weights, failing) if np.isscalar(weights) else weights[failing]
    left, right, spread = _one_sided(problem, direction, rows, deep)
    for n, i in enumerate(failing):
        status[i], note = _kink_status(analytical[i], left[n], right[n], spread[n], bound[i])
        notes[i] = "; ".join(text for text in (notes[i], note) if text)
    standing = np.array([i for i in failing if status[i] == "fail" and np.all(np.isfinite(analytical[i]))], dtype=int)
    if not len(standing) or deep:  # an ill-conditioned fn: the default steps resolve no direction
        return
    rows = (weights, standing) if np.isscalar(weights) else weights[standing]
    for i in standing[_not_additive(problem, direction, rows)]:
        status[i] = "kink"
        notes[i] = "; ".join(text for text in (notes[i], NOT_DIFFERENTIABLE) if text)


def follow_shrinking_steps(deep, status, notes, numerical, error, curvature):
    """Re-judge a column with failing entries where much smaller steps contradict its estimate.

    ``deep`` holds the column's (values, errors, curvatures) at the steps of
    :data:`DEEP_LADDER`, each 16 times smaller than the last.  Two neighbours
    that agree to :data:`DEEP_AGREEMENT` bound both their truncation and their
    rounding error, which grows 16 times per step: their gap is the error of
    the larger-step one wherever the per-step estimate (from the measured
    evaluation noise, which correlated rounding in nearby evaluations cancels)
    is more pessimistic.  Where such a pair contradicts the current estimate
    (beyond both errors and by :data:`DEEP_CONTRADICTION` at least), the
    current one had not converged (the function varies on a scale below its
    step, as an ill-conditioned matrix inverse does), and the first such
    pair's estimate replaces it, provided the next step stays within
    :data:`UNRESOLVED_AGREEMENT` of it (a lone agreeing pair at the smallest
    steps can be a coincidence of rounding).  A failing entry that no pair
    settles is "unresolved" (inconclusive) where a pair agrees loosely on a
    far larger value (:data:`UNRESOLVED_AGREEMENT`) or the estimates grow as
    near a pole (:data:`POLE_GROWTH`).  Other failures stand.  Arrays are
    updated in place; returns whether any estimate was replaced.
    """
    values, errors, curvatures = deep
    if len(values) < len(DEEP_LADDER):  # a step left the domain
        return False
    replaced, contradicted_anywhere = np.zeros(numerical.shape, dtype=bool), np.zeros(numerical.shape, dtype=bool)
    current, current_error = numerical.copy(), error.copy()
    beyond = [np.abs(v - current) > UNRESOLVED_FACTOR * (np.abs(current) + current_error) for v in values]
    for k in range(len(values) - 1):
        gap = np.abs(values[k + 1] - values[k])
        pair_error = np.maximum(np.minimum(errors[k], oracles.SAFETY * gap), gap)
        difference = np.abs(values[k] - current)
        far = difference > DEEP_CONTRADICTION * np.abs(values[k])
        contradicted_anywhere |= (gap <= UNRESOLVED_AGREEMENT * np.abs(values[k])) & beyond[k]
        confirmed = np.zeros(gap.shape, dtype=bool)
        if k + 2 < len(values):
            confirmed = np.abs(values[k + 2] - values[k]) <= UNRESOLVED_AGREEMENT * np.abs(values[k])
            with np.errstate(divide="ignore", invalid="ignore"):  # a zero estimate is simply not a pole's
                growth = [values[i + 1] / values[i] for i in (k, k + 1)]
            contradicted_anywhere |= beyond[k] & (growth[0] >= POLE_GROWTH) & (growth[1] >= POLE_GROWTH)
        # Passing entries of the column too: later checks (projections) reuse the whole column.
        # Strictly within: two zero estimates are a step below the function's resolution (a float32 kernel
        # evaluated on float64 inputs), not a converged value.
        adopt = far & (difference > pair_error + current_error) & (gap < DEEP_AGREEMENT * np.abs(values[k]))
        adopt &= confirmed & ~replaced
        numerical[adopt], error[adopt], curvature[adopt] = values[k][adopt], pair_error[adopt], curvatures[k][adopt]
        replaced |= adopt
    unsettled = contradicted_anywhere & ~replaced & (status == "fail")
    status[unsettled] = "unresolved"
    for i in np.flatnonzero(unsettled):
        notes[i] = (f"steps {DEEP_LADDER[0]:g} to {DEEP_LADDER[-1]:g} times smaller give "
                    + ", ".join(f"{v[i]:.6g}" for v in values) + f" against {numerical[i]:.6g}")
    return bool(replaced.any())


def block_max(values, sizes):
    """For each entry, the largest finite value over the columns of the same input tensor (all outputs).

    Structurally zero entries (the lower triangle of QR's R) come out of AD
    as rounding residue of the block's large terms, so the whole block sets
    their scale.
    """
    out = np.empty_like(values)
    start = 0
    for size in sizes:
        block = values[:, start:start + size]
        out[:, start:start + size] = np.max(block[np.isfinite(block)], initial=0.0)
        start += size
    return out


def jvp_or_none(problem, tangent):
    """J·tangent from forward mode, or None (with a note) when the function has none."""
    try:
        return problem.jvp(tangent)
    except NotImplementedError as unavailable:
        problem.notes.append(f"forward mode not checked: {unavailable}")
        return None


def forward_and_consistency(problem, rows, tangent, numerical, error, magnitude, cotangent, vjp_flat,
                             kink_direction=None, tangent_out=None, deep=False, term_scale=None):
    """Compare J·u from forward mode with the numerical one and with the reverse-mode product.

    With ``kink_direction``, failing entries are re-judged with one-sided
    derivatives along it (at :data:`DEEP_LADDER`'s steps with ``deep``).
    ``term_scale`` (per output entry) sizes the terms a float32 rule may
    cancel (:meth:`~gradverify.check.problem.Problem.widen_term_rounding`).
    Returns False when the function has no forward mode.
    """
    if tangent_out is None:
        tangent_out = jvp_or_none(problem, tangent)
        if tangent_out is None:
            return False
    try:
        reference = problem.reference_jvp(tangent)
    except (NotImplementedError, RuntimeError) as unavailable:
        reference = None
        problem.notes.append(f"forward mode judged without the reference, which has none: {unavailable}")
    # As flash-attention's tests: the reference's largest error over the output tensor.
    reference_error = None if reference is None else block_max(np.abs(reference - numerical)[None, :],
                                                               problem.output_sizes)[0]
    bound = problem.bound(numerical, error, magnitude, reference_error)
    status = entry_status(tangent_out, numerical, bound)
    notes = np.full(status.shape, "", dtype=object)
    if kink_direction is not None:
        judge_kinks(problem, status, notes, tangent_out, bound, kink_direction, 1.0, deep)
    bound = problem.widen_failures(status, tangent_out, numerical, bound, lambda point: problem.jvp(tangent, point),
                                   by_reference=True)
    if term_scale is not None:
        bound = problem.widen_term_rounding(status, tangent_out, numerical, bound,
                                            lambda point: problem.jvp(tangent, point), term_scale)
    rows.add("forward (random tangent)", tangent_out, numerical, bound, status,
             lambda indices: [(problem.output_name(i), "u", "projection") for i in indices], notes)
    forward_side, reverse_side = cotangent @ tangent_out, vjp_flat @ tangent
    # Tangents are scaled by the inputs' magnitudes, so the outputs' size bounds the rounding of
    # the AD's intermediate terms even where the products themselves cancel (softmax of large logits).
    # Outputs the finite differences could not size (no estimate) add nothing: both sides are AD results.
    scale = (np.abs(cotangent) @ np.abs(tangent_out) + np.abs(vjp_flat) @ np.abs(tangent)
             + np.abs(cotangent) @ np.nan_to_num(magnitude, nan=0.0, posinf=0.0))
    bound = np.array([problem.bound(reverse_side, 0.0, scale)], dtype=np.float64).reshape(1)
    status = entry_status([forward_side], [reverse_side], bound)
    notes = np.array([""], dtype=object)
    if kink_direction is not None:
        # At a kink forward and reverse mode may each pick a valid subgradient, and different ones.
        judge_kinks(problem, status, notes, [(forward_side, reverse_side)], bound, kink_direction,
                    cotangent[None, :], deep)
    # Both sides are AD results: what jitter measures is the rounding of their difference.
    bound = problem.widen_failures(status, [forward_side - reverse_side], [0.0], bound, lambda point: [
        cotangent @ problem.jvp(tangent, point) - problem.vjp(cotangent, point) @ tangent])
    rows.add("consistency <c, Ju> = <J^T c, u>", forward_side, reverse_side, bound, status,
             constant_names("<c, f>", "u", "projection"), notes)
    return True
