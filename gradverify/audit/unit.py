"""The audit's unit of work: (framework, op, sample, dtype, order) -> a result, as a pure function.

:func:`audit_unit` rebuilds the sample from the unit alone, runs
:func:`gradverify.check_grad` on it (reverse, forward and their consistency
at order 1; the derivative of the derivative and the Hessian's symmetry at
order 2) and, for each failing mode, asks the second oracles of
:mod:`gradverify.audit.truth`.  Units and results are plain data (picklable,
JSON-able), so a run can be split over processes or machines.
"""
from __future__ import annotations

import dataclasses
import time
import traceback
from dataclasses import dataclass, field

import numpy as np
from ml_dtypes import bfloat16

from gradverify.check import MutatedInput, NondeterministicFunction, UncheckableFunction, backend_for, check_grad

from . import sources, truth

ORDERS = (1, 2)
FULL_BUDGET = 600
"""Function evaluations (six per input element, one VJP per output element) up to which a sample is checked
entry by entry ("full"); larger samples are checked by random projections with localisation ("fast"), which
still sees an error confined to one entry at its full size.  check_grad's own default allows 6000, which
spends minutes on the few OpInfo samples with thousands of elements (hfftn, cdist)."""
RECHECK_BUDGET = 12000
"""Up to this cost (twice check_grad's default full budget) a sample that fails in fast mode is re-judged entry by
entry, and that verdict stands: a random projection mixes every input's finite-difference error into one value
(an SVD-based lstsq's own noise, 1e-11 of a derivative that reverse AD and mpmath agree on to 1e-14)."""
STATUSES = ("pass", "fail", "inconclusive", "skipped", "refused", "error")
"""skipped: nothing differentiable in the sample; refused: check_grad declined the function (its message says
why); error: the op itself raised."""


@dataclass(frozen=True)
class Unit:
    """One check: sample ``sample`` of ``op`` (an OpInfo id or a JAX function name) in ``dtype``, at ``order``."""

    framework: str
    op: str
    sample: int
    dtype: str
    order: int = 1

    @property
    def key(self) -> str:
        return f"{self.framework}:{self.op}#{self.sample}:{self.dtype}:order{self.order}"


@dataclass
class Failure:
    """One failing mode of a unit: check_grad's worst entry and what each second oracle said.

    ``oracles`` maps an oracle's name to True (agrees the value is wrong), False (says it is right) or is
    missing when the oracle does not apply; ``evidence`` is the confirming oracle's worst entry (output,
    input, element, observed, truth, ulps), from which the reproducer is written.
    """

    mode: str
    check: str
    observed: float
    truth: float
    ulps: float
    oracles: dict
    evidence: dict | None = None

    @property
    def confirmed(self) -> bool:
        return any(agrees for name, agrees in self.oracles.items() if name != "check_grad")


@dataclass
class UnitResult:
    unit: Unit
    status: str
    reason: str
    seconds: float
    sample: str = ""
    failures: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data) -> "UnitResult":
        return cls(Unit(**data["unit"]), data["status"], data["reason"], data["seconds"], data.get("sample", ""),
                   [Failure(**f) for f in data.get("failures", [])])


def _mode(check: str) -> str:
    if check.startswith("order 2") or check.startswith("symmetry"):
        return "second order"
    return check.split(" ", 1)[0]  # reverse, forward or consistency


def _failing_rows(result):
    """{mode: worst failing row} from a check_grad result.

    A failed consistency <c, Ju> = <J^T c, u> blames forward mode only when
    reverse mode agreed with the finite differences and forward mode was not
    already caught on its own.
    """
    worst = {}
    for row in result.records:
        if row.status != "fail":
            continue
        mode = _mode(row.check)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = abs(row.error) / row.bound if row.bound else np.inf
        if mode not in worst or ratio > worst[mode][0]:
            worst[mode] = (ratio, row)
    consistency = worst.pop("consistency", None)
    if consistency is not None and "reverse" not in worst and "forward" not in worst:
        worst["forward"] = consistency
    return {mode: row for mode, (_, row) in worst.items()}


def audit_unit(unit: Unit) -> UnitResult:
    """Check one unit; never raises for a problem of the op or sample (those become the result's status)."""
    start = time.perf_counter()
    source = sources.source(unit.framework)

    def done(status, reason, failures=(), sample=""):
        return UnitResult(unit, status, reason, round(time.perf_counter() - start, 4), sample, list(failures))

    try:
        made = source.case(unit.op, unit.sample, unit.dtype)
    except sources.Skip as skip:
        return done("skipped", str(skip))
    except Exception as error:  # noqa: BLE001  (the op's own failure is a result, not a crash)
        return done("error", f"building the sample raised {type(error).__name__}: {error}"[:300])
    sample = source.describe(unit.op, unit.sample, unit.dtype)
    if unit.order == 2 and not made.gradgrad:
        return done("skipped", "the op does not declare second-order support", sample=sample)
    try:
        outputs = _outputs(made)
        if not all(np.isfinite(y).all() for y in outputs):
            # Outside the op's domain (a negative base to a fractional power): NaN outputs make every
            # gradient they touch NaN (0 * NaN in a broadcast sum), as IEEE arithmetic wants, not a defect.
            return done("skipped", "the op's output is not finite at this sample", sample=sample)
        cost = _full_cost(made, outputs)
        result = check_grad(made.fn, *made.leaves, mode="full" if cost <= FULL_BUDGET else "fast",
                            order=unit.order, check_forward=made.forward)
        if result.verdict == "fail" and FULL_BUDGET < cost <= RECHECK_BUDGET:
            result = check_grad(made.fn, *made.leaves, mode="full", order=unit.order, check_forward=made.forward)
    except MutatedInput:
        return done("skipped", "the op updates an argument in place (running statistics)", sample=sample)
    except (UncheckableFunction, NondeterministicFunction, TypeError, ValueError, NotImplementedError) as refusal:
        return done("refused", f"{type(refusal).__name__}: {refusal}"[:300], sample=sample)
    except Exception as error:  # noqa: BLE001
        last = traceback.format_exception_only(type(error), error)[-1].strip()
        modes = ("second order",) if unit.order == 2 else ("reverse", "forward")
        if any(source.expected_failure(unit.op, mode, [unit.dtype]) for mode in modes):
            # As torch's own tests: double backward of the CPU flash-attention kernel is not implemented.
            return done("skipped", f"the framework's own test of this order expects it to fail: {last}"[:300],
                        sample=sample)
        return done("error", f"check_grad raised {last}"[:300], sample=sample)
    if result.verdict != "fail":
        return done(result.verdict, result.reason, sample=sample)
    failures = _confirm(unit, source, made, _failing_rows(result))
    return done("fail", result.reason, failures, sample)


def _full_cost(made, outputs):
    return 6 * sum(int(np.prod(x.shape)) for x in made.leaves) + sum(y.size for y in outputs)


def _outputs(made):
    backend = backend_for(made.leaves)
    return backend.evaluate(made.fn, [backend.to_numpy(x) for x in made.leaves])


def _confirm(unit, source, made, rows):
    """A Failure per failing mode, with the second oracles' verdicts."""
    dtype = np.dtype(bfloat16) if unit.dtype == "bfloat16" else np.dtype(unit.dtype)
    elementwise = source.mpmath_function(unit.op, unit.sample, unit.dtype, made)
    mp = {}
    if elementwise is not None:
        try:
            mp = truth.elementwise_truths(made.fn, made.leaves, elementwise, dtype, [*rows, "value"])
        except Exception:  # noqa: BLE001  (mpmath outside the function's domain: that oracle says nothing)
            mp = {}
    blocks = _jacobian_truths(unit, source, made, rows)
    failures = []
    for mode, row in rows.items():
        oracles, evidence = {"check_grad": True}, None
        if dtype == np.float64:
            native = source.native_confirmation(made.fn, made.leaves, mode, row.check)
            if native is not None:
                oracles[source.native_checker] = native
        elif _same_ad_in_float64(made, mode):
            # The checker runs in float64 only: at these inputs it judges float64's AD, which matches this one.
            native = source.native_confirmation(made.fn, made.leaves, mode, row.check)
            if native is not None:
                oracles[f"{source.native_checker} in float64"] = native
        for name, found in [("mpmath", mp.get(mode, "n/a")), *blocks.get(mode, [])]:
            if found == "n/a":
                continue
            oracles[name] = found is not None
            if found is not None and evidence is None:
                evidence = dict(found, oracle=name, mode=mode)
        if mp.get("value") is not None and mode in ("reverse", "forward") and not oracles.get("mpmath", True):
            # mpmath says the derivative is right and the value wrong: the finite differences follow a wrong value.
            oracles["mpmath value"] = True
            evidence = dict(mp["value"], oracle="mpmath value", mode="value")
            mode = "value"
        observed, reference = float(row.analytical), float(row.numerical)
        if evidence is not None:
            observed, reference = evidence["observed"], evidence["truth"]
        if any(f.mode == mode for f in failures):
            continue  # reverse and forward both failing on a wrong value: one value failure
        failures.append(Failure(mode, row.check, observed, reference, truth.ulps(observed, reference, dtype),
                                oracles, evidence))
    if any(f.confirmed for f in failures if f.mode != "second order"):
        # Finite differences of a wrong first derivative disagree with a right second one: an unconfirmed
        # second-order failure is then the first-order defect seen again.
        failures = [f for f in failures if f.mode != "second order" or f.confirmed]
    return failures


def _same_ad_in_float64(made, mode):
    """Does the framework's AD in float64, at the same inputs, give what it gives in the unit's dtype?

    Compared on one random projection (J^T w, J t, or H w for the second order), each entry to
    :data:`~gradverify.audit.truth.CONFIRM_ULPS` of its tensor's largest: then a defect of the float64 AD is
    this one's.
    """
    backend = backend_for(made.leaves)
    own = [backend.to_numpy(x) for x in made.leaves]
    wide = [a.astype(np.float64) for a in own]
    rng = np.random.default_rng(0)
    try:
        ones = [np.ones_like(y) for y in backend.evaluate(made.fn, own)]
        signs = [rng.choice([-1.0, 1.0], a.shape) for a in (own if mode != "reverse" else ones)]
        if mode == "forward":
            sides = [backend.jvp(made.fn, arrays, [w.astype(a.dtype) for w, a in zip(signs, arrays)])[1]
                     for arrays in (own, wide)]
        else:
            fn = backend.derivative_function(made.fn, ones) if mode == "second order" else made.fn
            sides = [backend.vjp(fn, arrays, [w.astype(a.dtype) for w, a in zip(signs, arrays)])[1]
                     for arrays in (own, wide)]
    except (RuntimeError, TypeError, ValueError, NotImplementedError):
        return False
    blocks = [[[np.ravel(v).astype(np.float64)[:, None]] for v in side] for side in sides]
    return truth.worst_disagreement(blocks[0], blocks[1], own[0].dtype) is None


def _jacobian_truths(unit, source, made, rows):
    """{mode: [(oracle name, worst disagreement or None)]} from whole Jacobians (float64, reverse AD, other library)."""
    wanted = [m for m in rows if m in ("reverse", "forward")]
    if not wanted:
        return {}
    backend = backend_for(made.leaves)
    arrays = [backend.to_numpy(x) for x in made.leaves]
    dtype = arrays[0].dtype
    found = {}
    for mode in wanted:
        observed = truth.jacobian(backend, made.fn, arrays, mode)
        if observed is None:
            continue
        candidates = []
        if dtype != np.float64:
            candidates.append(("float64", truth.jacobian(backend, made.fn, [a.astype(np.float64) for a in arrays],
                                                         "reverse")))
        if mode == "forward" and "reverse" not in rows:
            candidates.append(("reverse AD", truth.jacobian(backend, made.fn, arrays, "reverse")))
        other = source.other_framework(unit.op, unit.sample, unit.dtype, made)
        if other is not None:
            name, other_backend, other_fn, other_arrays = other
            candidates.append((name, truth.jacobian(other_backend, other_fn, other_arrays, "reverse")))
        found[mode] = [(name, truth.worst_disagreement(observed, blocks, dtype))
                       for name, blocks in candidates if blocks is not None]
    return found
