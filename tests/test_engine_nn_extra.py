"""The extra torch.nn surface of ge.nn matches torch 2.13: Module buffers and registration, the containers,
the activations, Embedding and LayerNorm, and the binary, L1 and smooth-L1 losses (values, shapes and
float64 gradients)."""
import numpy as np
import pytest
import torch

import gradverify.engine as ge

LIBS = (ge, torch)


# ------------------------------------------------------------------ Module
class _WithBuffers:
    """A module class built for either library: a Linear child, a persistent and a non-persistent buffer."""

    @staticmethod
    def build(lib):
        class Net(lib.nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = lib.nn.Linear(2, 2)
                self.register_buffer("running", lib.zeros(2, dtype=lib.float32))
                self.register_buffer("count", lib.tensor(3))
                self.register_buffer("scratch", lib.ones(1, dtype=lib.float32), persistent=False)

        return Net()


def test_buffers_are_saved_cast_and_listed_but_are_not_parameters():
    for lib in LIBS:
        net = _WithBuffers.build(lib).double()
        assert list(net.state_dict()) == ["running", "count", "fc.weight", "fc.bias"]
        assert [n for n, _ in net.named_parameters()] == ["fc.weight", "fc.bias"]
        assert [n for n, _ in net.named_buffers()] == ["running", "count", "scratch"]
        assert len(list(net.buffers())) == 3
        assert net.running.dtype == lib.float64 and net.scratch.dtype == lib.float64
        assert net.count.dtype == lib.int64
        net.load_state_dict({**net.state_dict(), "running": lib.tensor([1.0, 2.0], dtype=lib.float64)})
        assert net.running.tolist() == [1.0, 2.0]
        net.running = lib.tensor([5.0, 6.0], dtype=lib.float64)
        assert net.state_dict()["running"].tolist() == [5.0, 6.0]
        assert list(net.float().state_dict()) == ["running", "count", "fc.weight", "fc.bias"]
        assert net.running.dtype == lib.float32


def test_apply_visits_children_first_and_requires_grad_freezes_parameters():
    for lib in LIBS:
        model = lib.nn.Sequential(lib.nn.Linear(2, 2), lib.nn.Sequential(lib.nn.Tanh()))
        visited = []
        assert model.apply(lambda m: visited.append(type(m).__name__)) is model
        assert visited == ["Linear", "Tanh", "Sequential", "Sequential"]
        assert model.requires_grad_(False) is model
        assert [p.requires_grad for p in model.parameters()] == [False, False]
        model.requires_grad_()
        assert [p.requires_grad for p in model.parameters()] == [True, True]


def test_add_module_register_parameter_named_children_and_delattr():
    for lib in LIBS:
        m = lib.nn.Module()
        m.add_module("act", lib.nn.Tanh())
        m.register_parameter("w", lib.nn.Parameter(lib.ones(2)))
        m.register_parameter("b", None)
        assert [n for n, _ in m.named_children()] == ["act"]
        assert [n for n, _ in m.named_parameters()] == ["w"]
        assert list(m.state_dict()) == ["w"]
        del m.w
        assert list(m.named_parameters()) == [] and not hasattr(m, "w")


@pytest.mark.parametrize("call, error", [
    (lambda m: m.register_buffer("a.b", ge.zeros(1)), KeyError),
    (lambda m: m.register_buffer("x", [1.0]), TypeError),
    (lambda m: m.register_buffer("forward", ge.zeros(1)), KeyError),
    (lambda m: m.register_parameter("w", ge.zeros(1)), TypeError),
    (lambda m: m.add_module("sub", 3), TypeError),
])
def test_registering_bad_names_or_values_raises(call, error):
    with pytest.raises(error):
        call(ge.nn.Module())


# ------------------------------------------------------------------ containers
def test_module_list_registers_indexes_and_renumbers_like_torch():
    for lib in LIBS:
        layers = lib.nn.ModuleList([lib.nn.Linear(2, 2), lib.nn.Tanh()])
        layers.append(lib.nn.Linear(2, 1))
        layers.insert(1, lib.nn.ReLU())
        assert [type(m).__name__ for m in layers] == ["Linear", "ReLU", "Tanh", "Linear"]
        assert list(layers.state_dict()) == ["0.weight", "0.bias", "3.weight", "3.bias"]
        assert type(layers[-1]).__name__ == "Linear" and len(layers[1:]) == 3
        del layers[0]
        assert list(layers.state_dict()) == ["2.weight", "2.bias"] and len(layers) == 3
        with pytest.raises(IndexError):
            layers[3]


def test_module_dict_and_parameter_list_register_their_entries():
    for lib in LIBS:
        heads = lib.nn.ModuleDict({"a": lib.nn.Linear(1, 1)})
        heads["b"] = lib.nn.Linear(1, 2)
        assert list(heads) == ["a", "b"] and "b" in heads and len(heads) == 2
        assert list(heads.state_dict()) == ["a.weight", "a.bias", "b.weight", "b.bias"]
        assert type(heads.pop("a")).__name__ == "Linear" and list(heads.keys()) == ["b"]
        params = lib.nn.ParameterList([lib.nn.Parameter(lib.ones(2)), lib.zeros(3)])
        assert list(params.state_dict()) == ["0", "1"]
        assert isinstance(params[1], lib.nn.Parameter) and params[1].requires_grad and len(params) == 2


@pytest.mark.parametrize("make, shape", [
    (lambda lib: lib.nn.Identity(7, unused=True), (2, 3, 4)),
    (lambda lib: lib.nn.Flatten(), (2, 12)),
    (lambda lib: lib.nn.Flatten(0, 1), (6, 4)),
])
def test_identity_and_flatten_shapes(make, shape):
    x = np.arange(24.0).reshape(2, 3, 4)
    ours, theirs = (make(lib)(lib.tensor(x)) for lib in LIBS)
    assert tuple(ours.shape) == tuple(theirs.shape) == shape
    np.testing.assert_array_equal(ours.array, theirs.numpy())


def _hooked_run(lib):
    """Forward hooks on a Sequential's layers: one replacing the output, a pre-hook replacing the input, one
    observing; then one removed (twice: the second removal does nothing) and a prepended hook."""
    model = _linear_tanh_linear(lib)
    seen = []
    doubled = model[0].register_forward_hook(lambda module, args, out: out * 2.0)
    model[2].register_forward_pre_hook(lambda module, args: args[0] + 1.0)  # one value: wrapped in a tuple
    model[1].register_forward_hook(lambda module, args, out: seen.append((module is model[1], out.sum().item())))
    x = lib.tensor(np.arange(6.0).reshape(2, 3) / 10)
    first = model(x)
    first.sum().backward()
    doubled.remove()
    doubled.remove()
    model[1].register_forward_hook(lambda module, args, out: seen.append(("first", len(seen))), prepend=True)
    return first.detach().numpy(), model(x).detach().numpy(), model[0].weight.grad.numpy(), seen


def _linear_tanh_linear(lib):
    """Linear(3, 2), Tanh, Linear(2, 2) in float64, with parameters spread evenly over [-1, 1]."""
    model = lib.nn.Sequential(lib.nn.Linear(3, 2, dtype=lib.float64), lib.nn.Tanh(),
                              lib.nn.Linear(2, 2, dtype=lib.float64))
    with lib.no_grad():
        for p in model.parameters():
            p.copy_(lib.tensor(np.linspace(-1.0, 1.0, p.numel()).reshape(tuple(p.shape))))
    return model


def _backward_hooked_run(lib):
    """Full backward hooks: one replacing a Tanh's grad_input, observers on each layer (the first layer's input
    needs no grad: its hook fires with grad_input (None,) once the output's gradient is known)."""
    model = _linear_tanh_linear(lib)
    seen = []
    for k, layer in enumerate(model):
        if k == 1:
            layer.register_full_backward_hook(lambda module, grad_input, grad_output: (grad_input[0] * 3.0,))
        layer.register_full_backward_hook(lambda module, grad_input, grad_output, k=k: seen.append(
            (k, [None if g is None else g.numpy().copy() for g in grad_input + grad_output])))
    x = lib.tensor(np.arange(6.0).reshape(2, 3) / 10)
    out = model(x)
    (out * out).sum().backward()
    return seen, model[0].weight.grad.numpy()


def test_full_backward_hooks_see_and_replace_module_gradients_like_torch():
    with pytest.warns(UserWarning, match="no inputs require gradients"):
        theirs = _backward_hooked_run(torch)
    ours = _backward_hooked_run(ge)
    assert [k for k, _ in ours[0]] == [k for k, _ in theirs[0]] == [2, 1, 0]
    for (_, got), (_, expected) in zip(ours[0], theirs[0]):
        assert [g is None for g in got] == [g is None for g in expected]
        for g, e in zip(got, expected):
            if e is not None:
                np.testing.assert_allclose(g, e, rtol=1e-12)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-12)  # (the Tanh's grad_input tripled)


def test_forward_hooks_replace_inputs_and_outputs_observe_and_are_removed_like_torch():
    ours, theirs = _hooked_run(ge), _hooked_run(torch)
    for got, expected in zip(ours[:3], theirs[:3]):
        np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert [entry[0] for entry in ours[3]] == [entry[0] for entry in theirs[3]] == [True, "first", True]
    np.testing.assert_allclose([entry[1] for entry in ours[3]], [entry[1] for entry in theirs[3]], rtol=1e-12)
    with pytest.raises(TypeError, match="hook"):
        ge.nn.Tanh().register_forward_hook(3)


# ------------------------------------------------------------------ differentiable comparisons
def _compare(engine_fn, torch_fn, *arrays, differentiate=None, atol=1e-12):
    """Run both functions on float64 copies of ``arrays``; compare values, shapes and the gradients of the
    arrays whose positions are in ``differentiate`` (all by default) under a fixed random cotangent."""
    differentiate = range(len(arrays)) if differentiate is None else differentiate
    ge_args = [ge.tensor(a, requires_grad=i in differentiate) for i, a in enumerate(arrays)]
    torch_args = [torch.tensor(a, requires_grad=i in differentiate) for i, a in enumerate(arrays)]
    out_ge, out_torch = engine_fn(*ge_args), torch_fn(*torch_args)
    assert tuple(out_ge.shape) == tuple(out_torch.shape)
    np.testing.assert_allclose(out_ge.array, out_torch.detach().numpy(), rtol=1e-12, atol=atol)
    cotangent = np.random.default_rng(1).standard_normal(out_ge.shape)
    (out_ge * ge.tensor(cotangent)).sum().backward()
    (out_torch * torch.tensor(cotangent)).sum().backward()
    for i in differentiate:
        np.testing.assert_allclose(ge_args[i].grad.array, torch_args[i].grad.numpy(), rtol=1e-11, atol=atol)


RNG = np.random.default_rng(0)
X = np.concatenate([RNG.standard_normal(20) * 4, [0.0, -30.0, 30.0, 1e-9, -800.0, 800.0]]).reshape(2, 13)


@pytest.mark.parametrize("name, kwargs", [
    ("silu", {}), ("elu", {}), ("elu", {"alpha": 0.3}), ("gelu", {}), ("gelu", {"approximate": "tanh"}),
    ("logsigmoid", {}),
])
def test_activations_match_torch(name, kwargs):
    _compare(lambda x: getattr(ge.nn.functional, name)(x, **kwargs),
             lambda x: getattr(torch.nn.functional, name)(x, **kwargs), X)


@pytest.mark.parametrize("module, args", [("SiLU", ()), ("ELU", (0.5,)), ("GELU", ()), ("GELU", ("tanh",))])
def test_activation_modules_match_torch(module, args):
    _compare(getattr(ge.nn, module)(*args), getattr(torch.nn, module)(*args), X)


def test_gelu_is_accurate_across_the_range_of_its_erf():
    x = np.linspace(-40.0, 40.0, 2001)
    _compare(ge.nn.functional.gelu, torch.nn.functional.gelu, x, atol=1e-13)


@pytest.mark.parametrize("shape, normalized, affine", [
    ((4, 5), (5,), True), ((2, 3, 4), (3, 4), True), ((3, 6), 6, False), ((2, 1, 4), (4,), True),
])
def test_layer_norm_matches_torch(shape, normalized, affine):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape) * 3 + 1
    tail = (normalized,) if isinstance(normalized, int) else normalized
    w, b = rng.standard_normal(tail), rng.standard_normal(tail)
    if affine:
        _compare(lambda x, w, b: ge.nn.functional.layer_norm(x, normalized, w, b, eps=1e-5),
                 lambda x, w, b: torch.nn.functional.layer_norm(x, tail, w, b, eps=1e-5), x, w, b)
    else:
        _compare(lambda x: ge.nn.functional.layer_norm(x, normalized),
                 lambda x: torch.nn.functional.layer_norm(x, tail), x)


def test_layer_norm_module_parameters_and_state_dict_match_torch():
    for lib in LIBS:
        norm = lib.nn.LayerNorm((2, 3), eps=1e-6)
        assert list(norm.state_dict()) == ["weight", "bias"]
        assert norm.weight.tolist() == [[1.0] * 3] * 2 and norm.bias.tolist() == [[0.0] * 3] * 2
        assert list(lib.nn.LayerNorm(3, elementwise_affine=False).parameters()) == []
        assert list(lib.nn.LayerNorm(3, bias=False).state_dict()) == ["weight"]
    x = np.random.default_rng(3).standard_normal((4, 2, 3))
    _compare(ge.nn.LayerNorm((2, 3), eps=1e-6).double(), torch.nn.LayerNorm((2, 3), eps=1e-6).double(), x)


@pytest.mark.parametrize("padding_idx", [None, 1, -1])
def test_embedding_picks_rows_and_accumulates_gradients_but_not_at_padding(padding_idx):
    weight = np.random.default_rng(4).standard_normal((5, 3))
    indices = np.array([[0, 1, 1], [4, 2, 1]])
    _compare(lambda w: ge.nn.functional.embedding(ge.tensor(indices), w, padding_idx=padding_idx),
             lambda w: torch.nn.functional.embedding(torch.tensor(indices), w,
                                                     padding_idx=None if padding_idx is None else padding_idx % 5),
             weight)


def test_embedding_initialises_like_torch():
    ge.manual_seed(0)
    table = ge.nn.Embedding(2000, 50, padding_idx=3)
    reference = torch.nn.Embedding(2000, 50, padding_idx=3)
    assert list(table.state_dict()) == list(reference.state_dict()) == ["weight"]
    assert table.weight.requires_grad and table.padding_idx == reference.padding_idx == 3
    weight = table.weight.array
    assert np.all(weight[3] == 0)
    assert abs(weight.mean()) < 0.01 and abs(weight.std() - 1) < 0.01
    indices = ge.tensor([[3, 0]])
    assert table(indices).shape == (1, 2, 50)


def test_one_hot_and_normalize_match_torch():
    labels = np.array([[0, 3], [2, 2]])
    for classes in (-1, 6):
        ours = ge.nn.functional.one_hot(ge.tensor(labels), classes)
        theirs = torch.nn.functional.one_hot(torch.tensor(labels), classes)
        assert ours.dtype == ge.int64 and ours.tolist() == theirs.tolist()
    x = np.random.default_rng(5).standard_normal((3, 4))
    x[1] = 0.0
    for kwargs in ({}, {"dim": 0}, {"p": 1, "dim": -1}):
        _compare(lambda x: ge.nn.functional.normalize(x, **kwargs),
                 lambda x: torch.nn.functional.normalize(x, **kwargs), x)


# ------------------------------------------------------------------ losses
PROBS = np.concatenate([np.random.default_rng(6).uniform(0.01, 0.99, 10), [0.5, 1e-10]]).reshape(3, 4)
TARGETS = np.random.default_rng(7).uniform(0, 1, (3, 4))
LOGITS = X[:, :12].reshape(2, 2, 6)[0].reshape(3, 4) * 5
WEIGHT = np.random.default_rng(8).uniform(0.5, 2, (3, 4))
POS_WEIGHT = np.array([0.5, 1.0, 2.0, 3.0])


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("name, inputs, extra", [
    ("l1_loss", (X, X[::-1] * 0.5), {}),
    ("smooth_l1_loss", (X, X[::-1] * 0.5), {}),
    ("smooth_l1_loss", (X, X[::-1] * 0.5), {"beta": 3.0}),
    ("smooth_l1_loss", (X, X[::-1] * 0.5), {"beta": 0.0}),
    ("binary_cross_entropy", (PROBS, TARGETS), {}),
    ("binary_cross_entropy", (PROBS, TARGETS), {"weight": WEIGHT}),
    ("binary_cross_entropy_with_logits", (LOGITS, TARGETS), {}),
    ("binary_cross_entropy_with_logits", (LOGITS, TARGETS), {"weight": WEIGHT, "pos_weight": POS_WEIGHT}),
])
def test_losses_match_torch(name, inputs, extra, reduction):
    def call(lib, *args):
        options = {key: lib.tensor(value) for key, value in extra.items() if key != "beta"}
        if "beta" in extra:
            options["beta"] = extra["beta"]
        return getattr(lib.nn.functional, name)(*args, reduction=reduction, **options)

    _compare(lambda *a: call(ge, *a), lambda *a: call(torch, *a), *inputs)


@pytest.mark.parametrize("module, args", [
    ("L1Loss", {}), ("SmoothL1Loss", {"beta": 0.5}), ("BCELoss", {"reduction": "sum"}),
    ("BCEWithLogitsLoss", {"pos_weight": POS_WEIGHT}),
])
def test_loss_modules_match_torch(module, args):
    def build(lib):
        options = {key: lib.tensor(v) if isinstance(v, np.ndarray) else v for key, v in args.items()}
        return getattr(lib.nn, module)(**options)

    inputs = (PROBS, TARGETS) if module == "BCELoss" else (LOGITS, TARGETS)
    _compare(build(ge), build(torch), *inputs)


def test_binary_cross_entropy_clamps_its_logs_at_minus_100_like_torch():
    for lib in LIBS:
        loss = lib.nn.functional.binary_cross_entropy(lib.tensor([0.0, 1.0, 0.0]), lib.tensor([1.0, 0.0, 0.0]),
                                                      reduction="none")
        assert loss.tolist() == [100.0, 100.0, 0.0]


@pytest.mark.parametrize("call, error, message", [
    (lambda F: F.l1_loss(ge.zeros(2), ge.zeros(2), reduction="avg"), ValueError, "reduction"),
    (lambda F: F.l1_loss(ge.zeros(2), ge.zeros(3)), ValueError, "target"),
    (lambda F: F.binary_cross_entropy(ge.zeros(2), ge.zeros(1, 2)), ValueError, "target"),
    (lambda F: F.binary_cross_entropy(ge.tensor([1.5]), ge.tensor([1.0])), ValueError, "between 0 and 1"),
    (lambda F: F.smooth_l1_loss(ge.zeros(2), ge.zeros(2), beta=-1.0), ValueError, "beta"),
    (lambda F: F.gelu(ge.zeros(2), approximate="erf"), ValueError, "approximate"),
    (lambda F: F.one_hot(ge.tensor([0, 3]), 2), ValueError, "class values"),
    (lambda F: F.embedding(ge.tensor([0.0]), ge.zeros(2, 2)), TypeError, "integer"),
    (lambda F: F.embedding(ge.tensor([-1]), ge.zeros(2, 2)), IndexError, "indices"),
    (lambda F: F.layer_norm(ge.zeros(2, 3), (2,)), ValueError, "normalized_shape"),
])
def test_bad_arguments_raise_naming_them(call, error, message):
    with pytest.raises(error, match=message):
        call(ge.nn.functional)


@pytest.mark.parametrize("name", ["l1_loss", "smooth_l1_loss"])
def test_a_target_of_another_shape_broadcasts_with_torchs_warning(name):
    with pytest.warns(UserWarning, match="target size"):
        _compare(lambda x, t: getattr(ge.nn.functional, name)(x, t, reduction="none"),
                 lambda x, t: getattr(torch.nn.functional, name)(x, t, reduction="none"), X[:, :3], X[0, :3])


def test_losses_do_not_change_their_inputs():
    x, t = ge.tensor(LOGITS.copy()), ge.tensor(TARGETS.copy())
    ge.nn.functional.binary_cross_entropy_with_logits(x, t, pos_weight=ge.tensor(POS_WEIGHT))
    ge.nn.functional.smooth_l1_loss(x, t)
    np.testing.assert_array_equal(x.array, LOGITS)
    np.testing.assert_array_equal(t.array, TARGETS)
