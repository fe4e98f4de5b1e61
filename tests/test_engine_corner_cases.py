"""Corner cases where the engine must match torch: -1 sizes, legacy empty tensors in cat, and more."""
import numpy as np
import pytest
import torch

import gradverify.engine as ge


def _assert_like_torch(ours, theirs):
    expected = theirs.detach().numpy()
    assert ours.shape == tuple(theirs.shape)
    assert ours.array.dtype == expected.dtype
    np.testing.assert_allclose(ours.array, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("shape, sizes", [((3, 1), (-1, 5)), ((3, 1), (2, -1, 4)), ((2,), (3, -1)), ((2, 3), (-1, -1))])
def test_expand_and_broadcast_to_keep_the_size_at_minus_one(shape, sizes):
    values = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    x, t = ge.tensor(values, requires_grad=True), torch.tensor(values, requires_grad=True)
    for ours, theirs in ((x.expand(*sizes), t.expand(*sizes)), (ge.broadcast_to(x, sizes), torch.broadcast_to(t, sizes))):
        _assert_like_torch(ours, theirs)
        weights = np.arange(ours.array.size, dtype=np.float64).reshape(ours.shape)
        (ours * ge.tensor(weights)).sum().backward()
        (theirs * torch.tensor(weights)).sum().backward()
    _assert_like_torch(x.grad, t.grad)


def test_minus_one_in_a_new_leading_dim_is_rejected():
    with pytest.raises(ValueError, match="shape"):
        ge.ones(3, 1).expand(-1, -1, 4)


@pytest.mark.parametrize("shapes_and_dtypes, dim", [
    ([((2, 3), "float64"), ((0,), "float32")], 0),
    ([((2, 3), "float64"), ((0,), "float32"), ((2, 2), "float64")], 1),
    ([((0,), "float64"), ((2, 3), "float32")], 0),
    ([((2, 3), "float32"), ((0,), "float64")], 0),
    ([((0,), "float64"), ((0,), "float64")], 0),
    ([((3,), "float64"), ((0,), "float64")], 0),
])
def test_cat_skips_legacy_empty_tensors_as_torch(shapes_and_dtypes, dim):
    arrays = [np.arange(np.prod(s), dtype=d).reshape(s) for s, d in shapes_and_dtypes]
    _assert_like_torch(ge.cat([ge.tensor(a) for a in arrays], dim=dim),
                       torch.cat([torch.tensor(a) for a in arrays], dim=dim))


@pytest.mark.parametrize("dtype_name", ["int32", "float32", "float64", "int64"])
@pytest.mark.parametrize("source_name", ["float32", "float64", "int32"])
def test_view_as_dtype_reinterprets_the_bits_as_torch(source_name, dtype_name):
    values = np.arange(-4, 4).reshape(2, 4).astype(source_name) * 3
    x, t = ge.tensor(values), torch.tensor(values)
    if source_name.startswith("float"):
        x.requires_grad_(True)
        t.requires_grad_(True)
    ours, theirs = x.view(getattr(ge, dtype_name)), t.view(getattr(torch, dtype_name))
    assert ours.requires_grad == theirs.requires_grad
    expected = theirs.detach().numpy()
    assert ours.shape == expected.shape and ours.array.dtype == expected.dtype
    np.testing.assert_array_equal(ours.array.view(np.uint8), expected.view(np.uint8))


def test_view_with_a_shape_still_reshapes():
    values = np.arange(8.0)
    for shape in ((2, 4), ((4, 2),), (-1,)):
        _assert_like_torch(ge.tensor(values).view(*shape), torch.tensor(values).view(*shape))


@pytest.mark.parametrize("bias_shape", [(), (4,)])
def test_linear_broadcasts_a_0d_bias(bias_shape):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s) for s in ((2, 3), (4, 3), bias_shape)]
    ours = [ge.tensor(a, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    out, expected = ge.nn.functional.linear(*ours), torch.nn.functional.linear(*theirs)
    _assert_like_torch(out, expected)
    weights = rng.standard_normal((2, 4))
    (out * ge.tensor(weights)).sum().backward()
    (expected * torch.tensor(weights)).sum().backward()
    for x, t in zip(ours, theirs):
        _assert_like_torch(x.grad, t.grad)


@pytest.mark.parametrize("base_dtype, exponent_dtype", [("int64", "int64"), ("int32", "int64"), ("int32", "int32")])
def test_integer_tensor_to_negative_integer_tensor_powers(base_dtype, exponent_dtype):
    bases = np.array([2, 1, -1, -1, -2, 3, 0, 5, -3], dtype=base_dtype)
    exponents = np.array([-1, -1, -1, -2, -1, -2, -1, 2, 3], dtype=exponent_dtype)
    _assert_like_torch(ge.tensor(bases) ** ge.tensor(exponents), torch.tensor(bases) ** torch.tensor(exponents))
    _assert_like_torch(2 ** ge.tensor(exponents), 2 ** torch.tensor(exponents))


_TYPE_DTYPES = ["float32", "float64", "int64", "int32", "bool"]


@pytest.mark.parametrize("dtype_name", _TYPE_DTYPES)
def test_type_with_no_argument_names_the_legacy_tensor_type(dtype_name):
    values = np.array([0, 1, 2]).astype(dtype_name)
    assert ge.tensor(values).type() == torch.tensor(values).type()


@pytest.mark.parametrize("name", ["torch.FloatTensor", "torch.DoubleTensor", "torch.LongTensor", "torch.IntTensor",
                                  "torch.BoolTensor"])
@pytest.mark.parametrize("dtype_name", _TYPE_DTYPES)
def test_type_converts_to_a_legacy_type_name(dtype_name, name):
    values = np.array([0, 1, 2]).astype(dtype_name)
    _assert_like_torch(ge.tensor(values).type(name), torch.tensor(values).type(name))


def test_type_rejects_a_name_torch_rejects():
    with pytest.raises(ValueError, match="dtype"):
        ge.ones(2).type("torch.float64")


@pytest.mark.parametrize("shape, shifts, dims", [
    ((2, 3), 1, None), ((2, 3), -4, None), ((2, 3), (1, -1), (0, 1)), ((2, 3), 5, 1), ((2, 3, 4), (2, 1), (-1, 0)),
    ((), 1, None), ((0, 2), 1, 0), ((4,), (1, 2), (0, 0)),
])
def test_roll_matches_torch_with_gradients(shape, shifts, dims):
    values = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    x, t = ge.tensor(values, requires_grad=True), torch.tensor(values, requires_grad=True)
    ours, theirs = ge.roll(x, shifts, dims), torch.roll(t, shifts, dims)
    _assert_like_torch(ours, theirs)
    _assert_like_torch(x.roll(shifts, dims), t.roll(shifts, dims))
    weights = np.arange(values.size, dtype=np.float64).reshape(shape) ** 2
    (ours * ge.tensor(weights)).sum().backward()
    (theirs * torch.tensor(weights)).sum().backward()
    _assert_like_torch(x.grad, t.grad)


def test_roll_needs_one_shift_per_dim():
    with pytest.raises(ValueError, match="shifts"):
        ge.roll(ge.ones(2, 3), (1, 2), 0)


def _both(values):
    return ge.tensor(values), torch.tensor(values)


@pytest.mark.parametrize("argnums", [0, 1, (0, 1)])
@pytest.mark.parametrize("has_aux", [False, True])
def test_grad_and_value_matches_torch_func(argnums, has_aux):
    (x, tx), (y, ty) = _both(np.array([0.5, -1.5, 2.0])), _both(np.array([1.0, 3.0, -0.25]))

    def f(a, b):
        value = ((a * b).sum()) ** 2 + (a * a).sum()
        return (value, a * 2) if has_aux else value

    ours = ge.func.grad_and_value(f, argnums=argnums, has_aux=has_aux)(x, y)
    theirs = torch.func.grad_and_value(f, argnums=argnums, has_aux=has_aux)(tx, ty)
    flat_ours, flat_theirs = torch.utils._pytree.tree_leaves(ours), torch.utils._pytree.tree_leaves(theirs)
    assert len(flat_ours) == len(flat_theirs)
    for o, t in zip(flat_ours, flat_theirs):
        _assert_like_torch(o, t)


@pytest.mark.parametrize("use_inputs", [False, True])
def test_autograd_backward_accumulates_as_torch(use_inputs):
    values = [np.array([0.5, -1.5]), np.array([2.0, 3.0])]

    def gradients(lib):
        a, b = (lib.tensor(v, requires_grad=True) for v in values)
        hidden = a * b
        outputs = [(hidden * hidden).sum(), hidden.exp()]
        inputs = [hidden, b] if use_inputs else None
        lib.autograd.backward(outputs, grad_tensors=[None, lib.tensor(np.array([1.0, -2.0]))], retain_graph=True,
                              inputs=inputs)
        lib.autograd.backward(outputs[0], inputs=inputs)
        return [t.grad for t in (inputs or [a, b])]

    for ours, theirs in zip(gradients(ge), gradients(torch)):
        _assert_like_torch(ours, theirs)


def test_autograd_backward_rejects_inputs_that_do_not_require_grad():
    x = ge.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="inputs"):
        ge.autograd.backward((x * x).sum(), inputs=[ge.tensor([1.0])])


def _tensors(lib, arrays):
    return tuple(lib.tensor(a) for a in arrays)


_A, _B = np.array([1.0, 2.0, -3.0]), np.array([0.5, -1.0, 2.0])


def _scalar_of_two(a, b):
    return (a * a * b).sum() + (a * b).exp().sum()


def _square(a):
    return a * a * a


@pytest.mark.parametrize("name, fn, inputs, vectors, options", [
    ("jacobian", _square, _A, None, {}),
    ("jacobian", _square, _A, None, {"strategy": "forward-mode", "vectorize": True}),
    ("jacobian", _scalar_of_two, (_A, _B), None, {}),
    ("jacobian", lambda a, b: (a * b, a.exp()), (_A, _B), None, {}),
    ("jacobian", lambda a: (a * a,), (_A,), None, {}),
    ("hessian", lambda a: (a * a * a).sum(), _A, None, {}),
    ("hessian", _scalar_of_two, (_A, _B), None, {}),
    ("vjp", _square, _A, _B, {}),
    ("vjp", lambda a, b: a * b.exp(), (_A, _B), _B, {}),
    ("vjp", lambda a: (a * a).sum(), _A, None, {}),
    ("jvp", _square, _A, _B, {}),
    ("jvp", lambda a, b: a * b.exp(), (_A, _B), (_B, _A), {}),
    ("hvp", lambda a: (a * a * a).sum(), _A, _B, {}),
    ("hvp", _scalar_of_two, (_A, _B), (_B, _A), {}),
    ("vhp", lambda a: (a * a * a).sum(), _A, _B, {}),
    ("vhp", _scalar_of_two, (_A, _B), (_B, _A), {}),
])
def test_autograd_functional_matches_torch(name, fn, inputs, vectors, options):
    def run(lib):
        args = lib.tensor(inputs) if isinstance(inputs, np.ndarray) else _tensors(lib, inputs)
        extra = {} if vectors is None else {
            "v": lib.tensor(vectors) if isinstance(vectors, np.ndarray) else _tensors(lib, vectors)}
        return getattr(lib.autograd.functional, name)(fn, args, **extra, **options)

    ours, theirs = run(ge), run(torch)
    assert torch.utils._pytree.tree_structure(ours) == torch.utils._pytree.tree_structure(theirs)
    flat_ours = torch.utils._pytree.tree_leaves(ours)
    flat_theirs = torch.utils._pytree.tree_leaves(theirs)
    assert len(flat_ours) == len(flat_theirs)
    for o, t in zip(flat_ours, flat_theirs):
        assert not o.requires_grad
        _assert_like_torch(o, t)


def test_autograd_functional_create_graph_keeps_results_differentiable():
    def second_order(lib):
        x = lib.tensor(_A, requires_grad=True)
        _, product = lib.autograd.functional.vjp(_square, x, lib.tensor(_B), create_graph=True)
        (first,) = lib.autograd.grad(product.sum(), x)
        return product, first

    for ours, theirs in zip(second_order(ge), second_order(torch)):
        _assert_like_torch(ours, theirs)


def test_autograd_functional_strict_is_refused():
    with pytest.raises(NotImplementedError, match="strict"):
        ge.autograd.functional.jacobian(_square, ge.tensor(_A), strict=True)
