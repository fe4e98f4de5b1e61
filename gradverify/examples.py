"""The document's three examples, seeded and deterministic, written once for every backend.

1. ``square_of_sum``: f(x, y) = (x + y)^2 at (2, 3); value 25, gradient (10, 10).
2. ``mlp``: the two-layer network z1 = W1 x + b1, h = sigmoid(z1), z2 = W2 h + b2,
   y = softmax(z2), cross-entropy against class targets (W1 64x10, W2 5x64, batch 8).
3. ``simplenet``: Linear(10, 64), ReLU, Linear(64, 5) with MSELoss, trained by SGD
   (lr 0.01, 100 epochs) on seeded synthetic data.

Each loss is one function ``loss(ops, *params, *constants)`` whose elementwise
and reduction ops come from ``ops``, a namespace holding the op table's ops
under their table names (``ops.sigmoid``, ``ops.softmax(x, axis=1)`` ...);
matrix products, transposes and arithmetic use Python operators, which engine
tensors, torch tensors, jax arrays and numpy (also object-dtype mpmath) arrays
share.  So the engine, PyTorch, JAX, numpy and mpmath evaluate the very same
expression; :mod:`reference_impls.examples` supplies the non-engine namespaces.

The document writes the network for one column vector x; with a batch the rows
of ``x`` are samples, so ``W1 x + b1`` becomes ``x @ W1.T + b1``.  Initial
weights follow ``torch.nn.Linear``'s default, U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
drawn in float64 from one seeded generator and cast per dtype, so every backend
starts from identical values.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

import gradverify.engine as ge
from gradverify.engine import functional

SEED = 0
MLP_SIZES = {"inputs": 10, "hidden": 64, "classes": 5, "batch": 8}
SIMPLENET_SIZES = {"inputs": 10, "hidden": 64, "outputs": 5, "samples": 64}
TRAINING = {"lr": 0.01, "epochs": 100, "log_every": 10}


def square_of_sum(ops, x, y):
    """f(x, y) = (x + y)^2, through the intermediate u = x + y as the document builds its graph."""
    u = x + y
    return u**2


def mlp_loss(ops, W1, b1, W2, b2, x, onehot):
    """Mean cross-entropy of the document's two-layer network; ``onehot`` holds the class targets."""
    h = ops.sigmoid(x @ W1.T + b1)
    y = ops.softmax(h @ W2.T + b2, axis=1)
    return -ops.mean(ops.sum(onehot * ops.log(y), axis=1))


def simplenet_loss(ops, fc1_weight, fc1_bias, fc2_weight, fc2_bias, inputs, targets):
    """``MSELoss()(SimpleNet(inputs), targets)`` with the document's SimpleNet written out."""
    hidden = ops.relu(inputs @ fc1_weight.T + fc1_bias)
    return ops.mse_loss(hidden @ fc2_weight.T + fc2_bias, targets)


@dataclass(frozen=True)
class Example:
    """One example: its loss, the float64 master values of its parameters and of its constant data."""

    name: str
    title: str
    loss: Callable
    params: dict
    constants: dict

    @property
    def param_names(self) -> tuple:
        return tuple(self.params)

    def arrays(self, dtype) -> tuple:
        """(parameters, constants) as numpy arrays of ``dtype``, in the loss's argument order."""
        dtype = np.dtype(dtype)
        return (
            tuple(np.asarray(v, dtype=dtype) for v in self.params.values()),
            tuple(np.asarray(v, dtype=dtype) for v in self.constants.values()),
        )

    def evaluate(self, ops, params, constants):
        """The loss at ``params`` (a tuple in ``param_names`` order) with ``constants``."""
        return self.loss(ops, *params, *constants)


def _linear_init(rng, fan_in, fan_out):
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, (fan_out, fan_in)), rng.uniform(-bound, bound, (fan_out,))


def _mlp(seed) -> Example:
    rng = np.random.default_rng(seed)
    d, h, c, n = (MLP_SIZES[k] for k in ("inputs", "hidden", "classes", "batch"))
    W1, b1 = _linear_init(rng, d, h)
    W2, b2 = _linear_init(rng, h, c)
    x = rng.standard_normal((n, d))
    labels = rng.integers(0, c, n)
    return Example(
        "mlp",
        f"two-layer MLP, sigmoid + softmax + cross-entropy (W1 {h}x{d}, W2 {c}x{h}, batch {n})",
        mlp_loss,
        {"W1": W1, "b1": b1, "W2": W2, "b2": b2},
        {"x": x, "onehot": np.eye(c)[labels]},
    )


def _simplenet(seed) -> Example:
    rng = np.random.default_rng(seed + 1)
    d, h, c, n = (SIMPLENET_SIZES[k] for k in ("inputs", "hidden", "outputs", "samples"))
    w1, b1 = _linear_init(rng, d, h)
    w2, b2 = _linear_init(rng, h, c)
    return Example(
        "simplenet",
        f"SimpleNet Linear({d},{h})-ReLU-Linear({h},{c}), MSELoss, {n} synthetic samples",
        simplenet_loss,
        {"fc1.weight": w1, "fc1.bias": b1, "fc2.weight": w2, "fc2.bias": b2},
        {"input_data": rng.standard_normal((n, d)), "target_data": rng.standard_normal((n, c))},
    )


def examples(seed: int = SEED) -> dict:
    """The three examples by name, built from ``seed`` (the same seed gives bit-identical data)."""
    point = {"x": np.float64(2.0), "y": np.float64(3.0)}
    square = Example("square_of_sum", "f(x, y) = (x + y)^2 at (2, 3)", square_of_sum, point, {})
    return {e.name: e for e in (square, _mlp(seed), _simplenet(seed))}


def engine_case(example: Example, dtype) -> tuple:
    """``(fn, inputs)`` for ``example`` on engine tensors of ``dtype``: ``fn(*inputs)`` is the scalar loss.

    The inputs are the parameters (so a gradient check covers every weight);
    the data is captured by ``fn``.
    """
    params, constants = example.arrays(dtype)
    data = tuple(ge.tensor(c) for c in constants)

    def fn(*inputs):
        return example.evaluate(functional, inputs, data)

    return fn, tuple(ge.tensor(p) for p in params)


def document_cases(dtype, seed: int = SEED) -> dict:
    """``{name: (fn, inputs)}``: :func:`engine_case` of each of the three examples."""
    return {name: engine_case(example, dtype) for name, example in examples(seed).items()}


class SimpleNet(ge.nn.Module):
    """The document's model, verbatim but for the engine: fc1, ReLU, fc2."""

    def __init__(self, input_size, hidden_size, output_size, dtype=None):
        super().__init__()
        self.fc1 = ge.nn.Linear(input_size, hidden_size, dtype=dtype)
        self.relu = ge.nn.ReLU()
        self.fc2 = ge.nn.Linear(hidden_size, output_size, dtype=dtype)

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(x)))


def simplenet_module(dtype, seed: int = SEED) -> SimpleNet:
    """The engine :class:`SimpleNet` of ``dtype`` holding the seeded initial weights.

    Building the layers draws their default initialisation from the engine's
    generator (as torch's do) before the seeded weights replace it.
    """
    example = examples(seed)["simplenet"]
    model = SimpleNet(SIMPLENET_SIZES["inputs"], SIMPLENET_SIZES["hidden"], SIMPLENET_SIZES["outputs"], dtype)
    model.load_state_dict(dict(zip(example.param_names, example.arrays(dtype)[0])))
    return model


def train_simplenet(dtype, epochs: int = TRAINING["epochs"], seed: int = SEED) -> np.ndarray:
    """Train SimpleNet on the engine as the document's loop does; returns the loss of every epoch."""
    model = simplenet_module(dtype, seed)
    inputs, targets = (ge.tensor(c) for c in examples(seed)["simplenet"].arrays(dtype)[1])
    criterion = ge.nn.MSELoss()
    optimizer = ge.optim.SGD(model.parameters(), lr=TRAINING["lr"])
    losses = np.empty(epochs)
    for epoch in range(epochs):
        loss = criterion(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses[epoch] = loss.item()
    return losses
