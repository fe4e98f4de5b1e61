"""The report's PNG figures (matplotlib, Agg backend, so no display is needed)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402

SCHEME_LABELS = {"central": "central difference", "richardson": "Richardson (2 stages)", "complex_step": "complex step"}
DPI = 110


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def step_sweep(sweep, path: Path, title: str) -> Path:
    """Error of each finite-difference scheme against step size, one line per scheme and dtype (the V curve)."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    styles = {"float64": "-", "float32": "--"}
    colours = dict(zip(SCHEME_LABELS, ("tab:blue", "tab:orange", "tab:green")))
    for (dtype, scheme), group in sweep.groupby(["dtype", "scheme"], sort=False):
        # Exact zeros (complex step on a quadratic) cannot sit on a log axis: draw them at the axis floor.
        error = np.maximum(group["abs_error"].to_numpy(), 1e-20)
        ax.loglog(group["step"], error, styles[dtype], color=colours[scheme], marker=".",
                  label=f"{SCHEME_LABELS[scheme]}, {dtype}")
    ax.set_xlabel("step h")
    ax.set_ylabel("|derivative error|")
    ax.set_title(title, fontsize=10)
    ax.invert_xaxis()
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def speed_bars(speed, path: Path, dtype: str) -> Path:
    """Median value-and-gradient time per way, one panel per example, with the interquartile range."""
    rows = speed[(speed.dtype == dtype) & (speed.status == "ok")]
    examples = list(dict.fromkeys(rows.example))
    fig, axes = plt.subplots(1, len(examples), figsize=(4.2 * len(examples), 4.2), sharey=True, squeeze=False)
    for ax, example in zip(axes[0], examples):
        group = rows[rows.example == example]
        y = np.arange(len(group))
        median = group["median_s"].to_numpy() * 1e3
        spread = np.vstack([median - group["p25_s"] * 1e3, group["p75_s"] * 1e3 - median])
        colours = np.where(group["kind"] == "AD", "tab:blue", "tab:orange")
        ax.barh(y, median, xerr=spread, color=colours, alpha=0.8)
        ax.set_yticks(y, group["way"])
        ax.set_xscale("log")
        ax.set_xlabel("ms per gradient (median, IQR)")
        ax.set_title(example, fontsize=10)
        ax.invert_yaxis()
    fig.suptitle(f"value-and-gradient time, {dtype} (blue: AD, orange: numerical)", fontsize=10)
    return _save(fig, path)


def loss_curves(losses, path: Path) -> Path:
    """SimpleNet's training loss per epoch, one line per engine and dtype."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    styles = {"float32": "-", "float64": ":"}
    for (dtype, engine), group in losses.groupby(["dtype", "engine"], sort=False):
        ax.plot(group["epoch"], group["loss"], styles[dtype], label=f"{engine}, {dtype}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE loss")
    ax.set_title("SimpleNet, MSELoss, SGD lr 0.01", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
