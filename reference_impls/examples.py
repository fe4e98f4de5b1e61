"""The document's examples (:mod:`gradverify.examples`) in PyTorch, JAX, numpy and mpmath.

The losses are not rewritten here: :func:`loss_function` evaluates the one
definition in :mod:`gradverify.examples` with a backend's op counterparts from
this package.  What is backend-specific lives here: turning the seeded numpy
data into backend arrays, the document's SimpleNet training loop in PyTorch
(verbatim model and loop) and JAX, and the high-precision ground truth.

The ground truth is the backpropagation the document derives by hand
(dL/dW2 = dL/dz2 · h^T and so on), evaluated in mpmath at ``GROUND_TRUTH_DPS``
significant digits at the same (dtype-rounded) inputs the other backends see.
It shares no code with any AD system, and a test checks it against mpmath's
own numerical differentiation.
"""
from __future__ import annotations

import numpy as np

from gradverify.examples import SIMPLENET_SIZES, TRAINING, examples

from . import BACKENDS, module, to_mp

GROUND_TRUTH_DPS = 40


def to_backend(array, backend: str, dps: int = GROUND_TRUTH_DPS):
    """A numpy array as an array of ``backend`` with the same dtype (mpmath: exact, at ``dps`` digits)."""
    if backend == "torch":
        import torch

        return torch.tensor(array)
    if backend == "jax":
        module("jax")  # enables float64 in JAX before the array is made
        import jax.numpy as jnp

        return jnp.asarray(array)
    if backend == "mpmath":
        return to_mp(array, dps)
    if backend == "numpy":
        return np.array(array, copy=True)
    raise ValueError(f"backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")


def loss_function(example, backend: str, dtype):
    """``(fn, params)``: ``fn(*params)`` is ``example``'s loss in ``backend``, the data captured in ``fn``.

    ``params`` are ``backend`` arrays of ``dtype`` holding the seeded initial
    values; for mpmath, ``dtype`` says at which rounding of them to evaluate.
    """
    ops = module(backend)
    params, constants = example.arrays(dtype)
    data = tuple(to_backend(c, backend) for c in constants)

    def fn(*inputs):
        return example.evaluate(ops, inputs, data)

    return fn, tuple(to_backend(p, backend) for p in params)


def _square_of_sum_backprop(ops, x, y):
    u = x + y
    df_du = 2 * u
    return df_du, df_du


def _mlp_backprop(ops, W1, b1, W2, b2, x, onehot):
    z1 = x @ W1.T + b1
    h = ops.sigmoid(z1)
    y = ops.softmax(h @ W2.T + b2, axis=1)
    # d mean cross-entropy / d z2 = (y - y*) / batch, because each one-hot row sums to 1.
    dz2 = (y - onehot) / x.shape[0]
    dz1 = (dz2 @ W2) * h * (1 - h)
    return dz1.T @ x, dz1.sum(axis=0), dz2.T @ h, dz2.sum(axis=0)


def _simplenet_backprop(ops, fc1_weight, fc1_bias, fc2_weight, fc2_bias, inputs, targets):
    z1 = inputs @ fc1_weight.T + fc1_bias
    hidden = ops.relu(z1)
    out = hidden @ fc2_weight.T + fc2_bias
    dout = 2 * (out - targets) / out.size
    dz1 = (dout @ fc2_weight) * (z1 > 0)
    return dz1.T @ inputs, dz1.sum(axis=0), dout.T @ hidden, dout.sum(axis=0)


_BACKPROP = {"square_of_sum": _square_of_sum_backprop, "mlp": _mlp_backprop, "simplenet": _simplenet_backprop}


def ground_truth(example, dtype, dps: int = GROUND_TRUTH_DPS):
    """``(value, gradients)`` of ``example`` at its ``dtype``-rounded inputs, in mpmath at ``dps`` digits.

    ``gradients`` is a tuple of object arrays of ``mpmath.mpf``, one per parameter.
    """
    import mpmath

    ops = module("mpmath")
    with mpmath.workdps(dps):
        params, constants = (tuple(to_mp(a, dps) for a in group) for group in example.arrays(dtype))
        value = example.evaluate(ops, params, constants)
        grads = _BACKPROP[example.name](ops, *params, *constants)
    return value, tuple(np.asarray(g, dtype=object) for g in grads)


def train_simplenet_torch(dtype, epochs: int = TRAINING["epochs"]) -> np.ndarray:
    """The document's SimpleNet loop in PyTorch from the seeded weights; the loss of every epoch."""
    import torch
    import torch.nn as nn
    import torch.optim as optim

    class SimpleNet(nn.Module):
        def __init__(self, input_size, hidden_size, output_size):
            super().__init__()
            self.fc1 = nn.Linear(input_size, hidden_size)
            self.relu = nn.ReLU()
            self.fc2 = nn.Linear(hidden_size, output_size)

        def forward(self, x):
            return self.fc2(self.relu(self.fc1(x)))

    example = examples()["simplenet"]
    params, (input_data, target_data) = example.arrays(dtype)
    model = SimpleNet(SIMPLENET_SIZES["inputs"], SIMPLENET_SIZES["hidden"], SIMPLENET_SIZES["outputs"])
    model.to(getattr(torch, np.dtype(dtype).name))
    model.load_state_dict({name: torch.tensor(p) for name, p in zip(example.param_names, params)})
    input_data, target_data = torch.tensor(input_data), torch.tensor(target_data)
    criterion = nn.MSELoss()
    optimizer = optim.SGD(model.parameters(), lr=TRAINING["lr"])
    losses = np.empty(epochs)
    for epoch in range(epochs):
        outputs = model(input_data)
        loss = criterion(outputs, target_data)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses[epoch] = loss.item()
    return losses


def train_simplenet_jax(dtype, epochs: int = TRAINING["epochs"]) -> np.ndarray:
    """SimpleNet trained by plain SGD in JAX (one jitted step); the loss of every epoch."""
    import jax

    fn, params = loss_function(examples()["simplenet"], "jax", dtype)
    lr = TRAINING["lr"]

    @jax.jit
    def step(params):
        loss, grads = jax.value_and_grad(lambda ps: fn(*ps))(params)
        return loss, tuple(p - lr * g for p, g in zip(params, grads))

    losses = np.empty(epochs)
    for epoch in range(epochs):
        loss, params = step(params)
        losses[epoch] = float(loss)
    return losses
