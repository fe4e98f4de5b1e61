"""Gradients at the edges (kinks, zeros, infinite cotangents, ties, negative dims) are PyTorch's.

Each case is one program run on both libraries from the same float64 leaves; values and every leaf's
gradient must agree, NaN and infinity included (a NaN where torch gives 0 poisons a whole model).
"""
import numpy as np
import pytest

import gradverify.engine as ge

torch = pytest.importorskip("torch")

NEAR_ZERO = np.array([-1.0, 0.0, 2.0])
NEAR_ZERO_REVERSED = np.array([2.0, 0.0, -1.0])
ARANGE_234 = np.arange(24.0).reshape(2, 3, 4)

# name: (leaves, program(lib, *leaves) -> tensor); every leaf requires grad.
CASES = {
    "permute with negative dims": (
        [ARANGE_234],
        lambda lib, x: x.permute(-1, 0, 1) * lib.tensor(ARANGE_234.reshape(4, 2, 3)),
    ),
    "permute tuple with negative dims": (
        [ARANGE_234],
        lambda lib, x: lib.permute(x, (-2, -1, 0)) * lib.tensor(ARANGE_234.reshape(3, 4, 2)),
    ),
    "sqrt of relu at 0 (infinite cotangent)": ([NEAR_ZERO], lambda lib, x: lib.sqrt(lib.relu(x))),
    "log of clamp at 0": ([NEAR_ZERO], lambda lib, x: lib.log(lib.clamp(x, min=0.0))),
    "sqrt of clamp max at 0": ([NEAR_ZERO_REVERSED], lambda lib, x: lib.sqrt(-lib.clamp(x, max=0.0))),
    "sqrt of maximum at 0": ([NEAR_ZERO], lambda lib, x: lib.sqrt(lib.maximum(x, lib.zeros(3, dtype=lib.float64)))),
    "sqrt of minimum at 0": ([NEAR_ZERO_REVERSED], lambda lib, x: lib.sqrt(-lib.minimum(x, lib.zeros(3, dtype=lib.float64)))),
    "norm of zeros": ([np.zeros(3)], lambda lib, x: lib.norm(x)),
    "norm over rows, one row zero": ([np.array([[0.0, 0.0], [3.0, 4.0]])], lambda lib, x: x.norm(dim=1)),
    "std of a constant": ([np.ones(3)], lambda lib, x: x.std()),
    "std over rows, one row constant": ([np.array([[2.0, 2.0, 2.0], [1.0, 2.0, 4.0]])], lambda lib, x: x.std(dim=1)),
    "pow: exponent gradient with a zero base": (
        [np.array(2.0)],
        lambda lib, e: lib.tensor([0.0, 2.0, 3.0], dtype=lib.float64) ** e,
    ),
    "pow: zero base to a tensor exponent": ([np.array([0.0, 2.0, 3.0])], lambda lib, x: 0.0 ** x),
    "pow: zero base, zero exponent": (
        [np.array([0.0, 1.0]), np.array([0.0, 0.0])],
        lambda lib, x, y: x**y,
    ),
    "clamp with a tensor min": (
        [np.array([[-1.0, 0.2, 0.9], [0.3, -0.4, 2.0]]), np.array([-0.5, 0.0, 0.5])],
        lambda lib, x, lo: lib.clamp(x, min=lo),
    ),
    "clamp with tensor min and max": (
        [np.array([[-1.0, 0.2, 0.9], [0.3, -0.4, 2.0]]), np.array([-0.5, 0.0, 0.5]), np.array([0.5, 0.1, 1.0])],
        lambda lib, x, lo, hi: lib.clamp(x, min=lo, max=hi),
    ),
    "clamp with a tensor max": (
        [np.array([[-1.0, 0.2, 0.9], [0.3, -0.4, 2.0]]), np.array([0.5, 0.1, 1.0])],
        lambda lib, x, hi: x.clamp(max=hi),
    ),
    "clamp with min above max": (
        [np.array([-1.0, 0.5, 3.0]), np.array([2.0, 2.0, 2.0]), np.array([1.0, 1.0, 1.0])],
        lambda lib, x, lo, hi: lib.clamp(x, lo, hi),
    ),
    "sum over dim=()": ([ARANGE_234], lambda lib, x: lib.sum(x, dim=())),
    "mean over dim=[]": ([ARANGE_234], lambda lib, x: x.mean(dim=[])),
    "amax over dim=()": ([ARANGE_234], lambda lib, x: lib.amax(x, dim=())),
    "max(dim) on ties follows the returned index": (
        [np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]])],
        lambda lib, x: lib.max(x, dim=1).values * lib.tensor([1.0, 2.0], dtype=lib.float64),
    ),
    "min(dim, keepdim) on ties follows the returned index": (
        [np.array([[1.0, 1.0, 3.0], [2.0, 0.0, 0.0]])],
        lambda lib, x: x.min(dim=1, keepdim=True).values * lib.tensor([[1.0], [2.0]], dtype=lib.float64),
    ),
    "max(dim=0) of a 3-d tensor with ties": (
        [np.array([[[1.0, 2.0], [2.0, 2.0]], [[1.0, 0.0], [2.0, 5.0]]])],
        lambda lib, x: lib.max(x, dim=0).values * lib.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=lib.float64),
    ),
}


def _run(lib, leaves, program):
    tensors = [lib.tensor(leaf, dtype=lib.float64, requires_grad=True) for leaf in leaves]
    out = program(lib, *tensors)
    out.sum().backward()
    return out.detach().numpy(), [t.grad.numpy() for t in tensors]


@pytest.mark.parametrize("name", sorted(CASES))
def test_value_and_gradient_match_torch(name):
    leaves, program = CASES[name]
    ours, our_grads = _run(ge, leaves, program)
    theirs, their_grads = _run(torch, leaves, program)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-14, atol=0)
    for ours_grad, theirs_grad in zip(our_grads, their_grads):
        np.testing.assert_allclose(ours_grad, theirs_grad, rtol=1e-14, atol=0)


@pytest.mark.parametrize("reduction", ["var", "std", "norm", "logsumexp", "amin"])
def test_an_empty_dim_list_reduces_every_dim(reduction):
    """torch's reading of dim=() (its own var backward gives -inf there, so the reference is dim=None)."""
    grads = []
    for dim in ((), [], None):
        x = ge.tensor(ARANGE_234 / 7.0, dtype=ge.float64, requires_grad=True)
        out = getattr(ge, reduction)(x, dim=dim)
        out.backward()
        grads.append((out.item(), x.grad.numpy()))
    for value, grad in grads[:2]:
        assert value == grads[2][0]
        np.testing.assert_array_equal(grad, grads[2][1])


@pytest.mark.parametrize("name", ["relu", "clamp", "maximum"])
def test_an_infinite_cotangent_reaches_only_the_entries_an_op_lets_through(name):
    programs = {
        "relu": lambda lib, x: lib.relu(x),
        "clamp": lambda lib, x: lib.clamp(x, min=0.0, max=1.5),
        "maximum": lambda lib, x: lib.maximum(x, lib.zeros(3, dtype=lib.float64)),
    }
    grads = []
    for lib in (ge, torch):
        x = lib.tensor(NEAR_ZERO, dtype=lib.float64, requires_grad=True)
        programs[name](lib, x).backward(lib.tensor([np.inf, np.inf, np.inf], dtype=lib.float64))
        grads.append(x.grad.numpy())
    np.testing.assert_array_equal(grads[0], grads[1])


@pytest.mark.parametrize(
    "values, low, high",
    [([-2, 0, 1, 2], 0.5, None), ([-2, 0, 1, 2], None, 0.5), ([-2, 0, 1, 2], 0, 1), ([-2, 0, 1, 2], 0.5, 1)],
)
def test_clamp_of_an_integer_tensor_takes_torchs_result_dtype(values, low, high):
    ours = ge.clamp(ge.tensor(values), min=low, max=high)
    theirs = torch.clamp(torch.tensor(values), min=low, max=high)
    assert str(ours.dtype) == str(theirs.dtype).removeprefix("torch.")
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def _gradient_and_hvp(lib, program, x0):
    x = lib.tensor(x0, dtype=lib.float64, requires_grad=True)
    (g,) = lib.autograd.grad(program(lib, x).sum(), x, create_graph=True)
    (h,) = lib.autograd.grad((g * lib.tensor(x0 + 1.0, dtype=lib.float64)).sum(), x)
    return g.detach().numpy(), h.numpy()


def test_second_derivatives_through_the_edge_rules_match_torch():
    """The select-based rules stay differentiable: gradients and Hessian-vector products of norm, clamp, pow."""
    x0 = np.array([[0.5, -1.0, 2.0], [0.0, 0.7, -0.2]])

    def program(lib, x):
        return (x.norm(dim=1) ** 3).sum() + (lib.clamp(x, min=-0.5) ** 3).sum() + (lib.abs(x) + 1.0) ** x

    for ours, theirs in zip(_gradient_and_hvp(ge, program, x0), _gradient_and_hvp(torch, program, x0)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-13, atol=1e-15)


def test_the_hessian_of_a_cubed_norm_at_zero_is_zero():
    """|x|^3 is twice differentiable at 0 with Hessian 0; torch's norm double-backward gives NaN there."""
    gradient, hvp = _gradient_and_hvp(ge, lambda lib, x: x.norm() ** 3, np.zeros(3))
    assert gradient.tolist() == [0.0, 0.0, 0.0] and hvp.tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("zero_side", ["other", "input"])
def test_the_branch_free_select_against_zero_gives_np_where_bits(dtype, zero_side):
    """where(c, g, 0), the select of relu's and clamp's backward, takes a bitwise path; its bits are np.where's."""
    from gradverify.ops import TABLE

    rng = np.random.default_rng(5)
    values = rng.standard_normal((40, 9)).astype(dtype)
    values[0, :4] = [np.inf, -np.inf, np.nan, -0.0]
    condition = rng.standard_normal((40, 9)) > 0
    zero = np.zeros((), dtype)
    operands = (values, zero) if zero_side == "other" else (zero, values)
    ours = TABLE["where"].forward(condition, *operands)
    expected = np.where(condition, *operands)
    assert ours.dtype == expected.dtype and ours.shape == expected.shape
    np.testing.assert_array_equal(ours.view(np.uint8), expected.view(np.uint8))


@pytest.mark.parametrize("pos_weight", [None, 3.0])
@pytest.mark.parametrize("target", [0.0, 1.0, 0.25])
def test_bce_with_logits_keeps_its_digits_in_the_tails(target, pos_weight):
    # The textbook (1 - t) x + softplus(-x) cancels for t = 0 and x << 0 (found by the seed-1 fuzz campaign:
    # 5e-8 off at x = -20, 0 instead of e^x below -37).  Truth: the two terms, each to 30 digits.
    import mpmath

    x = [-800.0, -88.0, -40.0, -20.0, -1e-9, 0.5, 20.0, 40.0, 88.0]
    p = 1.0 if pos_weight is None else pos_weight
    leaf = ge.tensor(x, dtype=ge.float64, requires_grad=True)
    option = None if pos_weight is None else ge.tensor(pos_weight, dtype=ge.float64)
    loss = ge.nn.functional.binary_cross_entropy_with_logits(leaf, ge.full((9,), target, dtype=ge.float64),
                                                             reduction="none", pos_weight=option)
    loss.backward(ge.ones(9, dtype=ge.float64))
    with mpmath.workdps(30):
        def terms(f):  # (1 - t) f(x) and p t f(-x)
            return (np.array([float((1 - target) * f(mpmath.mpf(v))) for v in x]),
                    np.array([float(p * target * f(-mpmath.mpf(v))) for v in x]))

        values = terms(lambda v: mpmath.log1p(mpmath.exp(v)))
        slopes = terms(lambda v: 1 / (1 + mpmath.exp(-v)))
    # two roundings of each term (a difference of the two cancels near the minimum for fractional t)
    assert np.all(np.abs(loss.detach().numpy() - (values[0] + values[1])) <= 5e-16 * (values[0] + values[1]))
    assert np.all(np.abs(leaf.grad.numpy() - (slopes[0] - slopes[1])) <= 5e-16 * (slopes[0] + slopes[1]))


def test_pow_has_a_symmetric_hessian_at_a_zero_exponent():
    # d2/dx dy x^y = x^(y-1) (1 + y log x) = 1/x at y = 0.  PyTorch's pow_backward_self selects 0 wherever y = 0,
    # so its d(dx)/dy is 0 there while d(dy)/dx is 1/x (found by the seed-1 fuzz campaign's second-order oracle).
    x = ge.tensor([0.2, 3.0], dtype=ge.float64, requires_grad=True)
    y = ge.tensor([0.0, 0.0], dtype=ge.float64, requires_grad=True)
    dx, dy = ge.autograd.grad((x ** y).sum(), (x, y), create_graph=True)
    np.testing.assert_allclose(ge.autograd.grad(dx.sum(), y, retain_graph=True)[0].numpy(), [5.0, 1 / 3.0], rtol=1e-15)
    np.testing.assert_allclose(ge.autograd.grad(dy.sum(), x)[0].numpy(), [5.0, 1 / 3.0], rtol=1e-15)
