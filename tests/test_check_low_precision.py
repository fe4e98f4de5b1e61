"""float16 and bfloat16 functions, judged against the same function evaluated in float64 on the CPU.

The Functions are timm's memory-efficient Mish and Swish (huggingface/pytorch-image-models,
timm/layers/activations_me.py), as mixed-precision training runs them, and the same with a backward
10% wrong.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gradverify import check_grad


class MishMemoryEfficient(torch.autograd.Function):
    scale = 1.0

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.mul(torch.tanh(F.softplus(x)))

    @classmethod
    def backward(cls, ctx, grad_output):
        (x,) = ctx.saved_tensors
        x_sigmoid = torch.sigmoid(x)
        x_tanh_sp = F.softplus(x).tanh()
        return grad_output.mul(x_tanh_sp + x * x_sigmoid * (1 - x_tanh_sp * x_tanh_sp)) * cls.scale


class MishTenPercentOff(MishMemoryEfficient):
    scale = 1.1


class MishThirtyPercentOff(MishMemoryEfficient):
    scale = 1.3


class SwishMemoryEfficient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.mul(torch.sigmoid(x))

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        x_sigmoid = torch.sigmoid(x)
        return grad_output * (x_sigmoid * (1 + x * (1 - x_sigmoid)))


def points(dtype, n=40):
    return torch.tensor(np.random.default_rng(0).uniform(-4.0, 3.0, n), dtype=dtype)


@pytest.mark.parametrize("dtype, wrong_kernel", [(torch.float16, MishTenPercentOff),
                                                 (torch.bfloat16, MishThirtyPercentOff)])
@pytest.mark.parametrize("mode", ["full", "fast"])
def test_a_correct_16_bit_kernel_passes_and_a_wrong_one_fails(dtype, wrong_kernel, mode):
    # bfloat16 keeps 8 bits: 10% is 13 of its ulps, within the allowance (8 ulps, on the entry and on the
    # output's size per unit of input), so its wrong kernel is 30% off; a projection's allowance, on the
    # sum of its terms' sizes, is wider still: fast mode's power in bfloat16 is below that.
    x = points(dtype)
    for correct in (MishMemoryEfficient.apply, SwishMemoryEfficient.apply):
        result = check_grad(correct, x, mode=mode)
        assert result.passed, str(result)
        assert result.dtype == str(dtype).removeprefix("torch.")
    if dtype == torch.bfloat16 and mode == "fast":
        return
    wrong = check_grad(wrong_kernel.apply, x, mode=mode)
    assert wrong.verdict == "fail", str(wrong)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_torchs_own_16_bit_kernels_pass(dtype):
    rng = np.random.default_rng(1)
    x = torch.tensor(rng.standard_normal((4, 8)), dtype=dtype)
    weight = torch.tensor(rng.standard_normal((8, 5)) / 3, dtype=dtype)
    for fn, inputs in [(lambda a: torch.softmax(a, -1), (x,)), (F.gelu, (x,)), (torch.tanh, (x,)),
                       (lambda a, w: F.silu(a @ w), (x, weight)),
                       (lambda a: F.layer_norm(a, (8,)), (x,))]:
        result = check_grad(fn, *inputs)
        assert result.passed, str(result)


def test_the_allowance_is_scaled_to_the_dtype():
    x = points(torch.float16)
    rows = check_grad(SwishMemoryEfficient.apply, x, mode="full").to_frame()
    jacobian = rows[rows.check == "reverse (Jacobian)"]
    # 8 ulps of float16 on the entry and on its output's size per unit of input (2.5% here), where the
    # allowance of 32- and 64-bit dtypes, 256 ulps, would be 25%.
    assert (jacobian.bound <= 0.05 * jacobian.numerical.abs() + 1e-3).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; none is present")
def test_a_cuda_function_is_checked_against_float64_on_the_cpu():
    x = points(torch.float16).cuda()
    assert check_grad(MishMemoryEfficient.apply, x).passed
    assert check_grad(MishTenPercentOff.apply, x).verdict == "fail"


def attention(q, k, v):
    """The plain-PyTorch attention that flash-attention's tests use as their reference (``attention_ref`` in
    Dao-AILab/flash-attention, tests/test_flash_attn.py), without masks or dropout."""
    scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
    return torch.softmax(scores, dim=-1) @ v


class FusedAttention(torch.autograd.Function):
    """A "kernel": forward and backward computed in float32 and rounded once, as fused kernels do."""

    error = 0.0

    @staticmethod
    def forward(ctx, q, k, v):
        ctx.save_for_backward(q, k, v)
        return attention(q.float(), k.float(), v.float()).to(q.dtype)

    @classmethod
    def backward(cls, ctx, grad):
        q, k, v = (t.detach().float().requires_grad_() for t in ctx.saved_tensors)
        with torch.enable_grad():
            grads = torch.autograd.grad(attention(q, k, v), (q, k, v), grad.float())
        return tuple((g * (1 + cls.error)).to(grad.dtype) for g in grads)


class FusedAttentionOnePercentOff(FusedAttention):
    error = 0.01


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_a_kernel_passes_within_twice_the_references_own_error_and_fails_beyond(mode):
    rng = np.random.default_rng(3)
    q, k, v = (torch.tensor(rng.standard_normal((4, 8)), dtype=torch.float16) for _ in range(3))
    result = check_grad(FusedAttention.apply, q, k, v, reference=attention, mode=mode)
    assert result.passed, str(result)
    wrong = check_grad(FusedAttentionOnePercentOff.apply, q, k, v, reference=attention, mode=mode)
    assert wrong.verdict == "fail", str(wrong)


def test_a_reference_must_return_what_fn_returns():
    x = points(torch.float16)
    with pytest.raises(ValueError, match="reference: returns shapes"):
        check_grad(torch.sin, x, reference=lambda a: a.sum())
    with pytest.raises(TypeError, match="reference: expected a callable"):
        check_grad(torch.sin, x, reference="torch.sin")
