"""``check_grad``: compare a function's analytical derivatives with error-bounded numerical oracles.

What is checked
---------------
reverse mode
    VJPs with random cotangents whose entries are ``±[0.5, 1.5]`` (never 1,
    so a backward that ignores its incoming gradient fails).
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
"auto"
    "full" while it costs at most ``FULL_BUDGET`` evaluations, else "fast".

Each comparison is judged against :func:`oracles.gradient_bound`: the
oracle's own error estimate plus a rounding allowance for the dtype the
analytical derivative was computed in, scaled by the size of the terms
(largest Jacobian entry of the block, the output's size, the curvature); a
float32 function is differentiated numerically in float64.  The oracle's
error includes the function's measured evaluation noise.  Where a
comparison fails, the oracle is first refined over other steps (its error
widened by any disagreement between steps); if it still fails and the one-sided derivatives
differ (a kink), the verdict is "pass" when the analytical value lies between
them (a valid subgradient) and "inconclusive" otherwise, naming the element
and both one-sided values.
"""
from __future__ import annotations

import functools
import math
from collections import namedtuple
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import oracles
from .backends import backend_for, native_kind
from .errors import GradientMismatch, MutatedInput, NondeterministicFunction

MODES = ("auto", "fast", "full")
FULL_BUDGET = 6000
"""Largest number of function evaluations "auto" spends on a full Jacobian."""
FAST_DIRECTIONS = 1
"""Random projections in "fast" mode.  One suffices: with ±1 directions an error in any single entry moves
the projection by its full size; more directions guard against a spread error that happens to cancel."""
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
AD_JITTER_ULPS = 4.0
"""Relative size, in ulps, of the input changes that measure the rounding of an AD result (see
:meth:`_Problem.ad_spread`): where an entry fails, or for the FD-free Hessian symmetry."""
AD_ROUNDING_ULPS = 256
"""The checker's rounding allowance for an AD result, in ulps of its dtype (oracles.ULPS is the fuzz
campaign's, for single ops): chains of library kernels lose a few hundred ulps (logcumsumexp's JVP,
~1e-13 in float64), still far below the 1e-8 errors the checker must catch."""
BATCH_ELEMENTS = 2**21
"""Most input elements evaluated in one vmap batch."""
REPORT_ROWS = 10
"""Worst entries kept per check for the report, besides every entry that did not pass."""
CHECK_COLUMNS = ["check", "output", "input", "element", "analytical", "numerical", "error", "bound", "status", "note"]
Entry = namedtuple("Entry", CHECK_COLUMNS)
"""One compared value: what was compared, both values, their difference and the bound it was judged against."""


@dataclass
class CheckResult:
    """The outcome of :func:`check_grad`.

    ``verdict`` is "pass", "fail" or "inconclusive"; ``reason`` says why in
    one sentence; :meth:`to_frame` lists the worst entries with the bound each
    was judged against.
    """

    verdict: str
    reason: str
    records: list
    mode: str
    order: int
    backend: str
    dtype: str
    evaluations: int
    checks: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    @functools.cached_property
    def entries(self) -> pd.DataFrame:
        """The compared values kept for the report (every one that did not pass, the worst that did)."""
        return pd.DataFrame(self.records, columns=CHECK_COLUMNS)

    def to_frame(self) -> pd.DataFrame:
        """The worst entries first (largest error/bound), one row per compared value."""
        frame = self.entries.copy()
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = frame["error"] / frame["bound"]
        ratio = ratio.where(frame["status"] == "pass", np.inf)
        return frame.assign(_r=ratio.fillna(np.inf)).sort_values("_r", ascending=False).drop(columns="_r")\
            .reset_index(drop=True)

    def to_dict(self) -> dict:
        """A JSON-able summary, the worst entries included."""
        rows = self.to_frame().astype(object).where(lambda f: f.notna(), None).to_dict(orient="records")
        for row in rows:
            for key, value in row.items():
                if isinstance(value, float) and not math.isfinite(value):
                    row[key] = str(value)
        return {
            "verdict": self.verdict, "passed": self.passed, "reason": self.reason, "mode": self.mode,
            "order": self.order, "backend": self.backend, "dtype": self.dtype, "evaluations": self.evaluations,
            "checks": list(self.checks), "notes": list(self.notes), "entries": rows,
        }

    def __str__(self) -> str:
        head = (f"check_grad: {self.verdict.upper()} ({self.mode} mode, order {self.order}, {self.backend} "
                f"{self.dtype}, {self.evaluations} evaluations; checked: {', '.join(self.checks)})")
        lines = [head, self.reason]
        lines += [f"note: {n}" for n in self.notes]
        frame = self.to_frame().head(REPORT_ROWS)
        if len(frame):
            with pd.option_context("display.width", 200, "display.max_colwidth", 60, "display.precision", 10):
                lines.append(frame.to_string(index=False))
        return "\n".join(lines)


# --------------------------------------------------------------------- problem
class _Problem:
    """Everything one check needs: the function, its point, its backend and the tolerance settings."""

    def __init__(self, fn, inputs, backend, atol, rtol, seed, domains):
        self.fn, self.backend = fn, backend
        self.arrays = [backend.to_numpy(x) for x in inputs]
        for i, array in enumerate(self.arrays):
            if not np.all(np.isfinite(array)):
                where = np.argwhere(~np.isfinite(array))[0].tolist()
                raise ValueError(f"inputs[{i}] is not finite at {where} ({array[tuple(where)]}); derivatives "
                                 "need finite inputs")
        self.reference = [a.astype(np.float64) for a in self.arrays]
        self.shapes = [a.shape for a in self.arrays]
        self.sizes = [a.size for a in self.arrays]
        self.scales = [oracles.step_scale(a) for a in self.arrays]
        self.atol, self.rtol = atol, rtol
        self.rng = np.random.default_rng(seed)
        self.domains = _domains_arg(domains, len(self.arrays))
        self.notes = []
        outputs = self._probe()
        self.output_shapes = [y.shape for y in outputs]
        self.output_sizes = [y.size for y in outputs]
        if sum(self.sizes) == 0 or sum(self.output_sizes) == 0:
            raise ValueError(f"inputs with shapes {self.shapes} and outputs with shapes {self.output_shapes}: "
                             "there is no element to differentiate")
        self.dtype = max((a.dtype for a in self.arrays + outputs), key=lambda d: np.finfo(d).eps)
        self.base = self._reference_outputs(outputs)
        self.output_scale = np.abs(self.base)
        self.noise = None
        self.evaluations = 3
        self._jittered = None

    def measure_noise(self):
        """Measure the evaluation noise per output (once); later oracle lines account for it."""
        if self.noise is None:
            noise_line = self.line(_split(self.random_signs() * _flat(self.scales), self.shapes))
            self.noise = oracles.evaluation_noise(noise_line)
            self.evaluations += noise_line.evaluations

    def _reference_outputs(self, outputs):
        """fn's outputs at the float64 copy of the point; falls back to the inputs' own dtypes.

        A float32 function is differentiated numerically in float64 unless it
        cannot run there (e.g. it mixes its inputs with float32 constants in a
        matmul); then the oracle runs in float32 and its error estimate says so.
        """
        try:
            reference = self.evaluate(self.reference)
            wide = all(y.dtype == np.float64 for y in reference)
        except (RuntimeError, TypeError, ValueError) as error:
            reference, wide = None, False
            self.notes.append(f"fn cannot be evaluated in float64 ({type(error).__name__}: {error})")
        if not wide:
            self.reference = [a.copy() for a in self.arrays]
            reference = outputs
            self.notes.append("the numerical oracle ran in the inputs' own dtype, not float64")
        return np.concatenate([np.ravel(y) for y in reference]).astype(np.float64)

    def _probe(self):
        """Evaluate twice at the point: validate the outputs, catch input mutation and nondeterminism."""
        be = self.backend
        natives = be.native_inputs(self.arrays)
        with be._precision(self.arrays):
            raw = be._call(self.fn, natives)
        raw_list = list(raw) if isinstance(raw, (tuple, list)) else [raw]
        if not raw_list:
            raise TypeError("fn returned an empty tuple; it must return a tensor or a tuple of tensors")
        if be.name == "numpy":
            raw_list = [np.asarray(y) for y in raw_list]
        for i, y in enumerate(raw_list):
            if native_kind(y) != be.name:
                raise TypeError(f"fn's output {i} is a {type(y).__name__}; expected a {be.name} tensor")
        outputs = [be.to_numpy(y) for y in raw_list]
        for i, y in enumerate(outputs):
            if y.dtype.kind != "f":
                raise TypeError(f"fn's output {i} has dtype {y.dtype}; only real floating outputs have gradients")
        for i, (native, original) in enumerate(zip(natives, self.arrays)):
            if not np.array_equal(be.to_numpy(native), original, equal_nan=True):
                raise MutatedInput(
                    f"fn wrote into its input {i} (shape {original.shape}); a function that mutates its inputs "
                    "has no well-defined derivative: copy the input before modifying it"
                )
        again = be.evaluate(self.fn, self.arrays)
        for i, (first, second) in enumerate(zip(outputs, again)):
            if not np.array_equal(first, second, equal_nan=True):
                diff = np.nanmax(np.abs(first.astype(np.float64) - second.astype(np.float64)), initial=0.0)
                # Multithreaded BLAS/LAPACK reductions change their order from call to call: a few ulps of the
                # output's size is rounding, which the oracles' noise measurement absorbs; sampling is not.
                size = np.nanmax(np.abs(first.astype(np.float64)), initial=0.0)
                if diff <= AD_ROUNDING_ULPS * np.finfo(first.dtype).eps * size:
                    self.notes.append(f"fn's output {i} differs between identical calls by {diff:.3g} (rounding of "
                                      "a multithreaded kernel?); treated as evaluation noise")
                    continue
                raise NondeterministicFunction(
                    f"fn returned different values for output {i} on two calls with identical inputs (largest "
                    f"difference {diff:.3g}); finite differences of a random function are meaningless: fix "
                    "its seed or remove the randomness (dropout, sampling) before checking"
                )
        return outputs

    def evaluate(self, arrays):
        return self.backend.evaluate(self.fn, arrays)

    def evaluate_many(self, points):
        return self.backend.evaluate_many(self.fn, points)

    def evaluate_rows(self, points):
        """Flattened outputs at each row of ``points`` (flattened inputs), evaluated as one batch."""
        stacked = [piece.reshape((len(points),) + a.shape).astype(a.dtype) for piece, a in
                   zip(np.split(points, np.cumsum(self.sizes)[:-1], axis=1), self.reference)]
        outputs = self.backend.evaluate_batch(self.fn, stacked)
        return np.concatenate([y.reshape(len(points), -1) for y in outputs], axis=1).astype(np.float64)

    def line(self, direction):
        line = oracles.Line(self.evaluate_many, self.reference, direction, [a.dtype for a in self.reference],
                            self.noise)
        line.cache[0.0] = self.base
        return line

    def estimates(self, direction, h, stages, ladder=(1.0,), one_sided=0):
        """One estimate per ladder step along ``direction``; a NaN estimate when no step stays in the domain."""
        line = self.line(direction)
        estimates = oracles.ladder_estimates(line, h, stages, self.max_step(direction), ladder, one_sided)
        self.evaluations += line.evaluations
        if not estimates:
            nan = np.full(self.base.shape, np.nan)
            estimates = [oracles.Estimate(nan, nan, [np.asarray(d, np.float64) for d in direction], h, 0, nan)]
        return estimates

    def estimate(self, direction, h, stages, ladder=(1.0,), one_sided=0):
        """The smallest-error estimate along ``direction``."""
        return min(self.estimates(direction, h, stages, ladder, one_sided), key=lambda e: np.nansum(e.error))

    def max_step(self, direction):
        """Room along ``direction`` before an input leaves its declared domain."""
        room = math.inf
        for domain, x, d in zip(self.domains, self.reference, direction):
            moving = d != 0
            if domain is None or not moving.any():
                continue
            room = min(room, float(np.min(domain.max_step(x[moving]) / np.abs(d[moving]))))
        return room

    # ------------------------------------------------------------- analytical
    def vjp(self, cotangent_flat, arrays=None):
        """J^T c at the point (or at ``arrays``), flat over the inputs."""
        cotangents = _split(cotangent_flat, self.output_shapes, self.output_dtypes())
        _, grads = self.backend.vjp(self.fn, self.arrays if arrays is None else arrays, cotangents)
        return _flat(grads)

    def jvp(self, tangent_flat, arrays=None):
        """J u at the point (or at ``arrays``), flat over the outputs."""
        tangents = _split(tangent_flat, self.shapes, [a.dtype for a in self.arrays])
        _, tangent_outputs = self.backend.jvp(self.fn, self.arrays if arrays is None else arrays, tangents)
        return _flat(tangent_outputs)

    def ad_spread(self, side, at_point):
        """How far the AD quantity ``side(arrays)``, ``at_point`` at the point, moves when each input moves by
        :data:`AD_JITTER_ULPS` ulps.

        The rounding of an AD result is not always visible in the function's
        values, derivatives or curvature: layer_norm over one element is 0
        whatever its weight, yet the weight's gradient is x - mean(x) as torch
        rounds it (1e-13).  Moving the point by a few ulps redraws that
        rounding, while it moves a smooth derivative by a few ulps only.
        """
        if self._jittered is None:
            self._jittered = [[(a * (1 + sign * AD_JITTER_ULPS * np.finfo(a.dtype).eps
                                     * self.rng.choice([-1.0, 1.0], a.shape))).astype(a.dtype) for a in self.arrays]
                              for sign in (1.0, -1.0)]
        at_point = np.asarray(at_point, dtype=np.float64)
        return np.maximum.reduce([np.abs(np.asarray(side(point), dtype=np.float64) - at_point)
                                  for point in self._jittered])

    def widen_failures(self, status, analytical, numerical, bound, side):
        """``bound`` plus twice the measured rounding of ``side`` (the ``analytical`` values, at the point)
        where ``status`` fails (entries of ``side`` elsewhere may be anything).

        Failing entries are re-judged in place; the widened bound is returned.
        """
        failing = np.asarray(status) == "fail"
        if not failing.any():
            return bound
        bound = np.where(failing, bound + oracles.SAFETY * self.ad_spread(side, analytical), bound)
        status[failing] = _status(np.asarray(analytical)[failing], np.asarray(numerical)[failing], bound[failing])
        return bound

    def eval_dtype(self):
        """The coarsest dtype the numerical oracle evaluates fn in."""
        return max((a.dtype for a in self.reference), key=lambda d: np.finfo(d).eps)

    def output_dtypes(self):
        return [self.dtype] * len(self.output_shapes)

    def random_cotangent(self):
        size = sum(self.output_sizes)
        return self.rng.choice([-1.0, 1.0], size) * self.rng.uniform(0.5, 1.5, size)

    def random_signs(self):
        return self.rng.choice([-1.0, 1.0], sum(self.sizes))

    def bound(self, numerical, oracle_error, magnitude):
        """The bound for ``|analytical - numerical|``; user atol/rtol replace the rounding allowance."""
        allowance = AD_ROUNDING_ULPS * float(np.finfo(self.dtype).eps)
        rtol = allowance if self.rtol is None else self.rtol
        atol = allowance * np.asarray(magnitude, dtype=np.float64) if self.atol is None else self.atol
        return oracles.gradient_bound(numerical, self.dtype, oracle_error, None, rtol, atol)

    # ----------------------------------------------------------------- naming
    def output_name(self, i):
        """``"k[i, j]"``: element ``(i, j)`` of output ``k``."""
        k, element = _name(i, self.output_sizes, self.output_shapes)
        return f"{k}{element}"

    def input_name(self, j):
        return _name(j, self.sizes, self.shapes)

    def unit(self, j):
        """The direction moving input element ``j`` (flat over all inputs) by its own scale."""
        flat = np.zeros(sum(self.sizes))
        flat[j] = _flat(self.scales)[j]
        return _split(flat, self.shapes)


def _domains_arg(domains, n):
    if domains is None:
        return [None] * n
    domains = list(domains)
    if len(domains) != n:
        raise ValueError(f"domains: expected one Domain (or None) per input, {n} in all; got {len(domains)}")
    return domains


def _flat(arrays):
    return np.concatenate([np.ravel(np.asarray(a, dtype=np.float64)) for a in arrays])


def _split(flat, shapes, dtypes=None):
    pieces, start = [], 0
    for k, shape in enumerate(shapes):
        size = int(np.prod(shape, dtype=np.int64))
        piece = flat[start:start + size].reshape(shape)
        pieces.append(piece if dtypes is None else piece.astype(dtypes[k]))
        start += size
    return pieces


def _name(flat_index, sizes, shapes):
    """``(tensor number, element index)`` of a flat index over several tensors."""
    offsets = np.cumsum([0] + list(sizes))
    k = int(np.searchsorted(offsets, flat_index, side="right") - 1)
    element = np.unravel_index(int(flat_index - offsets[k]), shapes[k])
    return k, "[" + ", ".join(str(int(v)) for v in element) + "]"


# ------------------------------------------------------------------ judgement
def _status(analytical, numerical, bound):
    """Elementwise status: pass / fail / nan-both (NaN or Inf on both sides) / numerical-nonfinite."""
    analytical, numerical = np.asarray(analytical, np.float64), np.asarray(numerical, np.float64)
    a_ok, n_ok = np.isfinite(analytical), np.isfinite(numerical)
    with np.errstate(invalid="ignore"):
        within = np.abs(analytical - numerical) <= bound
    status = np.where(within & a_ok & n_ok, "pass", "fail").astype(object)
    status[~a_ok & ~n_ok] = "nan-both"
    status[a_ok & ~n_ok] = "numerical-nonfinite"
    return status


class _Rows:
    """Collects compared values; keeps every entry that did not pass and the worst passing ones per check.

    ``names(indices)`` gives the (output, input, element) labels of the kept
    entries, so labels are only built for the rows that are reported.
    """

    def __init__(self):
        self.records = []
        self.checks = []

    def add(self, check, analytical, numerical, bound, status, names, notes=None):
        analytical = np.atleast_1d(np.asarray(analytical, dtype=np.float64))
        numerical = np.atleast_1d(np.asarray(numerical, dtype=np.float64))
        bound = np.broadcast_to(np.asarray(bound, dtype=np.float64), analytical.shape)
        status = np.atleast_1d(np.asarray(status, dtype=object))
        notes = np.full(status.shape, "", dtype=object) if notes is None else np.atleast_1d(notes)
        with np.errstate(invalid="ignore", divide="ignore"):
            error = np.abs(analytical - numerical)
            ratio = np.where(status == "pass", error / bound, -np.inf)
        passing = np.flatnonzero(status == "pass")
        worst = passing[np.argsort(ratio[passing])[::-1][:REPORT_ROWS]]
        keep = np.sort(np.concatenate([np.flatnonzero(status != "pass"), worst]))
        for i, (output, input_number, element) in zip(keep, names(keep)):
            self.records.append(Entry(check, output, input_number, element, float(analytical[i]),
                                      float(numerical[i]), float(error[i]), float(bound[i]), status[i], notes[i]))
        if check not in self.checks:
            self.checks.append(check)


def _constant_names(output, input_number, element):
    return lambda indices: [(output, input_number, element)] * len(indices)


# ------------------------------------------------------------------ kinks
KINK_COLUMNS = 32
"""Failing input elements examined for kinks in "full" mode (the rest stay failures)."""


def _one_sided(problem, direction, weights, deep=False):
    """(left, right, spread): one-sided derivatives of ``weights @ f`` along ``direction`` and their error.

    ``weights`` is a matrix (one row per compared value) over the outputs.
    ``deep`` scales the steps down to :data:`DEEP_LADDER`'s, for values that
    only steps that small resolve.
    """
    scale = DEEP_LADDER[-2] * oracles.RICHARDSON_STEP / oracles.CENTRAL_STEP if deep else 1.0
    ladder = tuple(scale * factor for factor in ONE_SIDED_LADDER)
    left = problem.estimate(direction, oracles.CENTRAL_STEP, 3, ladder=ladder, one_sided=-1)
    right = problem.estimate(direction, oracles.CENTRAL_STEP, 3, ladder=ladder, one_sided=+1)
    spread = oracles.SAFETY * (np.abs(weights) @ (left.error + right.error))
    return weights @ left.value, weights @ right.value, spread


def _kink_status(analytical, left, right, spread, bound):
    """Status and note of a failed comparison given the one-sided derivatives there.

    "fail" when they agree (no kink: the failure stands), "subgradient" when
    the analytical value lies between them, "kink" (inconclusive) otherwise.
    """
    if not (math.isfinite(left) and math.isfinite(right)) or abs(right - left) <= spread + bound:
        return "fail", ""
    note = f"one-sided derivatives differ: left {left:.10g}, right {right:.10g}"
    if min(left, right) - bound <= analytical <= max(left, right) + bound:
        return "subgradient", note + "; the analytical value lies between them (a valid subgradient)"
    return "kink", note + "; the analytical value lies outside them"


def _judge_kinks(problem, status, notes, analytical, bound, direction, weights, deep=False):
    """Re-judge the failing entries of ``status`` (a 1-d array over ``weights``' rows) at a possible kink."""
    failing = np.flatnonzero(status == "fail")
    if not len(failing):
        return
    left, right, spread = _one_sided(problem, direction, weights[failing], deep)
    for n, i in enumerate(failing):
        status[i], note = _kink_status(analytical[i], left[n], right[n], spread[n], bound[i])
        notes[i] = "; ".join(text for text in (notes[i], note) if text)


# ---------------------------------------------------------------- full mode
def _full(problem, rows, check_forward, directions):
    n_in, n_out = sum(problem.sizes), sum(problem.output_sizes)
    scales = _flat(problem.scales)
    problem.measure_noise()  # a few evaluations next to the Jacobian's 6 per element
    numerical, error, curvature = oracles.central_jacobian(
        problem.evaluate_rows, _flat(problem.reference), scales, oracles.RICHARDSON_STEP, 3, BATCH_ELEMENTS,
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

    def column_estimates(j, ladder):
        """(values, errors, curvatures) of column j at each step of ``ladder`` that stays in the domain."""
        estimates = problem.estimates(problem.unit(j), oracles.RICHARDSON_STEP, 3, ladder=ladder)
        steps = [_flat(e.direction)[j] for e in estimates]
        values = [e.value / step for e, step in zip(estimates, steps)]
        # The summation noise was sized for the default step; it scales inversely with the step taken.
        errors = [e.error / abs(step) + summation[:, j] * (oracles.RICHARDSON_STEP / e.step)
                  for e, step in zip(estimates, steps)]
        return values, errors, [e.curvature / step**2 for e, step in zip(estimates, steps)]

    def refine(j, ladder):
        """Re-estimate column j over ``ladder``, its error widened by the disagreement between steps."""
        values, errors, curvatures = column_estimates(j, ladder)
        best, widened = oracles.widened_best([analytical[:, j] - v for v in values], errors)
        numerical[:, j], error[:, j], curvature[:, j] = values[best], widened, curvatures[best]

    def rounding_magnitude():
        """(output per input, magnitude): the AD rounding allowance's scales (see below)."""
        output_per_input = np.outer(problem.output_scale, 1.0 / scales) + curvature * scales
        return output_per_input, _block_max(np.abs(numerical), problem.sizes) + output_per_input

    for j in np.flatnonzero(~np.all(np.isfinite(numerical), axis=0) & np.all(np.isfinite(problem.base))):
        refine(j, (1.0,))
    # Steps relative to |x| are tiny for an element near 0, where rounding then swamps small errors:
    # a step on the scale of its tensor competes, and the smaller error wins (widened by any disagreement).
    wide = _wide_step_factors(problem)
    for j in np.flatnonzero(wide > 1.0):
        refine(j, (1.0, wide[j]))

    # Rounding allowance: the largest entry of the input's block; the output's size per unit of input
    # (below the oracle's own noise, so it costs no power; it keeps subnormal or cancelling entries
    # fair); and the curvature times the input's size (ill-conditioned functions).
    output_per_input, magnitude = rounding_magnitude()
    status = _status(analytical, numerical, problem.bound(numerical, error, magnitude))
    for j in np.unique(np.nonzero(status == "fail")[1]):
        refine(j, (1.0,) + REFINE_LADDER + ((wide[j],) if wide[j] > 1.0 else ()))
    bound = problem.bound(numerical, error, magnitude)
    status = _status(analytical, numerical, bound)
    notes = np.full(status.shape, "", dtype=object)
    deepened = np.zeros(status.shape[1], dtype=bool)
    for j in np.unique(np.nonzero(status == "fail")[1])[:KINK_COLUMNS]:
        deepened[j] = _follow_shrinking_steps(column_estimates(j, DEEP_LADDER), status[:, j], notes[:, j],
                                              numerical[:, j], error[:, j], curvature[:, j])
    output_per_input, magnitude = rounding_magnitude()
    bound = problem.bound(numerical, error, magnitude)
    status = np.where(status == "unresolved", status, _status(analytical, numerical, bound))
    reported = numerical.copy()
    for j in np.unique(np.nonzero(status == "fail")[1])[:KINK_COLUMNS]:
        _judge_kinks(problem, status[:, j], notes[:, j], analytical[:, j], bound[:, j], problem.unit(j),
                     np.eye(n_out) / scales[j], deepened[j])
        at_kink = np.isin(status[:, j], ["subgradient", "kink"])
        # Later checks reuse the numerical Jacobian: at a kink they take the analytical value as given.
        numerical[at_kink, j], error[at_kink, j] = analytical[at_kink, j], 0.0
    # So do they where finite differences could not resolve the derivative (the verdict is inconclusive).
    unresolved = status == "unresolved"
    numerical[unresolved], error[unresolved] = analytical[unresolved], 0.0

    failing_rows = np.unique(np.nonzero(status == "fail")[0])
    if len(failing_rows):
        def analytical_rows(point):
            values = analytical.copy()  # rows that pass keep their values: only failing entries are widened
            for i in failing_rows:
                unit = np.zeros(n_out)
                unit[i] = scale[i]
                values[i] = problem.vjp(unit, point) / scale[i]
            return values

        bound = problem.widen_failures(status, analytical, reported, bound, analytical_rows)

    def jacobian_names(indices):
        return [(problem.output_name(i // n_in),) + problem.input_name(i % n_in) for i in indices]

    rows.add("reverse (Jacobian)", analytical.ravel(), reported.ravel(), bound.ravel(), status.ravel(),
             jacobian_names, notes.ravel())

    cotangent = problem.random_cotangent()
    dense = problem.vjp(cotangent)
    reverse = cotangent @ numerical
    bound = problem.bound(reverse, np.abs(cotangent) @ error,
                          np.abs(cotangent) @ (np.abs(numerical) + output_per_input))
    status = _status(dense, reverse, bound)
    bound = problem.widen_failures(status, dense, reverse, bound, lambda point: problem.vjp(cotangent, point))
    rows.add("reverse (random cotangent)", dense, reverse, bound, status,
             lambda indices: [("<c, f>",) + problem.input_name(j) for j in indices])
    if check_forward and problem.backend.has_jvp:
        for _ in range(directions):
            tangent = problem.random_signs() * scales
            checked = _forward_and_consistency(
                problem, rows, tangent, numerical @ tangent, error @ np.abs(tangent),
                np.abs(numerical) @ np.abs(tangent) + output_per_input @ np.abs(tangent), cotangent, dense,
            )
            if not checked:
                break


WIDE_STEP_RATIO = 16.0
"""An element whose |x| is this many times below its tensor's median |x| also gets steps on that median."""


def _wide_step_factors(problem):
    """Per flat input element: its tensor's median scale over its own scale where that exceeds WIDE_STEP_RATIO, else 1."""
    factors = []
    for scale in problem.scales:
        typical = float(np.median(scale)) if scale.size else 1.0
        ratio = typical / scale.reshape(-1)
        factors.append(np.where(ratio > WIDE_STEP_RATIO, ratio, 1.0))
    return np.concatenate(factors) if factors else np.zeros(0)


def _follow_shrinking_steps(deep, status, notes, numerical, error, curvature):
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
        adopt = far & (difference > pair_error + current_error) & (gap <= DEEP_AGREEMENT * np.abs(values[k]))
        adopt &= confirmed & ~replaced
        numerical[adopt], error[adopt], curvature[adopt] = values[k][adopt], pair_error[adopt], curvatures[k][adopt]
        replaced |= adopt
    unsettled = contradicted_anywhere & ~replaced & (status == "fail")
    status[unsettled] = "unresolved"
    for i in np.flatnonzero(unsettled):
        notes[i] = (f"steps {DEEP_LADDER[0]:g} to {DEEP_LADDER[-1]:g} times smaller give "
                    + ", ".join(f"{v[i]:.6g}" for v in values) + f" against {numerical[i]:.6g}")
    return bool(replaced.any())


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


def _block_max(values, sizes):
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


def _jvp_or_none(problem, tangent):
    """J·tangent from forward mode, or None (with a note) when the function has none."""
    try:
        return problem.jvp(tangent)
    except NotImplementedError as unavailable:
        problem.notes.append(f"forward mode not checked: {unavailable}")
        return None


def _forward_and_consistency(problem, rows, tangent, numerical, error, magnitude, cotangent, vjp_flat,
                             kink_direction=None, tangent_out=None, deep=False):
    """Compare J·u from forward mode with the numerical one and with the reverse-mode product.

    With ``kink_direction``, failing entries are re-judged with one-sided
    derivatives along it (at :data:`DEEP_LADDER`'s steps with ``deep``).
    Returns False when the function has no forward mode.
    """
    if tangent_out is None:
        tangent_out = _jvp_or_none(problem, tangent)
        if tangent_out is None:
            return False
    bound = problem.bound(numerical, error, magnitude)
    status = _status(tangent_out, numerical, bound)
    notes = np.full(status.shape, "", dtype=object)
    if kink_direction is not None:
        _judge_kinks(problem, status, notes, tangent_out, bound, kink_direction, np.eye(len(numerical)), deep)
    bound = problem.widen_failures(status, tangent_out, numerical, bound, lambda point: problem.jvp(tangent, point))
    rows.add("forward (random tangent)", tangent_out, numerical, bound, status,
             lambda indices: [(problem.output_name(i), "u", "projection") for i in indices], notes)
    forward_side, reverse_side = cotangent @ tangent_out, vjp_flat @ tangent
    # Tangents are scaled by the inputs' magnitudes, so the outputs' size bounds the rounding of
    # the AD's intermediate terms even where the products themselves cancel (softmax of large logits).
    scale = (np.abs(cotangent) @ np.abs(tangent_out) + np.abs(vjp_flat) @ np.abs(tangent)
             + np.abs(cotangent) @ magnitude)
    bound = np.array([problem.bound(reverse_side, 0.0, scale)], dtype=np.float64).reshape(1)
    status = _status([forward_side], [reverse_side], bound)
    # Both sides are AD results: what jitter measures is the rounding of their difference.
    bound = problem.widen_failures(status, [forward_side - reverse_side], [0.0], bound, lambda point: [
        cotangent @ problem.jvp(tangent, point) - problem.vjp(cotangent, point) @ tangent])
    rows.add("consistency <c, Ju> = <J^T c, u>", forward_side, reverse_side, bound, status,
             _constant_names("<c, f>", "u", "projection"))
    return True


# ---------------------------------------------------------------- fast mode
def _fast(problem, rows, check_forward, directions):
    forward_available = check_forward and problem.backend.has_jvp
    for k in range(directions):
        direction = _split(problem.random_signs() * _flat(problem.scales), problem.shapes)
        cotangent = problem.random_cotangent()
        gradient = problem.vjp(cotangent)
        estimate = problem.estimate(direction, oracles.RICHARDSON_STEP, 3)
        tangent_out = _jvp_or_none(problem, _flat(estimate.direction)) if forward_available else None
        forward_available = tangent_out is not None
        projection_error = np.abs(cotangent) @ estimate.error
        forward_error = estimate.error
        if _fast_comparisons_fail(problem, estimate, cotangent, gradient, tangent_out):
            problem.measure_noise()
            estimate, tangent_out, projection_error, forward_error = _refined_projection(
                problem, direction, cotangent, gradient, forward_available)
        analytical, numerical, bound = _projection(problem, estimate, cotangent, gradient, projection_error)
        status = _status([analytical], [numerical], [bound])
        notes = np.array([""], dtype=object)
        deeper = None
        if status[0] == "fail":
            numerical, error, curvature, deeper = _deep_projection(
                problem, direction, cotangent, gradient, status, notes,
                (analytical, numerical, projection_error, np.abs(cotangent) @ estimate.curvature))
            magnitude = np.sum(np.abs(gradient * _flat(estimate.direction))) + np.abs(cotangent) @ problem.output_scale
            bound = float(problem.bound(numerical, error, magnitude + curvature))
            status[status == "fail"] = _status([analytical], [numerical], [bound])[status == "fail"]
            if deeper is not None:
                estimate, forward_error = deeper, deeper.error
                tangent_out = problem.jvp(_flat(estimate.direction)) if forward_available else None
            forward_available &= status[0] != "unresolved"
        _judge_kinks(problem, status, notes, [analytical], [bound], direction, cotangent[None, :], deeper is not None)
        effective = _flat(estimate.direction)
        bound = problem.widen_failures(status, [analytical], [numerical], np.atleast_1d(bound),
                                       lambda point: [np.sum(problem.vjp(cotangent, point) * effective)])
        rows.add("reverse (projection)", analytical, numerical, bound, status,
                 _constant_names("<c, f>", "all", f"direction {k}"), notes)
        if status[0] in ("fail", "kink"):
            _localize(problem, rows, direction, cotangent, gradient)
        if forward_available:
            _forward_and_consistency(problem, rows, _flat(estimate.direction), estimate.value, forward_error,
                                     _forward_magnitude(problem, estimate), cotangent, gradient,
                                     kink_direction=direction, tangent_out=tangent_out, deep=deeper is not None)


def _refined_projection(problem, direction, cotangent, gradient, forward_available):
    """Estimates over the refinement ladder: (estimate, J·v, projection error, forward errors), widened.

    Each step has its own effective direction, so the residuals (analytical
    minus numerical, which do not depend on the direction's last bits) are
    what the steps are compared on.
    """
    estimates = problem.estimates(direction, oracles.RICHARDSON_STEP, 3, ladder=(1.0,) + REFINE_LADDER)
    tangents_out = [problem.jvp(_flat(e.direction)) if forward_available else None for e in estimates]
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
    largest = _block_max(np.abs(estimate.value)[None, :], problem.output_sizes)[0]
    return largest + problem.output_scale + estimate.curvature


def _fast_comparisons_fail(problem, estimate, cotangent, gradient, tangent_out):
    """Whether the projection or (when given) any forward entry misses its bound with this estimate."""
    analytical, numerical, bound = _projection(problem, estimate, cotangent, gradient)
    if _status([analytical], [numerical], [bound])[0] != "pass":
        return True
    if tangent_out is None:
        return False
    bound = problem.bound(estimate.value, estimate.error, _forward_magnitude(problem, estimate))
    return bool(np.any(_status(tangent_out, estimate.value, bound) != "pass"))


def _projection(problem, estimate, cotangent, gradient, error=None):
    """(analytical <J^T c, v>, numerical <c, J v>, bound) for the estimate's effective direction v.

    ``error`` overrides the oracle error of the projection (default: from the estimate).
    """
    effective = _flat(estimate.direction)
    terms = gradient * effective
    numerical = float(cotangent @ estimate.value)
    magnitude = np.sum(np.abs(terms)) + np.abs(cotangent) @ (problem.output_scale + estimate.curvature)
    error = np.abs(cotangent) @ estimate.error if error is None else error
    bound = float(problem.bound(numerical, error, magnitude))
    return float(np.sum(terms)), numerical, bound


def _localize(problem, rows, direction, cotangent, gradient):
    """Bisect a failing projection down to one input element and report it (with its kink status)."""
    flat_direction = _flat(direction)
    candidates = np.flatnonzero(flat_direction)
    both_halves_failed = False
    while len(candidates) > 1:
        results = []
        for half in np.array_split(candidates, 2):
            masked = np.zeros_like(flat_direction)
            masked[half] = flat_direction[half]
            estimate = problem.estimate(_split(masked, problem.shapes), oracles.RICHARDSON_STEP, 3)
            analytical, numerical, bound = _projection(problem, estimate, cotangent, gradient)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = abs(analytical - numerical) / bound
            results.append((ratio if math.isfinite(ratio) else math.inf, half))
        both_halves_failed |= all(r > 1 for r, _ in results)
        candidates = max(results, key=lambda r: r[0])[1]
    j = int(candidates[0])
    unit = problem.unit(j)
    estimate = problem.estimate(unit, oracles.RICHARDSON_STEP, 3, ladder=(1.0,) + REFINE_LADDER)
    step = _flat(estimate.direction)[j]
    numerical = float(cotangent @ estimate.value) / step
    base = abs(gradient[j]) + np.abs(cotangent) @ problem.output_scale / abs(step)
    curvature = np.abs(cotangent) @ estimate.curvature / abs(step)
    error = np.abs(cotangent) @ estimate.error / abs(step)
    bound = float(problem.bound(numerical, error, base + curvature))
    status = _status([gradient[j]], [numerical], [bound])
    notes = np.array(["localised by bisection" + ("; other elements differ too" if both_halves_failed else "")],
                     dtype=object)
    deeper = None
    if status[0] == "fail":
        numerical, error, curvature, deeper = _deep_projection(problem, unit, cotangent, gradient, status, notes,
                                                               (gradient[j], numerical, error, curvature), element=j)
        bound = float(problem.bound(numerical, error, base + curvature))
        status[status == "fail"] = _status([gradient[j]], [numerical], [bound])[status == "fail"]
    _judge_kinks(problem, status, notes, [gradient[j]], [bound], unit, cotangent[None, :] / _flat(problem.scales)[j],
                 deeper is not None)
    bound = problem.widen_failures(status, [gradient[j]], [numerical], np.atleast_1d(bound),
                                   lambda point: [problem.vjp(cotangent, point)[j]])
    input_number, element = problem.input_name(j)
    rows.add("reverse (localised)", gradient[j], numerical, bound, status,
             _constant_names("<c, f>", input_number, element), notes)


def _deep_projection(problem, direction, cotangent, gradient, status, notes, judged, element=None):
    """:func:`_follow_shrinking_steps` for one failing projection ``<c, J v>`` along ``direction``.

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
            per = _flat(estimate.direction)[element]
            value = float(cotangent @ estimate.value) / per
        for collected, quantity in zip(deep, (value, np.abs(cotangent) @ estimate.error / abs(per),
                                              np.abs(cotangent) @ estimate.curvature / abs(per))):
            collected.append(np.array([quantity]))
    numerical, error, curvature = (np.array([q], dtype=np.float64) for q in judged[1:])
    _follow_shrinking_steps(deep, status, notes, numerical, error, curvature)
    adopted = None
    if numerical[0] != judged[1]:
        # The deep estimate of every output, with the same error rule, for the forward-mode checks.
        middle, last = estimates[-2], estimates[-1]
        gap = np.abs(last.value - middle.value)
        adopted = oracles.Estimate(middle.value, np.maximum(np.minimum(middle.error, oracles.SAFETY * gap), gap),
                                   middle.direction, middle.step, middle.evaluations, middle.curvature)
    return float(numerical[0]), float(error[0]), float(curvature[0]), adopted


# ------------------------------------------------------------------ verdict
_INCONCLUSIVE = {"kink": "is at a kink", "nan-both": "has a NaN/Inf in both the analytical and the numerical "
                 "derivative (never counted as agreement)",
                 "unresolved": "cannot be resolved by finite differences: the function varies faster than the "
                 "smallest step (ill-conditioned?)",
                 "numerical-nonfinite": "has a non-finite numerical derivative (the function is not finite "
                 "near the point)"}


def _ratio(row):
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.float64(row.error) / np.float64(row.bound)
    return ratio if np.isfinite(ratio) else np.inf


def _describe(row):
    where = f"the projection {row.output}" if row.output.startswith("<") else f"output {row.output}"
    at = str(row.element) if row.input in ("all", "u", "u, v") else f"input {row.input} element {row.element}"
    return f"{row.check}: {where} w.r.t. {at}"


def _verdict(rows):
    """(verdict, reason) from the compared entries: any failure fails; kinks and NaNs make it inconclusive."""
    failing = [r for r in rows if r.status == "fail"]
    if failing:
        localised = [r for r in failing if r.check.endswith("reverse (localised)")]
        row = max(localised or failing, key=_ratio)
        kind = "is NaN/Inf while the numerical derivative is finite" if not np.isfinite(row.analytical) else (
            f"differs: analytical {row.analytical:.12g}, numerical {row.numerical:.12g}, error {row.error:.3g} "
            f"> bound {row.bound:.3g}")
        return "fail", f"{_describe(row)} {kind}" + (f" ({row.note})" if row.note else "")
    unsure = [r for r in rows if r.status in _INCONCLUSIVE]
    if unsure:
        row = unsure[0]
        reason = f"{_describe(row)} {_INCONCLUSIVE[row.status]}"
        if row.status in ("kink", "unresolved"):
            reason += f": {row.note} (analytical {row.analytical:.10g})"
        return "inconclusive", reason
    worst = max((_ratio(r) for r in rows if r.status == "pass"), default=0.0)
    subgradients = sum(r.status == "subgradient" for r in rows)
    extra = f"; {subgradients} entries at kinks take a valid subgradient" if subgradients else ""
    return "pass", f"every compared value is within its error bound (worst error/bound {worst:.3g}){extra}"


# ---------------------------------------------------------------------- API
def check_grad(fn, *inputs, mode="auto", order=1, backend="auto", atol=None, rtol=None, seed=0, grad_fn=None,
               vjp_fn=None, jvp_fn=None, domains=None, directions=FAST_DIRECTIONS, check_forward=True):
    """Check the derivatives of ``fn`` at ``inputs`` against error-bounded numerical oracles.

    Parameters
    ----------
    fn:
        a function of the inputs returning one tensor or a tuple of tensors.
    inputs:
        floating-point engine tensors, torch tensors, jax arrays, or numpy
        arrays (then ``grad_fn`` or ``vjp_fn`` supplies the derivative, see
        :class:`gradverify.check.backends.NumpyBackend`); never modified.
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

    Returns a :class:`CheckResult`.  Raises TypeError / ValueError naming the
    argument for bad arguments (non-float or non-finite inputs, mixed
    libraries, outputs that are not floating tensors),
    :class:`~gradverify.check.NondeterministicFunction` when two identical
    calls differ, :class:`~gradverify.check.MutatedInput` when ``fn`` writes
    into an input, and NotImplementedError for ``order=2`` on numpy functions.
    """
    if not callable(fn):
        raise TypeError(f"fn: expected a callable, got {type(fn).__name__}")
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    if order not in (1, 2):
        raise ValueError(f"order: expected 1 or 2, got {order!r}")
    if not isinstance(directions, int) or directions < 1:
        raise ValueError(f"directions: expected a positive integer, got {directions!r}")
    for argname, value in (("atol", atol), ("rtol", rtol)):
        if value is not None and not (isinstance(value, (int, float)) and value >= 0):
            raise ValueError(f"{argname}: expected a non-negative number, got {value!r}")
    be = backend_for(inputs, backend, grad_fn=grad_fn, vjp_fn=vjp_fn, jvp_fn=jvp_fn)
    problem = _Problem(fn, inputs, be, atol, rtol, seed, domains)
    chosen = mode
    if mode == "auto":
        full_cost = 6 * sum(problem.sizes) + sum(problem.output_sizes)
        chosen = "full" if full_cost <= FULL_BUDGET else "fast"
    rows = _Rows()
    # Near overflow, bounds legitimately become inf (nothing is then claimed); do not warn about it.
    with np.errstate(over="ignore"):
        (_full if chosen == "full" else _fast)(problem, rows, check_forward, directions)
    evaluations, notes, records = problem.evaluations, list(problem.notes), list(rows.records)
    checks = list(rows.checks)
    if order == 2:
        second, symmetry = _second_order(problem, be, inputs, chosen, atol, rtol, seed, domains, directions,
                                         check_forward)
        records += [entry._replace(check=f"order 2: {entry.check}") for entry in second.records + symmetry.records]
        evaluations += second.evaluations
        notes += [f"order 2: {n}" for n in second.notes]
        checks += [f"order 2: {c}" for c in second.checks + symmetry.checks]
    verdict, reason = _verdict(records)
    return CheckResult(verdict, reason, records, chosen, order, be.name, str(problem.dtype), evaluations, checks,
                       notes)


def _second_order(problem, be, inputs, mode, atol, rtol, seed, domains, directions, check_forward):
    """(result of checking x -> J(x)^T c like any function, rows of its Hessian's symmetry)."""
    cotangents = _split(problem.random_cotangent(), problem.output_shapes, problem.output_dtypes())
    try:
        derivative = be.derivative_function(problem.fn, cotangents)
    except NotImplementedError as unavailable:
        raise NotImplementedError(f"order=2: {unavailable}") from None
    result = check_grad(derivative, *inputs, mode=mode, order=1, backend=be, atol=atol, rtol=rtol, seed=seed + 1,
                        domains=domains, directions=directions, check_forward=check_forward)
    symmetry = _Rows()
    _hessian_symmetry(_Problem(derivative, inputs, be, atol, rtol, seed + 2, domains), symmetry, directions)
    return result, symmetry


def _hessian_symmetry(problem, rows, directions):
    """An identity free of finite differences: the Jacobian H of x -> J(x)^T c is the Hessian of <c, f>.

    So <u, H v> = <v, H u> for any u, v, each side from one VJP of the
    derivative (reverse over reverse).  A second-order rule that treats a
    saved value as a constant breaks it wherever that value has a partner
    (d/dy of df/dx stays right while d/dx of df/dy loses a term), even where
    finite differences cannot resolve the derivatives.
    """
    scales = _flat(problem.scales)
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
        rows.add("symmetry <u, H v> = <v, H u>", left, right, bound, _status([left], [right], bound),
                 _constant_names("<u, H v>", "u, v", f"direction {k}"))


def assert_grad(fn, *inputs, **options):
    """Like :func:`check_grad`, raising :class:`GradientMismatch` (an AssertionError) unless the verdict is "pass".

    Returns the :class:`CheckResult` when it passes.
    """
    result = check_grad(fn, *inputs, **options)
    if not result.passed:
        raise GradientMismatch(result)
    return result


__all__ = ["check_grad", "assert_grad", "CheckResult", "Entry"]
