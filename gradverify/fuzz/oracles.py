"""Five-way differential testing of one graph: engine, PyTorch, JAX, numpy and mpmath.

The library under test (the *target*, the in-house engine by default; see
:mod:`gradverify.fuzz.adapters`) is called "the engine" below; the other
libraries are its references.  :func:`check_case` computes, for the target
and for its references, the
output, the VJP ``J^T v`` for a random cotangent ``v``, the JVP ``J u`` for
random tangents ``u`` and the Hessian-vector product ``H u`` of ``<v, f>``;
then an 80-digit mpmath ground truth of the output, of ``J^T v`` entry by
entry, of ``J u`` and of ``u^T H u``; and numpy's finite-difference and
complex-step estimates of ``J u`` with their error estimates.  Every pair
is compared with :func:`gradverify.check.oracles.compare_gradients`.

How much rounding error a graph allows is measured, not assumed, in two
parts.  The rounding of every intermediate value (half an ulp of each op's
output) is carried through the rest of the graph by measuring each op's
share: PyTorch recomputes every quantity with that op's output moved by a
tiny relative step (:func:`intermediate_rounding`); so an ill-conditioned
graph (log(sin(x)) near a root of sin) gets the allowance it needs.  And the
rounding of the derivative computations themselves: the
derivatives computed by PyTorch and by the engine in float32 and in float64
differ by about the float32 rounding error of *this* graph (cancellations
included); scaled by the ratio of epsilons it estimates the error in the
graph's own precision.  That estimate (per entry, the larger of the two
libraries', at least 1e-3 of its array's largest) enters every bound as the
reference error, next to the checker's relative tolerance grown with the
graph's depth.  Where the ground truth is exactly zero, terms that cancel
leave rounding noise no estimate of the result can see, so the rounding of
the graph's largest quantity is allowed there.  JAX is compared on the
first-order derivatives only: each new shape costs it an XLA compilation.

Oracles (a :class:`Finding` names the one that fired):

``mpmath``            engine against the high-precision ground truth: an
                      engine failure is always one the ground truth confirms.
``torch``, ``jax``    engine against the library.  The engine is blamed when
                      it misses the ground truth and the library does not; the
                      library is blamed (a reference defect) when it misses the
                      ground truth by more than the rounding of the graph's
                      largest quantity; anything else is inconclusive.
``finite_difference``, ``complex_step``
                      engine against numpy's estimates of ``J u`` (entry by
                      entry, and projected on ``v``); a firing the ground
                      truth does not confirm is recorded as inconclusive.
``forward_reverse``   ``<v, J u>`` from forward mode against ``<J^T v, u>``
                      from reverse mode (no reference needed).  Below the
                      rounding of the graph's largest quantity, this and the
                      numerical oracles count only where the ground truth
                      confirms the engine wrong: the chain rule cancels terms
                      of a graph (d/dx softplus(x)/x at x = 21) in every mode.
``second_order``      reverse-over-reverse against forward-over-reverse ``H u``.
``structure``         shape and dtype of every derivative (a gradient has its
                      input's dtype).
``exception``         the engine raised.
``kink_convention``   at kinks, the engine's one-sided choice against
                      PyTorch's, whose conventions the table adopts
                      (:func:`check_kinks`; the random graphs avoid kinks).
``saturation``        entry by entry against the ground truth where outputs
                      round to their limits (sigmoid and tanh at 1, a softmax
                      probability at 1): there a rule built from the rounded
                      output loses every digit of a tiny derivative, which a
                      normwise comparison inside a larger graph cannot see
                      (:func:`check_saturation`).
``program_*``         a stateful program (:mod:`gradverify.fuzz.programs`) run on
                      PyTorch: its losses, gradients, parameters after each step
                      or errors raised (by kind) differ from the engine's.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import mpmath
import numpy as np

import reference_impls
from gradverify.check import oracles as numerical
from gradverify.fuzz import adapters
from gradverify.fuzz.adapters import Derivatives
from gradverify.fuzz.backends import bind, namespace
from gradverify.fuzz.programs import ORACLE_OF
from gradverify.fuzz.surface import SELECTIONS
from gradverify.fuzz.surface import surface as surface_of

ORACLES = (
    "mpmath", "engine", "torch", "jax", "finite_difference", "complex_step", "forward_reverse", "second_order",
    "structure", "exception", "kink_convention", "saturation", "ulps",
    *ORACLE_OF.values(),
)
LIBRARIES = adapters.BUILT_IN
REFERENCE_LIBRARIES = ("torch", "jax")
"""The references of the default target, the in-house engine."""
TRUTH_DPS = 80
TRUTH_STEP = "1e-25"
TRUTH_SECOND_STEP = "1e-18"
ULPS_PER_OP = 8.0
"""Ulps an op may miss its correctly rounded result by (libm and composed formulas are not correctly rounded)."""
ROUNDING_GROWTH = 2.0
"""Tolerance growth per graph node, in units of the checker's default rtol (rounding errors add up along a path)."""
QUANTITIES = ("value", "vjp", "jvp", "hvp")
LADDER_FLOOR = 1e-3
"""Smallest rounding estimate of an entry, relative to the largest of its array."""


@dataclass(frozen=True)
class Finding:
    """One comparison that failed: which oracle, on which derivative, who is blamed, and by how much.

    ``blamed`` is the target's name, a reference library's, or ``unconfirmed`` / ``oracle``.
    """

    oracle: str
    quantity: str
    blamed: str
    detail: str

    def __str__(self):
        verdict = self.blamed if self.blamed in ("unconfirmed", "oracle") else f"{self.blamed} is wrong"
        return f"[{self.oracle}] {self.quantity}: {verdict}: {self.detail}"


@dataclass
class Outcome:
    """All findings for one graph; ``inconclusive`` holds numerical firings the ground truth did not confirm.

    ``target`` names the library under test: its failures are the ``engine_failures``.
    """

    findings: list = field(default_factory=list)
    inconclusive: list = field(default_factory=list)
    target: str = "engine"

    @property
    def engine_failures(self) -> list:
        return [f for f in self.findings if f.blamed == self.target]

    @property
    def reference_defects(self) -> list:
        return [f for f in self.findings if f.blamed != self.target]

    @property
    def fired(self) -> set:
        """Oracles that caught the engine."""
        return {f.oracle for f in self.engine_failures}


@dataclass
class Truth:
    """The 80-digit ground truth rounded to float64, and a bound on its own error per quantity."""

    value: np.ndarray
    vjp: list
    jvp: np.ndarray
    uhu: float
    error: dict


def library_derivatives(library, graph_fn, inputs, cotangent, tangents, second_order=True,
                        forward_over_reverse=False, exact=False):
    """:class:`Derivatives` of the compiled graph computed by ``library`` (a name of :func:`adapters.load`,
    or an :class:`~gradverify.fuzz.adapters.Adapter`).

    ``exact`` runs the graph's mathematical function (``astype`` as identity)
    at the precision of ``inputs``.
    """
    return adapters.get(library).derivatives(graph_fn, inputs, cotangent, tangents, second_order=second_order,
                                             forward_over_reverse=forward_over_reverse, exact=exact)


def ground_truth(graph_fn, inputs, cotangent, tangents) -> Truth:
    """Output, ``J^T v`` (entry by entry), ``J u`` and ``u^T H u`` of ``<v, f>`` at 80 digits.

    First derivatives are central differences at step 1e-25 (truncation
    ~1e-50, rounding ~1e-55 relative to the function's size); the second
    difference uses step 1e-18 (truncation ~1e-36, rounding ~1e-44).  The
    margin matters at saturation: tanh'(27) ~ 1e-24 is the difference of two
    values equal to 1 in their first 24 digits.  So a derivative is exact to
    float64 resolution unless it is 1e-40 times smaller than the function.
    """
    f = bind(graph_fn, "mpmath")
    with mpmath.workdps(TRUTH_DPS):
        h = mpmath.mpf(TRUTH_STEP)
        xs = [reference_impls.to_mp(x, TRUTH_DPS) for x in inputs]
        us = [reference_impls.to_mp(u, TRUTH_DPS) for u in tangents]
        v = reference_impls.to_mp(np.asarray(cotangent), TRUTH_DPS)

        def project(out):
            return mpmath.fsum(np.asarray(np.asarray(out, dtype=object) * v, dtype=object).reshape(-1))

        def shifted(k, j, step):
            moved = [x.copy() for x in xs]
            moved[k].reshape(-1)[j] += step
            return project(f(*moved))

        def along(step):
            return f(*[np.asarray(x + step * u, dtype=object) for x, u in zip(xs, us)])

        center = f(*xs)
        jvp = (np.asarray(along(h), dtype=object) - np.asarray(along(-h), dtype=object)) / (2 * h)
        h2 = mpmath.mpf(TRUTH_SECOND_STEP)
        uhu = (project(along(h2)) - 2 * project(center) + project(along(-h2))) / h2**2
        vjp = []
        for k, x in enumerate(xs):
            entries = [(shifted(k, j, h) - shifted(k, j, -h)) / (2 * h) for j in range(x.size)]
            vjp.append(reference_impls.from_mp(np.array(entries, dtype=object)).reshape(x.shape))
    # Rounding at 80 digits of intermediates no larger than the strategies' VALUE_BOUND (1e4),
    # divided by the steps: what is left of a derivative that is exactly zero.
    noise = 10.0 ** (4 - TRUTH_DPS)
    error = {"value": noise, "vjp": noise / float(TRUTH_STEP), "jvp": noise / float(TRUTH_STEP),
             "hvp": 4 * noise / float(TRUTH_SECOND_STEP) ** 2}
    return Truth(reference_impls.from_mp(center), vjp, reference_impls.from_mp(jvp), float(reference_impls.from_mp(uhu)),
                 error)


def rounding_scale(graph_fn, inputs, cotangent, tangents, dtype, libraries=("torch", "engine"), known=None,
                   as_written=None) -> dict:
    """Estimated rounding error of each derivative entry in ``dtype`` (per quantity; lists per input).

    Each library runs the graph's mathematical function in float32 and
    float64; the difference is its float32 error, scaled by
    eps(dtype)/eps(float32).  The largest over ``libraries`` is kept: one
    library may round a cancellation to exactly zero where another keeps
    noise; and no entry's estimate falls below ``LADDER_FLOOR`` times its
    array's largest (a lucky rounding can hide an entry's error).
    ``known`` maps ``(library, precision)`` to derivatives already computed.

    When ``dtype`` is below the inputs' precision (an ``astype`` narrows part
    of the graph), the graph as written and its mathematical function, both
    at the inputs' precision, differ by the rounding of the casts: that
    difference counts too.  The float32 rung alone can miss it, as a float64
    constant lifts an op of that rung back to float64.  ``as_written`` maps a
    library to its derivatives of the graph as written, already computed.
    """
    known, as_written = known or {}, as_written or {}
    ratio = float(np.finfo(dtype).eps / np.finfo(np.float32).eps)
    input_dtype = np.asarray(inputs[0]).dtype

    def spread(low, high):
        with np.errstate(invalid="ignore"):
            gap = np.abs(np.asarray(low, dtype=np.float64) - np.asarray(high, dtype=np.float64)) * ratio
        return np.where(np.isnan(gap), np.inf, gap)

    runs = []
    for library in libraries:
        try:
            rungs = {
                precision: known.get((library, precision)) or library_derivatives(
                    library, graph_fn, [np.asarray(x, precision) for x in inputs], np.asarray(cotangent, precision),
                    [np.asarray(u, precision) for u in tangents], exact=True,
                )
                for precision in (np.dtype(np.float32), np.dtype(np.float64))
            }
            runs.append(list(rungs.values()))
            if np.dtype(dtype) != input_dtype:
                written = as_written.get(library) or library_derivatives(library, graph_fn, inputs, cotangent, tangents)
                exact = rungs.get(input_dtype) or library_derivatives(
                    library, graph_fn, inputs, cotangent, tangents, exact=True)
                runs.append([written, exact])
        except Exception:  # noqa: BLE001  (a crash is reported by the main comparison; here it only loses an estimate)
            continue

    def combine(arrays):
        shaped = [a for a in arrays if a.shape == arrays[0].shape]
        largest = np.maximum.reduce(shaped)
        return np.maximum(largest, LADDER_FLOOR * np.max(largest, initial=0.0))

    if not runs:
        return {"value": 0.0, "jvp": 0.0, "vjp": [0.0] * len(inputs), "hvp": [0.0] * len(inputs)}
    scale = {name: combine([spread(getattr(low, name), getattr(high, name)) for low, high in runs])
             for name in ("value", "jvp")}
    for name in ("vjp", "hvp"):
        scale[name] = [combine([spread(getattr(low, name)[k], getattr(high, name)[k]) for low, high in runs])
                       for k in range(len(inputs))]
    return scale


EXACT_OPS = frozenset({
    "neg", "abs", "relu", "clip", "astype", "maximum", "minimum", "where", "amax", "amin", "reshape", "permute",
    "broadcast_to", "unsqueeze", "squeeze", "getitem", "concatenate", "stack",
})
"""Table ops whose outputs are exact (selections and moves of their inputs): they round nothing."""
PERTURBATION = 2.0 ** -26
"""Relative step of the sensitivity measurement: far above float64's half ulp, which 1 + h would round away."""


class _PerturbedOps:
    """An op namespace whose ``target``-th rounding op call returns its output times ``1 + step * signs``.

    ``signs`` are a fixed pseudo-random pattern of +-1 over the output's
    entries; ``calls`` counts the rounding op calls (those outside
    :data:`EXACT_OPS`) of one evaluation.
    """

    def __init__(self, ops, target, step):
        self._ops, self._target, self._step = ops, target, step
        self.const, self.value, self.name = ops.const, ops.value, ops.name
        self.surface = _PerturbedSurface(self, surface_of(ops))
        self.calls = 0

    def __getattr__(self, name):
        fn = getattr(self._ops, name)
        return fn if name.startswith("_") or name in EXACT_OPS else self.rounding(fn)

    def rounding(self, fn):
        """``fn`` as one rounding op call of this evaluation."""

        def call(*args, **kwargs):
            out = fn(*args, **kwargs)
            k, self.calls = self.calls, self.calls + 1
            if k != self._target:
                return out
            shape = tuple(np.shape(out))
            signs = np.random.default_rng(k).choice((-1.0, 1.0), size=shape)
            return out * self.const(1.0 + self._step * signs)

        return call


class _PerturbedSurface:
    """The API surface of a :class:`_PerturbedOps`: its functions count (and may perturb) as rounding ops."""

    def __init__(self, perturbed, api, prefix=""):
        self._perturbed, self._api, self._prefix = perturbed, api, prefix
        self.F = _PerturbedSurface(perturbed, api.F, "F.") if not prefix else None

    def __getattr__(self, name):
        fn = getattr(self._api, name)
        return fn if self._prefix + name in SELECTIONS else self._perturbed.rounding(fn)


def _perturbed(graph_fn, target, step=PERTURBATION):
    """``graph_fn`` with the output of its ``target``-th rounding op call perturbed (see :class:`_PerturbedOps`)."""
    return lambda ops, *inputs: graph_fn(_PerturbedOps(ops, target, step), *inputs)


def intermediate_rounding(graph_fn, inputs, cotangent, tangents, dtype, base=None, library="torch") -> dict:
    """First-order effect on every quantity of rounding each intermediate value to ``dtype`` (per entry).

    A float program rounds the output of each op to ``dtype``: a relative
    change of up to half an ulp, ``u = eps(dtype) / 2``, that the rest of
    the graph propagates, amplified where the graph is ill-conditioned
    (log(sin(x)) near a root of sin, the second derivative more so than the
    value).  It is measured: ``library`` computes every quantity in float64
    with the output of one rounding op at a time moved by a relative
    :data:`PERTURBATION` (entries' signs fixed at random), and the change,
    scaled by ``u / PERTURBATION`` (the response is linear at that size),
    is that op's share; the shares add up over the ops.  The reference
    library, not the engine, is perturbed, so an engine bug cannot widen
    its own bound.  ``base`` is ``library``'s unperturbed float64 run if
    already made.
    """
    as64 = [np.asarray(x, np.float64) for x in inputs]
    cot64, tan64 = np.asarray(cotangent, np.float64), [np.asarray(u, np.float64) for u in tangents]
    counter = _PerturbedOps(namespace("numpy"), -1, 0.0)
    with np.errstate(all="ignore"):
        graph_fn(counter, *as64)
    base = base or library_derivatives(library, graph_fn, as64, cot64, tan64, exact=True)
    unit = float(np.finfo(dtype).eps) / 2 / PERTURBATION
    total = None
    for target in range(counter.calls):
        moved = library_derivatives(library, _perturbed(graph_fn, target), as64, cot64, tan64, exact=True)
        shares = {name: _spread(getattr(moved, name), getattr(base, name), unit) for name in QUANTITIES}
        total = shares if total is None else {name: _add(total[name], shares[name]) for name in QUANTITIES}
    if total is None:  # no op rounds
        return {name: _spread(getattr(base, name), getattr(base, name), 0.0) for name in QUANTITIES}
    return total


def _spread(moved, base, unit):
    """``|moved - base| * unit`` (lists entry by entry); a NaN or a changed shape counts as infinite."""
    if isinstance(base, list):
        return [_spread(m, b, unit) for m, b in zip(moved, base)]
    moved, base = np.asarray(moved, np.float64), np.asarray(base, np.float64)
    if moved.shape != base.shape:
        return np.full(base.shape, np.inf)
    with np.errstate(invalid="ignore"):
        gap = np.abs(moved - base) * unit
    return np.where(np.isnan(gap), np.inf, gap)


def _add(a, b):
    return [x + y for x, y in zip(a, b)] if isinstance(a, list) else a + b


def _value_in_ulps(graph_fn, inputs, value, truth, carried, dtype):
    """None when the engine's output is within its rounding budget of the ground truth, else the worst entry.

    The budget of an entry is :data:`ULPS_PER_OP` ulps of its own rounding
    and of every op's carried rounding (``carried``: half an ulp per op, see
    :func:`intermediate_rounding`), plus twice the rounding inside ops (sums
    that cancel) as PyTorch's float32 and float64 outputs differ, scaled to
    ``dtype``: PyTorch's, not the engine's, so an engine that loses digits
    (``log1p`` as ``log(1 + x)``) does not widen its own budget.  An entry
    counts only where PyTorch's own output (in ``dtype``) keeps the budget:
    where it does not (log_softmax's largest entry, -log(1 + 1e-21), rounds
    to 0 in every library), no formula of the libraries does better, and
    the normwise comparisons judge.
    """
    torch_value = bind(graph_fn, "torch", exact=True)
    with np.errstate(all="ignore"):
        low, high = (_torch_forward(torch_value, inputs, p) for p in (np.float32, np.float64))
        reference = _torch_forward(bind(graph_fn, "torch"), inputs, np.asarray(inputs[0]).dtype)
    ratio = float(np.finfo(dtype).eps / np.finfo(np.float32).eps)
    # Twice PyTorch's own: a formula as good as its kernel may round twice as badly (the engine's layer_norm with
    # a cancelling weight and bias missed by 1.02 times PyTorch's rounding in the seed-5 campaign).
    inside = np.nan_to_num(2.0 * np.abs(low - high) * ratio, nan=np.inf)
    exact = np.asarray(truth.value, dtype=np.float64)
    ulp = np.spacing(np.abs(exact).astype(dtype)).astype(np.float64)
    budget = ULPS_PER_OP * (ulp + 2.0 * np.asarray(carried)) + inside + truth.error["value"]
    actual = np.asarray(value, dtype=np.float64)
    if actual.shape != exact.shape:
        return f"shape {actual.shape}, expected {exact.shape}"
    with np.errstate(invalid="ignore"):
        miss = np.abs(actual - exact)
        achieved = np.abs(reference - exact) <= budget
        over = np.where((miss > budget) & achieved, miss / np.maximum(budget, np.finfo(np.float64).tiny), 0.0)
    over = np.where(np.isnan(miss), np.inf, over)
    if not np.any(over):
        return None
    j = np.unravel_index(int(np.argmax(over)), over.shape) if over.ndim else ()
    return (f"entry {tuple(int(i) for i in j)}: got {actual[j]!r}, ground truth {exact[j]!r}: "
            f"{miss[j] / ulp[j]:.3g} ulps of {np.dtype(dtype).name} (budget {budget[j] / ulp[j]:.3g})")


def _torch_forward(fn, inputs, precision):
    import torch

    with torch.no_grad():
        out = fn(*[torch.from_numpy(np.asarray(x, dtype=precision)) for x in inputs])
    return out.double().numpy()


def _numpy_evaluate_many(graph_fn):
    """The graph's mathematical function on numpy, in the checker's batch form (points -> outputs)."""
    fn = bind(graph_fn, "numpy")
    return lambda points: [[np.asarray(fn(*point))] for point in points]


class _Judge:
    """Compares derivatives with the checker's bound: measured rounding scale plus depth-grown rtol."""

    def __init__(self, dtype, depth, scale, tangents):
        self.dtype = np.dtype(dtype)
        self.rtol = numerical.default_rtol(self.dtype) * (1.0 + ROUNDING_GROWTH * depth)
        self.scale = scale
        self.tangents = tangents

    def disagreement(self, actual, expected, reference_error=0.0, magnitude=None, floor=0.0):
        """None when ``actual`` agrees with ``expected``, else a description of the worst entry.

        ``magnitude`` is the size of the summed terms (default: the largest
        ``|expected|``); ``floor`` is an extra absolute allowance.
        """
        actual = np.asarray(actual, dtype=np.float64)
        expected = np.asarray(expected, dtype=np.float64)
        if actual.shape != expected.shape:
            return f"shape {actual.shape}, expected {expected.shape}"
        if magnitude is None:
            magnitude = np.abs(expected[np.isfinite(expected)]).max(initial=0.0)
        atol = self.rtol * np.asarray(magnitude, dtype=np.float64) + floor
        agree, bound = numerical.compare_gradients(
            actual, expected, self.dtype, reference_error=reference_error, rtol=self.rtol, atol=atol
        )
        if np.all(agree):
            return None
        with np.errstate(invalid="ignore", divide="ignore"):
            excess = np.where(agree, 0.0, np.abs(actual - expected) / bound)
        excess = np.where(np.isnan(excess), np.inf, excess)
        worst = np.unravel_index(int(np.argmax(excess)), actual.shape) if actual.ndim else ()
        return (
            f"entry {tuple(int(i) for i in worst)}: got {actual[worst]!r}, expected {expected[worst]!r} "
            f"(bound {np.broadcast_to(bound, actual.shape)[worst]:.3g})"
        )

    def quantity(self, name, actual, expected, floor=0.0, expected_error=0.0):
        """Compare one derivative (``value``, ``jvp``, or per-input ``vjp``/``hvp`` lists) with its rounding scale.

        ``expected_error`` is the reference's own error (the ground truth's).
        """
        if name in ("vjp", "hvp"):
            floors = floor if isinstance(floor, list) else [floor] * len(actual)
            for k, (a, e, err, f) in enumerate(zip(actual, expected, self.scale[name], floors)):
                problem = self.disagreement(a, e, err + expected_error, floor=f)
                if problem is not None:
                    return f"input {k}, {problem}"
            return None
        return self.disagreement(actual, expected, self.scale[name] + expected_error, floor=floor)

    def hessian_projection(self, hvp, truth, floor=0.0):
        """``u^T H u`` from a library's ``H u`` against the ground truth's."""
        uhu, magnitude = _projection(hvp, self.tangents)
        error = sum(float(np.sum(np.abs(u) * err)) for u, err in zip(self.tangents, self.scale["hvp"]))
        return self.disagreement(uhu, truth.uhu, error + truth.error["hvp"], magnitude=magnitude + abs(truth.uhu),
                                 floor=floor)


def _dot(a, b):
    return float(np.sum(np.asarray(a, dtype=np.float64) * np.asarray(b, dtype=np.float64)))


def _abs_dot(a, b):
    return float(np.sum(np.abs(np.asarray(a, dtype=np.float64) * np.asarray(b, dtype=np.float64))))


def _projection(vjp, tangents):
    """``(<g, u>, sum |g u|)`` over per-input lists."""
    return sum(_dot(g, u) for g, u in zip(vjp, tangents)), sum(_abs_dot(g, u) for g, u in zip(vjp, tangents))


def _structure_problem(engine, inputs):
    for name, grads in (("vjp", engine.vjp), ("hvp", engine.hvp), ("forward-over-reverse hvp", engine.hvp_forward)):
        for k, (g, x) in enumerate(zip(grads or (), inputs)):
            if g.shape != x.shape or g.dtype != x.dtype:
                return (f"{name} of input {k} has shape {g.shape} and dtype {g.dtype}; "
                        f"the input has {x.shape}, {x.dtype}")
    if engine.jvp.shape != engine.value.shape or engine.jvp.dtype != engine.value.dtype:
        return (f"jvp has shape {engine.jvp.shape} and dtype {engine.jvp.dtype}; the output has "
                f"{engine.value.shape}, {engine.value.dtype}")
    return None


def _against_truth(judge, derivatives, truth, floor=0.0, zero_floor=0.0, resolution=0.0):
    """Per quantity: None, or how ``derivatives`` misses the ground truth.

    ``floor`` is added to every bound; ``zero_floor`` only where the truth is
    zero at the graph's ``resolution`` (a derivative that terms of the
    graph's size cancel down to nothing keeps their rounding, which no error
    estimate of the result can see).
    """

    def floors(name, expected):
        negligible = np.abs(np.asarray(expected, dtype=np.float64)) <= max(truth.error[name], resolution)
        return floor + zero_floor * negligible

    problems = {
        name: judge.quantity(
            name, getattr(derivatives, name), getattr(truth, name),
            [floors(name, e) for e in truth.vjp] if name == "vjp" else floors(name, getattr(truth, name)),
            truth.error[name],
        )
        for name in ("value", "vjp", "jvp")
    }
    problems["hvp"] = (None if derivatives.hvp is None else judge.hessian_projection(
        derivatives.hvp, truth, floor + zero_floor * (abs(truth.uhu) <= max(truth.error["hvp"], resolution))))
    return problems


def _largest_entry(truth, *arrays):
    """The largest magnitude among the ground truth's derivatives and ``arrays`` (inputs, directions)."""
    everything = [truth.value, truth.jvp, *truth.vjp, *arrays]
    return max(float(np.max(np.abs(np.asarray(a, dtype=np.float64)), initial=0.0)) for a in everything)


def reference_libraries(target="engine") -> tuple:
    """The built-in libraries that check ``target`` (a name or an adapter): all but the target itself."""
    name = adapters.get(target).name
    return tuple(library for library in LIBRARIES if library != name)


def check_case(graph_fn, inputs, cotangent, tangents, depth, precision=None,
               references=REFERENCE_LIBRARIES, target="engine") -> Outcome:
    """Run every oracle on the compiled graph ``graph_fn`` at ``inputs`` (see the module docstring).

    ``depth`` (the number of nodes) grows the relative tolerance;
    ``precision`` is the lowest floating dtype inside the graph (default: the
    inputs' dtype), which sets the rounding allowance; ``target`` is the
    library under test (a name of :func:`adapters.load` or an adapter);
    ``references`` are the libraries compared with it (built-in names; the
    target's own name is skipped).
    """
    target = adapters.get(target)
    name = target.name
    outcome = Outcome(target=name)
    dtype = np.dtype(precision or np.asarray(inputs[0]).dtype)
    try:
        engine = target.derivatives(graph_fn, inputs, cotangent, tangents, forward_over_reverse=True)
    except Exception as error:  # noqa: BLE001  (any crash of the engine is a finding)
        outcome.findings.append(Finding("exception", "all", name, f"{type(error).__name__}: {error}"))
        return outcome
    unknown = set(references) - set(LIBRARIES)
    if unknown:
        raise ValueError(f"references: expected a subset of {LIBRARIES}, got {sorted(unknown)}")
    libraries, references = tuple(library for library in references if library != name), {}
    for library in libraries:
        try:
            references[library] = library_derivatives(
                library, graph_fn, inputs, cotangent, tangents, second_order=library != "jax"
            )
        except Exception as error:  # noqa: BLE001  (a crash of a reference is reported, not fatal)
            outcome.findings.append(Finding("exception", "all", library, f"{type(error).__name__}: {error}"))
    truth = ground_truth(graph_fn, inputs, cotangent, tangents)
    # At the inputs' precision the main runs serve as the ladder's rung (exactly so unless an
    # astype raises part of a float32 graph to float64, which only makes the estimate milder).
    input_dtype = np.asarray(inputs[0]).dtype
    runs = {**references, name: engine}
    main_runs = {library: runs[library] for library in ("engine", "torch") if library in runs}
    exact_runs = {} if dtype != input_dtype else {(library, input_dtype): d for library, d in main_runs.items()}
    scale = rounding_scale(graph_fn, inputs, cotangent, tangents, dtype, known=exact_runs, as_written=main_runs)
    perturbed = "engine" if name == "torch" else "torch"  # never the target: it must not widen its own bound
    try:
        carried = intermediate_rounding(graph_fn, inputs, cotangent, tangents, dtype,
                                        base=exact_runs.get((perturbed, np.dtype(np.float64))), library=perturbed)
        scale = {quantity: _add(scale[quantity], carried[quantity]) for quantity in QUANTITIES}
        problem = _value_in_ulps(graph_fn, inputs, engine.value, truth, carried["value"], dtype)
        if problem is not None:
            outcome.findings.append(Finding("ulps", "value", name, problem))
    except Exception:  # noqa: BLE001  (the library failed on this graph: the comparisons above report its crash)
        outcome.inconclusive.append(Finding(perturbed, "intermediate rounding", "oracle", "not measured"))
    judge = _Judge(dtype, depth, scale, tangents)

    structure = _structure_problem(engine, inputs)
    if structure is not None:
        outcome.findings.append(Finding("structure", "dtype/shape", name, structure))
        shapes = [np.shape(g) for g in engine.vjp + (engine.hvp or []) + (engine.hvp_forward or [])]
        second = 3 if engine.hvp_forward is not None else 2 if engine.hvp is not None else 1
        if shapes != [np.shape(x) for x in inputs] * second or np.shape(engine.jvp) != np.shape(engine.value):
            return outcome  # derivatives of the wrong shape cannot be compared entry by entry

    # Rounding of the graph's largest quantities: the allowance where the summands are unknown
    # (when every derivative is zero, the inputs and directions still size the terms that cancel).
    # It applies where the truth is zero, and in float32 also below what float32 resolves at that
    # size; not so in float64, where such tiny derivatives are where rules lose accuracy.
    largest = _largest_entry(truth, *inputs, cotangent, *tangents)
    graph_rounding = judge.rtol * largest
    resolution = float(np.finfo(np.float32).eps) * largest if dtype == np.float32 else 0.0
    off = {library: _against_truth(judge, ref, truth, zero_floor=graph_rounding, resolution=resolution)
           for library, ref in references.items()}
    estimates = _numerical_estimates(outcome, graph_fn, inputs, tangents)
    engine_wrong = _judge_engine(outcome, judge, engine, truth, references, off, estimates,
                                 graph_rounding, resolution)
    # A reference is blamed only beyond that allowance everywhere.
    for library, ref in references.items():
        ref_off = off[library]
        ref_wrong = _against_truth(judge, ref, truth, floor=graph_rounding)
        for quantity in QUANTITIES:
            if getattr(ref, quantity) is None or getattr(engine, quantity) is None:
                continue
            comparison = judge.quantity(quantity, getattr(engine, quantity), getattr(ref, quantity))
            if comparison is None:
                continue
            if engine_wrong[quantity] is not None and ref_off[quantity] is None:
                outcome.findings.append(Finding(library, quantity, name, comparison))
            elif ref_wrong[quantity] is not None:
                outcome.findings.append(Finding(library, quantity, library, f"{ref_wrong[quantity]} (ground truth)"))
            else:
                outcome.inconclusive.append(Finding(library, quantity, "unconfirmed", comparison))

    _numerical_oracles(outcome, judge, estimates, cotangent, tangents, engine, engine_wrong, truth, graph_rounding)

    forward = _dot(cotangent, engine.jvp)
    reverse, reverse_magnitude = _projection(engine.vjp, tangents)
    rounding = _abs_dot(cotangent, judge.scale["jvp"]) + sum(
        _abs_dot(u, err) for u, err in zip(tangents, judge.scale["vjp"]))
    true_projection = _projection(truth.vjp, tangents)[0]
    magnitude = reverse_magnitude + _abs_dot(cotangent, engine.jvp)
    problem = judge.disagreement(forward, reverse, rounding, magnitude=magnitude,
                                 floor=graph_rounding * (abs(true_projection) <= max(truth.error["vjp"], resolution)))
    if problem is not None:
        # As for the numerical oracles: the two modes' rounding of terms the graph cancels differs too.
        gross = judge.disagreement(forward, reverse, rounding, magnitude=magnitude, floor=graph_rounding)
        confirmed = gross is not None or engine_wrong["vjp"] is not None or engine_wrong["jvp"] is not None
        (outcome.findings if confirmed else outcome.inconclusive).append(
            Finding("forward_reverse", "<v, Ju> vs <J^T v, u>", name if confirmed else "unconfirmed", problem))
    # Two engine modes: no reference whose summands are known, so the graph's largest entry sets the floor.
    problem = None if engine.hvp_forward is None else judge.quantity(
        "hvp", engine.hvp, engine.hvp_forward, floor=graph_rounding)
    if problem is not None:
        outcome.findings.append(Finding("second_order", "hvp reverse vs forward-over-reverse", name, problem))
    return outcome


def _numerical_estimates(outcome, graph_fn, inputs, tangents) -> dict:
    """numpy's finite-difference and complex-step estimates of ``J u`` (those that could be computed)."""
    evaluate = _numpy_evaluate_many(graph_fn)
    estimates = {}
    try:
        estimates["finite_difference"] = numerical.best_estimate(numerical.Line(evaluate, inputs, tangents))
    except (numerical.LeftDomain, FloatingPointError, ValueError) as error:
        outcome.inconclusive.append(Finding("finite_difference", "jvp", "oracle", str(error)))
    with np.errstate(all="ignore"):
        try:
            estimate = numerical.complex_step(evaluate, inputs, tangents)
            if np.all(np.isfinite(estimate.value)):
                estimates["complex_step"] = estimate
        except (TypeError, ValueError) as error:
            outcome.inconclusive.append(Finding("complex_step", "jvp", "oracle", str(error)))
    return estimates


def _judge_engine(outcome, judge, engine, truth, references, off, estimates, graph_rounding, resolution) -> dict:
    """Per quantity: how the engine misses the ground truth, when that counts as a failure (else None).

    A miss beyond the rounding of the graph's largest quantity always counts.
    A smaller one counts when it is an accuracy loss, not a rounding
    accident: the engine keeps fewer than half of its dtype's digits on some
    entry (e.g. a rule that cancels where an output rounds to 1), and another
    computation shows that better is possible (a reference library, or for
    ``J u`` the complex step, meets the ground truth).  Otherwise it is
    inconclusive: the chain rule itself may cancel terms of the graph's size.
    """
    strict = _against_truth(judge, engine, truth, zero_floor=graph_rounding, resolution=resolution)
    gross = _against_truth(judge, engine, truth, floor=graph_rounding)
    step = estimates.get("complex_step")
    step_meets_truth = step is not None and judge.disagreement(
        step.value, np.ravel(truth.jvp), step.error + np.ravel(judge.scale["jvp"]) + truth.error["jvp"]) is None
    half_digits = float(np.sqrt(np.finfo(judge.dtype).eps))
    wrong = {}
    for quantity, problem in strict.items():
        achieved = any(off[library][quantity] is None for library, ref in references.items()
                       if getattr(ref, quantity) is not None) or (quantity == "jvp" and step_meets_truth)
        lost = _relative_miss(quantity, engine, truth, judge.tangents) > half_digits
        counts = gross[quantity] is not None or (achieved and lost)
        wrong[quantity] = problem if problem is not None and counts else None
        if wrong[quantity] is not None:
            outcome.findings.append(Finding("mpmath", quantity, outcome.target, problem))
        elif problem is not None:
            outcome.inconclusive.append(Finding("mpmath", quantity, "unconfirmed",
                                                f"{problem}; no reference does better"))
    return wrong


def _relative_miss(quantity, derivatives, truth, tangents) -> float:
    """The largest relative error of ``derivatives``' ``quantity`` against the ground truth (over its entries)."""
    if quantity == "hvp" and derivatives.hvp is None:  # a target without second order
        return 0.0
    if quantity == "hvp":
        pairs = [(_projection(derivatives.hvp, tangents)[0], truth.uhu)]
    elif quantity == "vjp":
        pairs = list(zip(derivatives.vjp, truth.vjp))
    else:
        pairs = [(getattr(derivatives, quantity), getattr(truth, quantity))]
    worst = 0.0
    for actual, expected in pairs:
        actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
        if actual.shape != expected.shape:
            return np.inf
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.abs(actual - expected) / np.abs(expected)
        worst = max(worst, float(np.max(np.nan_to_num(ratio, nan=0.0, posinf=np.inf), initial=0.0)))
    return worst


def _numerical_oracles(outcome, judge, estimates, cotangent, tangents, engine, engine_wrong, truth,
                       graph_rounding):
    """Finite differences and complex step against the engine, confirmed (or not) by the ground truth."""
    v = np.asarray(cotangent, dtype=np.float64).reshape(-1)
    reverse, magnitude = _projection(engine.vjp, tangents)
    rounding = sum(_abs_dot(u, err) for u, err in zip(tangents, judge.scale["vjp"]))
    true_projection = _projection(truth.vjp, tangents)[0]
    # Confirmed as the ground truth's own verdict (_judge_engine), or when <J^T v, u> misses the truth
    # beyond the rounding of the graph's largest quantity.  A smaller miss of a derivative that the
    # chain rule cancels down to (d/dx softplus(x)/x at x = 21) is rounding no rule can avoid.
    confirmed = {
        "jvp": engine_wrong["jvp"] is not None,
        "vjp": engine_wrong["vjp"] is not None or judge.disagreement(
            reverse, true_projection, rounding, magnitude=magnitude, floor=graph_rounding) is not None,
    }
    for oracle, estimate in estimates.items():
        problems = {
            "jvp": judge.disagreement(np.ravel(engine.jvp), estimate.value,
                                      estimate.error + np.ravel(judge.scale["jvp"])),
            "vjp": judge.disagreement(reverse, float(v @ estimate.value), _abs_dot(v, estimate.error) + rounding,
                                      magnitude=magnitude),
        }
        for quantity, problem in problems.items():
            if problem is None:
                continue
            (outcome.findings if confirmed[quantity] else outcome.inconclusive).append(
                Finding(oracle, quantity, outcome.target if confirmed[quantity] else "unconfirmed", problem)
            )


KINK_PROBES = {
    "relu": ((np.array([-1.0, 0.0, 2.0]),), ()),
    "abs": ((np.array([-1.0, 0.0, 2.0]),), ()),
    "clip": ((np.array([-2.0, -1.0, 0.0, 1.0, 2.0]),), (("lo", -1.0), ("hi", 1.0))),
    "maximum": ((np.array([1.0, 2.0, 3.0]), np.array([1.0, 0.0, 5.0])), ()),
    "minimum": ((np.array([1.0, 2.0, 3.0]), np.array([1.0, 0.0, 5.0])), ()),
    "amax": ((np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]]),), (("axis", 1), ("keepdims", False))),
    "amin": ((np.array([[1.0, 1.0, 3.0], [0.0, 2.0, 0.0]]),), (("axis", 1), ("keepdims", False))),
}
"""Inputs exactly at each kinked op's kinks (zeros, clip bounds, ties)."""


def check_kinks(seed: int = 0) -> list:
    """Findings where the engine's derivative at a kink differs from PyTorch's (the table's conventions).

    Random graphs keep away from kinks, so the conventions are probed here
    directly: each kinked op of the table (``OpDef.kink_gap``) at the inputs of
    :data:`KINK_PROBES`, reverse and forward mode, random cotangent and tangents.
    """
    from gradverify.fuzz.graph import Graph, OpNode
    from gradverify.ops import TABLE

    rng = np.random.default_rng(seed)
    findings = []
    for op in (name for name, opdef in TABLE.items() if opdef.kink_gap is not None):
        if op not in KINK_PROBES:
            findings.append(Finding("kink_convention", op, "engine", "no kink probe declared for this op"))
            continue
        inputs, attrs = KINK_PROBES[op]
        graph = Graph(tuple(x.shape for x in inputs), "float64", (OpNode(op, tuple(range(len(inputs))), attrs),))
        graph_fn = graph.compile()
        out_shape = np.shape(TABLE[op].forward(*inputs, **dict(attrs)))
        cotangent = rng.uniform(0.5, 1.5, out_shape) * rng.choice([-1.0, 1.0], out_shape)
        tangents = [rng.uniform(0.5, 1.5, x.shape) for x in inputs]
        engine, torch_ = (library_derivatives(library, graph_fn, inputs, cotangent, tangents, second_order=False)
                          for library in ("engine", "torch"))
        for quantity in ("vjp", "jvp"):
            ours, theirs = getattr(engine, quantity), getattr(torch_, quantity)
            pairs = zip(ours, theirs) if quantity == "vjp" else [(ours, theirs)]
            for a, b in pairs:
                if not np.allclose(a, b, rtol=1e-12, atol=0.0):
                    findings.append(Finding("kink_convention", f"{op} {quantity}", "engine",
                                            f"engine {np.asarray(a).tolist()}, torch {np.asarray(b).tolist()} "
                                            f"(convention: {TABLE[op].kink_convention})"))
    return findings


SATURATED_KINDS = ("unary", "normalize", "loss")
"""Op kinds probed by :func:`check_saturation` (the ones whose derivatives vanish in the tails)."""
SATURATION_RTOL = 1e-10
"""Per-entry relative tolerance in the tails.  Generous: rounding x - max(x) at |x| ~ 90 alone costs
about 100 ulps of a softmax probability, while a rule that cancels loses most or all of its digits."""


def _saturating_args(opdef, rng):
    """float64 inputs of ``opdef`` far in the tails (20 to 45 in magnitude, inside each input's domain),
    and the op's arguments: input positions, with integer inputs (class indices) as constants."""
    from gradverify.fuzz.graph import Const
    from gradverify.ops.samples import CLASS_LOSS_SHAPES, STRUCTURAL_CASES, sample_values

    if opdef.name in STRUCTURAL_CASES:
        shapes = STRUCTURAL_CASES[opdef.name][0][0]
    elif any(d.integer for d in opdef.domains):
        shapes = CLASS_LOSS_SHAPES[0]
    else:
        shapes = ((2, 3),) * len(opdef.domains)
    inputs, args = [], []
    for domain, shape in zip(opdef.domains, shapes):
        if domain.integer:
            args.append(Const(sample_values(domain, shape, np.float64, rng)))
            continue
        args.append(len(inputs))
        # One entry per row leads the others by at least 20: a softmax over the row saturates.
        values = rng.uniform(20.0, 45.0, shape) * rng.choice([-1.0, 1.0], shape)
        if values.ndim:  # (a 0-d input, a loss's cotangent, only scales)
            values[..., 0] = np.abs(values[..., 0]) + 20.0
        inputs.append(values if np.all(domain.contains(values)) else np.abs(values))
    return inputs, tuple(args)


def check_saturation(seed: int = 0, target="engine") -> list:
    """Findings where the ``target``'s VJP misses the ground truth entry by entry at saturated inputs.

    Each op of the table of a kind in :data:`SATURATED_KINDS`, with its default
    attributes, in float64, at inputs from :func:`_saturating_args` and a random
    cotangent; the 80-digit ground truth of :func:`ground_truth` is the reference.
    """
    from gradverify.fuzz.graph import Graph, OpNode
    from gradverify.ops import TABLE

    name = adapters.get(target).name
    rng = np.random.default_rng(seed)
    findings = []
    for op, opdef in TABLE.items():
        if opdef.kind not in SATURATED_KINDS:
            continue
        inputs, args = _saturating_args(opdef, rng)
        graph = Graph(tuple(x.shape for x in inputs), "float64", (OpNode(op, args, tuple(opdef.attrs.items())),))
        graph_fn = graph.compile()
        out_shape = np.shape(bind(graph_fn, "numpy")(*inputs))
        cotangent = rng.uniform(0.5, 1.5, out_shape) * rng.choice([-1.0, 1.0], out_shape)
        tangents = [np.zeros_like(x) for x in inputs]
        try:
            engine = library_derivatives(target, graph_fn, inputs, cotangent, tangents, second_order=False)
        except Exception as error:  # noqa: BLE001  (a crash of the target is a finding)
            findings.append(Finding("exception", f"{op} at saturated inputs", name,
                                    f"{type(error).__name__}: {error}"))
            continue
        truth = ground_truth(graph_fn, inputs, cotangent, tangents)
        # The truth's differences carry the rounding of <v, f> at TRUTH_DPS digits, and f is large in the
        # tails (exp(65) ~ 1e28), beyond the size ground_truth's own error estimate assumes.
        projection = float(np.sum(np.abs(cotangent * np.asarray(truth.value, dtype=np.float64))))
        floor = max(truth.error["vjp"], 10.0 ** (1 - TRUTH_DPS) * projection / float(TRUTH_STEP))
        for k, (ours, exact) in enumerate(zip(engine.vjp, truth.vjp)):
            if np.shape(ours) != np.shape(exact):  # (a layer_norm weight's cotangent left broadcast)
                findings.append(Finding("saturation", f"{op} vjp of input {k}", name,
                                        f"shape {np.shape(ours)}, expected {np.shape(exact)}"))
                continue
            bound = SATURATION_RTOL * np.abs(exact) + floor
            miss = np.abs(np.asarray(ours, dtype=np.float64) - exact) > bound
            if np.any(miss):
                j = np.unravel_index(int(np.argmax(miss)), miss.shape)
                findings.append(Finding("saturation", f"{op} vjp of input {k}", name,
                                        f"entry {tuple(int(i) for i in j)} at x = {inputs[k][j]!r}: {name} "
                                        f"{np.asarray(ours)[j]!r}, ground truth {exact[j]!r}"))
    return findings


def reproduce(graph_fn, inputs, cotangent, tangents, depth, precision=None, target="engine") -> int:
    """Run every oracle on one graph, print the findings; 1 if the target failed, else 0 (for reproducer scripts)."""
    outcome = check_case(graph_fn, inputs, cotangent, tangents, depth, precision, reference_libraries(target), target)
    for finding in outcome.findings:
        print(finding)
    if not outcome.engine_failures:
        print("every oracle agrees with the engine on this graph")
    return 1 if outcome.engine_failures else 0
