"""The problem one check solves: the function, its point, its backend and tolerances, validated.

Building a :class:`Problem` evaluates the function twice and refuses what has no well-defined derivative
(NaN inputs, non-numeric outputs, input mutation, nondeterminism); what the framework does not
differentiate is left out as :mod:`.semantics` says.  It also gives the
analytical products (VJP, JVP), the numerical estimates along a direction, the rounding bound of a
comparison and the names of entries.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from . import oracles
from .backends import is_real_floating_dtype, native_kind
from .errors import MutatedInput, NondeterministicFunction, UncheckableFunction
from .result import entry_status
from .semantics import View, ViewedBackend

MODES = ("auto", "fast", "full")
AD_JITTER_ULPS = 4.0
"""Relative size, in ulps, of the input changes that measure the rounding of an AD result (see
:meth:`Problem.ad_spread`): where an entry fails, or for the FD-free Hessian symmetry."""
AD_ROUNDING_ULPS = 256
"""The checker's rounding allowance for an AD result, in ulps of its dtype (oracles.ULPS is the fuzz
campaign's, for single ops): chains of library kernels lose a few hundred ulps (logcumsumexp's JVP,
~1e-13 in float64), still far below the 1e-8 errors the checker must catch."""
LOW_PRECISION_ULPS = 8
"""The rounding of a 16-bit (float16, bfloat16) AD result, in its ulps: kernels compute in float32 and round each
op's result once, so a correct chain loses a few ulps, while 256 (25% in float16) would hide any error.  A 16-bit
function is judged by MEASURED_ULPS when it runs in float64 and is inconclusive when it does not."""
MEASURED_ULPS = 2
"""The allowance for 16-bit dtypes whose function runs in float64: two ulps of the entry (its own rounding and
its cotangent's or tangent's), and AD_ROUNDING_ULPS of float32 on the terms' sizes (the float64 evaluation of
a kernel that computes in float32); where an entry fails, the measured rounding of the terms that make it
widens it (:meth:`Problem.ad_spread`).  8 ulps of bfloat16 on the entry and on its terms' sizes are 12.5%: a
10% error would pass."""

REFERENCE_FACTOR = 2.0
"""With a reference implementation, a kernel passes where its error is at most this many times the reference's
own error in the same dtype (flash-attention's tests use 2)."""


PRODUCT_SCALES = (3.0, 5.0 / 3.0)
"""Factors on the cotangents and tangents of the AD products that measure a float32 entry's term rounding
(:meth:`Problem.widen_term_rounding`): not powers of two, so every product and sum rounds differently; two,
since one redraw of a rounding can land near the first."""

TERM_ULPS = 4
"""Ulps of float32, on the size of the terms an AD entry combines, by which a float32 entry may differ from the
same AD in float64 when that one is right (:meth:`Problem.widen_term_rounding`)."""


OTHER_FUNCTION_ULPS = 2**12
"""Ulps of the function's dtype, on an output tensor's largest entry, beyond which its float64 evaluation is taken
for another function rather than the same one with less rounding."""


def _same_function(values, wide_values, dtype):
    """Are ``wide_values`` (float64) within OTHER_FUNCTION_ULPS of ``values``' largest entry from ``values``?"""
    values, wide_values = np.asarray(values, np.float64), np.asarray(wide_values, np.float64)
    if values.shape != wide_values.shape:
        return False
    finite = np.isfinite(values) & np.isfinite(wide_values)
    scale = np.max(np.abs(values[finite]), initial=0.0)
    return bool(np.all(np.abs(values - wide_values)[finite] <= OTHER_FUNCTION_ULPS * ulp(dtype) * scale))


def rounding_ulps(dtype) -> float:
    """The rounding allowance of an AD result computed in ``dtype``, in its ulps."""
    return LOW_PRECISION_ULPS if np.dtype(dtype).itemsize <= 2 else AD_ROUNDING_ULPS


def ulp(dtype) -> float:
    """The machine epsilon of ``dtype`` (float16/32/64, bfloat16)."""
    return float(np.finfo(dtype).eps)


class Problem:
    """Everything one check needs: the function, its point, its backend and the tolerance settings.

    The problem is real: :attr:`view` maps the function's inputs and outputs onto it (complex values as
    real pairs, infinite input entries held fixed, only the outputs the framework differentiates, finite
    entries only), and :attr:`backend` evaluates and differentiates through it.  :attr:`nothing_to_check`
    is the reason, when there is no entry to compare or no oracle to judge them (a 16-bit function that
    cannot run in float64), and None otherwise.
    """

    def __init__(self, fn, inputs, backend, atol, rtol, seed, domains, strict=False, reference=None):
        self.fn, self.inner, self.reference_fn = fn, backend, reference
        self.notes = []
        arrays, outputs = self._probe(inputs)
        self.view = View(arrays, outputs, backend.differentiable_outputs(fn, arrays, outputs), backend.conjugate,
                         strict)
        self.notes += self.view.notes
        self.backend = backend if self.view.identity else ViewedBackend(backend, self.view)
        self.arrays = self.view.real_inputs(arrays)
        self.first_outputs = self.view.real_outputs(outputs, selected=False)
        self.reference = [a.astype(np.float64) for a in self.arrays]
        self.shapes = [a.shape for a in self.arrays]
        self.sizes = [a.size for a in self.arrays]
        self.scales = [oracles.step_scale(a) for a in self.arrays]
        self.atol, self.rtol = atol, rtol
        self.rng = np.random.default_rng(seed)
        self.domains = _domains_arg(domains, arrays)
        self.output_shapes = [y.shape for y in self.first_outputs]
        self.output_sizes = [y.size for y in self.first_outputs]
        if reference is not None:
            shapes = [y.shape for y in self.backend.evaluate(reference, self.arrays)]
            if shapes != self.output_shapes:
                raise ValueError(f"reference: returns shapes {shapes} where fn returns {self.output_shapes}")
        self.dtype = max((a.dtype for a in self.arrays + self.first_outputs), key=lambda d: np.finfo(d).eps)
        self.evaluations = 2
        self.nothing_to_check, self.nothing_verdict = self._nothing_to_check(arrays, outputs)
        if self.nothing_to_check:
            return
        self.base = self._reference_outputs(self.first_outputs)
        if self.not_in_float64 and rounding_ulps(self.dtype) == LOW_PRECISION_ULPS:
            # A 16-bit point moves by whole ulps (2**-8 of it in bfloat16): finite differences there carry
            # errors as large as the derivatives they estimate, and would pass a sign error.
            self.nothing_to_check = (
                f"{self.not_in_float64}; finite differences in {self.eval_dtype()} cannot judge derivatives: let "
                "fn run in float64 (cast the tensors it captures to its input's dtype)")
            self.nothing_verdict = "inconclusive"
            return
        self.measured_rounding = rounding_ulps(self.dtype) == LOW_PRECISION_ULPS  # it runs in float64 (see above)
        self.output_scale = self.view.output_sizes_of(self.base)
        if self.dtype == np.float32 and all(a.dtype == np.float64 for a in self.reference):
            # An output that float32 computes by cancellation (a saturated cross-entropy, logsumexp(z) - z_t)
            # moves from its float64 value by the rounding of its terms: that sizes them where its own size cannot.
            own = np.concatenate([np.ravel(y) for y in self.first_outputs]).astype(np.float64)
            self.output_scale = np.maximum(self.output_scale,
                                           self.view.output_sizes_of(own - self.base) / ulp(np.float32))
        self.noise = None
        self._jittered = None
        self._product_scale = 1.0

    def _nothing_to_check(self, arrays, outputs):
        """(reason, verdict) when no entry is left to compare, else (None, None)."""
        shapes = f"inputs of shapes {[a.shape for a in arrays]}, outputs of shapes {[y.shape for y in outputs]}"
        if self.view.no_floating_output:
            return (f"nothing to check: fn has no floating output (dtypes {[str(y.dtype) for y in outputs]}), so "
                    "no derivative"), "pass"
        if sum(self.sizes) == 0:
            return f"nothing to check: no finite input entry to differentiate ({shapes})", "pass"
        if sum(self.output_sizes) == 0:
            if self.view.dropped:
                return ("every entry of the checked outputs is NaN or infinite at the point: there is no "
                        f"derivative to compare ({shapes})"), "inconclusive"
            return f"nothing to check: the checked outputs are empty ({shapes})", "pass"
        return None, None

    def measure_noise(self):
        """Measure the evaluation noise per output (once); later oracle lines account for it.

        A kernel that computes in float32 whatever its inputs (a fused kernel's ``x.float()``) returns float32
        values at float64 points off the float32 grid: its noise is at least float32's rounding of the output,
        which the sixth differences of a staircase underestimate.
        """
        if self.noise is None:
            noise_line = self.line(unflatten(self.random_signs() * flatten(self.scales), self.shapes))
            self.noise = oracles.evaluation_noise(noise_line)
            self.evaluations += noise_line.evaluations
            moved = np.concatenate([np.ravel(v) for t, v in noise_line.cache.items() if t != 0.0])
            moved = moved[np.isfinite(moved)]
            if self.eval_dtype() == np.float64 and moved.size and np.array_equal(moved, moved.astype(np.float32)):
                self.noise = np.maximum(self.noise, ulp(np.float32) * self.output_scale)
                self.notes.append("fn computes in float32 on float64 inputs: the oracle's noise is float32's")

    def _reference_outputs(self, outputs):
        """fn's outputs at the float64 copy of the point; falls back to the inputs' own dtypes.

        A float32 function is differentiated numerically in float64 unless it
        cannot run there (e.g. it mixes its inputs with float32 constants in a
        matmul) or is another function there (its float64 values are more than
        :data:`OTHER_FUNCTION_ULPS` of an output tensor's largest entry away:
        fractional_max_pool draws its pooling regions in the input's dtype);
        then the oracle runs in float32 and its error estimate says so.
        """
        why = None
        try:
            # At a float64 point the probe's outputs are fn's float64 values: no third call.
            float64_point = all(a.dtype == np.float64 for a in self.arrays)
            self.evaluations += not float64_point
            reference = outputs if float64_point else self.evaluate(self.reference)
            if not all(y.dtype == np.float64 for y in reference):
                why = f"fn returns {sorted({str(y.dtype) for y in reference})} at float64 inputs"
        except (RuntimeError, TypeError, ValueError) as error:
            why = f"fn cannot be evaluated in float64 ({type(error).__name__}: {error})"
        if why is None and not all(_same_function(y, wide_y, self.dtype) for y, wide_y in zip(outputs, reference)):
            why = "fn's float64 values are not its values rounded (another function in float64)"
        self.not_in_float64 = why
        if why is not None:
            self.notes.append(why)
            self.reference = [a.copy() for a in self.arrays]
            reference = outputs
            self.notes.append("the numerical oracle ran in the inputs' own dtype, not float64")
        return np.concatenate([np.ravel(y) for y in reference]).astype(np.float64)

    def _probe(self, inputs):
        """(inputs, outputs) as numpy, from two calls at the point: validates them, catches input mutation and
        nondeterminism."""
        be = self.inner
        arrays = [be.to_numpy(x) for x in inputs]
        for i, array in enumerate(arrays):
            if np.isnan(array).any():
                where = np.argwhere(np.isnan(array))[0].tolist()
                raise ValueError(f"inputs[{i}] is NaN at {where}; a NaN input has no derivative (infinite entries "
                                 "are held fixed, NaN ones are refused)")
        natives = be.native_inputs(arrays)
        with be.precision(arrays):
            raw = be.call(self.fn, natives)
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
            if y.dtype.kind not in "biufc" and not is_real_floating_dtype(y.dtype):
                raise TypeError(f"fn's output {i} has dtype {y.dtype}; expected a numeric tensor")
            if y.dtype.kind == "c" and be.conjugate is None:
                raise TypeError(f"fn's output {i} is complex ({y.dtype}): complex derivatives follow a library's "
                                "convention; use torch or jax")
        for i, (native, original) in enumerate(zip(natives, arrays)):
            if not np.array_equal(be.to_numpy(native), original, equal_nan=True):
                raise MutatedInput(
                    f"fn wrote into its input {i} (shape {original.shape}); a function that mutates its inputs "
                    "has no well-defined derivative: copy the input before modifying it"
                )
        _same_values(outputs, be.evaluate(self.fn, arrays), "on its first two calls", self.notes)
        return arrays, outputs

    def confirm_deterministic(self, when):
        """Re-evaluate fn at the point and compare with its first values there (see :func:`_same_values`).

        A function that turns random after its first calls (a dropout enabled late, a counter) would
        otherwise have its noise absorbed by the oracles' noise measurement, hiding real errors.
        """
        _same_values(self.first_outputs, self.evaluate(self.arrays), when, self.notes)
        self.evaluations += 1

    def evaluate(self, arrays):
        return self.backend.evaluate(self.fn, arrays)

    def evaluate_many(self, points):
        """fn's outputs at each of ``points`` near the point (NaN where fn raises, see :meth:`_raising_as_nan`)."""
        return self._raising_as_nan(lambda batch: self.backend.evaluate_many(self.fn, batch), points,
                                    [np.full(self.base.shape, np.nan)])

    def evaluate_rows(self, points):
        """Flattened outputs at each row of ``points`` (flattened inputs), evaluated as one batch."""
        def rows(batch):
            stacked = [piece.reshape((len(batch),) + a.shape).astype(a.dtype) for piece, a in
                       zip(np.split(batch, np.cumsum(self.sizes)[:-1], axis=1), self.reference)]
            outputs = self.backend.evaluate_batch(self.fn, stacked)
            return np.concatenate([y.reshape(len(batch), -1) for y in outputs], axis=1).astype(np.float64)
        return np.stack(self._raising_as_nan(rows, points, np.full(self.base.shape, np.nan)))

    def _raising_as_nan(self, evaluate, points, nan_outputs):
        """``evaluate(points)``, or point by point where it raises, with ``nan_outputs`` for a point fn rejects.

        fn ran at the point itself; a nearby point it rejects (a probability target stepped out of [0, 1])
        lies outside its domain, as one where it returns NaN does, and the oracles shrink their step.
        """
        try:
            return list(evaluate(points))
        except UncheckableFunction:
            raise
        except Exception:  # noqa: BLE001  (which points fn rejects is found one at a time below)
            pass
        outputs = []
        for point in points:
            try:
                outputs.append(evaluate(point[None] if isinstance(points, np.ndarray) else [point])[0])
            except UncheckableFunction:
                raise
            except Exception as error:  # noqa: BLE001
                outputs.append(nan_outputs)
                note = f"fn raised {type(error).__name__} at a nearby point; the oracles treat it as outside the domain"
                if note not in self.notes:
                    self.notes.append(note)
        return outputs

    def line(self, direction):
        line = oracles.Line(self.evaluate_many, self.reference, direction, [a.dtype for a in self.reference],
                            self.noise)
        line.cache[0.0] = self.base
        return line

    def estimates(self, direction, h, stages, ladder=(1.0,), one_sided=0, own_noise=False):
        """One estimate per ladder step along ``direction``; a NaN estimate when no step stays in the domain.

        With ``own_noise`` (re-estimating a failed comparison) their rounding error is sized by the noise
        measured along ``direction`` where it exceeds the point's: an ill-conditioned function (lstsq through an
        SVD) can be five times noisier along one input than along a random direction, and its differences then
        look converged where they are not.
        """
        line = self.line(direction)
        if own_noise:
            self.measure_noise()
            line.noise = np.maximum(self.noise, oracles.evaluation_noise(line))
        estimates = oracles.ladder_estimates(line, h, stages, self.max_step(direction), ladder, one_sided)
        self.evaluations += line.evaluations
        if not estimates:
            nan = np.full(self.base.shape, np.nan)
            estimates = [oracles.Estimate(nan, nan, [np.asarray(d, np.float64) for d in direction], h, 0, nan)]
        return estimates

    def estimate(self, direction, h, stages, ladder=(1.0,), one_sided=0, own_noise=False):
        """The smallest-error estimate along ``direction``."""
        estimates = self.estimates(direction, h, stages, ladder, one_sided, own_noise)
        return min(estimates, key=lambda e: np.nansum(e.error))

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
        cotangents = unflatten(np.multiply(cotangent_flat, self._product_scale), self.output_shapes,
                               self.output_dtypes())
        _, grads = self.backend.vjp(self.fn, self.arrays if arrays is None else arrays, cotangents)
        return flatten(grads) / self._product_scale

    def reference_vjp(self, cotangent_flat):
        """J^T c of the reference implementation at the point, in the inputs' dtypes (None without one)."""
        if self.reference_fn is None:
            return None
        cotangents = unflatten(cotangent_flat, self.output_shapes, self.output_dtypes())
        _, grads = self.backend.vjp(self.reference_fn, self.arrays, cotangents)
        return flatten(grads)

    def reference_jvp(self, tangent_flat):
        """J u of the reference implementation at the point, in the inputs' dtypes (None without one)."""
        if self.reference_fn is None:
            return None
        tangents = unflatten(tangent_flat, self.shapes, [a.dtype for a in self.arrays])
        _, tangent_outputs = self.backend.jvp(self.reference_fn, self.arrays, tangents)
        return flatten(tangent_outputs)

    def vjp_twice(self, cotangent_flat):
        """(J^T c at the point, ``again``): ``again()`` gives J^T c from a second backward through the same graph."""
        cotangents = unflatten(cotangent_flat, self.output_shapes, self.output_dtypes())
        _, grads, again = self.backend.vjp_twice(self.fn, self.arrays, cotangents)
        return flatten(grads), lambda: flatten(again())

    def jvp(self, tangent_flat, arrays=None):
        """J u at the point (or at ``arrays``), flat over the outputs."""
        tangents = unflatten(np.multiply(tangent_flat, self._product_scale), self.shapes,
                             [a.dtype for a in self.arrays])
        _, tangent_outputs = self.backend.jvp(self.fn, self.arrays if arrays is None else arrays, tangents)
        return flatten(tangent_outputs) / self._product_scale

    def ad_spread(self, side, at_point):
        """How far the AD quantity ``side(arrays)``, ``at_point`` at the point, moves when each input moves by
        :data:`AD_JITTER_ULPS` ulps; for a 16-bit function that runs in float64, how far it is from the same
        quantity computed in float64.

        The rounding of an AD result is not always visible in the function's
        values, derivatives or curvature: layer_norm over one element is 0
        whatever its weight, yet the weight's gradient is x - mean(x) as torch
        rounds it (1e-13).  Moving the point by a few ulps redraws that
        rounding, while it moves a smooth derivative by a few ulps only.  A
        16-bit ulp moves the point too far (0.8% in bfloat16), but there the
        float64 evaluation of the same AD measures the rounding of its terms.
        """
        if self.measured_rounding:
            return np.abs(np.asarray(side(self.reference), dtype=np.float64) - np.asarray(at_point, np.float64))
        if self._jittered is None:
            self._jittered = [[(a * (1 + sign * min(AD_JITTER_ULPS, rounding_ulps(a.dtype)) * ulp(a.dtype)
                                     * self.rng.choice([-1.0, 1.0], a.shape))).astype(a.dtype) for a in self.arrays]
                              for sign in (1.0, -1.0)]
        at_point = np.asarray(at_point, dtype=np.float64)
        return np.maximum.reduce([np.abs(np.asarray(side(point), dtype=np.float64) - at_point)
                                  for point in self._jittered])

    def widen_failures(self, status, analytical, numerical, bound, side, by_reference=False):
        """``bound`` plus twice the measured rounding of ``side`` (the ``analytical`` values, at the point)
        where ``status`` fails (entries of ``side`` elsewhere may be anything).

        Failing entries are re-judged in place; the widened bound is returned.  A bound set by a reference
        implementation's error (``by_reference``) is not widened: the kernel's own rounding is what it judges.
        """
        failing = np.asarray(status) == "fail"
        if not failing.any() or (by_reference and self.judged_by_reference):
            return bound
        self.confirm_deterministic("after a failed comparison")
        bound = np.where(failing, bound + oracles.SAFETY * self.ad_spread(side, analytical), bound)
        status[failing] = entry_status(np.asarray(analytical)[failing], np.asarray(numerical)[failing], bound[failing])
        return bound

    def widen_term_rounding(self, status, analytical, numerical, bound, side, term_scale):
        """``bound`` widened where a float32 entry fails by rounding of the terms its AD combines.

        A rule such as log_softmax's ``1 - exp(out)``, with softmax near 1, rounds terms of ``term_scale``
        (full mode: the larger of the entry's input's largest effect on any output and its output's largest
        sensitivity to any input; for J·u, the effects of the inputs the entry depends on) and returns their
        difference: a few ulps of those terms, many of its own.  Where the same AD run
        in float64 (``side`` at the float64 point) matches the finite differences, the rule is right, and a
        float32 entry within :data:`TERM_ULPS` ulps of ``term_scale`` from it passes, or within the measured
        rounding where that is larger: how far the same products move with their cotangents and tangents
        scaled by each of :data:`PRODUCT_SCALES` (the terms of a second derivative, softmax's near 1, need not
        show in any entry), up to :data:`TERM_ULPS` ulps of the function's largest output (a kernel that
        accumulates in bfloat16 moves as much, by far more).  An elementwise function's terms are its entry
        alone: its tail stays judged by its own size.  Failing entries are re-judged in place.
        """
        failing = np.asarray(status) == "fail"
        if (not failing.any() or self.dtype != np.float32 or self.judged_by_reference or self.atol is not None
                or any(a.dtype != np.float64 for a in self.reference)):
            return bound
        analytical, numerical = np.asarray(analytical, np.float64), np.asarray(numerical, np.float64)
        in_float64 = np.asarray(side(self.reference), dtype=np.float64)
        rule_right = np.abs(in_float64 - numerical) <= bound
        if not (failing & rule_right).any():
            return bound
        measured = np.max([np.abs(self._with_products_scaled(side, scale) - analytical) for scale in PRODUCT_SCALES],
                          axis=0)
        largest = TERM_ULPS * ulp(np.float32) * np.max(self.output_scale, initial=0.0)
        rounding = np.minimum(np.abs(analytical - in_float64),
                              np.maximum(TERM_ULPS * ulp(np.float32) * term_scale, np.minimum(measured, largest)))
        widened = np.where(failing & rule_right, bound + oracles.SAFETY * rounding, bound)
        status[failing] = entry_status(analytical[failing], numerical[failing], widened[failing])
        return widened

    def _with_products_scaled(self, side, scale):
        """``side(arrays)`` with every AD product's cotangent or tangent multiplied by ``scale`` and its result
        divided by it: the same values in exact arithmetic, rounded anew."""
        self._product_scale = scale
        try:
            return np.asarray(side(self.arrays), dtype=np.float64)
        finally:
            self._product_scale = 1.0

    @property
    def judged_by_reference(self):
        """Whether comparisons are judged against the reference implementation's error (see :meth:`bound`)."""
        return self.reference_fn is not None and self.atol is None and self.rtol is None

    def eval_dtype(self):
        """The coarsest dtype the numerical oracle evaluates fn in."""
        return max((a.dtype for a in self.reference), key=lambda d: np.finfo(d).eps)

    def output_dtypes(self):
        return [self.dtype] * len(self.output_shapes)

    def random_cotangent(self):
        size = sum(self.output_sizes)
        cotangent = self.rng.choice([-1.0, 1.0], size) * self.rng.uniform(0.5, 1.5, size)
        if rounding_ulps(self.dtype) == LOW_PRECISION_ULPS:
            cotangent = cotangent.astype(self.dtype).astype(np.float64)  # its rounding would be 1/16 of the bound
        return cotangent

    def random_signs(self):
        return self.rng.choice([-1.0, 1.0], sum(self.sizes))

    def bound(self, numerical, oracle_error, magnitude, reference_error=None):
        """The bound for ``|analytical - numerical|``; user atol/rtol replace the rounding allowance.

        With ``reference_error`` (the reference implementation's own error on the same values, see
        :func:`~gradverify.check.check_grad`'s ``reference``) the allowance is :data:`REFERENCE_FACTOR` times it.
        """
        if reference_error is not None and self.judged_by_reference:
            # One ulp of the value besides: a reference that happens to be exact allows the value's rounding.
            return oracles.gradient_bound(numerical, self.dtype, oracle_error, None, ulp(self.dtype),
                                          REFERENCE_FACTOR * np.asarray(reference_error, dtype=np.float64))
        allowance = rounding_ulps(self.dtype) * ulp(self.dtype)
        rtol, terms = allowance, allowance
        if self.measured_rounding:
            rtol, terms = MEASURED_ULPS * ulp(self.dtype), AD_ROUNDING_ULPS * ulp(np.float32)
        rtol = rtol if self.rtol is None else self.rtol
        atol = terms * np.asarray(magnitude, dtype=np.float64) if self.atol is None else self.atol
        return oracles.gradient_bound(numerical, self.dtype, oracle_error, None, rtol, atol)

    # ----------------------------------------------------------------- naming
    def output_name(self, i):
        """``"k[i, j]"``: element ``(i, j)`` of fn's output ``k`` (flat index ``i`` over the checked entries)."""
        return self.view.output_element(*_locate(i, self.output_sizes))

    def input_name(self, j):
        """``(k, "[i, j]")``: input ``k``'s element ``(i, j)`` (flat index ``j`` over the free entries)."""
        k, flat = _locate(j, self.sizes)
        return k, self.view.input_element(k, flat)

    def unit(self, j):
        """The direction moving input element ``j`` (flat over all inputs) by its own scale."""
        flat = np.zeros(sum(self.sizes))
        flat[j] = flatten(self.scales)[j]
        return unflatten(flat, self.shapes)


def validate_options(fn, mode, order, directions, atol, rtol, seed=0, domains=None, strict=False):
    """Raise TypeError / ValueError naming the first of check_grad's arguments that is not what it expects."""
    if not callable(fn):
        raise TypeError(f"fn: expected a callable, got {type(fn).__name__}")
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    if order not in (1, 2):
        raise ValueError(f"order: expected 1 or 2, got {order!r}")
    if not isinstance(directions, int) or directions < 1:
        raise ValueError(f"directions: expected a positive integer, got {directions!r}")
    for argname, value in (("atol", atol), ("rtol", rtol)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"{argname}: expected a finite non-negative number, got {value!r}")
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{argname}: expected a finite non-negative number, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed: expected a non-negative integer, got {seed!r}")
    if seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    if domains is not None:
        if isinstance(domains, (str, bytes)) or not isinstance(domains, Sequence):
            raise TypeError(f"domains: expected a sequence of gradverify.ops.Domain (or None), one per input; got "
                            f"{domains!r}")
        for k, domain in enumerate(domains):
            if domain is not None and not callable(getattr(domain, "max_step", None)):
                raise TypeError(f"domains[{k}]: expected a gradverify.ops.Domain or None, got {domain!r}")
    if not isinstance(strict, bool):
        raise TypeError(f"strict: expected True or False, got {strict!r}")


def _domains_arg(domains, arrays):
    """One Domain or None per input; a Domain bounds real values, so complex inputs take None."""
    if domains is None:
        return [None] * len(arrays)
    domains = list(domains)
    if len(domains) != len(arrays):
        raise ValueError(f"domains: expected one Domain (or None) per input, {len(arrays)} in all; got "
                         f"{len(domains)}")
    for k, (domain, array) in enumerate(zip(domains, arrays)):
        if domain is not None and array.dtype.kind == "c":
            raise ValueError(f"domains[{k}]: input {k} is complex; a Domain bounds real values, pass None")
    return domains


def flatten(arrays):
    return np.concatenate([np.ravel(np.asarray(a, dtype=np.float64)) for a in arrays])


def unflatten(flat, shapes, dtypes=None):
    pieces, start = [], 0
    for k, shape in enumerate(shapes):
        size = int(np.prod(shape, dtype=np.int64))
        piece = flat[start:start + size].reshape(shape)
        pieces.append(piece if dtypes is None else piece.astype(dtypes[k]))
        start += size
    return pieces


def _locate(flat_index, sizes):
    """``(tensor number, flat index within it)`` of a flat index over several tensors."""
    offsets = np.cumsum([0] + list(sizes))
    k = int(np.searchsorted(offsets, flat_index, side="right") - 1)
    return k, int(flat_index - offsets[k])


def _same_values(first, again, when, notes):
    """Raise NondeterministicFunction unless two evaluations at one point agree.

    Multithreaded BLAS/LAPACK reductions change their order from call to call: a difference within a few
    hundred ulps of the output's size is rounding, which the oracles' noise measurement absorbs (a note
    says so); sampling is not.
    """
    for i, (a, b) in enumerate(zip(first, again)):
        if np.array_equal(a, b, equal_nan=True):
            continue
        diff = float(np.nanmax(np.abs(a.astype(np.complex128) - b.astype(np.complex128)), initial=0.0))
        size = float(np.nanmax(np.abs(a.astype(np.complex128)), initial=0.0))
        eps = np.finfo(a.dtype).eps if a.dtype.kind in "fc" or is_real_floating_dtype(a.dtype) else 0.0
        if diff <= rounding_ulps(a.dtype) * eps * size:
            notes.append(f"fn's output {i} differs between identical calls {when} by {diff:.3g} (rounding of a "
                         "multithreaded kernel?); treated as evaluation noise")
            continue
        raise NondeterministicFunction(
            f"fn returned different values for output {i} on calls with identical inputs {when} (largest "
            f"difference {diff:.3g}); finite differences of a random function are meaningless: fix its seed or "
            "remove the randomness (dropout, sampling) before checking"
        )
