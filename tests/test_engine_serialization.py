"""ge.save and ge.load: state_dicts, optimizer state and nested containers round-trip exactly, without pickle."""
import io
import json
import pickle
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

import gradverify.engine as ge
from gradverify.engine import serialization

RNG = np.random.default_rng(3)
X, Y = RNG.standard_normal((6, 3)), RNG.standard_normal((6, 2))


def _round_trip(obj):
    buffer = io.BytesIO()
    ge.save(obj, buffer)
    buffer.seek(0)
    return ge.load(buffer)


def _model(seed):
    ge.manual_seed(seed)
    return ge.nn.Sequential(ge.nn.Linear(3, 5), ge.nn.Tanh(), ge.nn.Linear(5, 2)).double()


def test_module_state_dict_loads_into_a_fresh_module(tmp_path):
    model = _model(0)
    ge.save(model.state_dict(), tmp_path / "model.pt")
    fresh = _model(1)
    assert not np.array_equal(fresh(ge.tensor(X)).array, model(ge.tensor(X)).array)
    loaded = ge.load(tmp_path / "model.pt")
    assert type(loaded) is OrderedDict and list(loaded) == list(model.state_dict())
    fresh.load_state_dict(loaded)
    np.testing.assert_array_equal(fresh(ge.tensor(X)).array, model(ge.tensor(X)).array)
    assert np.load(tmp_path / "model.pt", allow_pickle=False).files[0] == "object.json"  # an ordinary .npz


def _train(model, optimizer, steps):
    for _ in range(steps):
        optimizer.zero_grad()
        ((model(ge.tensor(X)) - ge.tensor(Y)) ** 2).mean().backward()
        optimizer.step()


@pytest.mark.parametrize("make_optimizer", [
    lambda p: ge.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
    lambda p: ge.optim.Adam(p, lr=0.01, betas=(0.8, 0.99), amsgrad=True),
], ids=["sgd-momentum", "adam"])
def test_optimizer_state_dict_continues_training_as_an_uninterrupted_run(tmp_path, make_optimizer):
    model = _model(0)
    optimizer = make_optimizer(model.parameters())
    _train(model, optimizer, 3)
    ge.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    _train(model, optimizer, 4)

    checkpoint = ge.load(tmp_path / "ckpt.pt")
    assert checkpoint["epoch"] == 3 and sorted(checkpoint["optimizer"]["state"]) == [0, 1, 2, 3]
    resumed = _model(1)
    resumed.load_state_dict(checkpoint["model"])
    resumed_optimizer = make_optimizer(resumed.parameters())
    resumed_optimizer.load_state_dict(checkpoint["optimizer"])
    _train(resumed, resumed_optimizer, 4)
    for (name, p), q in zip(model.named_parameters(), resumed.parameters()):
        np.testing.assert_array_equal(q.array, p.array, err_msg=name)


def test_optimizer_state_dict_round_trips_its_layout():
    model = _model(0)
    optimizer = ge.optim.Adam(model.parameters(), lr=0.01)
    _train(model, optimizer, 2)
    saved, loaded = optimizer.state_dict(), _round_trip(optimizer.state_dict())
    assert loaded["param_groups"] == saved["param_groups"]
    assert isinstance(loaded["param_groups"][0]["betas"], tuple)
    for index, values in saved["state"].items():
        assert set(loaded["state"][index]) == set(values)
        for name, value in values.items():
            assert loaded["state"][index][name].dtype == value.dtype
            np.testing.assert_array_equal(loaded["state"][index][name].array, value.array)


def test_nested_containers_and_plain_values_round_trip():
    obj = {
        "numbers": [1, -2**70, 2.5, float("inf"), True, None, "text"],
        "tuple": (ge.tensor([1.0, 2.0]), ("deep", [{"x": ge.tensor([3], dtype=ge.int64)}])),
        "ordered": OrderedDict([("b", 1), ("a", 2)]),
        7: {(1, "k"): "tuple key", 0.5: None, None: False},
        "empty": [[], (), {}],
    }
    loaded = _round_trip(obj)
    assert loaded["numbers"] == obj["numbers"]
    assert type(loaded["ordered"]) is OrderedDict and list(loaded["ordered"].items()) == [("b", 1), ("a", 2)]
    assert loaded[7] == obj[7] and loaded["empty"] == [[], (), {}]
    assert isinstance(loaded["tuple"], tuple) and loaded["tuple"][1][0] == "deep"
    assert loaded["tuple"][0].tolist() == [1.0, 2.0] and loaded["tuple"][1][1][0]["x"].tolist() == [3]
    assert np.isnan(_round_trip([float("nan")])[0])


@pytest.mark.parametrize("values, dtype", [
    ([[1.5, -2.25], [0.1, 3e38]], ge.float32), ([1e-300, -0.0, np.pi], ge.float64), ([2**62, -5, 0], ge.int64),
    ([True, False, True], ge.bool_), (2.5, ge.float64), (7, ge.int64), (False, ge.bool_),
    (np.zeros((0, 3)), ge.float32),
])
def test_dtypes_shapes_and_values_round_trip_exactly(values, dtype):
    t = ge.tensor(values, dtype=dtype)
    loaded = _round_trip(t)
    assert type(loaded) is ge.Tensor and loaded.dtype == dtype and loaded.shape == t.shape
    np.testing.assert_array_equal(loaded.array, t.array)
    if dtype.kind == "f":
        assert np.array_equal(np.signbit(loaded.array), np.signbit(t.array))
    assert loaded.array.flags.writeable


def test_requires_grad_and_parameters_round_trip():
    weight = ge.nn.Parameter(ge.ones(2, 3))
    frozen = ge.nn.Parameter(ge.ones(2), requires_grad=False)
    leaf, constant = ge.tensor([1.0], requires_grad=True), ge.tensor([2.0])
    loaded = _round_trip([weight, frozen, leaf, constant, leaf * 2])
    assert [type(t).__name__ for t in loaded] == ["Parameter", "Parameter", "Tensor", "Tensor", "Tensor"]
    assert [t.requires_grad for t in loaded] == [True, False, True, False, True]
    assert all(t.is_leaf and t.grad is None for t in loaded)  # as torch: the graph and .grad are not saved
    assert loaded[4].tolist() == [2.0]


def test_tied_parameters_and_views_come_back_sharing_memory():
    model = ge.nn.Sequential(ge.nn.Embedding(4, 3), ge.nn.Linear(3, 4, bias=False))
    model[1].weight = model[0].weight
    state = model.state_dict()
    assert list(state) == ["0.weight", "1.weight"]
    base = ge.arange(12.0, dtype=ge.float64)
    grid = base.reshape(3, 4)
    loaded = _round_trip(state)
    views = _round_trip({"base": base, "rows": grid[1:], "column": grid[:, 2], "flipped": base[::-1]})
    loaded["0.weight"].array[0, 0] = 42.0
    assert loaded["1.weight"].array[0, 0] == 42.0
    views["base"].array[6] = -1.0
    assert views["rows"].tolist()[0] == [4.0, 5.0, -1.0, 7.0] and views["column"].tolist() == [2.0, -1.0, 10.0]
    assert views["flipped"].tolist()[5] == -1.0
    assert len(zipfile.ZipFile(_saved_bytes(state)).namelist()) == 2  # one storage for the tied pair


def test_a_tensor_saved_twice_loads_as_one_object():
    t = ge.tensor([1.0, 2.0])
    loaded = _round_trip({"a": t, "b": [t]})
    assert loaded["a"] is loaded["b"][0]


def _saved_bytes(obj):
    buffer = io.BytesIO()
    ge.save(obj, buffer)
    return io.BytesIO(buffer.getvalue())


def test_file_objects_are_written_and_read(tmp_path):
    state = {"w": ge.tensor([[1.0, 2.0]], dtype=ge.float64)}
    with open(tmp_path / "f.pt", "wb") as handle:
        ge.save(state, handle)
    with open(tmp_path / "f.pt", "rb") as handle:
        assert ge.load(handle)["w"].tolist() == [[1.0, 2.0]]
    assert ge.load(str(tmp_path / "f.pt"), map_location="cpu")["w"].dtype == ge.float64
    assert ge.load(tmp_path / "f.pt", map_location={"cpu": ge.device("cpu")}, weights_only=False)["w"].shape == (1, 2)
    with pytest.raises(ValueError, match="map_location: the engine holds every tensor on the CPU, got 'cuda:0'"):
        ge.load(tmp_path / "f.pt", map_location="cuda:0")


def test_a_failed_save_leaves_the_previous_file_and_no_partial_one(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    ge.save({"w": ge.tensor([1.0])}, path)
    before = path.read_bytes()
    with pytest.raises(TypeError, match=r"obj\['w'\]\[1\] is a numpy.ndarray, which ge.save cannot store"):
        ge.save({"w": [ge.tensor([2.0]), np.zeros(2)]}, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["model.pt"]

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(np.lib.format, "write_array", disk_full)
    with pytest.raises(OSError, match="No space left"):
        ge.save({"w": ge.tensor([3.0])}, path)
    with pytest.raises(OSError, match="No space left"):
        ge.save({"w": ge.tensor([3.0])}, tmp_path / "new.pt")
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["model.pt"]
    monkeypatch.undo()
    assert ge.load(path)["w"].tolist() == [1.0]


@pytest.mark.parametrize("value", [np.float64(1.0), np.zeros(2), {1, 2}, object(), b"bytes", ge.max(ge.ones(2), dim=0)])
def test_values_it_cannot_store_are_refused(value):
    with pytest.raises(TypeError, match=r"save: obj\[0\] is a .*, which ge.save cannot store"):
        ge.save([value], io.BytesIO())


def _archive(description, storages=()):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("object.json", json.dumps(description))
        for name, data in storages:
            archive.writestr(name, data)
    buffer.seek(0)
    buffer.name = "crafted.pt"
    return buffer


def _npy(array):
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=True)
    return buffer.getvalue()


TENSOR = {"storage": 0, "offset": 0, "dtype": "<f8", "shape": [2], "strides": [8], "requires_grad": False,
          "parameter": False}
DESCRIPTION = {"format": serialization.FORMAT, "version": serialization.VERSION, "object": {"tensor": 0},
               "tensors": [TENSOR]}


def test_a_pickle_inside_is_refused():
    crafted = _archive(DESCRIPTION, [("storage_0.npy", _npy(np.array([print, 1], dtype=object)))])
    with pytest.raises(ValueError, match=r"cannot read crafted.pt: its storage_0.npy cannot be read: storage_0.npy holds Python objects"):
        ge.load(crafted)


def test_pickles_and_torch_files_are_refused(tmp_path):
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps({"w": [1.0]}))
    with pytest.raises(ValueError, match=r"plain.pkl: it is not a zip archive; expected a file written by ge.save"):
        ge.load(tmp_path / "plain.pkl")
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.ones(2)}, tmp_path / "torch.pt")
    with pytest.raises(ValueError, match=r"torch.pt: it holds a pickle \(torch/data.pkl\), which ge.load never runs"):
        ge.load(tmp_path / "torch.pt")


@pytest.mark.parametrize("change, reason", [
    ({"format": "other"}, "does not describe a gradverify.engine.save file"),
    ({"version": 99}, "format version 99, this gradverify reads 1"),
    ({"object": {"tensor": 5}}, "is not a value ge.save writes"),
    ({"object": {"set": [1]}}, "is not a value ge.save writes"),
    ({"tensors": [{**TENSOR, "shape": [3]}]}, "views more memory than its storage"),
    ({"tensors": [{**TENSOR, "dtype": "|O"}]}, "tensor 0 has dtype object, not a number type"),
    ({"tensors": [{**TENSOR, "storage": 1}]}, "it has no member storage_1.npy"),
    ({"tensors": [{"storage": 0}]}, "tensor 0 is described by"),
])
def test_malformed_files_give_an_error_naming_the_file_and_the_problem(change, reason):
    crafted = _archive({**DESCRIPTION, **change}, [("storage_0.npy", _npy(np.zeros(2)))])
    with pytest.raises(ValueError, match=f"ge.load: cannot read crafted.pt: .*({reason})"):
        ge.load(crafted)
