"""The document's examples, run on the engine and on PyTorch side by side.

The document (automatic-differentiation-in-deep-learning.md) has three worked
examples: f(x, y) = (x + y)^2 at (2, 3), a two-layer MLP with a sigmoid hidden
layer, softmax and cross-entropy, and the SimpleNet training loop.  SimpleNet
runs verbatim (its two code blocks are embedded below exactly as printed);
only its imports are swapped to the engine.
"""
import contextlib
import io
import pathlib
import re
import types

import numpy as np
import pytest

import gradverify.engine as ge

torch = pytest.importorskip("torch")

DOCUMENT = pathlib.Path(__file__).resolve().parents[2] / "shared" / "seed" / "automatic-differentiation-in-deep-learning.md"

SIMPLENET_MODEL_BLOCK = """\
import torch
import torch.nn as nn
import torch.optim as optim

class SimpleNet(nn.Module):
    def __init__(self, input_size, hidden_size, output_size):
        super(SimpleNet, self).__init__()
        self.fc1 = nn.Linear(input_size, hidden_size)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden_size, output_size)
        
    def forward(self, x):
        out = self.fc1(x)
        out = self.relu(out)
        out = self.fc2(out)
        return out

# 创建模型实例
model = SimpleNet(input_size=10, hidden_size=64, output_size=5)
"""

SIMPLENET_TRAINING_BLOCK = """\
# 定义损失函数和优化器
criterion = nn.MSELoss()
optimizer = optim.SGD(model.parameters(), lr=0.01)

# 训练模型
for epoch in range(100):
    # 前向传播
    outputs = model(input_data)
    loss = criterion(outputs, target_data)
    
    # 反向传播和参数更新
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    
    if (epoch+1) % 10 == 0:
        print(f'Epoch [{epoch+1}/100], Loss: {loss.item():.4f}')
"""

TORCH_IMPORTS = "import torch\nimport torch.nn as nn\nimport torch.optim as optim\n"
ENGINE_IMPORTS = "import gradverify.engine as torch\nimport gradverify.engine.nn as nn\nimport gradverify.engine.optim as optim\n"


@pytest.fixture
def float64_default():
    """Both frameworks make float64 tensors and parameters for the duration of a test."""
    torch_saved, engine_saved = torch.get_default_dtype(), ge.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    ge.set_default_dtype(ge.float64)
    yield
    torch.set_default_dtype(torch_saved)
    ge.set_default_dtype(engine_saved)


def test_embedded_blocks_are_the_documents():
    if not DOCUMENT.exists():
        pytest.skip(f"the document is not at {DOCUMENT}")
    blocks = re.findall(r"```python\n(.*?)```", DOCUMENT.read_text(encoding="utf-8"), flags=re.S)
    assert blocks == [SIMPLENET_MODEL_BLOCK, SIMPLENET_TRAINING_BLOCK]


def _with_recorded_loss(nn_module, record):
    """``nn_module`` with an ``MSELoss`` that also appends every loss value to ``record``.

    The training block creates its criterion as ``nn.MSELoss()``; handing it
    this namespace is how every epoch's loss is seen without editing the block.
    """

    class RecordingMSELoss(nn_module.MSELoss):
        def forward(self, input, target):
            loss = super().forward(input, target)
            record.append(loss.item())
            return loss

    namespace = types.SimpleNamespace(**{k: getattr(nn_module, k) for k in dir(nn_module) if not k.startswith("__")})
    namespace.MSELoss = RecordingMSELoss
    return namespace


def _train(model_block, initial_state, input_data, target_data):
    """Run the document's two blocks; return (losses of all epochs, printed text, final state_dict)."""
    scope = {}
    exec(model_block, scope)
    model = scope["model"]
    if initial_state is not None:
        model.load_state_dict(initial_state)
    losses = []
    scope.update(
        nn=_with_recorded_loss(scope["nn"], losses),
        input_data=scope["torch"].tensor(input_data),
        target_data=scope["torch"].tensor(target_data),
    )
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(SIMPLENET_TRAINING_BLOCK, scope)
    final = {name: value.detach().numpy().copy() for name, value in model.state_dict().items()}
    return losses, printed.getvalue(), final, model


def test_simplenet_matches_torch_in_float64(float64_default):
    assert SIMPLENET_MODEL_BLOCK.startswith(TORCH_IMPORTS)
    engine_block = ENGINE_IMPORTS + SIMPLENET_MODEL_BLOCK[len(TORCH_IMPORTS) :]
    rng = np.random.default_rng(2024)
    input_data, target_data = rng.standard_normal((32, 10)), rng.standard_normal((32, 5))

    torch.manual_seed(0)
    scope = {}
    exec(SIMPLENET_MODEL_BLOCK, scope)
    initial = {k: v.detach().clone() for k, v in scope["model"].state_dict().items()}
    torch_losses, torch_printed, torch_final, _ = _train(SIMPLENET_MODEL_BLOCK, initial, input_data, target_data)
    engine_losses, engine_printed, engine_final, engine_model = _train(
        engine_block, initial, input_data, target_data
    )

    assert isinstance(engine_model.fc1.weight, ge.Tensor)
    assert engine_model.fc1.weight.dtype == ge.float64
    assert len(engine_losses) == len(torch_losses) == 100
    np.testing.assert_allclose(engine_losses, torch_losses, rtol=1e-10, atol=0)
    assert engine_losses[-1] < engine_losses[0]
    assert engine_printed == torch_printed
    assert engine_printed.count("\n") == 10 and engine_printed.startswith("Epoch [10/100], Loss: ")
    assert list(engine_final) == list(torch_final) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    for name, value in torch_final.items():
        np.testing.assert_allclose(engine_final[name], value, rtol=1e-10, atol=1e-14, err_msg=name)
        assert not np.array_equal(value, initial[name].numpy())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_square_of_sum_at_2_3(dtype):
    x = ge.tensor(2.0, dtype=getattr(ge, dtype), requires_grad=True)
    y = ge.tensor(3.0, dtype=getattr(ge, dtype), requires_grad=True)
    f = (x + y) ** 2
    f.backward()
    assert f.item() == 25.0 and f.dtype == np.dtype(dtype)
    assert x.grad.item() == 10.0 and y.grad.item() == 10.0
    assert x.grad.dtype == y.grad.dtype == np.dtype(dtype)


def _mlp_loss(lib, functional, x, W1, b1, W2, b2, target):
    """The document's MLP on a batch (rows are examples): z1 = W1 x + b1, h = sigmoid(z1), z2 = W2 h + b2.

    The loss is the mean cross-entropy of softmax(z2) against class indices,
    written out as -log(softmax) picked at the targets.
    """
    h = lib.sigmoid(x @ W1.T + b1)
    z2 = h @ W2.T + b2
    y = lib.softmax(z2, dim=1)
    picked = y[np.arange(x.shape[0]), target]
    return -lib.log(picked).mean(), functional.cross_entropy(z2, lib.tensor(target))


def test_two_layer_mlp_gradients_match_torch_float64():
    rng = np.random.default_rng(7)
    batch, n_in, n_hidden, n_out = 16, 6, 8, 4
    arrays = {
        "W1": rng.standard_normal((n_hidden, n_in)),
        "b1": rng.standard_normal(n_hidden),
        "W2": rng.standard_normal((n_out, n_hidden)),
        "b2": rng.standard_normal(n_out),
    }
    x = rng.standard_normal((batch, n_in))
    target = rng.integers(0, n_out, batch)

    grads = {}
    for name, lib, functional in (("torch", torch, torch.nn.functional), ("engine", ge, ge.nn.functional)):
        params = {k: lib.tensor(v, requires_grad=True) for k, v in arrays.items()}
        explicit, fused = _mlp_loss(lib, functional, lib.tensor(x), **params, target=target)
        assert explicit.dtype == lib.float64
        by_softmax = lib.autograd.grad(explicit, list(params.values()), retain_graph=True)
        by_fused = lib.autograd.grad(fused, list(params.values()))
        grads[name] = (explicit.item(), [g.numpy() for g in by_softmax], [g.numpy() for g in by_fused])

    torch_value, torch_softmax, torch_fused = grads["torch"]
    engine_value, engine_softmax, engine_fused = grads["engine"]
    assert engine_value == pytest.approx(torch_value, rel=1e-12)
    for name, t_soft, t_fused, e_soft, e_fused in zip(arrays, torch_softmax, torch_fused, engine_softmax, engine_fused):
        assert e_soft.shape == arrays[name].shape and e_soft.dtype == np.float64
        np.testing.assert_allclose(e_soft, t_soft, rtol=1e-12, atol=1e-15, err_msg=name)
        np.testing.assert_allclose(e_fused, t_fused, rtol=1e-12, atol=1e-15, err_msg=name)
        np.testing.assert_allclose(e_soft, e_fused, rtol=1e-9, err_msg=name)
