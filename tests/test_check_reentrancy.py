"""Reentrancy: check_grad runs backward twice through one retained graph, as torch.autograd.gradcheck does.

The Functions below are the patterns of real custom backwards that pass a single backward and break the
second: the saved-activation trick of memory-efficient activations (timm's ``activations_me``:
huggingface/pytorch-image-models, timm/layers/activations_me.py, which saves ``x`` and recomputes) turned
into "save the result and scale it in place", and backwards that free or count on ``ctx`` between calls.
"""
import numpy as np
import pytest
import torch

import gradverify.engine as ge
from gradverify import check_grad
from test_engine_autograd_function import make_exp

X = np.array([0.3, -1.2, 0.7, 2.0, -0.4])


class ExpScalingSavedResultInPlace(make_exp(torch)):
    """Scales its saved result in place: the version counter makes torch raise on a second backward."""

    @staticmethod
    def backward(ctx, grad_output):
        (y,) = ctx.saved_tensors
        return y.mul_(grad_output)


class ExpScalingCtxAttributeInPlace(torch.autograd.Function):
    """Keeps its result on ctx (no version check) and scales it in place: the second backward is silently wrong."""

    @staticmethod
    def forward(ctx, x):
        ctx.y = x.exp()
        return ctx.y.clone()

    @staticmethod
    def backward(ctx, grad_output):
        return ctx.y.mul_(grad_output)


class SquareFreeingCtx(torch.autograd.Function):
    """Frees its saved input after the first backward to save memory: a second backward has nothing to read."""

    @staticmethod
    def forward(ctx, x):
        ctx.x = x.detach().clone()
        return x * x

    @staticmethod
    def backward(ctx, grad_output):
        x, ctx.x = ctx.x, None
        return 2 * x * grad_output


class SquareCountingCalls(torch.autograd.Function):
    """Keeps a call counter on ctx that changes what backward returns."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        ctx.calls = 0
        return x * x

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        ctx.calls += 1
        return 2 * x * grad_output * ctx.calls


class ExpSavingResult(ExpScalingSavedResultInPlace):
    """A correct backward through its saved result (out of place): reentrant."""

    @staticmethod
    def backward(ctx, grad_output):
        (y,) = ctx.saved_tensors
        return y * grad_output


@pytest.mark.parametrize("mode", ["full", "fast"])
@pytest.mark.parametrize("function", [ExpScalingSavedResultInPlace, ExpScalingCtxAttributeInPlace,
                                      SquareFreeingCtx, SquareCountingCalls])
def test_a_backward_that_is_not_reentrant_fails_saying_so(function, mode):
    result = check_grad(function.apply, torch.tensor(X), mode=mode)
    assert result.verdict == "fail"
    assert "not reentrant" in result.reason and "second" in result.reason
    frame = result.to_frame()
    failing = frame[frame.status == "fail"]
    assert set(failing.check) == {"reentrant backward (second pass through one graph)"}


def test_the_second_backward_that_raises_is_named():
    result = check_grad(SquareFreeingCtx.apply, torch.tensor(X))
    assert "raised TypeError" in result.reason


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_a_reentrant_backward_passes_and_is_compared(mode):
    result = check_grad(ExpSavingResult.apply, torch.tensor(X), mode=mode)
    assert result.passed, result.reason
    rows = result.to_frame()
    compared = rows[rows.check == "reentrant backward (second pass through one graph)"]
    assert len(compared) == len(X) and (compared.error == 0).all()


def test_engine_functions_are_checked_for_reentrancy_too():
    class Leaky(ge.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.calls = 0
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, grad_output):
            (x,) = ctx.saved_tensors
            ctx.calls += 1
            return 2 * x * grad_output * ctx.calls

    result = check_grad(Leaky.apply, ge.tensor(X))
    assert result.verdict == "fail" and "not reentrant" in result.reason
    assert check_grad(lambda x: x * x, ge.tensor(X)).passed
