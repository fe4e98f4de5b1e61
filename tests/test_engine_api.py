"""The engine's torch-shaped surface behaves like PyTorch's: dtypes, autograd switches, transforms, nn, optim."""
import numpy as np
import pytest

import gradverify.engine as ge
import reference_impls
from gradverify.engine import functional as F
from gradverify.ops import TABLE

torch = pytest.importorskip("torch")
torch_func = pytest.importorskip("torch.func")

RNG_SEED = 11


def _pair(array, requires_grad=False):
    """The same float64 values as an engine tensor and a torch tensor."""
    return ge.tensor(array, requires_grad=requires_grad), torch.tensor(array, requires_grad=requires_grad)


# ------------------------------------------------------------------- dtypes
SCALARS = [2, 2.5, True, np.float64(2.5), np.float32(2.5), np.int64(3)]
SCALAR_CASES = [
    pytest.param(dtype, scalar, operator, id=f"{dtype}{operator}{type(scalar).__name__}({scalar})")
    for dtype in ("float32", "float64", "int64", "bool")
    for scalar in SCALARS
    for operator in ("__add__", "__radd__", "__mul__", "__rmul__", "__sub__", "__rsub__")
    # torch refuses to subtract booleans
    if not ("sub" in operator and (dtype == "bool" or isinstance(scalar, bool)))
]


@pytest.mark.parametrize("dtype, scalar, operator", SCALAR_CASES)
def test_tensor_with_scalar_has_torchs_dtype(dtype, scalar, operator):
    values = np.array([1, 0, 1]).astype(dtype)
    engine_out = getattr(ge.tensor(values), operator)(scalar)
    torch_out = getattr(torch.tensor(values), operator)(scalar)
    assert str(engine_out.dtype) == str(torch_out.dtype).removeprefix("torch.")
    np.testing.assert_array_equal(engine_out.numpy(), torch_out.numpy())


@pytest.mark.parametrize("low, high", [("int64", "float32"), ("bool", "float64"), ("bool", "int64"), ("float32", "float64")])
def test_tensors_of_two_dtypes_promote_like_torch(low, high):
    a, b = np.array([1, 0, 3]).astype(low), np.array([0.5, 2, -1]).astype(high)
    for left, right in ((a, b), (b, a)):
        engine_out = ge.tensor(left) * ge.tensor(right)
        torch_out = torch.tensor(left) * torch.tensor(right)
        assert str(engine_out.dtype) == str(torch_out.dtype).removeprefix("torch.")
        np.testing.assert_array_equal(engine_out.numpy(), torch_out.numpy())
    if high.startswith("float"):
        x = ge.tensor(b, requires_grad=True)
        (x * ge.tensor(a)).sum().backward()
        assert x.grad.dtype == np.dtype(high)
        np.testing.assert_array_equal(x.grad.numpy(), a.astype(high))


PROMOTION_DTYPES = ("float32", "float64", "int32", "int64", "bool")


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "pow", "maximum"])
def test_result_dtypes_follow_torch_for_every_pair_of_dtypes_and_ranks(op):
    # Kinds, 0-d against dimensioned operands (the dimensioned one's dtype wins within a kind),
    # and true division of integers (the default dtype), where numpy's rules differ from torch's.
    checked = 0
    for left in PROMOTION_DTYPES:
        for right in PROMOTION_DTYPES:
            for left_shape, right_shape in (((3,), ()), ((), (3,)), ((), ()), ((3,), (3,))):
                a, b = np.ones(left_shape, left), np.full(right_shape, 2).astype(right)
                try:
                    expected = getattr(torch, op)(torch.tensor(a), torch.tensor(b))
                except RuntimeError:  # torch refuses some pairs (bool subtraction)
                    continue
                ours = getattr(ge, op)(ge.tensor(a), ge.tensor(b))
                case = f"{op}({left}{list(left_shape)}, {right}{list(right_shape)})"
                assert str(ours.dtype) == str(expected.dtype).removeprefix("torch."), case
                np.testing.assert_array_equal(ours.numpy(), expected.numpy(), err_msg=case)
                checked += 1
    assert checked >= 60  # of 100 pairs; torch refuses bool subtraction


FLOATING_UNARY_OPS = [name for name, op in TABLE.items() if op.floating_result and len(op.domains) == 1]


@pytest.mark.parametrize("name", FLOATING_UNARY_OPS)
def test_integer_input_of_a_floating_op_is_taken_in_the_default_dtype(name):
    # np.exp of int64 is float64 and a sigmoid written for floats truncates back to 0; torch
    # computes in its default dtype.  Where torch refuses integers (softmax, mean), so may we not.
    attrs, ints = TABLE[name].attrs, np.array([[1, 2, 3], [4, 5, 6]])
    engine_fn = getattr(F, name)
    assert engine_fn(ge.tensor(ints), **attrs).dtype == ge.float32
    previous = ge.get_default_dtype()
    ge.set_default_dtype(ge.float64)
    try:
        ours = engine_fn(ge.tensor(ints), **attrs)
    finally:
        ge.set_default_dtype(previous)
    assert ours.dtype == ge.float64
    np.testing.assert_array_equal(ours.numpy(), engine_fn(ge.tensor(ints.astype(np.float64)), **attrs).numpy())
    try:
        expected = reference_impls.get("torch", TABLE[name].ref)(torch.tensor(ints), **attrs)
    except RuntimeError:  # not implemented for integers in torch
        return
    assert expected.dtype == torch.float32
    np.testing.assert_allclose(engine_fn(ge.tensor(ints), **attrs).numpy(), expected.numpy(), rtol=1e-6)


def test_the_table_marks_its_transcendental_ops_floating_and_keeps_integer_ops_integer():
    assert {"exp", "log", "tanh", "sigmoid", "softplus", "softmax", "mean", "logsumexp"} <= set(FLOATING_UNARY_OPS)
    for name in ("relu", "abs", "neg", "sum"):
        assert getattr(F, name)(ge.tensor([1, -2])).dtype == np.int64, name


def test_an_integer_tensor_to_a_float_power_is_floating_as_in_torch():
    ints = np.array([1, 2, 3])
    for exponent in (0.5, 2.0, 2, np.float64(1.5)):
        ours, expected = ge.tensor(ints) ** exponent, torch.tensor(ints) ** exponent
        assert str(ours.dtype) == str(expected.dtype).removeprefix("torch."), exponent
        np.testing.assert_allclose(ours.numpy(), expected.numpy(), rtol=1e-6)


def test_a_0d_float64_factor_keeps_a_float32_graph_float32_and_gets_its_gradient():
    xa = np.array([0.5, -1.5, 2.0], dtype=np.float32)
    results = []
    for lib in (ge, torch):
        x = lib.tensor(xa, requires_grad=True)
        scale = lib.tensor(3.0, dtype=lib.float64, requires_grad=True)
        total = (x * scale).sum()
        total.backward()
        results.append((total, x.grad, scale.grad))
    (total, x_grad, scale_grad), (total_t, x_grad_t, scale_grad_t) = results
    assert total.dtype == ge.float32 and x_grad.dtype == ge.float32 and scale_grad.dtype == ge.float64
    assert total.item() == total_t.item() == 3.0
    np.testing.assert_array_equal(x_grad.numpy(), x_grad_t.numpy())
    assert scale_grad.item() == scale_grad_t.item() == 1.0


def test_float32_graph_stays_float32_and_gradients_have_their_tensors_dtype():
    x = ge.tensor([0.5, 1.5], dtype=ge.float32, requires_grad=True)
    w = ge.tensor([2.0, -1.0], dtype=ge.float64, requires_grad=True)
    y = ge.exp(x * 3.0 + np.float64(1.0)) / 2 - x**2.0 + 1
    assert y.dtype == ge.float32
    mixed = (y * w).sum()
    assert mixed.dtype == ge.float64
    mixed.backward()
    assert x.grad.dtype == ge.float32 and w.grad.dtype == ge.float64
    xt = torch.tensor([0.5, 1.5], requires_grad=True)
    wt = torch.tensor([2.0, -1.0], dtype=torch.float64, requires_grad=True)
    ((torch.exp(xt * 3.0 + 1.0) / 2 - xt**2.0 + 1) * wt).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-6)
    np.testing.assert_allclose(w.grad.numpy(), wt.grad.numpy(), rtol=1e-6)


def test_default_dtype_applies_to_python_floats_only():
    assert ge.tensor([1.0]).dtype == ge.float32 and ge.get_default_dtype() == ge.float32
    assert ge.tensor(np.array([1.0])).dtype == ge.float64
    assert ge.tensor([1, 2]).dtype == ge.int64
    ge.set_default_dtype(ge.float64)
    try:
        assert ge.tensor([1.0]).dtype == ge.float64
        assert ge.zeros(2).dtype == ge.float64
        assert ge.tensor([1, 2]).dtype == ge.int64
    finally:
        ge.set_default_dtype(ge.float32)
    assert ge.ones(2, 3).dtype == ge.float32 and ge.ones(2, 3).shape == (2, 3)


# ------------------------------------------------- autograd switches, values
def test_no_grad_context_and_decorator():
    x = ge.tensor([1.0, 2.0], requires_grad=True)
    with ge.no_grad():
        assert not ge.is_grad_enabled()
        y = x * 2
        with ge.enable_grad():
            z = x * 3
    assert ge.is_grad_enabled()
    assert not y.requires_grad and y.grad_fn is None
    assert z.requires_grad and z.grad_fn == "mul"

    @ge.no_grad()
    def doubled(t):
        return t * 2

    assert not doubled(x).requires_grad
    np.testing.assert_array_equal(doubled(x).numpy(), [2.0, 4.0])


def test_detach_item_numpy_and_array_protocol():
    x = ge.tensor([[1.0, 2.0]], requires_grad=True)
    d = x.detach()
    assert not d.requires_grad and d.is_leaf
    assert np.shares_memory(d.numpy(), x.array)
    with pytest.raises(RuntimeError, match=r"detach\(\)\.numpy\(\)"):
        x.numpy()
    assert (x.sum() * 2).item() == 6.0 and isinstance(x.sum().item(), float)
    assert np.asarray(x).dtype == np.float32
    np.testing.assert_array_equal(np.asarray(x, dtype=np.float64), [[1.0, 2.0]])
    mixed = np.ones(2) + x
    assert isinstance(mixed, ge.Tensor) and mixed.requires_grad


def test_max_and_min_with_dim_return_values_and_indices():
    values = np.array([[1.0, 5.0, 3.0], [7.0, 2.0, 9.0]])
    for dim in (0, 1, -1):
        for keepdim in (False, True):
            for name in ("max", "min"):
                engine = getattr(ge, name)(ge.tensor(values), dim, keepdim=keepdim)
                reference = getattr(torch, name)(torch.tensor(values), dim, keepdim=keepdim)
                np.testing.assert_array_equal(engine.values.numpy(), reference.values.numpy())
                np.testing.assert_array_equal(engine.indices.numpy(), reference.indices.numpy())
                got_values, got_indices = engine
                assert got_indices.dtype == ge.int64 and got_values.shape == tuple(reference.values.shape)
    assert ge.tensor(values).max().item() == 9.0
    assert ge.tensor(values).max(dim=1).indices.tolist() == [1, 2]


def test_max_with_dim_is_differentiable_like_torch():
    values = np.array([[1.0, 5.0, 3.0], [7.0, 2.0, 9.0]])
    x, xt = _pair(values, requires_grad=True)
    (ge.max(x, 1).values * ge.tensor([1.0, 2.0])).sum().backward()
    (torch.max(xt, 1).values * torch.tensor([1.0, 2.0])).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), xt.grad.numpy())


# --------------------------------------------------------- autograd and func
def _scalar_fn(lib, x, y):
    """A scalar function of two vectors, written once for both libraries (``lib`` is ge or torch)."""
    return (lib.tanh(x) * y**2 + lib.exp(x * y) / 3).sum()


def _vector_fn(lib, x):
    """A vector function of a vector, written once for both libraries."""
    return lib.sin(x) * lib.sum(x**3)


def test_autograd_grad_with_grad_outputs_and_create_graph_matches_torch():
    rng = np.random.default_rng(RNG_SEED)
    xa, ya, cot = rng.standard_normal(4), rng.standard_normal(4), rng.standard_normal(4)
    f, g = _scalar_fn, _vector_fn
    (x, xt), (y, yt) = _pair(xa, True), _pair(ya, True)

    gx, gy = ge.autograd.grad(f(ge, x, y), (x, y), create_graph=True)
    gxt, gyt = torch.autograd.grad(f(torch, xt, yt), (xt, yt), create_graph=True)
    np.testing.assert_allclose(gx.detach().numpy(), gxt.detach().numpy(), rtol=1e-12)
    assert gx.requires_grad and x.grad is None
    (second,) = ge.autograd.grad((gx * gy).sum(), x)
    (second_t,) = torch.autograd.grad((gxt * gyt).sum(), xt)
    np.testing.assert_allclose(second.numpy(), second_t.numpy(), rtol=1e-12)

    (vjp,) = ge.autograd.grad(g(ge, x), x, grad_outputs=ge.tensor(cot))
    (vjp_t,) = torch.autograd.grad(g(torch, xt), xt, grad_outputs=torch.tensor(cot))
    np.testing.assert_allclose(vjp.numpy(), vjp_t.numpy(), rtol=1e-12)
    assert not vjp.requires_grad


def test_func_transforms_match_torch_func():
    rng = np.random.default_rng(RNG_SEED)
    xa, ya, u, v = (rng.standard_normal(3) for _ in range(4))
    f, g = _scalar_fn, _vector_fn
    (x, xt), (y, yt) = _pair(xa), _pair(ya)

    def close(engine_value, torch_value):
        np.testing.assert_allclose(np.asarray(engine_value), torch_value.detach().numpy(), rtol=1e-11, atol=1e-13)

    for argnums in (0, 1):
        close(ge.func.grad(lambda a, b: f(ge, a, b), argnums)(x, y), torch_func.grad(lambda a, b: f(torch, a, b), argnums)(xt, yt))
    out, vjp_fn = ge.func.vjp(lambda a: g(ge, a), x)
    out_t, vjp_fn_t = torch_func.vjp(lambda a: g(torch, a), xt)
    close(out, out_t)
    close(vjp_fn(ge.tensor(u))[0], vjp_fn_t(torch.tensor(u))[0])
    out, tangent = ge.func.jvp(lambda a: g(ge, a), (x,), (ge.tensor(u),))
    out_t, tangent_t = torch_func.jvp(lambda a: g(torch, a), (xt,), (torch.tensor(u),))
    close(out, out_t)
    close(tangent, tangent_t)
    hessian = ge.func.hessian(lambda a: f(ge, a, y))(x)
    hessian_t = torch_func.hessian(lambda a: f(torch, a, yt))(xt)
    close(hessian, hessian_t)
    close(ge.func.jacrev(lambda a: g(ge, a))(x), torch_func.jacrev(lambda a: g(torch, a))(xt))
    close(ge.func.jacfwd(lambda a: g(ge, a))(x), torch_func.jacfwd(lambda a: g(torch, a))(xt))
    value, (product,) = ge.func.hvp(lambda a: f(ge, a, y), (x,), (ge.tensor(v),))
    close(value, f(torch, xt, yt))
    close(product, hessian_t @ torch.tensor(v))


def _compositions(lib, func, y, u, v, w):
    """Forward and reverse transforms composed every way, for ``lib`` (ge or torch) with its ``func``."""
    f = lambda a: _scalar_fn(lib, a, y)  # noqa: E731
    g = lambda a: _vector_fn(lib, a)  # noqa: E731
    first = lambda a: func.jvp(f, (a,), (u,))[1]  # noqa: E731  (a directional derivative)
    second = lambda a: func.jvp(first, (a,), (v,))[1]  # noqa: E731
    return {
        "grad of jvp": lambda x: func.grad(first)(x),
        "jvp of jvp": lambda x: func.jvp(first, (x,), (v,)),
        "jvp of jvp of jvp": lambda x: func.jvp(second, (x,), (w,)),
        "jvp of jvp, vector output": lambda x: func.jvp(lambda a: func.jvp(g, (a,), (u,))[1], (x,), (v,)),
        "jvp of grad": lambda x: func.jvp(func.grad(f), (x,), (v,)),
        "grad of jvp of jvp": lambda x: func.grad(second)(x),
    }


@pytest.mark.parametrize("composition", list(_compositions(ge, ge.func, *(None,) * 4)))
def test_nested_transforms_match_torch_func(composition):
    rng = np.random.default_rng(RNG_SEED)
    xa, ya, u, v, w = (rng.standard_normal(3) for _ in range(5))
    (x, xt), (y, yt), (u, ut), (v, vt), (w, wt) = (_pair(a) for a in (xa, ya, u, v, w))
    ours = _compositions(ge, ge.func, y, u, v, w)[composition](x)
    theirs = _compositions(torch, torch_func, yt, ut, vt, wt)[composition](xt)
    for a, b in zip(ours if isinstance(ours, tuple) else (ours,), theirs if isinstance(theirs, tuple) else (theirs,)):
        np.testing.assert_allclose(np.asarray(a), b.detach().numpy(), rtol=1e-11, atol=1e-13)
    assert x._tangent is None and not x.requires_grad  # the caller's tensor is left alone


def test_a_tangent_left_on_a_tensor_by_one_jvp_does_not_reach_the_next():
    kept = []

    def keep(a):
        kept.append(a * 2.0)  # carries this call's tangent
        return kept[-1].sum()

    x = ge.tensor([1.0, 2.0], dtype=ge.float64)
    ge.func.jvp(keep, (x,), (ge.ones(2, dtype=ge.float64),))
    _, tangent = ge.func.jvp(lambda a: (a * kept[0]).sum(), (x,), (ge.ones(2, dtype=ge.float64),))
    # d/dx sum(x * c) along ones, with c = 2x held constant: sum(c) = 6 (a leaked tangent would add 2 * 3).
    assert tangent.item() == 6.0


# ------------------------------------------------------------------------ nn
def _build_model(lib):
    """The same small model for both libraries: a Sequential, a submodule and a bare parameter."""
    nn = lib.nn

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2, bias=False))
            self.head = nn.Linear(2, 1)
            self.scale = nn.Parameter(lib.tensor([1.5]))

        def forward(self, x):
            return self.head(self.encoder(x)) * self.scale

    return Model()


def test_state_dict_keys_and_shapes_match_torch():
    engine_model, torch_model = _build_model(ge), _build_model(torch)
    engine_state, torch_state = engine_model.state_dict(), torch_model.state_dict()
    assert list(engine_state) == list(torch_state)
    assert list(engine_state) == ["scale", "encoder.0.weight", "encoder.0.bias", "encoder.2.weight", "head.weight", "head.bias"]
    for name, value in torch_state.items():
        assert engine_state[name].shape == tuple(value.shape)
    assert [n for n, _ in engine_model.named_parameters()] == [n for n, _ in torch_model.named_parameters()]


@pytest.mark.parametrize("source", ["numpy", "engine", "torch"])
def test_load_state_dict_then_forward_matches_torch(source):
    engine_model, torch_model = _build_model(ge).double(), _build_model(torch).double()
    state = torch_model.state_dict()
    convert = {
        "numpy": lambda t: t.numpy().copy(),
        "engine": lambda t: ge.tensor(t.numpy()),
        "torch": lambda t: t,
    }[source]
    engine_model.load_state_dict({k: convert(v) for k, v in state.items()})
    x = np.random.default_rng(RNG_SEED).standard_normal((5, 4))
    np.testing.assert_allclose(
        engine_model(ge.tensor(x)).detach().numpy(), torch_model(torch.tensor(x)).detach().numpy(), rtol=1e-13
    )
    assert engine_model.head.weight.dtype == ge.float64
    state["head.weight"][0, 0] = 99.0
    assert engine_model.head.weight.array[0, 0] != 99.0


def test_linear_layout_and_default_initialisation_follow_torch():
    ge.manual_seed(3)
    layer = ge.nn.Linear(400, 300)
    reference = torch.nn.Linear(400, 300)
    assert layer.weight.shape == tuple(reference.weight.shape) == (300, 400)
    assert layer.bias.shape == tuple(reference.bias.shape) == (300,)
    assert layer.weight.dtype == ge.float32 and layer.weight.requires_grad and layer.weight.is_leaf
    bound = 1 / np.sqrt(400)
    for values in (layer.weight.array.ravel(), layer.bias.array):
        assert np.abs(values).max() <= bound
    # Uniform on [-b, b]: mean 0, standard deviation b / sqrt(3), flat histogram.
    weights = layer.weight.array.ravel().astype(np.float64)
    assert abs(weights.mean()) < 0.01 * bound
    assert weights.std() == pytest.approx(bound / np.sqrt(3), rel=0.01)
    counts, _ = np.histogram(weights, bins=10, range=(-bound, bound))
    np.testing.assert_allclose(counts / weights.size, 0.1, atol=0.005)
    assert weights.std() == pytest.approx(reference.weight.detach().double().std().item(), rel=0.02)
    out = layer(ge.tensor(np.ones((2, 400), dtype=np.float32)))
    assert out.dtype == ge.float32 and out.shape == (2, 300)
    expected = layer.weight.array.astype(np.float64).sum(axis=1) + layer.bias.array
    np.testing.assert_allclose(out.detach().numpy(), np.stack([expected, expected]), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------- optim
OPTIMIZERS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.02, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9, weight_decay=0.1, maximize=True)),
    ("Adam", dict(lr=0.05, amsgrad=True)),
    ("Adam", dict(lr=0.02, amsgrad=True, maximize=True, weight_decay=0.1)),
]


@pytest.mark.parametrize("name, options", OPTIMIZERS, ids=[f"{n}-{sorted(o)}" for n, o in OPTIMIZERS])
def test_optimizer_steps_match_torch_optim(name, options):
    rng = np.random.default_rng(RNG_SEED)
    w0, b0 = rng.standard_normal((3, 4)), rng.standard_normal(3)
    x, target = rng.standard_normal((6, 4)), rng.standard_normal((6, 3))
    trajectories = {}
    for lib, optim in ((ge, ge.optim), (torch, torch.optim)):
        w, b = lib.tensor(w0, requires_grad=True), lib.tensor(b0, requires_grad=True)
        optimizer = getattr(optim, name)([w, b], **options)
        steps = []
        for _ in range(8):
            optimizer.zero_grad()
            loss = ((lib.tanh(lib.tensor(x) @ w.T + b) - lib.tensor(target)) ** 2).mean()
            loss.backward()
            optimizer.step()
            steps.append((loss.item(), w.detach().numpy().copy(), b.detach().numpy().copy()))
        trajectories[lib] = steps
    for (engine_loss, engine_w, engine_b), (torch_loss, torch_w, torch_b) in zip(trajectories[ge], trajectories[torch]):
        assert engine_loss == pytest.approx(torch_loss, rel=1e-12)
        np.testing.assert_allclose(engine_w, torch_w, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(engine_b, torch_b, rtol=1e-12, atol=1e-14)
    assert not np.allclose(trajectories[ge][-1][1], w0)


SURFACE = {
    "var": lambda lib, F, x, t: x.var(dim=0),
    "var unbiased=False, all": lambda lib, F, x, t: x.var(unbiased=False),
    "std keepdim": lambda lib, F, x, t: x.std(dim=1, keepdim=True),
    "norm": lambda lib, F, x, t: x.norm(),
    "norm p=1 dim": lambda lib, F, x, t: x.norm(p=1, dim=1),
    "square": lambda lib, F, x, t: x.square(),
    "nll_loss": lambda lib, F, x, t: F.nll_loss(F.log_softmax(x, dim=1), t),
    "nll_loss sum": lambda lib, F, x, t: F.nll_loss(F.log_softmax(x, dim=1), t, reduction="sum"),
    "leaky_relu": lambda lib, F, x, t: F.leaky_relu(x, 0.2),
}


@pytest.mark.parametrize("name", sorted(SURFACE))
def test_composite_functions_match_torch_in_value_and_gradient(name):
    import gradverify.engine.nn.functional as gF
    import torch.nn.functional as tF

    rng = np.random.default_rng(3)
    x, target = rng.standard_normal((4, 5)), np.array([0, 4, 2, 2])
    cotangent = None
    results = []
    for lib, F in ((ge, gF), (torch, tF)):
        leaf = lib.tensor(x, requires_grad=True)
        out = SURFACE[name](lib, F, leaf, lib.tensor(target))
        cotangent = rng.standard_normal(tuple(out.shape)) if cotangent is None else cotangent
        out.backward(lib.tensor(cotangent))
        results.append((out.detach().numpy(), leaf.grad.numpy()))
    (ours, our_grad), (theirs, their_grad) = results
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(our_grad, their_grad, rtol=1e-12, atol=1e-15)


def test_index_reductions_factories_and_dtype_aliases_follow_torch():
    x = np.random.default_rng(4).standard_normal((3, 4))
    for call in (lambda lib: lib.argmax(lib.tensor(x)), lambda lib: lib.tensor(x).argmax(dim=1),
                 lambda lib: lib.tensor(x).argmin(dim=0, keepdim=True)):
        ours, theirs = call(ge), call(torch)
        assert ours.dtype == np.int64 and ours.tolist() == theirs.tolist()
    for call in (lambda lib: lib.full((2, 3), 1.5), lambda lib: lib.eye(3, 2), lambda lib: lib.linspace(0, 1, 5),
                 lambda lib: lib.empty(2, 2).zero_(), lambda lib: lib.full((2,), 7)):
        ours, theirs = call(ge), call(torch)
        assert str(ours.dtype) == str(theirs.dtype).removeprefix("torch.") and ours.tolist() == theirs.tolist()
    assert ge.tensor([1.7, -2.2]).long().tolist() == [1, -2] and ge.long == ge.int64
    assert ge.tensor([0.0, 2.0]).bool().tolist() == [False, True]
    assert ge.allclose(ge.tensor([1.0, 2.0]), ge.tensor([1.0, 2.0 + 1e-9]))
    assert not ge.allclose(ge.tensor([1.0]), ge.tensor([1.1]))


def test_dropout_zeroes_and_rescales_while_training_and_is_the_identity_in_eval():
    ge.manual_seed(0)
    layer = ge.nn.Dropout(0.25)
    x = ge.ones(10_000, dtype=ge.float64, requires_grad=True)
    out = layer(x)
    kept = out.detach().numpy() != 0
    assert abs(kept.mean() - 0.75) < 0.02
    np.testing.assert_allclose(out.detach().numpy()[kept], 1 / 0.75)
    out.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), out.detach().numpy())
    layer.eval()
    assert layer(x) is x
    with pytest.raises(ValueError, match=r"p: dropout probability must lie in \[0, 1\]"):
        ge.nn.Dropout(1.5)


def test_init_functions_fill_parameters_in_place_with_torchs_bounds():
    ge.manual_seed(0)
    layer = ge.nn.Linear(300, 200)
    weight = layer.weight
    assert ge.nn.init.xavier_uniform_(weight) is weight and weight.is_leaf and weight.requires_grad
    bound = np.sqrt(6 / (300 + 200))
    assert np.abs(weight.detach().numpy()).max() <= bound and np.abs(weight.detach().numpy()).max() > 0.99 * bound
    ge.nn.init.kaiming_normal_(weight, nonlinearity="relu")
    assert abs(weight.detach().numpy().std() - np.sqrt(2 / 300)) < 0.05 * np.sqrt(2 / 300)
    ge.nn.init.zeros_(layer.bias)
    assert not layer.bias.detach().numpy().any()
    assert ge.nn.init.calculate_gain("tanh") == torch.nn.init.calculate_gain("tanh")
    assert ge.nn.init.calculate_gain("leaky_relu", 0.2) == torch.nn.init.calculate_gain("leaky_relu", 0.2)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        ge.nn.init.xavier_uniform_(layer.bias)


def test_nll_loss_checks_its_targets_like_cross_entropy():
    log_probs = ge.nn.functional.log_softmax(ge.randn(2, 3), dim=1)
    with pytest.raises(ValueError, match=r"nll_loss: class indices must lie in \[0, 3\)"):
        ge.nn.functional.nll_loss(log_probs, ge.tensor([0, 3]))
    with pytest.raises(ValueError, match="nll_loss: target must hold 2 integer class indices"):
        ge.nn.functional.nll_loss(log_probs, ge.tensor([0.0, 1.0]))


# ------------------------------------------------------------ public surface
ELEMENTWISE_AND_REDUCTIONS = [name for name, op in TABLE.items() if not name.endswith("_backward") and (
    op.kind == "reduction" or (op.kind in ("unary", "binary") and not op.attrs))]


@pytest.mark.parametrize("name", ELEMENTWISE_AND_REDUCTIONS)
def test_a_table_op_is_public_and_a_method_where_torch_has_one(name):
    arrays = [np.linspace(0.5, 2.0, 6).reshape(2, 3), np.linspace(1.5, 3.0, 6).reshape(2, 3)][:len(TABLE[name].domains)]
    dim = {"dim": 1} if TABLE[name].kind == "reduction" else {}
    ours = getattr(ge, name)(*[ge.tensor(a) for a in arrays], **dim)
    if hasattr(torch.Tensor, name):
        method = getattr(ge.tensor(arrays[0]), name)(*[ge.tensor(a) for a in arrays[1:]], **dim)
        np.testing.assert_array_equal(method.array, ours.array)
    if hasattr(torch, name):
        theirs = getattr(torch, name)(*[torch.tensor(a) for a in arrays], **dim)
        np.testing.assert_allclose(ours.array, theirs.numpy(), rtol=1e-12)
    assert name in ge.api.__all__ and name in ge.api.PUBLIC_OPS


def test_an_op_added_to_the_table_becomes_public(monkeypatch):
    import dataclasses

    added = dataclasses.replace(TABLE["exp"], name="exp_again")
    monkeypatch.setitem(TABLE, "exp_again", added)
    monkeypatch.setattr(F, "exp_again", F._make(added), raising=False)
    generated = ge.api._table_functions()
    assert generated["exp_again"](ge.tensor([0.0, 1.0], dtype=ge.float64)).array.tolist() == [1.0, np.exp(1.0)]
    assert "tanh_backward" not in generated and "sum" not in generated  # internal; written out by composite


def test_star_import_gives_every_name_of_the_engines_all():
    namespace = {}
    exec("from gradverify.engine import *", namespace)  # noqa: S102
    assert set(ge.api.__all__) <= set(namespace) and len(set(ge.api.__all__)) == len(ge.api.__all__)
    assert namespace["exp"] is F.exp and namespace["var"] is ge.composite.var and namespace["cat"] is ge.shapes.cat
