"""Engine speed against PyTorch eager (CPU) and a hand-written numpy backprop, measured interleaved in one run.

    python benchmarks/bench_engine.py [--rounds 15] [--clock wall|cpu] [--hidden relu|sigmoid] [--threads 1]

Workloads (float32, value and gradient every call):

- W1: f(x, y) = (x + y)^2 at (2, 3), fresh leaf tensors each call.
- W2: MLP 784-128-10 at batch 64, hidden activation then cross-entropy, forward + backward.
- W4: a 300-op chain on 100-element vectors: 100 x (tanh, mul, add), summed, gradient w.r.t. the input;
  also against the same chain and its backward written by hand in numpy.
- W4s: W4 as programs write it, with Python-number operands, in float64: 100 x ``y = tanh(y) * 1.01 + 0.1``.
- W5: MLP 784-512-10 at batch 1024, forward + backward, also against a hand-written numpy backprop
  of the same network (the floor for any numpy-backed engine).

Every round runs each implementation of each workload back to back, so machine noise hits all of
them alike; a ratio is the median over rounds of the per-round ratio of times.  Peak memory of one
W5 step is measured with tracemalloc (it sees numpy's buffers, not torch's allocator).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys


def _parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    parser.add_argument("--sample-seconds", type=float, default=0.05, help="target duration of one sample")
    parser.add_argument("--hidden", choices=("relu", "sigmoid"), default="relu", help="hidden activation of W2/W5")
    parser.add_argument("--threads", type=int, default=1, help="threads for BLAS, OpenMP and torch (default 1)")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: perf_counter; cpu: this process's CPU time, steadier on a busy machine (meaningful with --threads 1)",
    )
    return parser.parse_args()


ARGS = _parse_args()
# BLAS reads these when numpy loads, so they are set before the imports below.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(ARGS.threads)
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import time  # noqa: E402
import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

import gradverify.engine as ge  # noqa: E402

torch.set_num_threads(ARGS.threads)
TARGETS = {"W1": ("torch", 0.6), "W2": ("torch", 1.0), "W4": ("torch", 0.6), "W4s": ("torch", 0.6),
           "W5": ("numpy", 1.15)}


# ----------------------------------------------------------------- workloads
def square_of_sum(lib):
    """W1: one call builds (x + y)^2 from fresh leaves and returns the value and both gradients."""

    def step():
        x = lib.tensor(2.0, requires_grad=True)
        y = lib.tensor(3.0, requires_grad=True)
        f = (x + y) ** 2
        f.backward()
        return f.item(), x.grad.item(), y.grad.item()

    return step


def tanh_chain(lib, length=100, size=100):
    """W4: ``length`` rounds of h = tanh(h) * a + b (3 ops each) on ``size``-vectors, summed, then backward."""
    rng = np.random.default_rng(4)
    a, b, x0 = (rng.uniform(-1.0, 1.0, size).astype(np.float32) for _ in range(3))
    a, b = lib.tensor(a), lib.tensor(b)

    def step():
        x = lib.tensor(x0, requires_grad=True)
        h = x
        for _ in range(length):
            h = lib.tanh(h) * a + b
        total = h.sum()
        total.backward()
        return total, x.grad

    return step


def scalar_tanh_chain(lib, length=100, size=100):
    """W4s: ``length`` rounds of y = tanh(y) * 1.01 + 0.1 on float64 ``size``-vectors, summed, then backward."""
    x0 = np.random.default_rng(4).uniform(-1.0, 1.0, size)

    def step():
        x = lib.tensor(x0, dtype=lib.float64, requires_grad=True)
        y = x
        for _ in range(length):
            y = lib.tanh(y) * 1.01 + 0.1
        total = y.sum()
        total.backward()
        return total, x.grad

    return step


def numpy_tanh_chain(length=100, size=100):
    """W4 written by hand in numpy, with the engine's tanh' = 1 / cosh^2: the floor for a numpy-backed engine."""
    rng = np.random.default_rng(4)
    a, b, x0 = (rng.uniform(-1.0, 1.0, size).astype(np.float32) for _ in range(3))

    def step():
        h, inputs = x0, []
        for _ in range(length):
            inputs.append(h)
            h = np.tanh(h) * a + b
        g = np.ones_like(h)
        for z in reversed(inputs):
            cosh = np.cosh(z)
            g = g * a / cosh / cosh
        return h.sum(), g

    return step


def mlp_arrays(batch, n_hidden, n_in=784, n_out=10, seed=0):
    """float32 input, class targets and torch-initialised weights (W1, b1, W2, b2) of an n_in-n_hidden-n_out MLP."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, n_in)).astype(np.float32)
    target = rng.integers(0, n_out, batch)
    shapes = [(n_hidden, n_in), (n_hidden,), (n_out, n_hidden), (n_out,)]
    fan_in = [n_in, n_in, n_hidden, n_hidden]
    params = [rng.uniform(-1, 1, s).astype(np.float32) / np.float32(np.sqrt(f)) for s, f in zip(shapes, fan_in)]
    return x, target, params


def mlp(lib, functional, arrays, hidden):
    """W2/W5 on a torch-shaped library: forward, cross-entropy, backward into the parameters' ``.grad``."""
    x_array, target_array, param_arrays = arrays
    x, target = lib.tensor(x_array), lib.tensor(target_array)
    params = [lib.tensor(p, requires_grad=True) for p in param_arrays]
    activation = getattr(functional, hidden)
    w1, b1, w2, b2 = params

    def step():
        for p in params:
            p.grad = None
        loss = functional.cross_entropy(functional.linear(activation(functional.linear(x, w1, b1)), w2, b2), target)
        loss.backward()
        return loss, [p.grad for p in params]

    return step


def numpy_mlp(arrays, hidden):
    """The same MLP step written by hand in numpy: the floor for an engine that runs numpy kernels."""
    x, target, (w1, b1, w2, b2) = arrays
    rows = np.arange(x.shape[0])

    def step():
        z1 = x @ w1.T + b1
        if hidden == "relu":
            h = np.maximum(z1, 0)
        else:
            h = 1 / (1 + np.exp(-z1))
        z2 = h @ w2.T + b2
        shifted = z2 - z2.max(axis=1, keepdims=True)
        e = np.exp(shifted)
        total = e.sum(axis=1, keepdims=True)
        loss = np.mean(np.log(total[:, 0]) - shifted[rows, target])
        dz2 = e / total
        dz2[rows, target] -= 1
        dz2 /= x.shape[0]
        dh = dz2 @ w2
        dz1 = dh * (z1 > 0) if hidden == "relu" else dh * h * (1 - h)
        return loss, [dz1.T @ x, dz1.sum(axis=0), dz2.T @ h, dz2.sum(axis=0)]

    return step


def workloads(hidden):
    """{workload: {implementation: zero-argument step}}."""
    w2, w5 = mlp_arrays(64, 128), mlp_arrays(1024, 512)
    return {
        "W1": {"engine": square_of_sum(ge), "torch": square_of_sum(torch)},
        "W2": {
            "engine": mlp(ge, ge.nn.functional, w2, hidden),
            "torch": mlp(torch, torch.nn.functional, w2, hidden),
            "numpy": numpy_mlp(w2, hidden),
        },
        "W4": {"engine": tanh_chain(ge), "torch": tanh_chain(torch), "numpy": numpy_tanh_chain()},
        "W4s": {"engine": scalar_tanh_chain(ge), "torch": scalar_tanh_chain(torch)},
        "W5": {
            "engine": mlp(ge, ge.nn.functional, w5, hidden),
            "torch": mlp(torch, torch.nn.functional, w5, hidden),
            "numpy": numpy_mlp(w5, hidden),
        },
    }


def _as_arrays(result):
    if isinstance(result, (list, tuple)):
        return [a for r in result for a in _as_arrays(r)]
    return [np.asarray(result.detach() if hasattr(result, "detach") else result, dtype=np.float64)]


def check_agreement(suite):
    """Every implementation of a workload computes the same numbers (so the timings compare like with like)."""
    for name, impls in suite.items():
        results = {impl: _as_arrays(step()) for impl, step in impls.items()}
        reference = results["torch"]
        for impl, arrays in results.items():
            for got, want in zip(arrays, reference):
                np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-6, err_msg=f"{name} {impl}")


# ------------------------------------------------------------------- timing
def calibrate(step, sample_seconds):
    """Calls per sample so that one sample lasts about ``sample_seconds``."""
    step()
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < sample_seconds / 5:
        step()
        calls += 1
    return max(1, round(calls * 5 * sample_seconds / (time.perf_counter() - start)))


def measure(suite, rounds, sample_seconds, clock):
    """Seconds per call, one row per (round, workload, implementation); implementations interleaved."""
    calls = {(w, i): calibrate(step, sample_seconds) for w, impls in suite.items() for i, step in impls.items()}
    rows = []
    for r in range(rounds):
        for workload, impls in suite.items():
            for impl, step in impls.items():
                n = calls[workload, impl]
                start = clock()
                for _ in range(n):
                    step()
                rows.append((r, workload, impl, (clock() - start) / n))
    return pd.DataFrame(rows, columns=["round", "workload", "impl", "seconds"])


def peak_memory(step):
    """Peak bytes allocated (tracemalloc) during one call of ``step``, after a warm-up call."""
    step()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        step()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def summarize(times):
    """Per workload: median [p25-p75] time of each implementation, ratios to the engine, and the target."""
    per_call = times.pivot_table(index=["round", "workload"], columns="impl", values="seconds")
    rows = []
    for workload, (baseline, target) in TARGETS.items():
        frame = per_call.xs(workload, level="workload").dropna(axis="columns")
        row = {"workload": workload}
        for impl in frame:
            q1, q2, q3 = (frame[impl].quantile(q) * 1e6 for q in (0.25, 0.5, 0.75))
            row[f"{impl} us"] = f"{q2:,.1f} [{q1:,.1f}-{q3:,.1f}]"
        for impl in ("torch", "numpy"):
            if impl in frame:
                ratio = frame["engine"] / frame[impl]
                row[f"engine/{impl}"] = f"{ratio.median():.3f} [{ratio.quantile(0.25):.2f}-{ratio.quantile(0.75):.2f}]"
        met = (frame["engine"] / frame[baseline]).median() <= target
        row.update({"target": f"engine/{baseline} <= {target}", "met": "yes" if met else "NO"})
        rows.append(row)
    columns = ["engine us", "torch us", "numpy us", "engine/torch", "engine/numpy", "target", "met"]
    return pd.DataFrame(rows).set_index("workload").reindex(columns=columns).fillna("")


def main():
    print(
        f"threads: {ARGS.threads} (torch.set_num_threads; OMP/OPENBLAS/MKL_NUM_THREADS)  rounds: {ARGS.rounds}  "
        f"clock: {ARGS.clock}  hidden: {ARGS.hidden}  numpy {np.__version__}  torch {torch.__version__}"
    )
    suite = workloads(ARGS.hidden)
    check_agreement(suite)
    clock = time.perf_counter if ARGS.clock == "wall" else time.process_time
    times = measure(suite, ARGS.rounds, ARGS.sample_seconds, clock)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.precision", 3):
        print("\nmicroseconds per call: median [p25-p75]; ratios: median [p25-p75] over rounds of the per-round ratio")
        print(summarize(times).to_string())
    memory = {impl: peak_memory(suite["W5"][impl]) / 2**20 for impl in ("engine", "numpy")}
    print(
        f"\npeak memory of one W5 step (tracemalloc): engine {memory['engine']:.1f} MiB, "
        f"numpy floor {memory['numpy']:.1f} MiB, ratio {memory['engine'] / memory['numpy']:.2f}"
    )


if __name__ == "__main__":
    main()
