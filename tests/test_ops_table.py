"""The op table's declarations, its sample inputs, and its four counterparts in reference_impls."""
import inspect

import mpmath
import numpy as np
import pytest

import reference_impls
from gradverify.ops import TABLE
from gradverify.ops.samples import KINK_MARGIN, kink_cases, sample_cases

OPS = list(TABLE.values())
KINDS = {"unary", "binary", "select", "matmul", "linear", "reduction", "shape", "index", "join", "normalize", "loss"}
EPS64 = np.finfo(np.float64).eps
# Normwise (relative to the largest output, as outputs may cancel).  torch, jax and
# numpy evaluate the same formulas in other orders, and mpmath at 30 digits is exact at
# double precision: the measured worst is 1.5 eps (softmax), so 8 eps leaves headroom.
FLOAT64_FORWARD_TOL = 8 * EPS64
MPMATH_FORWARD_TOL = 8 * EPS64
MPMATH_DPS = 30
# JAX compiles every primitive anew for each input shape (tens of ms each), so it is
# run on a spread of JAX_CASES sample cases per op; the other backends see them all.
JAX_CASES = 3


def spread(items, count):
    """About ``count`` of ``items``, evenly spaced, the first included."""
    return items[:: -(-len(items) // count)]


def normwise_error(actual, expected):
    """max |actual - expected| relative to the largest magnitude in either (0 when both are 0)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"shape {actual.shape}, expected {expected.shape}"
    if expected.size == 0:
        return 0.0
    scale = max(float(np.max(np.abs(actual))), float(np.max(np.abs(expected))), np.finfo(np.float64).tiny)
    return float(np.max(np.abs(actual - expected))) / scale


def attr_names(op):
    """The attribute (non-array) parameter names of the op's forward (a numpy ufunc has none)."""
    if isinstance(op.forward, np.ufunc):
        return set()
    params = list(inspect.signature(op.forward).parameters.values())
    if op.variadic:
        return {p.name for p in params if p.kind is p.KEYWORD_ONLY}
    return {p.name for p in params[len(op.domains):]}


@pytest.mark.parametrize("backend", reference_impls.BACKENDS)
def test_every_op_has_a_counterpart_with_its_attributes(backend):
    missing, wrong_signature = [], []
    for op in OPS:
        try:
            fn = reference_impls.get(backend, op.ref)
        except KeyError:
            missing.append(op.name)
            continue
        names = attr_names(op)
        if names:
            accepted = set(inspect.signature(fn).parameters)
            if not names <= accepted:
                wrong_signature.append(f"{op.name} lacks {sorted(names - accepted)}")
    assert not missing, f"reference_impls.{backend}_ops has no counterpart for: {', '.join(missing)}"
    assert not wrong_signature, f"reference_impls.{backend}_ops: {'; '.join(wrong_signature)}"


def test_get_names_the_unknown_op_and_backend():
    with pytest.raises(KeyError, match="no_such_op"):
        reference_impls.get("numpy", "no_such_op")
    with pytest.raises(ValueError, match="tensorflow"):
        reference_impls.get("tensorflow", "exp")


def test_mp_round_trip_is_exact_and_leaves_integers_alone():
    values = np.array([0.1, -2.5e-300, 1e300, 3.0])
    assert np.array_equal(reference_impls.from_mp(reference_impls.to_mp(values)), values)
    targets = np.array([0, 3, 1])
    assert reference_impls.to_mp(targets) is targets


@pytest.mark.parametrize("backend", reference_impls.BACKENDS)
@pytest.mark.parametrize("op", OPS, ids=lambda op: op.name)
def test_forward_agrees_with_counterpart(op, backend):
    fn = reference_impls.get(backend, op.ref)
    tol = MPMATH_FORWARD_TOL if backend == "mpmath" else FLOAT64_FORWARD_TOL
    case_list = sample_cases(op, np.float64)
    for arrays, attrs in spread(case_list, JAX_CASES) if backend == "jax" else case_list:
        expected = np.asarray(op.forward(*arrays, **attrs))
        with mpmath.workdps(MPMATH_DPS):
            result = fn(*[reference_impls.to_backend(a, backend, MPMATH_DPS) for a in arrays], **attrs)
        # mpmath has no storage dtype: round its value to the dtype the table produced.
        actual = reference_impls.to_numpy(result, dtype=expected.dtype if backend == "mpmath" else None)
        assert actual.dtype == expected.dtype, f"{op.name}{attrs}: dtype {actual.dtype}, table {expected.dtype}"
        error = normwise_error(actual, expected)
        assert error <= tol, f"{op.name}{attrs} on {[a.shape for a in arrays]}: error {error:.2e} > {tol:.2e}"


@pytest.mark.parametrize("op", OPS, ids=lambda op: op.name)
def test_opdef_fields_are_consistent(op):
    assert TABLE[op.name] is op and op.kind in KINDS, f"{op.name}: kind {op.kind!r}"
    assert len(op.domains) >= 1 and not (op.variadic and len(op.domains) != 1), f"{op.name}: domains {op.domains}"
    assert all(0 <= i < len(op.domains) for i in op.nondiff), f"{op.name}: nondiff {op.nondiff}"
    assert set(op.attrs) <= attr_names(op), f"{op.name}: attrs {sorted(op.attrs)} not parameters of its forward"
    for domain in op.domains:
        lo, hi = domain.sample
        assert domain.low <= lo <= hi <= domain.high, f"{op.name}: sample range {domain.sample} outside the domain"
    if op.smooth:
        assert not op.kink_convention, f"{op.name}: a kink convention without a kink_gap"
    else:
        assert op.kink_convention, f"{op.name}: has kinks but states no convention at them"


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("op", OPS, ids=lambda op: op.name)
def test_samples_are_inside_domains_and_away_from_kinks(op, dtype):
    cases = sample_cases(op, dtype)
    assert len(cases) >= 3, f"{op.name}: only {len(cases)} sample cases"
    first, second = ([a for arrays, _ in run for a in arrays] for run in (cases, sample_cases(op, dtype)))
    assert all(map(np.array_equal, first, second)), f"{op.name}: samples are not deterministic"
    for arrays, attrs in cases:
        domains = op.domains * len(arrays) if op.variadic else op.domains
        assert len(domains) == len(arrays)
        for i, (domain, array) in enumerate(zip(domains, arrays)):
            assert array.dtype == (np.int64 if domain.integer else dtype), f"{op.name} input {i}: {array.dtype}"
            assert np.all(domain.contains(array)), f"{op.name} input {i} leaves its domain: {array}"
        if not op.smooth:
            assert np.min(np.abs(op.kink_gap(*arrays, **attrs))) >= KINK_MARGIN
        assert np.all(np.isfinite(op.forward(*arrays, **attrs))), f"{op.name}{attrs}: non-finite output"
    if op.broadcasts:
        assert any(len({a.shape for a in arrays}) > 1 for arrays, _ in cases), f"{op.name}: no broadcasting case"


NON_SMOOTH = [op for op in OPS if not op.smooth]


@pytest.mark.parametrize("op", NON_SMOOTH, ids=lambda op: op.name)
def test_kink_cases_sit_on_kinks(op):
    cases = kink_cases(op)
    assert cases, f"{op.name}: no kink cases"
    for arrays, attrs in cases:
        assert np.min(np.abs(op.kink_gap(*arrays, **attrs))) == 0, f"{op.name}{attrs}: {arrays} is not on a kink"
