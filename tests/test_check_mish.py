"""Per-entry bounds: a float32 Mish whose backward loses the tail, next to timm's correct one.

The correct Function is timm's memory-efficient Mish (huggingface/pytorch-image-models,
timm/layers/activations_me.py: ``mish_bwd``).  The wrong one writes softplus as ``log(1 + exp(x))``
in its backward, as Mish's reference formula reads: in float32 ``1 + exp(x)`` rounds to 1 below
x = -16 and keeps a few digits of ``exp(x)`` above, so entries below 1e-4 are 0.02% to 6% off,
hidden under a rounding allowance scaled by the largest entry of the Jacobian (about 1).
"""
import pytest
import torch
import torch.nn.functional as F

from gradverify import check_grad

X = torch.linspace(-20.0, 3.0, 231, dtype=torch.float32)


class MishMemoryEfficient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.mul(torch.tanh(F.softplus(x)))

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        x_sigmoid = torch.sigmoid(x)
        x_tanh_sp = F.softplus(x).tanh()
        return grad_output.mul(x_tanh_sp + x * x_sigmoid * (1 - x_tanh_sp * x_tanh_sp))


class MishNaiveSoftplusBackward(MishMemoryEfficient):
    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        x_tanh_sp = torch.log(1 + torch.exp(x)).tanh()
        return grad_output.mul(x_tanh_sp + x * torch.sigmoid(x) * (1 - x_tanh_sp * x_tanh_sp))


def test_the_naive_backward_is_wrong_only_in_the_tail_and_only_by_a_little_there():
    x = X.clone().requires_grad_()
    (naive,) = torch.autograd.grad(MishNaiveSoftplusBackward.apply(x).sum(), x)
    (exact,) = torch.autograd.grad(MishMemoryEfficient.apply(x.double()).sum(), x)
    relative = ((naive.double() - exact) / exact).abs()
    assert relative[X < -16].min() > 0.01 and relative[X < -12].max() > 0.05
    assert relative[X > -10].max() < 1e-4 and exact[X < -12].abs().max() < 1e-4


def test_the_float32_mish_tail_error_fails_where_the_correct_mish_passes():
    correct = check_grad(MishMemoryEfficient.apply, X, mode="full")
    assert correct.passed, str(correct)
    wrong = check_grad(MishNaiveSoftplusBackward.apply, X, mode="full")
    assert wrong.verdict == "fail", str(wrong)
    failing = wrong.to_frame().query("status == 'fail'")
    flagged = X.numpy()[failing.element.str.strip("[]").astype(int)]
    assert (flagged < -11).all() and (flagged < -16).sum() >= 30


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_mode_sees_the_tail_through_a_projection_of_equal_terms(seed):
    # The first projection's terms run from 1e-7 to 3: its allowance (256 ulps of their sum) hides the tail.
    correct = check_grad(MishMemoryEfficient.apply, X, mode="fast", seed=seed)
    assert correct.passed, str(correct)
    wrong = check_grad(MishNaiveSoftplusBackward.apply, X, mode="fast", seed=seed)
    rows = wrong.to_frame().set_index("check")
    assert wrong.verdict == "fail" and rows.loc["reverse (projection)", "status"] == "pass", str(wrong)
    assert rows.loc["reverse (equalized projection)", "status"] == "fail", str(wrong)
    localised = rows.loc["reverse (localised)"]
    assert localised.status == "fail" and X[int(localised.element.strip("[]"))] < -11, str(wrong)


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_torchs_own_mish_passes_in_float32_over_the_tail(mode):
    assert check_grad(F.mish, X, mode=mode).passed
