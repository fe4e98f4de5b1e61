"""The torch-shaped additions of the engine (hooks, comparisons, selections, pieces, more math) agree with PyTorch."""
import numpy as np
import pytest

import gradverify.engine as ge

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(5)
MATRIX = RNG.standard_normal((3, 4))
BATCH = RNG.standard_normal((2, 3, 4))
VECTOR = RNG.standard_normal(5)
WITH_ZEROS = np.array([[1.5, 0.0, -2.0, 3.0], [0.0, 0.0, 4.0, -1.0], [2.0, -0.5, 1.0, 0.25]])
NEAR_ZERO = np.array([1e-12, -3e-9, 1e-5, -0.3, 0.49, 0.51, -0.7, 0.99, 1.01, -3.0, 12.0])
POSITIVE = np.array([1e-300, 0.125, 0.7, 1.0, 2.0, 8.0, 10.0, 1024.0, 3e5])
SIGNED = np.array([0.125, -0.7, 1.0, 2.0, -8.0, 10.0, -30.0])
INDEX = np.array([[2, 0, 1, 1], [0, 2, 2, 1]])


def _outputs(result):
    """The tensors among a result (a tensor, or a tuple of them)."""
    return list(result) if isinstance(result, (tuple, list)) else [result]


def _assert_same(engine_out, torch_out, rtol=1e-12, atol=0):
    assert str(engine_out.dtype) == str(torch_out.dtype).removeprefix("torch."), (engine_out.dtype, torch_out.dtype)
    assert tuple(engine_out.shape) == tuple(torch_out.shape)
    np.testing.assert_allclose(engine_out.detach().numpy(), torch_out.detach().numpy(), rtol=rtol, atol=atol)


def _compare_with_torch(function, arrays, differentiable, rtol=1e-12):
    """Run ``function(module, *tensors)`` on ge and torch; compare outputs and, if asked, float64 gradients."""
    engine_in = [ge.tensor(a, requires_grad=differentiable and a.dtype.kind == "f") for a in arrays]
    torch_in = [torch.tensor(a, requires_grad=differentiable and a.dtype.kind == "f") for a in arrays]
    engine_outs, torch_outs = _outputs(function(ge, *engine_in)), _outputs(function(torch, *torch_in))
    assert len(engine_outs) == len(torch_outs)
    for engine_out, torch_out in zip(engine_outs, torch_outs):
        _assert_same(engine_out, torch_out, rtol)
    if not differentiable:
        return
    floating = [i for i, o in enumerate(torch_outs) if o.requires_grad]
    assert floating == [i for i, o in enumerate(engine_outs) if o.requires_grad]
    weights = [RNG.standard_normal(torch_outs[i].shape) for i in floating]
    sum(ge.sum(engine_outs[i] * ge.tensor(w)) for i, w in zip(floating, weights)).backward()
    sum(torch.sum(torch_outs[i] * torch.tensor(w)) for i, w in zip(floating, weights)).backward()
    for engine_leaf, torch_leaf in zip(engine_in, torch_in):
        if torch_leaf.requires_grad:
            expected = torch.zeros_like(torch_leaf) if torch_leaf.grad is None else torch_leaf.grad
            _assert_same(engine_leaf.grad, expected, rtol)


def _index(m):
    return m.tensor(INDEX)


DIFFERENTIABLE = {
    "flip": (lambda m, x: m.flip(x, (0, 1)), [MATRIX]),
    "flip-method": (lambda m, x: x.flip(-1), [MATRIX]),
    "gather-0": (lambda m, x: m.gather(x, 0, _index(m)), [MATRIX]),
    "gather-1": (lambda m, x: x.gather(1, _index(m)[:, :3]), [MATRIX]),
    "index_select": (lambda m, x: m.index_select(x, 1, m.tensor([3, 0, 3])), [MATRIX]),
    "unbind": (lambda m, x: m.unbind(x, 1), [MATRIX]),
    "unbind-method": (lambda m, x: x.unbind(), [BATCH]),
    "split-size": (lambda m, x: m.split(x, 3, dim=1), [MATRIX]),
    "split-sections": (lambda m, x: x.split([1, 2], 0), [MATRIX]),
    "chunk": (lambda m, x: m.chunk(x, 3, dim=1), [MATRIX]),
    "chunk-method": (lambda m, x: x.chunk(2), [VECTOR]),
    "masked_fill": (lambda m, x: m.masked_fill(x, x > 0.3, -1.5), [MATRIX]),
    "masked_fill-tensor": (lambda m, x, v: x.masked_fill(m.tensor([True, False, True, False]), v), [MATRIX, np.array(2.5)]),
    "tril": (lambda m, x: m.tril(x), [MATRIX]),
    "tril-diagonal": (lambda m, x: m.tril(x, -1), [BATCH]),
    "triu": (lambda m, x: m.triu(x, 1), [MATRIX]),
    "cumsum": (lambda m, x: m.cumsum(x, 1), [MATRIX]),
    "cumsum-method": (lambda m, x: x.cumsum(dim=0), [BATCH]),
    "prod-all": (lambda m, x: m.prod(x), [MATRIX]),
    "prod-dim": (lambda m, x: m.prod(x, 1), [WITH_ZEROS]),
    "prod-keepdim": (lambda m, x: x.prod(0, keepdim=True), [WITH_ZEROS]),
    "prod-one-zero": (lambda m, x: x.prod(), [WITH_ZEROS[2:] * np.array([[1, 0, 1, 1]])]),
    "sort": (lambda m, x: m.sort(x, dim=1), [MATRIX]),
    "sort-descending": (lambda m, x: x.sort(0, descending=True), [MATRIX]),
    "topk": (lambda m, x: m.topk(x, 2), [MATRIX]),
    "topk-smallest": (lambda m, x: x.topk(2, dim=0, largest=False), [MATRIX]),
    "repeat": (lambda m, x: x.repeat(2, 1, 3), [MATRIX]),
    "swapaxes": (lambda m, x: m.swapaxes(x, 0, 2), [BATCH]),
    "swapaxes-method": (lambda m, x: x.swapaxes(1, 0), [MATRIX]),
    "movedim": (lambda m, x: m.movedim(x, 0, -1), [BATCH]),
    "movedim-pairs": (lambda m, x: m.movedim(x, (0, 1), (2, 0)), [BATCH]),
    "t": (lambda m, x: x.t(), [MATRIX]),
    "t-vector": (lambda m, x: x.t(), [VECTOR]),
    "mm": (lambda m, x, y: m.mm(x, y), [MATRIX, MATRIX.T.copy()]),
    "bmm": (lambda m, x, y: m.bmm(x, y), [BATCH, BATCH.transpose(0, 2, 1).copy()]),
    "dot": (lambda m, x, y: m.dot(x, y), [VECTOR, VECTOR[::-1].copy()]),
    "outer": (lambda m, x, y: m.outer(x, y), [VECTOR, VECTOR[:3].copy()]),
    "hstack": (lambda m, x, y: m.hstack([x, y]), [MATRIX, MATRIX[:, :2].copy()]),
    "hstack-vectors": (lambda m, x, y: m.hstack((x, y)), [VECTOR, VECTOR[:2].copy()]),
    "vstack": (lambda m, x, y: m.vstack([x, y]), [MATRIX, MATRIX[0].copy()]),
    "einsum-matmul": (lambda m, x, y: m.einsum("ij,jk->ik", x, y), [MATRIX, MATRIX.T.copy()]),
    "einsum-batch": (lambda m, x, y: m.einsum("bij,bkj->bik", x, y), [BATCH, BATCH]),
    "einsum-implicit": (lambda m, x, y: m.einsum("ij,kj", x, y), [MATRIX, MATRIX[:2].copy()]),
    "einsum-list-sum": (lambda m, x, y, z: m.einsum("i,j,i->", [x, y, z]), [VECTOR, VECTOR[:2].copy(), VECTOR]),
    "einsum-transpose": (lambda m, x: m.einsum("abc -> cab", x), [BATCH]),
    "clone": (lambda m, x: m.clone(x) * 2, [MATRIX]),
    "detach": (lambda m, x: m.detach(x) * x, [MATRIX]),
    "sign": (lambda m, x: m.sign(x), [WITH_ZEROS]),
    "floor": (lambda m, x: x.floor(), [MATRIX * 3]),
    "ceil": (lambda m, x: m.ceil(x), [MATRIX * 3]),
    "round": (lambda m, x: m.round(x), [np.array([0.5, 1.5, 2.5, -0.5, -1.7, 3.2])]),
    "tan": (lambda m, x: m.tan(x), [MATRIX]),
    "sinh": (lambda m, x: m.sinh(x), [NEAR_ZERO]),
    "cosh": (lambda m, x: x.cosh(), [NEAR_ZERO]),
    "expm1": (lambda m, x: m.expm1(x), [NEAR_ZERO]),
    "rsqrt": (lambda m, x: m.rsqrt(x), [POSITIVE[1:]]),
    "reciprocal": (lambda m, x: x.reciprocal(), [MATRIX]),
    "log2": (lambda m, x: m.log2(x), [POSITIVE]),
    "remainder": (lambda m, x, y: x % y, [MATRIX * 5, np.abs(MATRIX) + 0.5]),
    "remainder-number": (lambda m, x: x % -1.5, [MATRIX * 5]),
}


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_differentiable_additions_match_torch(name):
    function, arrays = DIFFERENTIABLE[name]
    _compare_with_torch(function, arrays, differentiable=True, rtol=1e-12 if name != "tan" else 1e-11)


INTEGERS = np.array([[5, -3, 0, 7], [-8, 2, 6, -1]])
BOOLS = np.array([True, False, True, False])
WITH_NAN = np.array([1.0, np.nan, np.inf, -np.inf, 0.0])

CONSTANT = {
    "eq": (lambda m, x: x.eq(x.flip(0)), [MATRIX]),
    "ne": (lambda m, x: x.ne(0.5), [WITH_ZEROS]),
    "gt": (lambda m, x: x.gt(0.0), [MATRIX]),
    "ge": (lambda m, x: x.ge(0), [WITH_ZEROS]),
    "lt": (lambda m, x: x.lt(x.flip(1)), [MATRIX]),
    "le": (lambda m, x: x.le(0), [WITH_ZEROS]),
    "invert-bool": (lambda m, x: ~x, [BOOLS]),
    "invert-int": (lambda m, x: ~x, [INTEGERS]),
    "and": (lambda m, x, y: x & y, [BOOLS, BOOLS[::-1].copy()]),
    "or-int": (lambda m, x: x | 6, [INTEGERS]),
    "xor": (lambda m, x, y: x ^ y, [INTEGERS, INTEGERS[::-1].copy()]),
    "rand-reflected": (lambda m, x: 3 & x, [INTEGERS]),
    "floordiv-int": (lambda m, x: x // 3, [INTEGERS]),
    "floordiv-float": (lambda m, x: x // 0.7, [MATRIX]),
    "rfloordiv": (lambda m, x: 20 // x, [INTEGERS + 10]),
    "mod-int": (lambda m, x: x % 3, [INTEGERS]),
    "mod-negative-divisor": (lambda m, x: x % -4, [INTEGERS]),
    "mod-reflected": (lambda m, x: 7.0 % x, [np.abs(MATRIX) + 0.5]),
    "mod-reflected-int": (lambda m, x: 7 % x, [INTEGERS + 10]),
    "isnan": (lambda m, x: m.isnan(x), [WITH_NAN]),
    "isfinite": (lambda m, x: m.isfinite(x), [WITH_NAN]),
    "logical_not": (lambda m, x: m.logical_not(x), [INTEGERS]),
    "argsort": (lambda m, x: m.argsort(x, dim=0), [MATRIX]),
    "argsort-descending": (lambda m, x: x.argsort(descending=True), [MATRIX]),
    "sort-int": (lambda m, x: x.sort(), [INTEGERS * 7 + np.arange(4)]),
    "cumsum-int": (lambda m, x: m.cumsum(x, 0), [INTEGERS]),
    "cumsum-bool": (lambda m, x: x.cumsum(0), [BOOLS]),
    "prod-int": (lambda m, x: m.prod(x, 1), [INTEGERS]),
    "prod-int32": (lambda m, x: x.prod(), [INTEGERS[:1].astype(np.int32)]),
    "sign-int": (lambda m, x: x.sign(), [INTEGERS]),
    "sign-bool": (lambda m, x: m.sign(x), [BOOLS]),
    "floor-int": (lambda m, x: m.floor(x), [INTEGERS]),
    "tril-int": (lambda m, x: m.tril(x), [INTEGERS]),
    "masked_fill-int": (lambda m, x: x.masked_fill(x < 0, 9), [INTEGERS]),
    "reciprocal-int": (lambda m, x: m.reciprocal(x), [INTEGERS + 20]),
    "repeat-int": (lambda m, x: x.repeat(2), [BOOLS]),
    "full_like": (lambda m, x: m.full_like(x, 7), [MATRIX]),
    "full_like-int": (lambda m, x: m.full_like(x, 2.5, dtype=m.float32), [INTEGERS]),
    "new_zeros": (lambda m, x: x.new_zeros(2, 3), [INTEGERS]),
    "new_ones": (lambda m, x: x.new_ones((3,)), [MATRIX]),
    "new_full": (lambda m, x: x.new_full((2, 2), 4), [MATRIX]),
    "new_tensor": (lambda m, x: x.new_tensor([1, 2]), [MATRIX]),
    "cpu-contiguous": (lambda m, x: x.cpu().contiguous(), [MATRIX]),
    "hstack-mixed": (lambda m, x, y: m.hstack([x, y]), [INTEGERS, MATRIX[:2]]),
}


@pytest.mark.parametrize("name", CONSTANT)
def test_constant_additions_match_torch(name):
    function, arrays = CONSTANT[name]
    _compare_with_torch(function, arrays, differentiable=False)


@pytest.mark.parametrize("value, kind", [(1.0, "float"), (3, "int")])
def test_floordiv_and_mod_of_numbers_keep_torchs_dtype(value, kind):
    for operator in ("__floordiv__", "__mod__"):
        engine_out = getattr(ge.tensor(INTEGERS), operator)(value)
        torch_out = getattr(torch.tensor(INTEGERS), operator)(value)
        _assert_same(engine_out, torch_out)


ATTRIBUTES = [
    ("is_floating_point", MATRIX), ("is_floating_point", INTEGERS), ("element_size", MATRIX.astype(np.float32)),
    ("element_size", INTEGERS), ("element_size", BOOLS), ("numel", BATCH),
]


@pytest.mark.parametrize("name, array", ATTRIBUTES)
def test_tensor_queries_match_torch(name, array):
    assert getattr(ge.tensor(array), name)() == getattr(torch.tensor(array), name)()


def test_device_prints_and_compares_as_torchs():
    x, expected = ge.tensor(MATRIX), torch.tensor(MATRIX).device
    assert (str(x.device), repr(x.device)) == (str(expected), repr(expected))
    assert x.device == "cpu" and x.device == ge.device("cpu") and x.device.type == "cpu"
    assert (str(ge.device("cuda:1")), repr(ge.device("cuda", 0))) == ("cuda:1", "device(type='cuda', index=0)")
    with pytest.raises(RuntimeError, match="device: expected a device name"):
        ge.device("gpu")


@pytest.mark.parametrize("name", ["bool", "float", "int"])
def test_dtype_aliases_are_torchs(name):
    assert str(getattr(ge, name)) == str(getattr(torch, name)).removeprefix("torch.")


@pytest.mark.parametrize("array, dtype", [(MATRIX, None), (INTEGERS, None), (INTEGERS, "float32")])
def test_empty_like_has_torchs_shape_and_dtype(array, dtype):
    engine_out = ge.empty_like(ge.tensor(array), dtype=dtype and getattr(ge, dtype))
    torch_out = torch.empty_like(torch.tensor(array), dtype=dtype and getattr(torch, dtype))
    assert (engine_out.shape, str(engine_out.dtype)) == (tuple(torch_out.shape), str(torch_out.dtype).removeprefix("torch."))
    np.testing.assert_array_equal(engine_out.numpy(), 0)


def test_top_level_queries():
    x = ge.tensor(BATCH)
    assert ge.is_tensor(x) and not ge.is_tensor(BATCH)
    assert ge.numel(x) == torch.numel(torch.tensor(BATCH)) == 24


@pytest.mark.parametrize("args", [(10, (3, 4)), (-5, 5, (100,)), (2, (2, 2, 2))])
def test_randint_draws_int64_in_range(args):
    values = ge.randint(*args)
    low, high = (0, args[0]) if len(args) == 2 else args[:2]
    assert values.dtype == np.int64 and values.shape == tuple(args[-1]) == tuple(torch.randint(*args).shape)
    assert low <= values.numpy().min() and values.numpy().max() < high


def test_randperm_is_a_permutation():
    values = ge.randperm(7)
    assert values.dtype == torch.randperm(7).numpy().dtype
    np.testing.assert_array_equal(np.sort(values.numpy()), np.arange(7))


# --------------------------------------------------------------- grad switches
def test_set_grad_enabled_as_call_block_and_decorator():
    x = ge.tensor([1.0], requires_grad=True)
    ge.set_grad_enabled(False)
    assert not ge.is_grad_enabled() and not (x * 2).requires_grad
    ge.set_grad_enabled(True)
    with ge.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    assert ge.is_grad_enabled()

    @ge.set_grad_enabled(False)
    def doubled(value):
        return value * 2

    assert ge.is_grad_enabled()
    assert not doubled(x).requires_grad and ge.is_grad_enabled()
    with ge.no_grad(), ge.set_grad_enabled(True):
        assert (x * 2).requires_grad
    with pytest.raises(TypeError, match="mode"):
        ge.set_grad_enabled("no")


def test_inference_mode_records_nothing():
    x = ge.tensor([1.0], requires_grad=True)
    with ge.inference_mode():
        assert not (x * 2).requires_grad
    with ge.inference_mode(False):
        assert (x * 2).requires_grad
    assert ge.is_grad_enabled()


# ---------------------------------------------------------------- in place
@pytest.mark.parametrize("name", ["exp", "log", "sqrt", "tanh", "sigmoid", "neg", "abs"])
@pytest.mark.parametrize("recorded", [False, True])
def test_in_place_math_matches_torch(name, recorded):
    values = POSITIVE if name in ("log", "sqrt") else SIGNED
    results = []
    for module in (ge, torch):
        leaf = module.tensor(values, requires_grad=recorded)
        changed = leaf * 1.5 if recorded else leaf.clone()
        alias = getattr(changed, name + "_")()
        assert alias is changed
        if recorded:
            changed.sum().backward()
        results.append((changed, leaf.grad))
    _assert_same(results[0][0], results[1][0])
    if recorded:
        # (Near saturation, tanh's and sigmoid's derivatives 1 - y^2 and y (1 - y) agree to absolute rounding.)
        _assert_same(results[0][1], results[1][1], atol=1e-15)


def test_in_place_math_refuses_an_integer_tensor():
    with pytest.raises(TypeError, match="exp_"):
        ge.tensor(INTEGERS).exp_()


# ---------------------------------------------------------- hooks, retain_grad
def _chain(module):
    x = module.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = x * x
    return x, y, (y * module.tensor([1.0, 2.0, 3.0])).sum()


def test_retain_grad_keeps_and_accumulates_a_non_leafs_gradient():
    results = []
    for module in (ge, torch):
        x, y, z = _chain(module)
        y.retain_grad()
        x.retain_grad()
        first = module.autograd.grad(z, x, retain_graph=True)[0]
        z.backward(retain_graph=True)
        after_one = y.grad.clone()
        z.backward()
        results.append((first, after_one, y.grad, x.grad, y.retains_grad, x.retains_grad))
    for engine_value, torch_value in zip(*results):
        if isinstance(torch_value, bool):
            assert engine_value == torch_value
        else:
            _assert_same(engine_value, torch_value)


def test_hooks_replace_the_gradient_in_order_and_can_be_removed():
    results = []
    for module in (ge, torch):
        x, y, z = _chain(module)
        seen = []
        y.register_hook(lambda g: seen.append(g.clone()))
        doubling = y.register_hook(lambda g: g * 2)
        x.register_hook(lambda g: g + 1)
        y.retain_grad()
        z.backward(retain_graph=True)
        doubling.remove()
        doubling.remove()
        grad_after_removal = module.autograd.grad(z, x)[0]
        results.append((seen[0], y.grad, x.grad, grad_after_removal))
    for engine_value, torch_value in zip(*results):
        _assert_same(engine_value, torch_value)


def test_hook_errors_name_the_problem():
    with pytest.raises(RuntimeError, match="does not require grad"):
        ge.tensor([1.0]).register_hook(lambda g: g)
    with pytest.raises(RuntimeError, match="does not require grad"):
        ge.tensor([1.0]).retain_grad()
    with pytest.raises(TypeError, match="hook"):
        ge.tensor([1.0], requires_grad=True).register_hook(3)
    x = ge.tensor([1.0, 2.0], requires_grad=True)
    x.register_hook(lambda g: g[0])
    with pytest.raises(RuntimeError, match=r"shape \(2,\)"):
        (x * x).sum().backward()
    assert x.grad is None


def test_hooks_are_forgotten_with_their_tensor():
    from gradverify.engine import core

    hooks = core._HOOKS
    before = len(hooks)
    x = ge.tensor([1.0], requires_grad=True)
    x.register_hook(lambda g: g)
    assert len(hooks) == before + 1
    del x
    assert len(hooks) == before


# ------------------------------------------------------------------ bad input
BAD_INPUT = [
    (lambda: ge.mm(ge.tensor(VECTOR), ge.tensor(MATRIX)), ValueError, "input must be a 2-d tensor"),
    (lambda: ge.dot(ge.tensor(VECTOR), ge.tensor(MATRIX)), ValueError, "other must be a 1-d tensor"),
    (lambda: ge.gather(ge.tensor(MATRIX), 0, ge.tensor([0, 1])), ValueError, "index must have as many dims"),
    (lambda: ge.gather(ge.tensor(MATRIX), 0, ge.tensor([[0.5]])), TypeError, "index: expected an integer"),
    (lambda: ge.split(ge.tensor(MATRIX), [1, 1]), ValueError, "must add up to 3"),
    (lambda: ge.chunk(ge.tensor(MATRIX), 0), ValueError, "chunks"),
    (lambda: ge.masked_fill(ge.tensor(MATRIX), ge.tensor([1, 0, 1, 0]), 0.0), TypeError, "mask: expected a bool"),
    (lambda: ge.tril(ge.tensor(VECTOR)), ValueError, "at least 2 dims"),
    (lambda: ge.topk(ge.tensor(VECTOR), 6), ValueError, "k: expected"),
    (lambda: ge.tensor(MATRIX).repeat(2), ValueError, "sizes"),
    (lambda: ge.tensor(BATCH).t(), ValueError, "at most 2 dims"),
    (lambda: ~ge.tensor(MATRIX), TypeError, "bool or integer"),
    (lambda: ge.tensor(MATRIX) & 1, TypeError, "bool or integer"),
    (lambda: ge.movedim(ge.tensor(BATCH), (0, 1), 2), ValueError, "as many dims"),
    (lambda: ge.flip(ge.tensor(MATRIX), 2), IndexError, "dim"),
    (lambda: ge.randint(5), TypeError, "randint"),
    (lambda: ge.einsum("ii->i", ge.tensor(MATRIX)), ValueError, "distinct letter"),
    (lambda: ge.einsum("...j->j", ge.tensor(MATRIX)), ValueError, "not supported"),
    (lambda: ge.einsum("ij,jk", ge.tensor(MATRIX)), ValueError, "names 2 tensors"),
    (lambda: ge.einsum("ij->iz", ge.tensor(MATRIX)), ValueError, "output"),
]


@pytest.mark.parametrize("call, error, message", BAD_INPUT)
def test_bad_input_is_refused_with_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_inputs_are_not_changed():
    array = MATRIX.copy()
    x = ge.tensor(array, requires_grad=True)
    for result in (ge.masked_fill(x, x > 0, 0.0), ge.sort(x).values, ge.tril(x), ge.cumsum(x, 0), ge.prod(x, 0)):
        result.sum().backward()
    np.testing.assert_array_equal(x.detach().numpy(), MATRIX)
