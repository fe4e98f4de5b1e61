"""The engine answers as PyTorch does where a differential audit found it did not.

Most cases are written once against a library argument and run with both
``gradverify.engine`` and ``torch``: the results must agree in type, dtype,
shape and values.
"""
import numpy as np
import pytest

import gradverify.engine as ge

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")


def _summary(value):
    """What a result is, in terms both libraries share: kind, dtype, shape and values."""
    if isinstance(value, (ge.Tensor, torch.Tensor)):
        array = value.detach().numpy()
        return "tensor", str(value.dtype).removeprefix("torch."), tuple(array.shape), array.tolist()
    return type(value).__name__, None, None, value


def _assert_same(engine_value, torch_value, rtol=0.0):
    """The same kind, dtype, shape and values (to ``rtol``), item by item in tuples and lists."""
    if isinstance(torch_value, (tuple, list)):
        assert isinstance(engine_value, (tuple, list)) and len(engine_value) == len(torch_value)
        for engine_item, torch_item in zip(engine_value, torch_value):
            _assert_same(engine_item, torch_item, rtol)
        return
    engine_summary, torch_summary = _summary(engine_value), _summary(torch_value)
    assert engine_summary[:3] == torch_summary[:3]
    np.testing.assert_allclose(engine_summary[3], torch_summary[3], rtol=rtol, atol=0)


def _run_both(case):
    return case(ge), case(torch)


# ------------------------------------------------------------------ A11: .grad accumulates in place
def _grad_kept_across_backwards(lib):
    x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
    (x * x).sum().backward()
    first = x.grad
    (x * 3).sum().backward()
    return first, x.grad, first is x.grad


def _grad_assigned_by_user(lib):
    x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
    assigned = lib.tensor([10.0, 10.0], dtype=lib.float64)
    x.grad = assigned
    (x * x).sum().backward()
    return assigned, x.grad is assigned


def _grad_of_view_of_seed_with_create_graph_then_again(lib):
    x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
    seed = lib.tensor([[1.0, 1.0]], dtype=lib.float64)
    x.reshape(1, 2).backward(seed, create_graph=True)
    first = x.grad
    x.reshape(1, 2).backward(seed)
    return seed, first, x.grad, first is x.grad


def _grad_with_create_graph_is_out_of_place(lib):
    x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
    (x * x).sum().backward()
    first = x.grad
    (x * x).sum().backward(create_graph=True)
    second = x.grad
    (x * 3).sum().backward()
    return first, second, x.grad, first is x.grad, second is x.grad, x.grad.requires_grad


def _two_leaves_fed_one_cotangent(lib):
    x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
    w = lib.tensor([3.0, 4.0], dtype=lib.float64, requires_grad=True)
    for _ in range(2):
        (x + w).sum().backward()
    return x.grad, w.grad


@pytest.mark.parametrize(
    "case",
    [
        _grad_kept_across_backwards,
        _grad_assigned_by_user,
        _grad_of_view_of_seed_with_create_graph_then_again,
        _grad_with_create_graph_is_out_of_place,
        _two_leaves_fed_one_cotangent,
    ],
)
def test_grad_accumulates_as_torch(case):
    _assert_same(*_run_both(case))


def test_grad_changed_in_place_breaks_a_graph_that_saved_it():
    """As torch's version counter: a product that saved x.grad cannot be differentiated after it changed."""
    for lib in (ge, torch):
        x = lib.tensor([1.0, 2.0], requires_grad=True)
        w = lib.tensor([1.0, 2.0], requires_grad=True)
        (x * x).sum().backward()
        product = (w * x.grad).sum()
        (x * x).sum().backward()
        with pytest.raises(RuntimeError, match="in-place|inplace"):
            product.backward()


def test_accumulating_never_writes_into_the_seed():
    """Here the engine keeps the user's seed intact; torch keeps a view of it as x.grad and adds into it."""
    x = ge.tensor([1.0, 2.0], dtype=ge.float64, requires_grad=True)
    seed = ge.tensor([[1.0, 1.0]], dtype=ge.float64)
    for _ in range(2):
        x.reshape(1, 2).backward(seed)
    assert seed.tolist() == [[1.0, 1.0]]
    assert x.grad.tolist() == [2.0, 2.0]


# ------------------------------------------------------------------ A13: as_tensor / from_numpy share memory
@pytest.mark.parametrize(
    "convert",
    [
        lambda lib, array: lib.as_tensor(array),
        lambda lib, array: lib.as_tensor(array, dtype=lib.float64),
        lambda lib, array: lib.as_tensor(array, dtype=lib.float32),
        lambda lib, array: lib.as_tensor(array.tolist()),
        lambda lib, array: lib.from_numpy(array),
    ],
    ids=["as_tensor", "as_tensor-same-dtype", "as_tensor-other-dtype", "as_tensor-list", "from_numpy"],
)
def test_conversion_from_numpy_shares_memory_as_torch(convert):
    def case(lib):
        array = np.ones(3)
        converted = convert(lib, array)
        converted.add_(1.0)
        return array.tolist(), converted

    _assert_same(*_run_both(case))


# ------------------------------------------------------------------ dtypes, shapes and result types
def _leaf(lib, values, dtype="float64"):
    return lib.tensor(values, dtype=getattr(lib, dtype), requires_grad=True)


def _with_grads(output, *leaves):
    """``output`` and, after backward of its sum, the gradient of each leaf."""
    output.sum().backward()
    return (output,) + tuple(leaf.grad for leaf in leaves)


def _cat_int_and_float_leaf(lib):
    floats = _leaf(lib, [[0.5, 1.5]], "float32")
    return _with_grads(lib.cat([lib.tensor([[1, 2]]), floats]) * 2, floats)


def _where_f32_and_0d_f64_leaves(lib):
    vector, zero_d = _leaf(lib, [1.0, 2.0, 3.0], "float32"), _leaf(lib, 0.5)
    return _with_grads(lib.where(lib.tensor([True, False, False]), vector, zero_d) * 2, vector, zero_d)


def _max_elementwise_with_grads(lib):
    a, b = _leaf(lib, [1.0, 5.0]), _leaf(lib, [3.0, 2.0])
    return _with_grads(lib.max(a, b) * lib.tensor([1.0, 2.0], dtype=lib.float64), a, b)


def _min_elementwise_with_grads(lib):
    a, b = _leaf(lib, [1.0, 5.0]), _leaf(lib, [3.0, 2.0])
    return _with_grads(lib.min(a, b) * lib.tensor([1.0, 2.0], dtype=lib.float64), a, b)


def _x(lib):
    return lib.tensor([[1.0, 5.0], [3.0, -2.0]])


def _flags(lib):
    return lib.tensor([[True, False], [True, True]])


RESULT_CASES = {
    # B1: cat / stack promote as torch
    "cat-int-float32": lambda lib: lib.cat([lib.tensor([[1, 2]]), lib.tensor([[0.5, 1.5]])]),
    "stack-int-float32": lambda lib: lib.stack([lib.tensor([1, 2]), lib.tensor([0.5, 1.5])]),
    "cat-bool-int32": lambda lib: lib.cat([lib.tensor([True]), lib.tensor([3], dtype=lib.int32)]),
    "cat-float32-float64": lambda lib: lib.cat([lib.tensor([1.0]), lib.tensor([2.0], dtype=lib.float64)]),
    "stack-0d-float32-float64": lambda lib: lib.stack([lib.tensor(1.0), lib.tensor(2.0, dtype=lib.float64)]),
    "cat-int-float-grads": _cat_int_and_float_leaf,
    # B2: where promotes as torch
    "where-int-float-scalar": lambda lib: lib.where(lib.tensor([True, False]), lib.tensor([1, 2]), 2.5),
    "where-float-scalar-int": lambda lib: lib.where(lib.tensor([True, False]), 2.5, lib.tensor([1, 2])),
    "where-f32-0d-f64": lambda lib: lib.where(
        lib.tensor([True, False]), lib.tensor([1.0, 2.0]), lib.tensor(0.0, dtype=lib.float64)
    ),
    "where-two-scalars": lambda lib: lib.where(lib.tensor([True, False]), 1.5, 2),
    "where-f64-int-scalar": lambda lib: lib.where(lib.tensor([True, False]), lib.tensor([1.0], dtype=lib.float64), 2),
    "where-f32-0d-f64-grads": _where_f32_and_0d_f64_leaves,
    # B3: arange
    "arange-float-step": lambda lib: lib.arange(0, 1, 0.25),
    "arange-float-end": lambda lib: lib.arange(5.0),
    "arange-int": lambda lib: lib.arange(1, 7, 2),
    "arange-dtype": lambda lib: lib.arange(3, dtype=lib.float64),
    "arange-requires-grad": lambda lib: lib.arange(3.0, requires_grad=True).requires_grad,
    # B4: to
    "to-device-dtype": lambda lib: lib.tensor([1.5], dtype=lib.float64).to("cpu", lib.float32),
    "to-keywords": lambda lib: lib.tensor([1.5], dtype=lib.float64).to(device="cpu", dtype=lib.float32),
    "to-dtype-keyword": lambda lib: lib.tensor([1.5]).to(dtype=lib.float64),
    "to-other-tensor": lambda lib: lib.tensor([1.5, 2.0]).to(lib.tensor([1])),
    "to-device-only": lambda lib: lib.tensor([1.5]).to("cpu"),
    "to-copy": lambda lib: (lambda x: x.to(lib.float32, copy=True) is x)(lib.tensor([1.5])),
    # B5 / B6: extreme indices of 0-d tensors and keepdim without dim
    "max-0d-dim-keepdim": lambda lib: lib.max(lib.tensor(2.0), dim=0, keepdim=True),
    "min-0d-dim-keepdim": lambda lib: lib.min(lib.tensor(2.0), dim=-1, keepdim=True),
    "max-dim-keepdim": lambda lib: lib.max(_x(lib), dim=1, keepdim=True),
    "argmax-keepdim-no-dim": lambda lib: lib.argmax(_x(lib), keepdim=True),
    "argmin-keepdim-no-dim": lambda lib: _x(lib).argmin(keepdim=True),
    "argmax-0d-dim-keepdim": lambda lib: lib.argmax(lib.tensor(2.0), dim=0, keepdim=True),
    "argmax-dim": lambda lib: lib.argmax(_x(lib), dim=0),
    # B7: powers of booleans
    "square-bool": lambda lib: lib.square(lib.tensor([True, False])),
    "square-int32": lambda lib: lib.square(lib.tensor([3, -2], dtype=lib.int32)),
    "bool-pow-int": lambda lib: lib.tensor([True, False]) ** 2,
    "bool-pow-true": lambda lib: lib.tensor([True, False]) ** True,
    "bool-pow-false": lambda lib: lib.tensor([True, False]) ** False,
    "bool-pow-float": lambda lib: lib.tensor([True, False]).pow(2.5),
    "int-pow-float": lambda lib: lib.tensor([4, 9]) ** 0.5,
    # B8: numpy float64 scalars in a list
    "tensor-numpy-float64-list": lambda lib: lib.tensor([np.float64(1.5), np.float64(2.0)]),
    "tensor-mixed-numpy-float64": lambda lib: lib.tensor([[1.5], [np.float64(2.0)]]),
    "tensor-numpy-float32-and-float": lambda lib: lib.tensor([np.float32(1.5), 2.5]),
    "tensor-python-floats": lambda lib: lib.tensor([1.5, 2.5]),
    # B9: any / all
    "any": lambda lib: (_x(lib) > 4).any(),
    "all": lambda lib: (_x(lib) > 4).all(),
    "any-dim-keepdim": lambda lib: _flags(lib).any(dim=1, keepdim=True),
    "all-dim": lambda lib: _flags(lib).all(0),
    "module-any": lambda lib: lib.any(_flags(lib)),
    "module-all-dim": lambda lib: lib.all(_flags(lib), dim=-1),
    "any-item": lambda lib: (_x(lib) > 0).all().item(),
    # C10: max / min of two tensors
    "max-elementwise": _max_elementwise_with_grads,
    "min-elementwise": _min_elementwise_with_grads,
    # C11: int() and index use of one-element tensors
    "int-of-argmax": lambda lib: int(_x(lib).argmax()),
    "int-of-float-element": lambda lib: int(lib.tensor([3.0, 7.9])[1]),
    "index-with-tensor": lambda lib: [10, 20, 30][lib.tensor(2)],
    "range-of-tensor": lambda lib: list(range(lib.tensor([3]))),
}


@pytest.mark.parametrize("case", RESULT_CASES.values(), ids=RESULT_CASES.keys())
def test_result_matches_torch(case):
    _assert_same(*_run_both(case))


@pytest.mark.parametrize("lib", [ge, torch], ids=["engine", "torch"])
def test_float_tensor_is_not_an_index(lib):
    with pytest.raises(TypeError):
        [10, 20][lib.tensor(1.0)]


def test_to_rejects_other_devices_and_extra_arguments():
    x = ge.tensor([1.0])
    with pytest.raises(RuntimeError, match="no device 'cuda'"):
        x.to("cuda", ge.float64)
    with pytest.raises(TypeError, match="at most non_blocking and copy"):
        x.to(ge.float64, False, False, False)
    assert x.to("cpu:0", ge.float64).dtype == ge.float64


# ------------------------------------------------------------------ empty and 0-d tensors, squeeze
def _backward_of(reduce, shape):
    """``reduce`` of a float64 leaf of ``shape``, and the leaf's gradient after backward of its sum."""

    def case(lib):
        x = lib.zeros(shape, dtype=lib.float64, requires_grad=True)
        out = reduce(lib, x)
        out.sum().backward()
        return out, x.grad

    return case


def _0d(lib):
    return lib.tensor(2.0, dtype=lib.float64, requires_grad=True)


EDGE_CASES = {
    # C1: reductions of nothing
    "mean-empty": _backward_of(lambda lib, x: lib.mean(x), (0, 3)),
    "mean-empty-dim": _backward_of(lambda lib, x: x.mean(dim=0), (0, 3)),
    "var-empty": _backward_of(lambda lib, x: lib.var(x), (0, 3)),
    "std-empty-dim": _backward_of(lambda lib, x: x.std(dim=0), (0, 3)),
    "var-fewer-than-correction": lambda lib: lib.var(lib.tensor([1.0, 2.0]), correction=3),
    # C2: size-0 softmax dims
    "logsumexp-empty-dim": _backward_of(lambda lib, x: lib.logsumexp(x, dim=0), (0, 3)),
    "softmax-empty-dim": _backward_of(lambda lib, x: lib.softmax(x, dim=0), (0, 3)),
    "log-softmax-empty-dim": _backward_of(lambda lib, x: lib.log_softmax(x, dim=0), (0, 3)),
    "softmax-of-empty-rows": _backward_of(lambda lib, x: lib.softmax(x, dim=1), (0, 3)),
    # C3: dim 0 / -1 of 0-d tensors
    "softmax-0d": _backward_of(lambda lib, x: lib.softmax(x, dim=0), ()),
    "log-softmax-0d": _backward_of(lambda lib, x: lib.log_softmax(x, dim=-1), ()),
    "var-0d-dim": lambda lib: lib.var(_0d(lib), dim=0),
    "std-0d-dim": lambda lib: _0d(lib).std(dim=-1),
    "transpose-0d": lambda lib: lib.transpose(_0d(lib), 0, -1),
    "transpose-0d-grad": _backward_of(lambda lib, x: (x + 1).transpose(0, -1) * 3, ()),
    # C4: squeeze of dims that are not of size 1
    "squeeze-dim-not-one": lambda lib: lib.zeros(1, 3, 1).squeeze(1),
    "squeeze-tuple": lambda lib: lib.zeros(1, 3, 1).squeeze((0, 1)),
    "squeeze-negative-dim": lambda lib: lib.squeeze(lib.zeros(1, 3, 1), -1),
    "squeeze-0d": lambda lib: lib.tensor(2.0).squeeze(0),
    "squeeze-grad": _backward_of(lambda lib, x: (x * 2).squeeze((0, 2, 1)), (1, 3, 1)),
}


@pytest.mark.parametrize("case", EDGE_CASES.values(), ids=EDGE_CASES.keys())
@pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::UserWarning")
def test_edge_case_matches_torch(case):
    _assert_same(*_run_both(case))


# ------------------------------------------------------------------ C14: keyword arguments torch takes
def _v(lib):
    return lib.tensor([1.0, -2.0, 30.0], dtype=lib.float64)


def _softplus_with_grads(**options):
    def case(lib):
        x = _leaf(lib, [-1.0, 0.5, 3.0, 30.0])
        return _with_grads(lib.nn.functional.softplus(x, **options), x)

    return case


def _add_alpha_with_grads(lib):
    x, y = _leaf(lib, [1.0, 2.0]), _leaf(lib, [3.0, 4.0])
    return _with_grads(lib.add(x, y, alpha=2) * x, x, y)


KEYWORD_CASES = {
    "add-alpha": lambda lib: lib.add(_v(lib), _v(lib), alpha=2),
    "add-alpha-number": lambda lib: lib.add(_v(lib), 3, alpha=2),
    "add-alpha-grads": _add_alpha_with_grads,
    "sub-alpha": lambda lib: lib.sub(_v(lib), lib.tensor([1, 2, 3]), alpha=3),
    "softmax-dtype": lambda lib: lib.softmax(lib.tensor([1.0, 2.0]), 0, dtype=lib.float64),
    "log-softmax-dtype": lambda lib: lib.nn.functional.log_softmax(lib.tensor([1.0, 2.0]), dim=0, dtype=lib.float64),
    "sum-dtype": lambda lib: lib.tensor([1.0, 2.0]).sum(dtype=lib.float64),
    "sum-int-dtype": lambda lib: lib.sum(lib.tensor([[1, 2]]), 1, dtype=lib.float32),
    "mean-dtype": lambda lib: lib.mean(lib.tensor([1, 2]), dtype=lib.float64),
    "relu-inplace-false": lambda lib: lib.nn.functional.relu(_v(lib), inplace=False),
    "relu-module-inplace": lambda lib: lib.nn.ReLU(inplace=True)(_v(lib) * 1),
    "softplus-beta": _softplus_with_grads(beta=2.0),
    "softplus-beta-threshold": _softplus_with_grads(beta=0.5, threshold=1.0),
    "div-floor": lambda lib: lib.div(lib.tensor([-7.5, 7.5, -6.0]), 2, rounding_mode="floor"),
    "div-trunc": lambda lib: lib.div(lib.tensor([-7.5, 7.5, -6.0]), 2, rounding_mode="trunc"),
    "div-int-floor": lambda lib: lib.div(lib.tensor([-7, 7, -6]), lib.tensor([2, -2, 3]), rounding_mode="floor"),
    "div-int-trunc": lambda lib: lib.div(lib.tensor([-7, 7, -6, 0]), lib.tensor([2, -2, 3, -5]), rounding_mode="trunc"),
    "div-int-float-floor": lambda lib: lib.div(lib.tensor([-7, 7]), 2.0, rounding_mode="floor"),
    "div-no-rounding": lambda lib: lib.div(lib.tensor([-7, 7]), 2, rounding_mode=None),
}


@pytest.mark.parametrize("case", KEYWORD_CASES.values(), ids=KEYWORD_CASES.keys())
def test_keyword_arguments_as_torch(case):
    _assert_same(*_run_both(case), rtol=1e-15)


@pytest.mark.parametrize(
    "call",
    [
        lambda: ge.zeros(1, 3).squeeze(2),
        lambda: ge.zeros(1, 3).squeeze((0, -3)),
        lambda: ge.tensor(2.0).squeeze(1),
        lambda: ge.var(ge.tensor(2.0), dim=1),
        lambda: ge.argmax(ge.tensor(2.0), dim=-2),
    ],
    ids=["squeeze", "squeeze-tuple", "squeeze-0d", "var-0d", "argmax-0d"],
)
def test_dim_out_of_range_is_named(call):
    with pytest.raises(IndexError, match=r"dim: expected dims in \[-\d, \d\)"):
        call()
