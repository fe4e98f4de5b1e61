"""The numerical oracles: their values are within their own error estimates, and the estimates are small."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import reference_impls
from gradverify.check import oracles


def numpy_line(fn, point, direction, noise=None):
    """An oracle Line over a numpy function of one array."""
    return oracles.Line(lambda points: [[fn(*p)] for p in points], [np.asarray(point, dtype=np.float64)],
                        [np.asarray(direction, dtype=np.float64)], noise=noise)


FUNCTIONS = {
    "exp": (np.exp, np.exp),
    "sin": (np.sin, np.cos),
    "log": (np.log, lambda x: 1 / x),
    "tanh": (np.tanh, lambda x: 1 - np.tanh(x) ** 2),
}


@given(name=st.sampled_from(sorted(FUNCTIONS)), x=st.floats(0.05, 3.0), stages=st.sampled_from([2, 3]))
def test_richardson_is_within_its_error_estimate_and_the_estimate_is_tight(name, x, stages):
    fn, derivative = FUNCTIONS[name]
    point = np.array([x, 2 * x])
    scale = oracles.step_scale(point)
    h = oracles.CENTRAL_STEP if stages == 2 else oracles.RICHARDSON_STEP
    estimate = oracles.richardson(numpy_line(fn, point, scale), h, stages)
    true = derivative(point) * estimate.direction[0]  # the derivative along the direction really taken
    assert np.all(np.abs(estimate.value - true) <= estimate.error)
    assert np.all(estimate.error <= 1e-9 * (np.abs(true) + np.abs(fn(point))) * (10 if stages == 2 else 1))


def test_one_sided_derivatives_separate_at_a_kink():
    relu = lambda x: np.maximum(x, 0.0)  # noqa: E731
    line = numpy_line(relu, [0.0], [1.0])
    left = oracles.richardson(line, oracles.CENTRAL_STEP, 2, one_sided=-1)
    right = oracles.richardson(line, oracles.CENTRAL_STEP, 2, one_sided=+1)
    central = oracles.richardson(line, oracles.CENTRAL_STEP, 2)
    assert (left.value[0], right.value[0], central.value[0]) == (0.0, 1.0, 0.5)


def test_steps_stay_inside_the_domain():
    # An absolute direction of size 1 at x = 1e-9: the first steps would cross log's pole.
    line = numpy_line(np.log, [1e-9], [1.0])
    with pytest.raises(oracles.LeftDomain):
        oracles.richardson(line, oracles.CENTRAL_STEP, 2)
    estimate = oracles.best_estimate(numpy_line(np.log, [1e-9], [1.0]), oracles.CENTRAL_STEP, 3)
    assert abs(estimate.value[0] - 1e9) <= estimate.error[0] <= 1e-3 * 1e9
    capped = oracles.best_estimate(numpy_line(np.log, [1e-9], [1.0]), oracles.CENTRAL_STEP, 3, max_step=5e-10)
    assert capped.step <= 5e-10 / 1.01


def test_non_asymptotic_steps_get_an_honest_error():
    # sin(1000 x) with a step of 2^-10: far outside the asymptotic range; the error must say so.
    estimate = oracles.richardson(numpy_line(lambda x: np.sin(1000 * x), [1.0], [1.0]), oracles.RICHARDSON_STEP, 3)
    true = 1000 * math.cos(1000.0)
    assert abs(estimate.value[0] - true) <= estimate.error[0]


def test_complex_step_is_accurate_to_a_few_ulps():
    point = np.array([0.3, 1.7])
    estimate = oracles.complex_step(lambda points: [[np.sin(p[0])] for p in points], [point], [np.ones(2)])
    assert np.all(np.abs(estimate.value - np.cos(point)) <= estimate.error)
    assert np.all(estimate.error < 1e-14)


def test_high_precision_oracle_on_reference_mpmath_ops():
    exp, sin, mul = (reference_impls.get("mpmath", name) for name in ("exp", "sin", "mul"))
    point, direction = np.array([0.4, -1.2]), np.array([1.0, 0.5])
    estimate = oracles.high_precision_derivative(lambda x: mul(exp(x), sin(x)), [point], [direction])
    true = (np.exp(point) * (np.sin(point) + np.cos(point))) * direction
    assert np.all(np.abs(estimate.value - true) <= estimate.error + 2e-16 * np.abs(true))
    assert np.all(estimate.error <= 1e-15 * np.abs(true))


def test_evaluation_noise_measures_rounding_noise():
    smooth = oracles.evaluation_noise(numpy_line(np.exp, [1.0], [1.0]))
    assert smooth[0] <= 1e-15

    def noisy(x):
        # A deterministic pseudo-random perturbation of size 1e-9, like an ill-conditioned evaluation.
        return np.exp(x) + 1e-9 * np.sin(1e13 * x)

    measured = oracles.evaluation_noise(numpy_line(noisy, [1.0], [1.0]))
    assert 1e-10 < measured[0] < 1e-8


def test_central_jacobian_matches_the_analytical_jacobian():
    rng = np.random.default_rng(0)
    matrix, point = rng.standard_normal((3, 4)), rng.standard_normal(4)
    jacobian, error, curvature = oracles.central_jacobian(
        lambda rows: np.tanh(rows) @ matrix.T, point, oracles.step_scale(point), oracles.RICHARDSON_STEP, 3,
        base=np.tanh(point) @ matrix.T,
    )
    true = matrix * (1 - np.tanh(point) ** 2)
    assert np.all(np.abs(jacobian - true) <= error)
    second = np.abs(matrix * -2 * np.tanh(point) * (1 - np.tanh(point) ** 2))
    np.testing.assert_allclose(curvature, second, rtol=1e-3, atol=1e-6)


def test_compare_gradients_nan_policy_and_dtype_scaling():
    agree, _ = oracles.compare_gradients([1.0, np.nan, np.nan, 2.0], [1.0, np.nan, 1.0, np.nan], np.float64)
    assert agree.tolist() == [True, False, False, False]
    reference = np.array([1.0, 2.0])
    _, bound64 = oracles.compare_gradients(reference, reference, np.float64)
    _, bound32 = oracles.compare_gradients(reference, reference, np.float32, reference_error=1e-12)
    assert np.all(bound32 > 1e7 * bound64 / 2)
    agree32, _ = oracles.compare_gradients(reference * (1 + 1e-7), reference, np.float32)
    agree64, _ = oracles.compare_gradients(reference * (1 + 1e-7), reference, np.float64)
    assert agree32.all() and not agree64.any()


def test_tableau_weights_reproduce_richardson():
    final, correction = oracles.tableau_weights(2, 4.0)
    np.testing.assert_allclose(final, [-1 / 3, 4 / 3])
    np.testing.assert_allclose(correction, [-1 / 3, 1 / 3])
