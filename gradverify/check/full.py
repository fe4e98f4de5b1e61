"""Full mode: the whole numerical Jacobian (Richardson, batched with vmap) against the analytical one,
entry by entry, then a random cotangent and forward mode on top of it."""
from __future__ import annotations

import numpy as np

from . import oracles
from .compare import (DEEP_LADDER, NOT_DIFFERENTIABLE, REFINE_LADDER, block_max, follow_shrinking_steps,
                      forward_and_consistency, judge_kinks, reentrant_gradient, rows_not_differentiable)
from .problem import flatten, unflatten
from .result import entry_status

BATCH_ELEMENTS = 2**21
"""Most input elements evaluated in one vmap batch."""
KINK_COLUMNS = 32
"""Failing input elements examined for kinks in "full" mode, the worst first (the rest stay failures)."""


def full_check(problem, rows, check_forward, directions):
    n_in, n_out = sum(problem.sizes), sum(problem.output_sizes)
    scales = flatten(problem.scales)
    problem.measure_noise()  # a few evaluations next to the Jacobian's 6 per element
    numerical, error, curvature = oracles.central_jacobian(
        problem.evaluate_rows, flatten(problem.reference), scales, oracles.RICHARDSON_STEP, 3, BATCH_ELEMENTS,
        problem.eval_dtype(), problem.base, problem.noise,
    )
    problem.evaluations += 6 * n_in
    summation = _summation_noise(problem, numerical, scales)
    error += summation

    scale = problem.random_cotangent()
    analytical = np.empty((n_out, n_in))
    for i in range(n_out):
        cotangent = np.zeros(n_out)
        cotangent[i] = scale[i]
        analytical[i] = problem.vjp(cotangent) / scale[i]

    reference = None
    if problem.reference_fn is not None:
        reference = np.empty((n_out, n_in))
        for i in range(n_out):
            cotangent = np.zeros(n_out)
            cotangent[i] = scale[i]
            reference[i] = problem.reference_vjp(cotangent) / scale[i]

    def reference_error():
        """The reference implementation's error, the largest of each input's block (as flash-attention's tests)."""
        return None if reference is None else block_max(np.abs(reference - numerical), problem.sizes)

    def column_estimates(j, ladder, own_noise=False):
        """(values, errors, curvatures) of column j at each step of ``ladder`` that stays in the domain."""
        estimates = problem.estimates(problem.unit(j), oracles.RICHARDSON_STEP, 3, ladder=ladder, own_noise=own_noise)
        steps = [flatten(e.direction)[j] for e in estimates]
        values = [e.value / step for e, step in zip(estimates, steps)]
        # The summation noise was sized for the default step; it scales inversely with the step taken.
        errors = [e.error / abs(step) + summation[:, j] * (oracles.RICHARDSON_STEP / e.step)
                  for e, step in zip(estimates, steps)]
        return values, errors, [e.curvature / step**2 for e, step in zip(estimates, steps)]

    def refine(j, ladder, own_noise=False):
        """Re-estimate column j over ``ladder``, its error widened by the disagreement between steps."""
        values, errors, curvatures = column_estimates(j, ladder, own_noise)
        best, widened = oracles.widened_best([analytical[:, j] - v for v in values], errors)
        numerical[:, j], error[:, j], curvature[:, j] = values[best], widened, curvatures[best]

    def rounding_magnitude():
        """(output per input, magnitude): the AD rounding allowance's scales (see below)."""
        output_per_input = np.outer(problem.output_scale, 1.0 / scales) + curvature * scales
        own = np.abs(numerical)
        residue = ~(own > oracles.SAFETY * error)
        return output_per_input, np.where(residue, block_max(own, problem.sizes), own) + output_per_input

    for j in np.flatnonzero(~np.all(np.isfinite(numerical), axis=0) & np.all(np.isfinite(problem.base))):
        refine(j, (1.0,))
    # Steps relative to |x| are tiny for an element near 0, where rounding then swamps small errors:
    # a step on the scale of its tensor competes, and the smaller error wins (widened by any disagreement).
    wide = _wide_step_factors(problem)
    for j in np.flatnonzero(wide > 1.0):
        refine(j, (1.0, wide[j]))

    # Rounding allowance: the entry's own size (the largest of its input's block where the oracle cannot
    # tell the entry from zero: AD leaves rounding residue of the block's terms there, as in the lower
    # triangle of QR's R); the output's size per unit of input (below the oracle's own noise, so it costs
    # no power; it keeps subnormal or cancelling entries fair); and the curvature times the input's size
    # (ill-conditioned functions).  Where an entry still fails, the measured rounding of its AD value
    # widens it (Problem.widen_failures): the rounding of the terms that make it, not of other entries.
    output_per_input, magnitude = rounding_magnitude()
    status = entry_status(analytical, numerical, problem.bound(numerical, error, magnitude, reference_error()))
    for j in np.unique(np.nonzero(status == "fail")[1]):
        refine(j, (1.0,) + REFINE_LADDER + ((wide[j],) if wide[j] > 1.0 else ()), own_noise=True)
    bound = problem.bound(numerical, error, magnitude, reference_error())
    status = entry_status(analytical, numerical, bound)
    notes = np.full(status.shape, "", dtype=object)
    deepened = np.zeros(status.shape[1], dtype=bool)
    for j in _worst_failing_columns(status, analytical, numerical, bound):
        deepened[j] = follow_shrinking_steps(column_estimates(j, DEEP_LADDER), status[:, j], notes[:, j],
                                              numerical[:, j], error[:, j], curvature[:, j])
    output_per_input, magnitude = rounding_magnitude()
    bound = problem.bound(numerical, error, magnitude, reference_error())
    status = np.where(status == "unresolved", status, entry_status(analytical, numerical, bound))
    reported = numerical.copy()

    def widen_failing_rows(bound):
        """``bound`` widened by the measured rounding of the failing entries (Problem.widen_failures)."""
        failing_rows = np.unique(np.nonzero(status == "fail")[0])

        def analytical_rows(point):
            values = analytical.copy()  # rows that pass keep their values: only failing entries are widened
            for i in failing_rows:
                unit = np.zeros(n_out)
                unit[i] = scale[i]
                values[i] = problem.vjp(unit, point) / scale[i]
            return values

        if len(failing_rows):
            bound = problem.widen_failures(status, analytical, reported, bound, analytical_rows, by_reference=True)
            bound = problem.widen_term_rounding(status, analytical, reported, bound, analytical_rows, term_scale)
        return bound

    # Each input's largest effect on any output, and each output's largest sensitivity to any input: the sizes
    # of the terms a cancelling rule combines (log_softmax's 1 - exp(out) near 1 shows in its column).
    finite = np.where(np.isfinite(analytical), np.abs(analytical), 0.0)
    largest_effect = np.max(finite, axis=0, keepdims=True)
    term_scale = np.maximum(largest_effect, np.max(finite, axis=1, keepdims=True))
    # A 16-bit entry's rounding is measured at the point itself (float64 AD), which keeps a kink's side, so it
    # widens the bound before the kink judge: a subgradient off by its bfloat16 rounding is still one.  Elsewhere
    # the measurement moves the point, which can cross a kink: kinks are judged first.
    if problem.measured_rounding:
        bound = widen_failing_rows(bound)
    partials, partial_error = numerical.copy(), error.copy()
    for j in _worst_failing_columns(status, analytical, numerical, bound):
        judge_kinks(problem, status[:, j], notes[:, j], analytical[:, j], bound[:, j], problem.unit(j),
                     1.0 / scales[j], deepened[j])
        at_kink = np.isin(status[:, j], ["subgradient", "kink"])
        # Later checks reuse the numerical Jacobian: at a kink they take the analytical value as given.
        numerical[at_kink, j], error[at_kink, j] = analytical[at_kink, j], 0.0
    # A failing entry whose one-sided partial derivatives agree can still sit where its output is not differentiable.
    # (Not where partial derivatives needed much smaller steps: there the default ones do not resolve any direction.)
    failing_rows = np.unique(np.nonzero(status == "fail")[0])
    if len(failing_rows) and not deepened.any():
        for i in failing_rows[rows_not_differentiable(problem, partials, partial_error, failing_rows)]:
            failing = status[i] == "fail"
            status[i, failing] = "kink"
            notes[i, failing] = [f"{note}; " * bool(note) + NOT_DIFFERENTIABLE for note in notes[i, failing]]
            numerical[i, failing], error[i, failing] = analytical[i, failing], 0.0
    # So do they where finite differences could not resolve the derivative (the verdict is inconclusive).
    unresolved = status == "unresolved"
    numerical[unresolved], error[unresolved] = analytical[unresolved], 0.0
    if not problem.measured_rounding:
        bound = widen_failing_rows(bound)

    # Next to an input where fn's derivative is infinite (asin at 1), or where fn is (asin' at 1, order 2), AD's
    # 0 * inf makes other entries NaN: the point is singular, not the rule wrong.
    singular = np.any((status == "nan-both") & np.isinf(analytical), axis=0, keepdims=True)
    singular |= bool(problem.view.dropped) or any(slot.free is not None for slot in problem.view.outputs)
    status[(status == "fail") & np.isnan(analytical) & singular] = "singular"

    def jacobian_names(indices):
        return [(problem.output_name(i // n_in),) + problem.input_name(i % n_in) for i in indices]

    rows.add("reverse (Jacobian)", analytical.ravel(), reported.ravel(), bound.ravel(), status.ravel(),
             jacobian_names, notes.ravel())

    cotangent = problem.random_cotangent()
    dense = reentrant_gradient(problem, rows, cotangent)
    reverse = cotangent @ numerical
    bound = problem.bound(reverse, np.abs(cotangent) @ error,
                          np.abs(cotangent) @ (np.abs(numerical) + output_per_input))
    status = entry_status(dense, reverse, bound)
    status[(status == "fail") & np.isnan(dense) & singular[0]] = "singular"
    bound = problem.widen_failures(status, dense, reverse, bound, lambda point: problem.vjp(cotangent, point))
    rows.add("reverse (random cotangent)", dense, reverse, bound, status,
             lambda indices: [("<c, f>",) + problem.input_name(j) for j in indices])
    if check_forward and problem.backend.has_jvp:
        for _ in range(directions):
            tangent = problem.random_signs() * scales
            checked = forward_and_consistency(
                problem, rows, tangent, numerical @ tangent, error @ np.abs(tangent),
                np.abs(numerical) @ np.abs(tangent) + output_per_input @ np.abs(tangent), cotangent, dense,
                term_scale=(analytical != 0) @ (largest_effect[0] * np.abs(tangent)),
                kink_direction=unflatten(tangent, problem.shapes),
            )
            if not checked:
                break


def _worst_failing_columns(status, analytical, numerical, bound):
    """Up to KINK_COLUMNS input elements with failing entries, the largest relative difference first: a kink
    is off by the derivative's own size, and a bfloat16 sample's many small rounding failures (widened later
    by measured rounding) must not crowd it out."""
    with np.errstate(divide="ignore", invalid="ignore"):
        size = np.maximum(np.maximum(np.abs(analytical), np.abs(numerical)), bound)
        relative = np.where(status == "fail", np.abs(analytical - numerical) / size, -np.inf)
    worst = np.nan_to_num(relative, nan=np.inf).max(axis=0, initial=-np.inf)
    failing = np.flatnonzero(np.any(status == "fail", axis=0))
    return failing[np.argsort(-worst[failing], kind="stable")][:KINK_COLUMNS]


WIDE_STEP_RATIO = 16.0
"""An element whose |x| is this many times below its tensor's median |x| also gets steps on that median."""


def _wide_step_factors(problem):
    """Per flat input element: its tensor's median scale over its own where that exceeds WIDE_STEP_RATIO, else 1."""
    factors = []
    for scale in problem.scales:
        typical = float(np.median(scale)) if scale.size else 1.0
        ratio = typical / scale.reshape(-1)
        factors.append(np.where(ratio > WIDE_STEP_RATIO, ratio, 1.0))
    return np.concatenate(factors) if factors else np.zeros(0)


def _summation_noise(problem, numerical, scales):
    """Rounding error of the differences if each output is a sum of its inputs' contributions.

    An output that adds up many terms (a cumulative sum, a matrix product)
    carries rounding noise of about eps * ||J_i * x||_2 even where the terms
    cancel to a small value; the differences of the oracle divide that noise
    by the step.  The 2-norm (random-walk rounding) keeps the allowance far
    below a worst-case bound.  The largest term is left out: a sum of one
    term (an elementwise function) rounds only its result, which the
    evaluation noise already covers, and with it a small error of an
    elementwise derivative would hide.
    """
    eps = float(np.finfo(problem.eval_dtype()).eps)
    squares = np.nan_to_num((numerical * scales) ** 2)
    contributions = np.sqrt(np.maximum(squares.sum(axis=1) - squares.max(axis=1, initial=0.0), 0.0))
    final, _ = oracles.tableau_weights(3, 4.0)
    amplification = float(np.dot(np.abs(final), [2.0**k for k in range(3)])) / oracles.RICHARDSON_STEP
    return oracles.EVALUATION_ULPS * eps * amplification * np.outer(np.nan_to_num(contributions), 1.0 / scales)
