"""Drift measures and the baseline format: ulps, NaN policy, sketches of large arrays, atomic round trips."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gradverify.regress import baseline as baseline_format
from gradverify.regress.drift import Tolerance, entrywise_drift
from gradverify.regress.gate import array_drift, environment_changes

TOLERANCE = Tolerance()

INPUTS_SHA256 = "ab" * 32


def nudged(array, index, ulps):
    """``array`` with entry ``index`` moved ``ulps`` representable numbers towards +inf."""
    out = array.copy()
    for _ in range(ulps):
        out[index] = np.nextafter(out[index], np.inf)
    return out


@given(
    hnp.arrays(np.float64, st.integers(1, 20), elements=st.floats(-1e6, 1e6, allow_subnormal=False).filter(
        lambda v: abs(v) > 1e-6)),
    st.data(),
    st.integers(1, 40),
)
def test_entrywise_drift_counts_ulps_of_a_nudged_entry(array, data, ulps):
    index = data.draw(st.integers(0, array.size - 1))
    drift = entrywise_drift("grad[0]", array, nudged(array, index, ulps), TOLERANCE)
    # Drift is counted in ulps of the larger magnitude; crossing a power of two doubles that ulp.
    assert ulps / 2 <= drift.max_ulps <= ulps
    assert drift.worst == (index,)
    assert drift.exceeded == (drift.max_ulps > TOLERANCE.ulps)
    assert drift.max_rel == pytest.approx(abs(drift.current - drift.baseline) / max(abs(drift.current),
                                                                                   abs(drift.baseline)))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_relative_change_of_1e_6_in_one_entry_is_caught(dtype):
    grad = np.linspace(-2, 3, 50).astype(dtype)
    changed = grad.copy()
    changed[17] = changed[17] * dtype(1 + 1e-6)
    drift = entrywise_drift("grad[0]", grad, changed, TOLERANCE)
    assert drift.exceeded and drift.worst == (17,)
    assert drift.max_rel == pytest.approx(1e-6, rel=0.5)


def test_nan_policy_same_nan_holds_new_nan_is_infinite_drift():
    grad = np.array([1.0, np.nan, np.inf])
    assert entrywise_drift("g", grad, grad.copy(), TOLERANCE).max_ulps == 0
    worse = np.array([np.nan, np.nan, np.inf])
    drift = entrywise_drift("g", grad, worse, TOLERANCE)
    assert drift.exceeded and drift.max_ulps == np.inf and drift.worst == (0,)
    assert entrywise_drift("g", grad, np.array([1.0, np.nan, -np.inf]), TOLERANCE).max_ulps == np.inf


def test_atol_lets_tiny_absolute_changes_of_near_zero_entries_pass():
    grad = np.array([1e-20, 1.0])
    changed = np.array([3e-20, 1.0])
    assert entrywise_drift("g", grad, changed, Tolerance()).exceeded
    assert not entrywise_drift("g", grad, changed, Tolerance(atol=1e-18)).exceeded


def test_large_arrays_are_sketched_and_their_changes_measured_by_projections():
    rng = np.random.default_rng(1)
    grad = rng.standard_normal(20_000)
    stored = baseline_format.StoredArray.of(grad, full_limit=10_000)
    assert stored.sketched and stored.data.shape == (baseline_format.SKETCH_PROJECTIONS,)
    assert array_drift("grad[0]", stored, grad.copy(), TOLERANCE).max_ulps == 0
    one_entry = grad.copy()
    one_entry[123] *= 1 + 1e-6
    drift = array_drift("grad[0]", stored, one_entry, TOLERANCE)
    assert drift.estimated and drift.exceeded
    # A single entry's change, seen through the 2-norm: |g_i| 1e-6 / |g|.
    assert drift.max_rel == pytest.approx(abs(grad[123]) * 1e-6 / np.linalg.norm(grad), rel=1e-6)
    scaled = grad * (1 + 1e-9)
    assert 1e-10 < array_drift("grad[0]", stored, scaled, TOLERANCE).max_rel < 1e-8


def test_shape_or_dtype_change_is_an_infinite_drift():
    stored = baseline_format.StoredArray.of(np.zeros(3))
    assert array_drift("g", stored, np.zeros(4), TOLERANCE).note.startswith("shape (4,) dtype float64")
    assert array_drift("g", stored, np.zeros(3, np.float32), TOLERANCE).exceeded


def test_tolerance_rejects_negative_or_non_finite_values():
    with pytest.raises(ValueError, match="ulps: expected a finite number >= 0, got -1"):
        Tolerance(ulps=-1)
    with pytest.raises(ValueError, match="atol: expected a finite number >= 0, got nan"):
        Tolerance(atol=float("nan"))


def test_write_then_read_round_trips_and_replaces_stale_arrays(tmp_path):
    small, large = np.arange(6.0).reshape(2, 3), np.linspace(0, 1, 30_000, dtype=np.float32)

    def baseline(scale):
        stored = [baseline_format.StoredArray.of(a * scale) for a in (small, large)]
        case = baseline_format.CaseRecord("torch", "float64", INPUTS_SHA256, [(2, 3), (30_000,)], None, True,
                                          {"repeats": 1, "best_s": 1e-3, "median_s": 1e-3}, stored[:1], stored)
        return baseline_format.Baseline({"case": case}, Tolerance(ulps=8))

    path = baseline_format.write(baseline(1.0), tmp_path / "b")
    assert path == tmp_path / "b.json"
    loaded = baseline_format.read(path)
    assert loaded.tolerance == Tolerance(ulps=8)
    case = loaded.cases["case"]
    np.testing.assert_array_equal(case.outputs[0].data, small)
    assert case.gradients[1].sketched and case.gradients[1].shape == (30_000,)
    first_arrays = sorted(p.name for p in tmp_path.glob("b.*.npz"))
    baseline_format.write(baseline(2.0), path, replace=True)
    second_arrays = sorted(p.name for p in tmp_path.glob("b.*.npz"))
    assert len(first_arrays) == len(second_arrays) == 1 and first_arrays != second_arrays
    np.testing.assert_array_equal(baseline_format.read(path).cases["case"].outputs[0].data, 2 * small)


def test_a_tampered_array_fails_its_digest(tmp_path):
    case = baseline_format.CaseRecord("engine", "float64", INPUTS_SHA256, [], None, True,
                                      {"repeats": 1, "best_s": 1e-3, "median_s": 1e-3},
                                      [baseline_format.StoredArray.of(np.ones(3))], [])
    path = baseline_format.write(baseline_format.Baseline({"c": case}), tmp_path / "b.json")
    (arrays,) = tmp_path.glob("b.*.npz")
    np.savez(arrays, c0_output0=np.zeros(3))
    with pytest.raises(baseline_format.BaselineError, match="field cases.c.outputs.0. does not describe array 'c0_output0'"):
        baseline_format.read(path)


def test_rerecording_the_same_arrays_keeps_the_npz_and_repairs_a_damaged_one(tmp_path):
    case = baseline_format.CaseRecord("engine", "float64", INPUTS_SHA256, [], None, True,
                                      {"repeats": 1, "best_s": 1e-3, "median_s": 1e-3},
                                      [baseline_format.StoredArray.of(np.arange(3.0))], [])
    path = baseline_format.write(baseline_format.Baseline({"c": case}), tmp_path / "b.json")
    (arrays,) = tmp_path.glob("b.*.npz")
    first_bytes, first_inode = arrays.read_bytes(), arrays.stat().st_ino
    baseline_format.write(baseline_format.Baseline({"c": case}), path, replace=True)
    assert (arrays.read_bytes(), arrays.stat().st_ino) == (first_bytes, first_inode)  # not even renamed over
    arrays.write_bytes(first_bytes[:50])
    baseline_format.write(baseline_format.Baseline({"c": case}), path, replace=True)
    np.testing.assert_array_equal(baseline_format.read(path).cases["c"].outputs[0].data, np.arange(3.0))


def test_environment_changes_name_what_moved():
    recorded = {"python": "3.11.7", "platform": "Linux", "packages": {"numpy": "2.3.0", "torch": "2.13.0", "jax": None}}
    current = {"python": "3.11.7", "platform": "Linux", "packages": {"numpy": "2.4.0", "torch": "2.13.0", "jax": "0.10"}}
    assert environment_changes(recorded, current) == ["jax None -> 0.10", "numpy 2.3.0 -> 2.4.0"]
    assert environment_changes(recorded, recorded) == []
