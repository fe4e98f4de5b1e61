"""check_grad's contract: backends, verdicts, kinks, NaN policy, result formats and error messages."""
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import gradverify
import gradverify.engine as ge
from gradverify import GradientMismatch, assert_grad, check_grad
from gradverify.check import MutatedInput, NondeterministicFunction, backend_for
from gradverify.check.benchmarks import torch_corrupted

RNG = np.random.default_rng(7)
A = RNG.standard_normal((3, 4))
B = RNG.standard_normal(4)


def torch64(array):
    return torch.tensor(array, dtype=torch.float64)


def jax64(array):
    with jax.enable_x64(True):
        return jnp.asarray(array, dtype=jnp.float64)


class CorrectExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.exp()

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * x.exp()


class IgnoresIncomingGradient(CorrectExp):
    """exp whose backward returns exp(x) instead of grad * exp(x)."""

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return x.exp()


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_every_backend_passes_a_correct_function(mode):
    cases = [
        (lambda x, y: ge.tanh(x * y).sum(dim=1), ge.tensor(A, dtype=ge.float64), ge.tensor(B, dtype=ge.float64)),
        (lambda x, y: torch.tanh(x * y).sum(dim=1), torch64(A), torch64(B)),
        (lambda x, y: jnp.tanh(x * y).sum(axis=1), jax64(A), jax64(B)),
    ]
    for fn, *inputs in cases:
        result = check_grad(fn, *inputs, mode=mode)
        assert result.verdict == "pass", str(result)
        assert result.mode == mode
        assert "consistency <c, Ju> = <J^T c, u>" in result.checks


def test_backend_is_inferred_from_the_inputs():
    assert backend_for([ge.tensor(A)]).name == "engine"
    assert backend_for([torch64(A)]).name == "torch"
    assert backend_for([jax64(A)]).name == "jax"
    assert backend_for([A], grad_fn=np.cos).name == "numpy"


def test_numpy_function_with_user_gradient():
    result = check_grad(lambda x: np.sum(np.sin(x)), A, grad_fn=np.cos)
    assert result.passed and result.backend == "numpy"
    wrong = check_grad(lambda x: np.sum(np.sin(x)), A, grad_fn=lambda x: np.cos(x) * (1 + 1e-7))
    assert wrong.verdict == "fail"
    by_vjp = check_grad(lambda x: np.sin(x), A, vjp_fn=lambda cots, x: [cots[0] * np.cos(x)], mode="fast")
    assert by_vjp.passed


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_a_backward_that_ignores_its_incoming_gradient_fails(mode):
    x = torch64(RNG.standard_normal(5))
    assert check_grad(CorrectExp.apply, x, mode=mode).passed
    result = check_grad(IgnoresIncomingGradient.apply, x, mode=mode)
    assert result.verdict == "fail"
    assert any("forward mode not checked" in note for note in result.notes)


def test_scalar_output_backward_ignoring_gradient_fails_too():
    # With one scalar output an all-ones cotangent would hide the bug; the checker's cotangent is never 1.
    result = check_grad(lambda x: IgnoresIncomingGradient.apply(x).sum(), torch64(RNG.standard_normal(4)))
    assert result.verdict == "fail"


def test_jax_custom_vjp_error_is_found_and_custom_jvp_is_checked_in_both_modes():
    @jax.custom_vjp
    def scaled_sin(x):
        return jnp.sin(x)

    scaled_sin.defvjp(lambda x: (jnp.sin(x), x), lambda x, g: (g * jnp.cos(x) * (1 + 1e-6),))
    assert check_grad(scaled_sin, jax64(A)).verdict == "fail"

    @jax.custom_jvp
    def softplus(x):
        return jnp.logaddexp(x, 0.0)

    softplus.defjvp(lambda primals, tangents: (softplus(primals[0]), tangents[0] * jax.nn.sigmoid(primals[0])))
    result = check_grad(softplus, jax64(A))
    assert result.passed and "forward (random tangent)" in result.checks


@pytest.mark.parametrize("backend_inputs", ["engine", "torch", "jax"])
def test_order_two_checks_derivatives_of_derivatives(backend_inputs):
    fns = {
        "engine": (lambda x: (ge.sin(x) * x).sum(), ge.tensor(B, dtype=ge.float64)),
        "torch": (lambda x: (x.sin() * x).sum(), torch64(B)),
        "jax": (lambda x: (jnp.sin(x) * x).sum(), jax64(B)),
    }
    fn, x = fns[backend_inputs]
    result = check_grad(fn, x, order=2)
    assert result.passed, str(result)
    assert any(check.startswith("order 2:") for check in result.checks)


def test_order_two_finds_a_wrong_double_backward():
    class WrongSecondDerivative(torch.autograd.Function):
        """x^3 / 3 whose backward is g * x * x computed from a detached x: first order right, second wrong."""

        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x**3 / 3

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad * x * x.detach()

    x = torch64(RNG.uniform(0.5, 1.5, 4))
    assert check_grad(WrongSecondDerivative.apply, x, order=1).passed
    assert check_grad(WrongSecondDerivative.apply, x, order=2).verdict == "fail"


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_order_two_checks_the_hessians_symmetry_without_finite_differences(mode):
    class DetachedPartner(torch.autograd.Function):
        """x * y whose backward treats x as a constant in y's cotangent: d/dy of df/dx is right, d/dx of df/dy not."""

        @staticmethod
        def forward(ctx, x, y):
            ctx.save_for_backward(x, y)
            return x * y

        @staticmethod
        def backward(ctx, grad):
            x, y = ctx.saved_tensors
            return grad * y, grad * x.detach()

    x, y = torch64(RNG.uniform(-2, 2, 3)), torch64(RNG.uniform(-2, 2, 3))
    symmetry = "order 2: symmetry <u, H v> = <v, H u>"
    for fn, expected in ((DetachedPartner.apply, "fail"), (lambda a, b: a * b, "pass")):
        result = check_grad(fn, x, y, order=2, mode=mode)
        rows = result.to_frame()
        assert symmetry in result.checks
        assert set(rows[rows.check == symmetry].status) == {expected}, str(result)


def test_float32_is_judged_against_a_float64_reference_with_a_float32_bound():
    x = torch.tensor(A, dtype=torch.float32)
    result = check_grad(lambda x: torch.tanh(x).sum(dim=0), x)
    assert result.passed and result.dtype == "float32"
    bounds = result.to_frame()["bound"]
    assert bounds.max() > 1e-8  # float32-scaled
    # A 1e-3 error stands far out of float32 rounding and is flagged.
    assert check_grad(ScaledExp.apply, x).verdict == "fail"


class ScaledExp(CorrectExp):
    """exp whose backward is wrong by a factor 1 + 1e-3."""

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * x.exp() * (1 + 1e-3)


@pytest.mark.parametrize("fn", [torch.relu, torch.abs])
@pytest.mark.parametrize("mode", ["full", "fast"])
def test_relu_and_abs_at_zero_pass_as_subgradients(fn, mode):
    x = torch64([0.0, 1.5, -0.5, 0.0])
    result = check_grad(fn, x, mode=mode)
    assert result.verdict == "pass", str(result)


def test_relu_at_zero_with_a_gradient_outside_the_subdifferential_is_inconclusive_and_named():
    class BadRelu(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.clamp(min=0)

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad * torch.where(x > 0, 1.0, torch.where(x == 0, 3.0, 0.0)).to(x.dtype)

    result = check_grad(BadRelu.apply, torch64([1.0, 0.0, -2.0]), mode="full")
    assert result.verdict == "inconclusive"
    assert "element [1]" in result.reason and "left 0" in result.reason and "right 1" in result.reason


class CapAtOne(torch.autograd.Function):
    """min(x, 1) whose forward mode takes the left derivative at x = 1 and whose backward takes the right one."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)
        return x.clamp(max=1.0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x < 1).to(x.dtype)

    @staticmethod
    def jvp(ctx, tangent):
        (x,) = ctx.saved_tensors
        return tangent * (x <= 1).to(x.dtype)


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_forward_and_reverse_mode_may_take_different_subgradients_at_a_kink(mode):
    result = check_grad(CapAtOne.apply, torch64([1.0, 0.25, 1.0, 3.0]), mode=mode)
    assert result.verdict == "pass", str(result)
    judged = {entry.check for entry in result.records if entry.status == "subgradient"}
    assert any(check.startswith("forward") or check.startswith("consistency") for check in judged), judged


def test_a_kink_is_judged_even_behind_many_small_failures():
    class SlightlyOffThenCapped(torch.autograd.Function):
        """x * 1.001 for 40 elements' derivative (wrong), then min(x, 1) at its kink with a valid subgradient."""

        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return torch.cat([x[:-1], x[-1:].clamp(max=1.0)])

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return torch.cat([grad[:-1] * 1.001, grad[-1:] * (x[-1:] < 1).to(x.dtype)])

    x = torch64(np.concatenate([np.linspace(0.5, 2.0, 40), [1.0]]))
    result = check_grad(SlightlyOffThenCapped.apply, x, mode="full", check_forward=False)
    assert result.verdict == "fail"
    capped = [e for e in result.records if e.check == "reverse (Jacobian)" and e.element.endswith("[40]")]
    assert [e.status for e in capped] == ["subgradient"], capped


def test_max_with_ties_passes():
    x = torch64([1.0, 3.0, 3.0, -1.0])
    assert check_grad(lambda x: torch.amax(x), x).passed


@pytest.mark.parametrize("mode", ["full", "fast"])
@pytest.mark.parametrize("seed", range(3))
def test_sort_with_a_tie_of_five_is_never_a_failure(mode, seed):
    # The middle of five tied values has equal one-sided derivatives along any direction (or input) while sort is
    # not differentiable there: AD's permutation is one piece, which finite differences do not reproduce.
    x = torch64([3.0, 3.0, 3.0, 3.0, 3.0, 1.0, 7.0])
    result = check_grad(lambda v: torch.sort(v).values, x, mode=mode, seed=seed)
    assert result.verdict in ("pass", "inconclusive"), result.reason


def test_a_wrong_derivative_next_to_a_tie_still_fails():
    class SortScaled(torch.autograd.Function):  # sort's values, with the gradient of the untied max doubled
        @staticmethod
        def forward(ctx, x):
            values, order = torch.sort(x)
            ctx.save_for_backward(order)
            return values

        @staticmethod
        def backward(ctx, grad):
            (order,) = ctx.saved_tensors
            grad = grad.clone()
            grad[-1] *= 2
            return torch.zeros_like(grad).scatter(0, order, grad)

    x = torch64([3.0, 3.0, 3.0, 3.0, 3.0, 1.0, 7.0])
    for mode in ("full", "fast"):
        assert check_grad(SortScaled.apply, x, mode=mode, check_forward=False).verdict == "fail"


@pytest.mark.parametrize("dtype, mode", [(torch.float64, "full"), (torch.float64, "fast"), (torch.bfloat16, "full")])
def test_nan_gradient_with_finite_numerical_derivative_fails(dtype, mode):
    class NanBackward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, grad):
            out = grad * 2
            out[0] = float("nan")
            return out

    # Fast mode's projection and bfloat16's measured rounding once made a NaN bound, judged "at a kink".
    result = check_grad(NanBackward.apply, torch.linspace(0.5, 2.0, 6, dtype=dtype), mode=mode)
    assert result.verdict == "fail"
    assert "NaN/Inf" in result.reason


def test_order_two_of_a_bfloat16_derivative_that_cannot_run_in_float64_is_no_crash():
    # torch.corrcoef of one variable is 1; its bfloat16 gradient is the derivative order 2 checks (OpInfo's
    # corrcoef sample 0 in bfloat16 raised AttributeError in the Hessian's symmetry).
    result = check_grad(torch.corrcoef, torch.tensor([-8.5, -1.765625], dtype=torch.bfloat16), order=2)
    assert result.verdict == "pass", result.reason


@pytest.mark.parametrize("order", [1, 2])
def test_nan_from_zero_times_an_infinite_derivative_is_inconclusive_not_a_failure(order):
    # asin' is infinite at 1: AD's VJP multiplies it by the zero cotangent of every other output (NaN), and at order 2
    # asin'(1) is an infinite output of the derivative whose zero cotangent does the same.
    result = check_grad(torch.asin, torch64([0.5, 1.0, -0.25]), mode="full", order=order)
    assert result.verdict == "inconclusive", result.reason


def test_nan_in_both_is_reported_not_treated_as_equal():
    result = check_grad(torch.sqrt, torch64([0.0, 1.0]), mode="full")  # sqrt'(0) = inf; sqrt(-h) is NaN
    assert result.verdict == "inconclusive"
    assert "NaN/Inf in both" in result.reason
    assert (result.to_frame()["status"] == "nan-both").any()
    # A function NaN at the point has no derivative to compare at all (see test_check_semantics).
    assert "NaN or infinite at the point" in check_grad(lambda x: torch.sqrt(x - 1.0), torch64([0.5])).reason


def test_nondeterministic_function_gets_a_clear_error():
    generator = torch.Generator().manual_seed(0)
    with pytest.raises(NondeterministicFunction, match="different values"):
        check_grad(lambda x: x * torch.rand(3, generator=generator, dtype=torch.float64), torch64([1.0, 2.0, 3.0]))


def test_rounding_level_nondeterminism_is_evaluation_noise_not_an_error():
    # A multithreaded reduction may sum in another order on every call (torch's lstsq here): a few ulps.
    calls = iter(range(10**6))

    def reordered(x):
        wobble = 1.0 + (next(calls) % 2) * 2.0**-50
        return (x * x).sum() * wobble

    result = check_grad(reordered, torch64([1.0, 2.0, 3.0]))
    assert result.passed, str(result)
    assert any("treated as evaluation noise" in note for note in result.notes)


def test_inputs_are_never_mutated_and_mutating_functions_are_reported():
    x = torch64([1.0, 2.0])
    before = x.clone()
    check_grad(lambda x: x.sin(), x)
    assert torch.equal(x, before)

    def mutates(x):
        x.mul_(2)
        return x.sin()

    with pytest.raises(MutatedInput, match="input 0"):
        check_grad(mutates, x)
    assert torch.equal(x, before)
    array = A.copy()
    with pytest.raises(MutatedInput):
        check_grad(lambda a: np.sum(np.multiply(a, 2, out=a)), array, grad_fn=lambda a: np.full_like(a, 2.0))


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: check_grad(torch.sin, torch.tensor([1, 2])), TypeError, "inputs\\[0\\].*floating"),
        (lambda: check_grad(torch.sin, [1.0, 2.0]), TypeError, "inputs\\[0\\]: expected"),
        (lambda: check_grad(torch.add, torch64([1.0]), jax64([1.0])), TypeError, "one library"),
        (lambda: check_grad(np.sin, A), TypeError, "grad_fn"),
        (lambda: check_grad("sin", torch64([1.0])), TypeError, "fn: expected a callable"),
        (lambda: check_grad(torch.sin, torch64([1.0]), mode="slow"), ValueError, "mode"),
        (lambda: check_grad(torch.sin, torch64([1.0]), order=3), ValueError, "order"),
        (lambda: check_grad(torch.sin, torch64([1.0]), atol=-1), ValueError, "atol"),
        (lambda: check_grad(lambda x: x.tolist(), torch64([1.0])), TypeError, "output 0 is a float; expected a torch"),
        (lambda: check_grad(lambda x: np.sin(x), A, grad_fn=lambda x: np.cos(x)[:1]), ValueError, "grad_fn"),
        (lambda: check_grad(torch.sin), TypeError, "at least one input"),
        (lambda: check_grad(torch.sin, torch64([1.0, float("nan")])), ValueError, "inputs\\[0\\] is NaN at \\[1\\]"),
        (lambda: check_grad(lambda x: np.sum(np.sin(x)), A, grad_fn=np.cos, order=2), NotImplementedError,
         "order=2: the numpy backend cannot differentiate"),
    ],
)
def test_bad_arguments_get_clear_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_result_formats():
    result = check_grad(IgnoresIncomingGradient.apply, torch64([0.1, 0.2, 0.3]))
    frame = result.to_frame()
    assert list(frame.columns) == ["check", "output", "input", "element", "analytical", "numerical", "error",
                                   "bound", "status", "note"]
    assert frame.iloc[0]["status"] == "fail"
    assert not result.passed
    data = result.to_dict()
    assert json.loads(json.dumps(data))["verdict"] == "fail"
    text = str(result)
    assert text.startswith("check_grad: FAIL") and "bound" in text
    with pytest.raises(GradientMismatch) as raised:
        assert_grad(IgnoresIncomingGradient.apply, torch64([0.1, 0.2, 0.3]))
    assert isinstance(raised.value, AssertionError)
    assert raised.value.result.verdict == "fail"
    assert assert_grad(CorrectExp.apply, torch64([0.1])).passed


def test_package_root_reexports_the_checker():
    assert gradverify.check_grad is check_grad
    assert gradverify.CheckResult.__name__ == "CheckResult"


def test_the_engine_does_not_import_the_checker_and_checking_does_not_import_pandas():
    # A fresh interpreter: this test process has long imported both.
    script = (
        "import sys, numpy as np, gradverify.engine as ge\n"
        "engine_only = sorted(m for m in sys.modules if m.startswith('gradverify.check'))\n"
        "result = ge.autograd.gradcheck(lambda x: (x * x).sum(), (ge.tensor(np.array([1.0, 2.0]), "
        "requires_grad=True),))\n"
        "print(engine_only, result, 'pandas' in sys.modules, ge.autograd.GradcheckError.__module__)\n"
    )
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert ran.stdout.split() == ["[]", "True", "False", "gradverify.check.gradcheck"]


def test_auto_mode_chooses_by_cost():
    small = check_grad(torch.sin, torch64(RNG.standard_normal(10)))
    large = check_grad(lambda x: torch.sin(x).sum(), torch64(RNG.standard_normal(3000)))
    assert (small.mode, large.mode) == ("full", "fast")
    assert small.passed and large.passed


def test_declared_domains_keep_steps_inside():
    from gradverify.ops import get

    x = torch64([1e-3, 2.0])
    result = check_grad(torch.log, x, domains=[get("log").domains[0]])
    assert result.passed


def test_user_tolerances_override_the_dtype_allowance():
    fn, x = torch_corrupted(1e-6, "spread", size=20)
    assert check_grad(fn, x).verdict == "fail"
    assert check_grad(fn, x, rtol=1e-4).passed
