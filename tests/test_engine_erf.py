"""ge.erf, Tensor.erf and ge.special.erf agree with torch.erf: values, gradients and second derivatives."""
import math

import numpy as np
import pytest

import gradverify.engine as ge

torch = pytest.importorskip("torch")

# Both sides of the switch at |x| = 0.5, tiny and saturated arguments, zeros of both signs.
POINTS = np.concatenate([
    np.linspace(-7.0, 7.0, 1401),
    [0.0, -0.0, 1e-300, -1e-300, 1e-8, -3e-5, 0.4999999, 0.5, 0.5000001, -0.5, 3.9, 6.0, 27.0, -30.0, 1e30, -1e30],
])
ULP_BUDGET = 8


def _derivative(x):
    return 2 / math.sqrt(math.pi) * np.exp(-x * x)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_erf_values_match_torch(dtype):
    x = POINTS.astype(dtype)
    expected = torch.erf(torch.from_numpy(x)).numpy()
    for erf in (ge.erf, ge.special.erf, ge.Tensor.erf):
        got = erf(ge.tensor(x))
        assert got.dtype == np.dtype(dtype)
        np.testing.assert_allclose(got.array, expected, rtol=ULP_BUDGET * np.finfo(dtype).eps, atol=0)
    got = ge.erf(ge.tensor(x)).array
    assert np.array_equal(np.signbit(got), np.signbit(expected))  # erf(-0.0) is -0.0
    assert got[POINTS == 1e-300][0] == expected[POINTS == 1e-300][0]  # no cancellation near 0


def test_erf_at_infinities_nan_and_integers_matches_torch():
    special = [np.inf, -np.inf, np.nan]
    np.testing.assert_array_equal(ge.erf(ge.tensor(special, dtype=ge.float64)).array,
                                  torch.erf(torch.tensor(special, dtype=torch.float64)).numpy())
    for values in ([0, 1, -2], [True, False]):
        got, expected = ge.erf(ge.tensor(values)), torch.erf(torch.tensor(values))
        assert str(got.dtype) == str(expected.dtype).removeprefix("torch.")
        np.testing.assert_allclose(got.array, expected.numpy(), rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_erf_gradient_is_two_over_root_pi_exp_minus_square(dtype):
    x = ge.tensor(POINTS.astype(dtype), requires_grad=True)
    ge.erf(x).backward(ge.ones_like(x))
    t = torch.tensor(POINTS.astype(dtype), requires_grad=True)
    torch.erf(t).backward(torch.ones_like(t))
    exact = _derivative(POINTS)
    if dtype == "float64":
        np.testing.assert_allclose(x.grad.array, exact, rtol=1e-14, atol=1e-300)
    # torch's float32 derivative rounds x^2 before exp: it is off by up to x^2 ulps, as is the engine's.
    np.testing.assert_allclose(x.grad.array, t.grad.numpy(), rtol=64 * np.finfo(dtype).eps, atol=np.finfo(dtype).tiny)
    assert x.grad.array[np.abs(POINTS) > 30].tolist() == [0.0] * int(np.sum(np.abs(POINTS) > 30))


def test_erf_gradient_at_infinity_is_zero_as_torch():
    x = ge.tensor([np.inf, -np.inf], dtype=ge.float64, requires_grad=True)
    ge.erf(x).sum().backward()
    assert x.grad.tolist() == [0.0, 0.0]


def test_erf_second_derivative_and_forward_mode():
    x = POINTS[:1401]
    second = ge.func.grad(lambda v: ge.func.grad(lambda u: ge.erf(u).sum())(v).sum())(ge.tensor(x, dtype=ge.float64))
    np.testing.assert_allclose(second.array, -2 * x * _derivative(x), rtol=1e-12, atol=1e-300)
    t = torch.tensor(x, requires_grad=True)
    (first,) = torch.autograd.grad(torch.erf(t).sum(), t, create_graph=True)
    (torch_second,) = torch.autograd.grad(first.sum(), t)
    np.testing.assert_allclose(second.array, torch_second.numpy(), rtol=1e-12, atol=1e-300)
    value, tangent = ge.func.jvp(ge.erf, (ge.tensor(x, dtype=ge.float64),), (ge.ones(len(x), dtype=ge.float64),))
    np.testing.assert_allclose(tangent.array, _derivative(x), rtol=1e-14, atol=1e-300)
    np.testing.assert_allclose(value.array, torch.erf(torch.from_numpy(x)).numpy(), rtol=1e-15, atol=1e-16)


def test_gelu_uses_the_public_erf():
    x = ge.tensor(POINTS[:1401], dtype=ge.float64)
    expected = 0.5 * x.array * (1 + ge.erf(x * (1 / math.sqrt(2.0))).array)
    np.testing.assert_array_equal(ge.nn.functional.gelu(x).array, expected)
