"""Numerical derivative oracles that report their own error, and the bound two gradients are compared with.

Every oracle differentiates a function along a line ``x + t·d`` (a
:class:`Line`, which caches and batches evaluations) and returns an
:class:`Estimate`: the derivative of every output (flattened, float64), an
estimate of the absolute error of each entry, and the direction the value
really is a derivative along (``x + t·d`` is rounded to float64, so the
displacement actually taken differs from ``t·d`` in the last bits; the
checker projects the analytical gradient on this effective direction).
Steps are relative to each input's scale (:func:`step_scale`).

Oracles
-------
:func:`richardson`
    central differences at steps h, h/2, ... h/2^(stages-1), combined by
    Richardson extrapolation.  The error estimate is the last correction of
    the tableau (an estimate of the error of the next-to-best value, hence
    conservative for the returned one) plus the rounding error of the
    differences (from the outputs' size and the measured noise); with three
    stages, steps outside the asymptotic range get the whole spread as
    error.  ``one_sided=+1/-1`` gives the right/left derivative (at kinks).
:func:`central_jacobian`
    the same, column by column for a whole Jacobian, in batched evaluations.
:func:`ladder_estimates`, :func:`best_estimate`, :func:`widened_best`
    :func:`richardson` over a ladder of steps, shrunk to stay inside the
    function's domain (a known maximal step, and automatically when an
    evaluation leaves the domain: a non-finite value where ``f(x)`` is
    finite); the smallest-error estimate, its error widened by any
    disagreement between the steps.
:func:`evaluation_noise`
    the rounding noise of the function itself (ECnoise), which exceeds
    ``eps * |f|`` for ill-conditioned functions.
:func:`complex_step`
    ``Im f(x + i·h·d) / h``: no cancellation, accurate to a few ulps, but
    valid only for functions analytic in their inputs (``abs``, ``relu``,
    comparisons silently break it), so callers cross-check it.
:func:`high_precision_derivative`
    central differences at 40 significant digits on a function written with
    ``reference_impls``'s mpmath counterparts (``reference_impls.get("mpmath",
    name)``): a ground truth free of truncation and rounding error at float64
    resolution.

The comparison rule, for the checker and for the fuzz campaign
-----------------------------------------------------------------
:func:`gradient_bound` and :func:`compare_gradients` decide whether two
gradients agree.  The fuzz campaign (``gradverify.fuzz``) calls them to
compare an AD gradient with another system's or an oracle's::

    ok, bound = compare_gradients(analytical, reference, dtype=np.float32,
                                  reference_error=estimate.error, magnitude=None)

The bound is ``SAFETY * reference_error + rtol * |reference| + atol`` where,
unless given, ``rtol = ULPS * eps(dtype)`` and ``atol = rtol * magnitude``;
``magnitude`` is the size of the terms the AD system summed to get the value
(for a projection ``<g, u>`` it is ``sum |g_j u_j|``; by default the largest
``|reference|`` in the array), because rounding error in a sum scales with
the summands, not with the result.  ``dtype`` is the dtype the analytical
gradient was computed in: a float32 gradient is judged against a float64
reference with a float32-scaled bound.  NaN never agrees with anything,
including NaN.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

EPS64 = float(np.finfo(np.float64).eps)
SAFETY = 2.0
"""Factor on an oracle's error estimate: the estimates are first-order, not guaranteed bounds."""
ULPS = 16
"""Default relative tolerance of an analytical gradient, in units of its dtype's epsilon."""
EVALUATION_ULPS = 4
"""Assumed rounding error of one function evaluation, in ulps of its largest output."""
CENTRAL_STEP = 2.0**-16
"""Default step of two-stage differences, relative to each input's scale (near eps^(1/3))."""
RICHARDSON_STEP = 2.0**-10
"""Default largest step of three-stage Richardson, relative to each input's scale: it balances the
truncation estimate (~h^4/16) against rounding (~26 eps/h) in float64."""


@dataclass
class Estimate:
    """A numerical derivative along a line: value and absolute error per output entry."""

    value: np.ndarray
    error: np.ndarray
    direction: list
    step: float
    evaluations: int = 0
    curvature: np.ndarray = None
    """|second derivative| along the line per output (central differences only): the AD's own rounding
    error grows with it, since a computed derivative is roughly the exact one at a point moved by a
    few ulps (ill-conditioned functions have large curvature)."""


class LeftDomain(ArithmeticError):
    """An evaluation near the point was not finite although the value at the point is."""


class Line:
    """``t -> f(x + t·d)``, flattened to one float64 (or complex) vector, with cached evaluations.

    ``evaluate_many`` maps a list of points (each a list of input arrays) to
    the list of their outputs (each a list of arrays); it may batch them.
    Points are rounded to ``dtypes`` (one per input; float64 unless the
    function can only be evaluated in a narrower type), and ``eps`` is the
    coarsest of their rounding units.  ``noise`` is the measured evaluation
    noise per output (see :func:`evaluation_noise`), if known.
    """

    def __init__(self, evaluate_many, point, direction, dtypes=None, noise=None):
        self.evaluate_many = evaluate_many
        self.noise = 0.0 if noise is None else noise
        self.dtypes = [np.dtype(np.float64)] * len(point) if dtypes is None else [np.dtype(d) for d in dtypes]
        self.eps = max(float(np.finfo(d).eps) for d in self.dtypes)
        self.point = [np.asarray(x, dtype=d) for x, d in zip(point, self.dtypes)]
        self.direction = [np.asarray(d, dtype=np.float64) for d in direction]
        self.cache = {}
        self.evaluations = 0

    def at(self, t):
        """The inputs ``x + t·d``, rounded to the evaluation dtype (complex when ``t`` is)."""
        if isinstance(t, complex):
            return [x + t * d for x, d in zip(self.point, self.direction)]
        return [(x + t * d).astype(dtype) for x, d, dtype in zip(self.point, self.direction, self.dtypes)]

    def missing(self, steps):
        """The steps in ``steps`` not evaluated yet (without repeats)."""
        return [t for t in dict.fromkeys(steps) if t not in self.cache]

    def store(self, t, outputs):
        flat = np.concatenate([np.ravel(y) for y in outputs])
        self.cache[t] = flat if np.iscomplexobj(flat) else flat.astype(np.float64)
        self.evaluations += 1

    def prefetch(self, steps):
        """Evaluate all of ``steps`` not cached yet, in one batch."""
        todo = self.missing(steps)
        if not todo:
            return
        for t, outputs in zip(todo, self.evaluate_many([self.at(t) for t in todo])):
            self.store(t, outputs)

    def __call__(self, t):
        self.prefetch([t])
        return self.cache[t]

    def displacement(self, t):
        """``(x + t·d) - x``: the displacement really taken at step ``t`` (exact in float64)."""
        return [p.astype(np.float64) - x for p, x in zip(self.at(t), self.point)]


NOISE_SPACING = 2.0**-30
"""Relative spacing of the points that measure evaluation noise: millions of ulps, so that the
rounding pattern changes between points, yet small enough that the smooth part of f vanishes from
sixth differences (it contributes about spacing^6)."""
NOISE_POINTS = 9


def evaluation_noise(line: Line) -> np.ndarray:
    """Standard deviation of the rounding noise in each output along ``line`` (Moré and Wild's ECnoise).

    Evaluates ``NOISE_POINTS`` points ``NOISE_SPACING`` apart around 0 and
    reads the noise off the sixth differences, where a smooth function
    contributes nothing: ``sigma^2 = (k!)^2/(2k)! * mean((Δ^k f)^2)``.
    Ill-conditioned functions (a matrix inverse, a solve) have noise far
    above ``eps * |f|``; finite differences must be judged against it.
    """
    half = NOISE_POINTS // 2
    steps = [k * NOISE_SPACING for k in range(-half, half + 1)]
    line.prefetch(steps)
    table = np.stack([line(t) for t in steps])
    order = 6
    differences = np.diff(table, n=order, axis=0)
    gamma = math.factorial(order) ** 2 / math.factorial(2 * order)
    with np.errstate(invalid="ignore", divide="ignore"):
        # Scaled so that squaring huge values (exp near overflow) does not overflow.
        size = np.max(np.abs(differences), axis=0)
        rms = size * np.sqrt(np.mean((differences / np.where(size > 0, size, 1.0)) ** 2, axis=0))
    return np.sqrt(gamma) * np.where(np.isfinite(rms), rms, 0.0)


def step_scale(array) -> np.ndarray:
    """Per-element scale of the input: ``|x|``, or 1 where ``x`` is 0 (steps are relative to it)."""
    array = np.abs(np.asarray(array, dtype=np.float64))
    return np.where(array > 0, array, 1.0)


def _finite_or_raise(values, base):
    if not np.all(np.isfinite(values[np.isfinite(base)])):
        raise LeftDomain("the function is not finite at a nearby point")


def richardson(line: Line, h: float = CENTRAL_STEP, stages: int = 2, one_sided: int = 0) -> Estimate:
    """Derivative of ``line`` at 0 from differences at steps h/2^k, k < stages, extrapolated.

    ``one_sided`` = 0 gives central differences (error in even powers of h),
    +1 / -1 right / left differences (error in all powers of h).
    Raises :class:`LeftDomain` when a nearby evaluation is not finite while
    ``f(x)`` is.
    """
    if stages < 2:
        raise ValueError(f"stages: Richardson extrapolation needs at least 2 stages, got {stages}")
    steps = [h / 2**k for k in range(stages)]
    line.prefetch([0.0] + ([one_sided * s for s in steps] if one_sided else steps + [-s for s in steps]))
    base = line(0.0)
    curvature = None
    if one_sided:
        hs = [one_sided * s for s in steps]
        points = [line(t) for t in hs]
        for p in points:
            _finite_or_raise(p, base)
        differences = [(p - base) / t for p, t in zip(points, hs)]
        tangents = [[d / t for d in line.displacement(t)] for t in hs]
        magnitude = np.maximum.reduce([np.abs(p) for p in points] + [np.abs(base)])
        noise = [2.0 / s for s in steps]
        ratio = 2.0
    else:
        pairs = [(line(s), line(-s)) for s in steps]
        for plus, minus in pairs:
            _finite_or_raise(plus, base)
            _finite_or_raise(minus, base)
        differences = [(plus - minus) / (2 * s) for (plus, minus), s in zip(pairs, steps)]
        tangents = [
            [(p - m) / (2 * s) for p, m in zip(line.displacement(s), line.displacement(-s))] for s in steps
        ]
        magnitude = np.maximum.reduce([np.abs(v) for pair in pairs for v in pair])
        noise = [1.0 / s for s in steps]
        ratio = 4.0
        curvature = np.abs(pairs[0][0] + pairs[0][1] - 2 * base) / h**2
    final, _ = tableau_weights(stages, ratio)
    value, error = extrapolate(differences, np.maximum(magnitude * line.eps, line.noise), noise, ratio)
    direction = [sum(w * t[i] for w, t in zip(final, tangents)) for i in range(len(line.point))]
    return Estimate(value, error, direction, h, line.evaluations, curvature)


@functools.lru_cache(maxsize=None)
def tableau_weights(stages: int, ratio: float):
    """Weights of the Richardson tableau on differences at steps h/2^k: (final value, last correction).

    ``ratio`` is 4 for central differences (error in even powers of h) and 2
    for one-sided ones.  The tableau is linear in the differences, so it is
    run on their weights once and applied to values, effective directions and
    rounding noise alike.
    """
    weights = list(np.eye(stages))
    correction = None
    for level in range(1, stages):
        factor = ratio**level - 1.0
        correction = (weights[1] - weights[0]) / factor
        weights = [w1 + (w1 - w0) / factor for w0, w1 in zip(weights[:-1], weights[1:])]
    return weights[0], correction


def extrapolate(differences, noise_scale, noise, ratio):
    """(value, error) of the Richardson extrapolation of differences at steps h/2^k, k = 0, 1, ...

    The error is the last correction of the tableau (truncation) plus the
    rounding error of the differences: ``noise[k]`` is the factor by which
    stage k's difference amplifies an evaluation error of ``noise_scale``
    (an absolute error per output).  With three or more stages the steps are
    also checked to be in the asymptotic range, where successive differences
    shrink by about ``ratio``; where they do not (the step is too large for
    the function's curvature, or straddles a singularity) and the change
    exceeds the rounding noise, the error becomes the whole spread of the
    differences, so that a larger-step estimate never looks trustworthy.
    """
    final, correction = tableau_weights(len(differences), float(ratio))
    value = sum(w * d for w, d in zip(final, differences))
    truncation = np.abs(sum(c * d for c, d in zip(correction, differences)))
    rounding = EVALUATION_ULPS * noise_scale * float(np.dot(np.abs(final), noise))
    error = truncation + rounding
    if len(differences) >= 3:
        first, second = np.abs(differences[0] - differences[1]), np.abs(differences[1] - differences[2])
        noisy = first + second <= 8 * EVALUATION_ULPS * noise_scale * max(noise)
        with np.errstate(divide="ignore", invalid="ignore"):
            shrink = first / second
        asymptotic = noisy | ((shrink >= ratio / 2) & (shrink <= ratio * 2))
        error = np.where(asymptotic, error, np.maximum(error, first + second))
    return value, error


def central_jacobian(evaluate_rows, point, scale, h: float = CENTRAL_STEP, stages: int = 2,
                     batch_elements: int = 2**21, dtype=np.float64, base=None, noise=None):
    """(J, error, curvature): the Jacobian of a function of one flat vector, column by column, with error estimates.

    ``evaluate_rows`` maps a (batch, n) float64 matrix of points to the
    (batch, m) matrix of the flattened outputs; points are rounded to
    ``dtype`` before evaluation.  Column j is the Richardson
    estimate along ``scale[j]`` times the j-th unit vector; ``curvature`` is
    |d²f/dx_j²| (from the largest step and ``base``, the outputs at
    ``point``; zeros without it).  ``noise`` is the measured evaluation noise
    per output (:func:`evaluation_noise`).  Points are
    requested in batches of at most ``batch_elements`` input values, so a
    vectorised ``evaluate_rows`` evaluates many at once.  Columns whose
    evaluations are not finite come out NaN: the caller re-estimates them
    with :func:`best_estimate`, which shrinks the step.
    """
    point = np.asarray(point, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    eps = float(np.finfo(np.dtype(dtype)).eps)
    n = point.size
    steps = [h / 2**k for k in range(stages)]
    shifts = [sign * s for s in steps for sign in (1.0, -1.0)]
    final, _ = tableau_weights(stages, 4.0)
    chunk = max(1, batch_elements // (len(shifts) * max(n, 1)))
    values, errors, curvatures = [], [], []
    for start in range(0, n, chunk):
        columns = np.arange(start, min(n, start + chunk))
        points = np.tile(point, (len(shifts), len(columns), 1))
        points[:, np.arange(len(columns)), columns] += np.multiply.outer(shifts, scale[columns])
        points = points.astype(dtype).astype(np.float64)
        outputs = evaluate_rows(points.reshape(-1, n)).reshape(len(shifts), len(columns), -1)
        moved = points[:, np.arange(len(columns)), columns]
        differences = [(outputs[2 * k] - outputs[2 * k + 1]).T / (2 * s) for k, s in enumerate(steps)]
        magnitude = np.abs(outputs).max(axis=0).T
        noise_scale = eps * magnitude if noise is None else np.maximum(eps * magnitude, np.asarray(noise)[:, None])
        value, error = extrapolate(differences, noise_scale, [1.0 / s for s in steps], 4.0)
        # The displacement really taken along each coordinate, in the tableau's combination.
        effective = sum(w * (moved[2 * k] - moved[2 * k + 1]) / (2 * s) for k, (w, s) in enumerate(zip(final, steps)))
        values.append(value / effective)
        errors.append(error / np.abs(effective))
        if base is None:
            curvatures.append(np.zeros_like(value))
        else:
            second = (outputs[0] + outputs[1] - 2 * np.asarray(base, dtype=np.float64)).T
            curvatures.append(np.abs(second) / (h * scale[columns]) ** 2)
    return np.concatenate(values, axis=1), np.concatenate(errors, axis=1), np.concatenate(curvatures, axis=1)


def ladder_estimates(line: Line, h: float = CENTRAL_STEP, stages: int = 2, max_step: float = math.inf,
                     ladder=(1.0,), one_sided: int = 0) -> list:
    """:func:`richardson` at each step ``h * factor`` for ``factor`` in ``ladder``, kept inside the domain.

    Steps are first capped by ``max_step`` (room to the domain's boundary
    along the line), and shrunk by 16 up to 6 times while evaluations leave
    the domain; a step that never stays inside gives no estimate.
    """
    estimates = []
    for factor in ladder:
        step = min(h * factor, max_step / 1.01)
        for _ in range(7):
            try:
                estimates.append(richardson(line, step, stages, one_sided))
                break
            except LeftDomain:
                step /= 16.0
    for estimate in estimates:
        estimate.evaluations = line.evaluations
    return estimates


def best_estimate(line: Line, h: float = CENTRAL_STEP, stages: int = 2, max_step: float = math.inf,
                  ladder=(1.0,), one_sided: int = 0) -> Estimate:
    """The estimate with the smallest total error among :func:`ladder_estimates`.

    Raises :class:`LeftDomain` if no step stays inside the domain.
    """
    estimates = ladder_estimates(line, h, stages, max_step, ladder, one_sided)
    if not estimates:
        raise LeftDomain("every step left the function's domain")
    return min(estimates, key=lambda e: np.nansum(e.error))


def widened_best(residuals, errors):
    """(index, error): the candidate with the smallest error, its error widened to cover the others.

    Each candidate is one estimate (at one step) of the same quantities:
    ``residuals[k]`` is analytical minus numerical, ``errors[k]`` the
    estimate's own error bound.  If two candidates' residuals differ by more
    than their errors allow, something the estimates do not model (an
    approximation error of the function's implementation that depends on
    the scale, noise) is at work, so the chosen candidate's error grows to
    span the disagreement: the step dependence of the oracle becomes part of
    its error.
    """
    totals = [np.nansum(e) for e in errors]
    best = int(np.argmin(totals))
    widened = np.array(errors[best], dtype=np.float64)
    for residual, error in zip(residuals, errors):
        with np.errstate(invalid="ignore"):
            gap = np.abs(np.asarray(residual) - residuals[best]) - error
        widened = np.maximum(widened, np.nan_to_num(gap, nan=0.0))
    return best, widened


def complex_step(evaluate_many, point, direction, h: float = 1e-20) -> Estimate:
    """``Im f(x + i·h·d) / h``: valid only when ``f`` is analytic and accepts complex input."""
    line = Line(evaluate_many, point, direction)
    value = np.imag(line(1j * h)) / h
    return Estimate(value, 2 * EVALUATION_ULPS * EPS64 * np.abs(value), line.direction, h, line.evaluations)


def high_precision_derivative(fn_mp, point, direction, dps: int = 40) -> Estimate:
    """Directional derivative of ``fn_mp`` at ``dps`` digits (central differences at steps h and h/2).

    ``fn_mp`` takes numpy object arrays of ``mpmath.mpf`` (see
    ``reference_impls.to_mp``) and returns one or a tuple of them.  The
    point and direction are converted exactly; the result is rounded to
    float64, whose rounding dominates the reported error.
    """
    import mpmath

    import reference_impls

    with mpmath.workdps(dps):
        xs = [reference_impls.to_mp(x, dps) for x in point]
        ds = [reference_impls.to_mp(d, dps) for d in direction]
        h = mpmath.mpf(10) ** (-(dps // 3))

        def along(t):
            outputs = fn_mp(*[x + t * d for x, d in zip(xs, ds)])
            outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
            return np.concatenate([np.asarray(y, dtype=object).reshape(-1) for y in outputs])

        coarse = (along(h) - along(-h)) / (2 * h)
        fine = (along(h / 2) - along(-h / 2)) / h
        value = fine + (fine - coarse) / 3
        spread = np.array([float(abs(v)) for v in (fine - coarse) / 3], dtype=np.float64)
        value = np.array([float(v) for v in value], dtype=np.float64)
    error = spread + EPS64 * np.abs(value)
    return Estimate(value, error, [np.asarray(d, dtype=np.float64) for d in direction], float(h), 5)


def default_rtol(dtype) -> float:
    """Relative tolerance of an analytical gradient computed in ``dtype``."""
    return ULPS * float(np.finfo(np.dtype(dtype)).eps)


def gradient_bound(reference, dtype, reference_error=0.0, magnitude=None, rtol=None, atol=None) -> np.ndarray:
    """The largest ``|analytical - reference|`` that still counts as agreement (see the module docstring)."""
    reference = np.asarray(reference, dtype=np.float64)
    rtol = default_rtol(dtype) if rtol is None else float(rtol)
    if atol is None:
        finite = np.abs(reference[np.isfinite(reference)])
        scale = finite.max(initial=0.0) if magnitude is None else np.asarray(magnitude, dtype=np.float64)
        atol = default_rtol(dtype) * scale
    # The floor keeps subnormal results (a few ulps apart) from failing.
    floor = ULPS * float(np.finfo(np.dtype(dtype)).tiny)
    return SAFETY * np.asarray(reference_error, dtype=np.float64) + rtol * np.abs(reference) + atol + floor


def compare_gradients(analytical, reference, dtype, reference_error=0.0, magnitude=None, rtol=None, atol=None):
    """``(agree, bound)``: elementwise agreement mask and the bound used; NaN agrees with nothing."""
    analytical = np.asarray(analytical, dtype=np.float64)
    bound = gradient_bound(reference, dtype, reference_error, magnitude, rtol, atol)
    with np.errstate(invalid="ignore"):
        agree = np.abs(analytical - reference) <= bound
    return agree & np.isfinite(analytical) & np.isfinite(reference), bound
