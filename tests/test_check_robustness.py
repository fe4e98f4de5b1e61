"""check_grad never passes silently: nondeterminism at any point, bad arguments, NaN outputs, big functions."""
import tracemalloc

import numpy as np
import pytest
import torch

from gradverify import check_grad
from gradverify.check import NondeterministicFunction
from gradverify.ops import Domain


def torch64(values):
    return torch.tensor(values, dtype=torch.float64)


class SinOffBy1e4(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.sin()

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * x.cos() * (1 + 1e-4)


def jitters_from_call(first_noisy_call, size=1e-6):
    """SinOffBy1e4, deterministic for its first calls, then with ``size`` of noise on every call."""
    calls = [0]
    generator = torch.Generator().manual_seed(0)

    def fn(x):
        calls[0] += 1
        y = SinOffBy1e4.apply(x)
        if calls[0] >= first_noisy_call:
            y = y + size * torch.randn(y.shape, generator=generator, dtype=y.dtype)
        return y

    return fn


@pytest.mark.parametrize("mode", ["full", "fast"])
@pytest.mark.parametrize("first_noisy_call", [3, 4, 6])
def test_nondeterminism_that_starts_late_is_detected_not_passed(mode, first_noisy_call):
    with pytest.raises(NondeterministicFunction, match="identical inputs"):
        check_grad(jitters_from_call(first_noisy_call), torch.linspace(0.1, 1.0, 5, dtype=torch.float64), mode=mode)


def test_the_correct_function_with_the_same_start_still_passes():
    assert check_grad(torch.sin, torch.linspace(0.1, 1.0, 5, dtype=torch.float64)).passed


def test_rounding_level_differences_at_the_end_are_absorbed_with_a_note():
    calls = iter(range(10**6))

    def reordered(x):  # a multithreaded reduction that sums in another order after the first two calls
        wobble = 1.0 + (next(calls) >= 2) * 2.0**-50
        return (x * x).sum() * wobble

    result = check_grad(reordered, torch64([1.0, 2.0, 3.0]))
    assert result.passed, str(result)
    assert any("at the end of the check" in note and "treated as evaluation noise" in note for note in result.notes)


@pytest.mark.parametrize(("options", "error", "message"), [
    (dict(seed="abc"), TypeError, "seed: expected a non-negative integer, got 'abc'"),
    (dict(seed=-1), ValueError, "seed: expected a non-negative integer, got -1"),
    (dict(seed=1.5), TypeError, "seed"),
    (dict(seed=True), TypeError, "seed"),
    (dict(domains=5), TypeError, "domains: expected a sequence"),
    (dict(domains=[5]), TypeError, r"domains\[0\]: expected a gradverify.ops.Domain or None"),
    (dict(domains=[None, None]), ValueError, "domains: expected one Domain"),
    (dict(rtol=float("inf")), ValueError, "rtol: expected a finite non-negative number, got inf"),
    (dict(atol=float("nan")), ValueError, "atol: expected a finite non-negative number"),
    (dict(rtol="1e-3"), TypeError, "rtol"),
    (dict(strict="yes"), TypeError, "strict: expected True or False"),
])
def test_bad_options_name_the_argument(options, error, message):
    with pytest.raises(error, match=message):
        check_grad(torch.sin, torch64([0.5, 1.0]), **options)


def test_a_good_domain_and_seed_are_accepted():
    result = check_grad(torch.log, torch64([0.5, 1.0]), domains=[Domain(low=0.0)], seed=np.int64(3))
    assert result.passed, str(result)


A = np.array([0.3, 1.1, -0.4])


@pytest.mark.parametrize(("options", "message"), [
    (dict(grad_fn=lambda a: None), "grad_fn returned None for input 0; expected an array of shape \\(3,\\)"),
    (dict(grad_fn=lambda a: [np.cos(a), np.cos(a)]), "grad_fn returned 2 gradients for 1 inputs"),
    (dict(grad_fn=lambda a: np.cos(a)[:2]), "grad_fn returned a gradient of shape \\(2,\\) for input 0"),
    (dict(grad_fn=lambda a: "cos"), "grad_fn returned a str for input 0"),
    (dict(vjp_fn=lambda c, a: None), "vjp_fn returned None for input 0"),
    (dict(vjp_fn=lambda c, a: [np.cos(a)], jvp_fn=lambda t, a: None), "jvp_fn returned None for output 0"),
])
def test_a_numpy_derivative_of_the_wrong_kind_names_the_function(options, message):
    with pytest.raises(ValueError, match=message):
        check_grad(lambda a: np.sum(np.sin(a)), A, **options)


def test_fast_mode_memory_is_linear_in_the_number_of_outputs():
    # numpy's allocations, which tracemalloc sees: an n x n matrix would take 200 MB here; the check's own
    # arrays take a few dozen times n x 8 bytes.  A first small run leaves the libraries' one-time caches out.
    check_grad(torch.sin, torch.linspace(0.1, 1.0, 10, dtype=torch.float64), mode="fast")
    n = 5000
    x = torch.linspace(0.1, 1.0, n, dtype=torch.float64)
    tracemalloc.start()
    try:
        result = check_grad(torch.sin, x, mode="fast")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.passed, str(result)
    assert peak < 100 * n * 8, peak
