"""The report's PNG figures (matplotlib, Agg backend, so no display is needed)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402

SCHEME_LABELS = {"central": "central difference", "richardson": "Richardson (2 stages)", "complex_step": "complex step"}
DPI = 110


def zero_floor(values) -> float:
    """Where exact zeros are drawn on a log axis: a decade below the smallest nonzero value (own marker)."""
    values = np.asarray(values, dtype=float)
    positive = values[values > 0]
    return 10.0 ** (np.floor(np.log10(positive.min())) - 1) if positive.size else 1e-20


def _save(fig, path: Path) -> Path:
    # bbox "tight" keeps legends placed outside the axes, so they never cover data.
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _legend_outside(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    else:
        ax.text(0.5, 0.5, "nothing to compare (PyTorch not installed)", ha="center", transform=ax.transAxes)


ZERO_MARKERS = {"float32": "^", "float64": "v"}


def _log_with_zeros(ax, x, y, floor, zero_marker="v", **style) -> None:
    """``y`` against ``x`` on a log y axis; exact zeros as hollow ``zero_marker`` markers at ``floor``."""
    y = np.asarray(y, dtype=float)
    x = np.asarray(x)
    ax.plot(x, np.where(y > 0, y, np.nan), **style)
    zeros = y == 0
    if zeros.any():
        ax.plot(x[zeros], np.full(zeros.sum(), floor), linestyle="none", marker=zero_marker, markerfacecolor="none",
                color=style.get("color"), markersize=5)


def _zero_legend_entries(ax, floor, dtypes) -> None:
    for dtype in dtypes:
        ax.plot([], [], linestyle="none", marker=ZERO_MARKERS[dtype], markerfacecolor="none", color="black",
                label=f"exactly 0, {dtype} (rows at {floor:.0e} and below)")


def step_sweep(sweep, path: Path, title: str) -> Path:
    """Error of each finite-difference scheme against step size, one line per scheme and dtype (the V curve)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    styles = {"float64": "-", "float32": "--"}
    colours = dict(zip(SCHEME_LABELS, ("tab:blue", "tab:orange", "tab:green")))
    floor = zero_floor(sweep["abs_error"])
    for row, ((dtype, scheme), group) in enumerate(sweep.groupby(["dtype", "scheme"], sort=False)):
        _log_with_zeros(ax, group["step"], group["abs_error"], floor / 2**row, ZERO_MARKERS[dtype],
                        linestyle=styles[dtype],
                        color=colours[scheme], marker=".", label=f"{SCHEME_LABELS[scheme]}, {dtype}")
    _zero_legend_entries(ax, floor, sorted(set(sweep.dtype[sweep["abs_error"] == 0])))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("step h (absolute; the parameters are of order 1)")
    ax.set_ylabel("|error| of the derivative (loss per unit of parameter)")
    ax.set_title(title, fontsize=10)
    ax.invert_xaxis()
    ax.grid(True, which="major", alpha=0.3)
    _legend_outside(ax)
    return _save(fig, path)


def speed_bars(speed, path: Path, dtype: str) -> Path:
    """Median value-and-gradient time per way, one panel per example, with the interquartile range."""
    from matplotlib.patches import Patch

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
        ax.set_xlabel("ms per gradient (median; whiskers: IQR)")
        ax.set_title(example, fontsize=10)
        ax.invert_yaxis()
    axes[0][0].set_ylabel("way of differentiating")
    handles = [Patch(color="tab:blue", alpha=0.8, label="AD"), Patch(color="tab:orange", alpha=0.8,
                                                                   label="numerical")]
    axes[0][-1].legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    fig.suptitle(f"Time of one gradient of each document example, {dtype}", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def loss_drift(losses, path: Path) -> Path:
    """SimpleNet: per-epoch |loss - PyTorch's loss| of each other engine and dtype, on a log scale."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    styles = {"float32": "-", "float64": ":"}
    others = losses[(losses.engine != "PyTorch") & losses.drift_vs_pytorch.notna()]
    floor = zero_floor(others["drift_vs_pytorch"])
    for row, ((dtype, engine), group) in enumerate(others.groupby(["dtype", "engine"], sort=False)):
        _log_with_zeros(ax, group["epoch"], group["drift_vs_pytorch"], floor / 2**row, ZERO_MARKERS[dtype],
                        linestyle=styles[dtype],
                        marker=".", markersize=3, color="tab:blue" if engine == "gradverify engine" else "tab:red",
                        label=f"{engine}, {dtype}")
    _zero_legend_entries(ax, floor, sorted(set(others.dtype[others["drift_vs_pytorch"] == 0])))
    ax.set_yscale("log")
    ax.set_xlabel("epoch (one full-batch SGD step each)")
    ax.set_ylabel("|loss - PyTorch's loss| (MSE units)")
    ax.set_title("SimpleNet training: how far each engine's loss is from PyTorch's, per epoch", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    _legend_outside(ax)
    return _save(fig, path)
