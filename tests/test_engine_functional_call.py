"""ge.func.functional_call and the pytree inputs of ge.func's transforms agree with torch.func."""
from collections import OrderedDict

import numpy as np
import pytest

import gradverify.engine as ge

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(11)
X, Y = RNG.standard_normal((7, 3)), RNG.standard_normal((7, 2))
LIBS = (ge, torch)


def _mlp(lib):
    """The same float64 MLP in both libraries (weights from RNG's draws)."""
    model = lib.nn.Sequential(lib.nn.Linear(3, 5), lib.nn.Tanh(), lib.nn.Linear(5, 4), lib.nn.Tanh(),
                              lib.nn.Linear(4, 2)).double()
    draws = np.random.default_rng(0)
    with lib.no_grad():
        for p in model.parameters():
            p.copy_(lib.tensor(draws.standard_normal(tuple(p.shape))))
    return model


def _params(lib, scale=1.0):
    """New values for the MLP's parameters (not its own), by name."""
    draws = np.random.default_rng(1)
    return {name: lib.tensor(scale * draws.standard_normal(tuple(p.shape)))
            for name, p in _mlp(lib).named_parameters()}


def _loss(lib, model):
    def loss(params, x, y):
        return ((lib.func.functional_call(model, params, (x,)) - y) ** 2).mean()

    return loss


def _assert_trees_close(engine_tree, torch_tree, rtol=1e-12, atol=1e-12):
    if isinstance(torch_tree, dict):
        assert type(engine_tree) is type(torch_tree) and list(engine_tree) == list(torch_tree)
        for key in torch_tree:
            _assert_trees_close(engine_tree[key], torch_tree[key], rtol, atol)
    elif isinstance(torch_tree, (list, tuple)):
        assert type(engine_tree) is type(torch_tree) and len(engine_tree) == len(torch_tree)
        for e, t in zip(engine_tree, torch_tree):
            _assert_trees_close(e, t, rtol, atol)
    else:
        assert engine_tree.dtype == np.float64 and tuple(engine_tree.shape) == tuple(torch_tree.shape)
        np.testing.assert_allclose(engine_tree.array, torch_tree.detach().numpy(), rtol=rtol, atol=atol)


def test_functional_call_values_match_torch_and_use_the_given_tensors():
    outputs = {}
    for lib in LIBS:
        model, params = _mlp(lib), _params(lib)
        outputs[lib] = lib.func.functional_call(model, params, lib.tensor(X))
        own = lib.func.functional_call(model, dict(model.named_parameters()), (lib.tensor(X),))
        np.testing.assert_array_equal(own.detach().numpy(), model(lib.tensor(X)).detach().numpy())
    _assert_trees_close(outputs[ge], outputs[torch])
    assert not np.allclose(outputs[ge].array, _mlp(ge)(ge.tensor(X)).array)


def test_grad_of_functional_call_over_a_parameter_dict_matches_torch_func():
    grads, values = {}, {}
    for lib in LIBS:
        model = _mlp(lib)
        params = {k: v.detach() for k, v in model.named_parameters()}
        grads[lib], values[lib] = lib.func.grad_and_value(_loss(lib, model))(params, lib.tensor(X), lib.tensor(Y))
    _assert_trees_close(grads[ge], grads[torch])
    np.testing.assert_allclose(values[ge].item(), values[torch].item(), rtol=1e-12)
    assert grads[ge]["0.weight"].grad_fn is None


def test_the_module_is_unchanged_after_the_call_and_after_an_error():
    model = _mlp(ge)
    before = {name: (p, p.array.copy()) for name, p in model.named_parameters()}
    ge.func.grad(_loss(ge, model))(_params(ge), ge.tensor(X), ge.tensor(Y))
    with pytest.raises(ValueError):
        ge.func.functional_call(model, _params(ge), (ge.tensor(np.ones((2, 7))),))  # wrong input width
    for name, p in model.named_parameters():
        assert p is before[name][0] and isinstance(p, ge.nn.Parameter) and p.grad is None
        np.testing.assert_array_equal(p.array, before[name][1])
        assert getattr(model[int(name[0])], name[2:]) is p
    assert list(model.state_dict()) == list(before)


def test_gradients_reach_parameters_that_require_grad_as_in_torch():
    grads = {}
    for lib in LIBS:
        model = _mlp(lib)
        grads[lib] = lib.func.grad(_loss(lib, model))(dict(model.named_parameters()), lib.tensor(X), lib.tensor(Y))
        assert grads[lib]["2.bias"].requires_grad  # still connected to the model's parameters, as torch.func
    _assert_trees_close(grads[ge], grads[torch])


def test_strict_names_must_match_exactly():
    for lib in LIBS:
        model, params = _mlp(lib), _params(lib)
        lib.func.functional_call(model, params, (lib.tensor(X),), strict=True)
        missing = {k: v for k, v in params.items() if k != "2.bias"}
        with pytest.raises(RuntimeError, match=r"reparametrizing for Sequential:\n\tMissing key\(s\): '2.bias'.$"):
            lib.func.functional_call(model, missing, (lib.tensor(X),), strict=True)
        extra = {**params, "extra": lib.tensor(1.0)}
        with pytest.raises(RuntimeError, match=r"\n\tUnexpected key\(s\): 'extra'.$"):
            lib.func.functional_call(model, extra, (lib.tensor(X),), strict=True)
        lib.func.functional_call(model, missing, (lib.tensor(X),))  # not strict: 2.bias stays the module's
        assert not hasattr(model, "extra")


def test_several_dicts_and_bad_arguments():
    for lib in LIBS:
        model, params = _mlp(lib), _params(lib)
        names = list(params)
        split = ({k: params[k] for k in names[:3]}, {k: params[k] for k in names[3:]})
        np.testing.assert_array_equal(
            lib.func.functional_call(model, split, (lib.tensor(X),)).detach().numpy(),
            lib.func.functional_call(model, params, lib.tensor(X)).detach().numpy())
        with pytest.raises(ValueError, match="appeared in multiple dictionaries"):
            lib.func.functional_call(model, (params, {names[0]: params[names[0]]}), (lib.tensor(X),))
        with pytest.raises(AttributeError, match="Sequential has no attribute `9`"):
            lib.func.functional_call(model, {"9.weight": lib.tensor(1.0)}, (lib.tensor(X),))


def _tied(lib):
    """A module computing ``x @ a.weight.T @ b.weight + shift``, with b.weight tied to a.weight."""

    class Tied(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = lib.nn.Linear(2, 2, bias=False), lib.nn.Linear(2, 2, bias=False)
            self.b.weight = self.a.weight
            with lib.no_grad():
                self.a.weight.copy_(lib.tensor([[0.5, -1.0], [2.0, 0.25]]))

        def forward(self, x, shift=0.0):
            return x @ self.a.weight.T @ self.b.weight + shift

    return Tied().double()


def test_tie_weights_and_kwargs_as_torch():
    results = {}
    for lib in LIBS:
        model, x = _tied(lib), lib.tensor(np.eye(2))
        w, v = lib.tensor(np.array([[1.0, 2.0], [3.0, 4.0]])), lib.tensor(np.array([[0.0, 1.0], [1.0, 0.0]]))
        results[lib] = [
            lib.func.functional_call(model, {"a.weight": w}, x, {"shift": 10.0}),
            lib.func.functional_call(model, {"a.weight": w}, (x,), tie_weights=False),
            lib.func.functional_call(model, {"a.weight": w, "b.weight": w}, (x,)),
            lib.func.functional_call(model, {"a.weight": w, "b.weight": v}, (x,), tie_weights=False),
        ]
        with pytest.raises(ValueError, match=r"multiple values for keys \['a.weight', 'b.weight'\], which are tied"):
            lib.func.functional_call(model, {"a.weight": w, "b.weight": v}, (x,))
        assert model.b.weight is model.a.weight
    _assert_trees_close(results[ge], results[torch])


def test_buffers_are_replaced_and_updates_reach_the_given_tensors():
    stats = {}
    for lib in LIBS:
        norm = lib.nn.BatchNorm1d(3).double()
        buffers = {"running_mean": lib.tensor(np.array([1.0, 2.0, 3.0])),
                   "running_var": lib.tensor(np.array([4.0, 5.0, 6.0]))}
        out = lib.func.functional_call(norm, buffers, (lib.tensor(X),))
        stats[lib] = (out, buffers["running_mean"], buffers["running_var"], norm.running_mean, norm.running_var)
        norm.eval()
        stats[lib] += (lib.func.functional_call(norm, buffers, (lib.tensor(X),)),)
    _assert_trees_close(stats[ge], stats[torch])
    assert stats[ge][3].tolist() == [0.0, 0.0, 0.0] and stats[ge][4].tolist() == [1.0, 1.0, 1.0]


def test_vjp_and_jacrev_take_pytrees_as_torch_func():
    results = {}
    for lib in LIBS:
        model = _mlp(lib)
        params = OrderedDict((k, v.detach()) for k, v in model.named_parameters())
        out, vjp_fn = lib.func.vjp(lambda p, x: lib.func.functional_call(model, p, (x,)), params, lib.tensor(X))
        cotangents = vjp_fn(lib.tensor(Y))
        jacobian = lib.func.jacrev(lambda p: lib.func.functional_call(model, p, (lib.tensor(X[:2]),)))(params)
        results[lib] = (out, cotangents, jacobian)
    _assert_trees_close(results[ge], results[torch])


def test_grad_over_argnums_tuple_of_nested_pytrees_with_aux():
    def f(lib):
        def loss(tree, scale, x):
            value = (tree["w"][0] * x).sum() * scale + (tree["b"][1]["c"] ** 3).sum()
            return value, {"aux": value * 2}

        return loss

    results = {}
    for lib in LIBS:
        tree = {"w": (lib.tensor(np.array([1.0, 2.0])),),
                "b": [lib.tensor(np.float64(0.5)), {"c": lib.tensor(np.array([3.0, -1.0]))}]}
        scale, x = lib.tensor(np.float64(2.0)), lib.tensor(np.array([0.5, 4.0]))
        results[lib] = lib.func.grad(f(lib), argnums=(0, 1), has_aux=True)(tree, scale, x)
    (grads, aux), (torch_grads, torch_aux) = results[ge], results[torch]
    _assert_trees_close(grads, torch_grads)
    _assert_trees_close(aux, torch_aux)
    assert grads[0]["b"][0].tolist() == 0.0  # an unused leaf gets zeros
