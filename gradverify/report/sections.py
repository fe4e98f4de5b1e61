"""From measured result tables to the report's sections: formatted tables, the prose around them, figures."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from gradverify.examples import MLP_SIZES, SIMPLENET_SIZES, TRAINING, examples
from reference_impls.examples import GROUND_TRUTH_DPS

from .document import HEADLINE_END, HEADLINE_START, Image, Section, Table
from .environment import NOT_INSTALLED
from .numerical import COMPLEX_STEP
from .timing import MIN_SAMPLE_SECONDS, RELATIVE_IQR_LIMIT
from .ways import BASELINE, BASELINE_DTYPE

DTYPES = ("float32", "float64")
TITLES = {name: example.title for name, example in examples().items()}
NOISY = "†"
"""Marks a timing whose relative IQR stayed above the limit when its time budget ran out."""
AGREE_ULPS = 64
"""An exact way agrees with the ground truth when its error is at most this many ulps of the gradient's largest
entry (the scale of the rounding of a correct computation; a wrong rule is off by far more)."""
BASELINE_NAME = f"{BASELINE} {BASELINE_DTYPE}"


def fmt_error(x) -> str:
    """An error: exactly "0", three significant digits otherwise."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return "0" if x == 0 else f"{x:.2e}"


def fmt_ulps(x) -> str:
    """A count of units in the last place."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.3g}" if x < 1e5 else f"{x:.2e}"


def fmt_ms(seconds) -> str:
    """Seconds as milliseconds, three significant digits."""
    return f"{seconds * 1e3:.3g}"


def fmt_timing(row) -> list:
    """Cells of one timing: median ms (marked when noisy) and its IQR with the relative spread."""
    mark = f" {NOISY}" if row.noisy else ""
    return [f"{fmt_ms(row.median_s)}{mark}", f"{fmt_ms(row.p25_s)}–{fmt_ms(row.p75_s)} ({row.relative_iqr:.0%})"]


def fmt_ratio(ratio) -> str:
    return f"{ratio:.3g}×" if np.isfinite(ratio) else "–"


NOISY_NOTE = (f"{NOISY}: noisy, the relative IQR (IQR / median) stayed above {RELATIVE_IQR_LIMIT:.0%} when the "
              "time budget ran out; IQR columns show the spread of every timing.")


def fmt_value(x) -> str:
    """A value such as a loss or a gradient entry, with enough digits to compare engines."""
    return f"{x:.6f}" if abs(x) >= 1e-3 else f"{x:.3e}"


def _status_cells(status: str, width: int) -> list:
    text = NOT_INSTALLED if status == NOT_INSTALLED else "failed"
    return [text] * width


def accuracy_tables(accuracy: pd.DataFrame, example: str) -> list:
    """Per way: max errors over all parameters per dtype; then, collapsed, the same per parameter."""
    rows = accuracy[accuracy.example == example]
    summary, detail = [], []
    for way, by_way in rows.groupby("way", sort=False):
        cells = [way, by_way.kind.iloc[0]]
        for dtype in DTYPES:
            group = by_way[by_way.dtype == dtype]
            if (group.status != "ok").any():
                cells += _status_cells(group.status.iloc[0], 3)
            else:
                cells += [fmt_error(group.max_abs_error.max()), fmt_error(group.max_rel_error.max()),
                          fmt_ulps(group.max_ulps.max())]
        summary.append(cells)
        for parameter, group in by_way.groupby("parameter", sort=False):
            cells = [parameter, way]
            for dtype in DTYPES:
                row = group[group.dtype == dtype].iloc[0]
                cells += (_status_cells(row.status, 3) if row.status != "ok" else
                          [fmt_error(row.max_abs_error), fmt_error(row.max_rel_error), fmt_ulps(row.max_ulps)])
            detail.append(cells)
    error_columns = [f"{dtype} {what}" for dtype in DTYPES for what in ("max abs", "max rel", "max ulps")]
    summary = pd.DataFrame(summary, columns=["way", "kind", *error_columns])
    detail = pd.DataFrame(detail, columns=["parameter", "way", *error_columns])
    blocks = [
        Table(summary, f"{TITLES[example]}: gradient error against the mpmath ground truth, worst over all "
                       "parameters:", headline=example == "mlp"),
        Table(detail, "per parameter", collapsed=True),
    ]
    failed = rows[rows.status.str.startswith("error")].drop_duplicates(["way", "dtype"])
    blocks += [f"*{row.way}* ({row.dtype}) failed: `{row.status}`" for row in failed.itertuples()]
    return blocks


def speed_table(speed: pd.DataFrame, example: str) -> Table:
    """Median and IQR of one gradient per way and dtype, and the round-by-round ratio to the one baseline."""
    rows = speed[speed.example == example]
    out = []
    for way, by_way in rows.groupby("way", sort=False):
        cells = [way]
        for dtype in DTYPES:
            row = by_way[by_way.dtype == dtype].iloc[0]
            cells += _status_cells(row.status, 3) if row.status != "ok" else [*fmt_timing(row),
                                                                                fmt_ratio(row.ratio_to_baseline)]
        out.append(cells)
    columns = [f"{dtype} {what}" for dtype in DTYPES for what in ("median ms", "IQR ms", f"vs {BASELINE_NAME}")]
    samples = int(rows.samples.min()) if "samples" in rows and rows.samples.notna().any() else 0
    caption = (f"`{example}`: time of one gradient, both dtypes interleaved in one session, at least {samples} "
               "samples per way:")
    return Table(pd.DataFrame(out, columns=["way", *columns]), caption, headline=example == "mlp")


def _exact(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of exact ways: AD and the complex step (no truncation error)."""
    return rows[(rows.status == "ok") & ((rows.kind == "AD") | (rows.way == "complex step"))]


def _example_verdict(accuracy: pd.DataFrame, example: str) -> str:
    rows = accuracy[accuracy.example == example]
    exact = _exact(rows)
    if exact.empty:
        return f"**{TITLES[example]}**: no exact way ran."
    scale = exact.groupby(["way", "dtype"], sort=False).ulps_of_largest.max()
    disagree = scale[scale > AGREE_ULPS]
    ways = exact.way.nunique()
    if disagree.empty:
        within = ", ".join(f"{scale.xs(d, level='dtype').max():.2g} ulps in {d}" for d in DTYPES
                           if d in scale.index.get_level_values("dtype"))
        text = (f"**{TITLES[example]}: right.** All {ways} exact ways (AD and the complex step) agree with the "
                f"{GROUND_TRUTH_DPS}-digit ground truth, to within {within} of the gradient's largest entry.")
    else:
        listed = "; ".join(f"{way} {dtype}: {value:.3g} ulps" for (way, dtype), value in disagree.items())
        text = (f"**{TITLES[example]}: in doubt.** Exact ways off the {GROUND_TRUTH_DPS}-digit ground truth by more "
                f"than {AGREE_ULPS} ulps of the gradient's largest entry: {listed}.")
    worst = exact.loc[exact.max_ulps.idxmax()]
    if worst.max_ulps == 0:
        text += " Every exact way's gradient is exact, to the last bit."
    elif worst.worst_ulps_entry > 0 and worst.largest_entry > 2 * worst.worst_ulps_entry:
        text += (f" Entry by entry the worst is {fmt_ulps(worst.max_ulps)} ulps ({worst.way}, {worst['dtype']}), on "
                 f"an entry of {worst.worst_ulps_entry:.2g}, {worst.largest_entry / worst.worst_ulps_entry:.3g}× "
                 f"smaller than the largest ({worst.largest_entry:.2g}): that entry is a sum of far larger terms "
                 "that cancel, and one rounding of those terms alone is up to about that many ulps of what is "
                 "left, so a correct gradient shows hundreds or thousands of ulps there while its error in ulps "
                 "of the largest entry stays small.")
    else:
        text += f" Entry by entry the worst is {fmt_ulps(worst.max_ulps)} ulps ({worst.way}, {worst['dtype']})."
    numerical = rows[(rows.status == "ok") & ~rows.index.isin(exact.index)]
    if not numerical.empty:
        off = numerical.groupby("way", sort=False).max_ulps.max()
        text += (" Finite differences are off by up to " + ", ".join(f"{fmt_ulps(v)} ulps ({w})"
                                                                      for w, v in off.items())
                 + ": truncation and cancellation (and a step across a ReLU kink, where there is one).")
    return text


def _fastest(speed: pd.DataFrame, example: str) -> str:
    rows = _exact(speed[speed.example == example])
    if rows.empty or "ratio_to_baseline" not in rows or rows.ratio_to_baseline.isna().all():
        return f"Speed: no ratio to {BASELINE_NAME} (PyTorch not installed)."
    best = rows.loc[rows.ratio_to_baseline.idxmin()]

    def ratio(row):
        noisy = f", {NOISY} noisy" if row.noisy else ""
        return f"{row.ratio_to_baseline:.3g}× (round-by-round IQR {row.ratio_p25:.3g}–{row.ratio_p75:.3g}{noisy})"

    engine = rows[rows.way == "engine reverse"]
    text = (f"**Speed** ({TITLES[example].split(',')[0]}): the fastest exact way is {best.way} in "
            f"{best['dtype']}, at {ratio(best)} the time of {BASELINE_NAME}.")
    if not engine.empty:
        text += " The engine's reverse mode: " + "; ".join(f"{ratio(row)} in {row.dtype}"
                                                          for row in engine.itertuples()) + "."
    return text


def _campaign_line(campaign) -> str:
    if isinstance(campaign, str):
        return f"**Random-graph campaign**: {campaign}."
    row = campaign.iloc[0]
    result = "no engine failure" if row.passed else f"{row.failures} failures (see below)"
    return (f"**Random-graph campaign**: {row.graphs} random graphs (seed {row.seed}), {result}; "
            f"{row.ops_covered} of {row.ops_in_table} ops covered, {row.graphs_per_second:.2f} graphs per second "
            "(on this machine's load, below).")


def headline(accuracy, speed, training, campaign, loads) -> Section:
    """The answer first: a verdict per example, the fastest exact way, the campaign, the run's conditions."""
    timings = [frame for frame in (speed, training) if "noisy" in frame]
    noisy = sum(int(frame.noisy.fillna(False).astype(bool).sum()) for frame in timings)
    total = sum(int(frame.noisy.notna().sum()) for frame in timings)
    sampled = pd.concat([loads.load_before, loads.load_after])
    conditions = (f"**Conditions**: 1-minute load average {loads.load_before.iloc[0]:.2f} at the start and "
                  f"{loads.load_after.iloc[-1]:.2f} at the end, between {sampled.min():.2f} and {sampled.max():.2f} "
                  f"around the sections (table at the end); {noisy} of {total} timings stayed noisy ({NOISY}).")
    items = [*(_example_verdict(accuracy, name) for name in dict.fromkeys(accuracy.example)),
             _fastest(speed, "mlp"), _campaign_line(campaign), conditions]
    bullets = "\n".join(f"- {item}" for item in items)
    return Section("The answer", [f"{HEADLINE_START}\n{bullets}\n{HEADLINE_END}"])


def example_one(trace: pd.DataFrame, accuracy: pd.DataFrame) -> Section:
    trace = trace.copy()
    for column in trace.columns[1:]:
        trace[column] = trace[column].map(lambda v: f"{v:g}")
    rows = accuracy[accuracy.example == "square_of_sum"]
    gradients = []
    for way, by_way in rows.groupby("way", sort=False):
        cells = [way]
        for dtype in DTYPES:
            group = by_way[by_way.dtype == dtype]
            if (group.status != "ok").any():
                cells += _status_cells(group.status.iloc[0], 1)
            else:
                cells.append("(" + ", ".join(f"{g:.15g}" for g in group.gradient) + ")")
        gradients.append(cells)
    gradients = pd.DataFrame(gradients, columns=["way", *[f"{dtype} (df/dx, df/dy)" for dtype in DTYPES]])
    return Section(
        "Example 1: f(x, y) = (x + y)² at (2, 3)",
        [
            "The document's worked example, computed by the engine in float64: the forward pass gives the "
            "intermediate u = x + y and f = u²; forward accumulation carries the tangent of x; reverse "
            "accumulation carries the adjoints df/dnode back from f.",
            Table(trace),
            Table(gradients, "The gradient as each way computes it (15 significant digits):"),
            *accuracy_tables(accuracy, "square_of_sum"),
        ],
    )


def example_two(accuracy: pd.DataFrame) -> Section:
    m = MLP_SIZES
    parameters = m["hidden"] * (m["inputs"] + 1) + m["classes"] * (m["hidden"] + 1)
    return Section(
        "Example 2: the two-layer network",
        [
            f"z1 = W1 x + b1, h = sigmoid(z1), z2 = W2 h + b2, y = softmax(z2), mean cross-entropy against class "
            f"targets; W1 {m['hidden']}×{m['inputs']}, W2 {m['classes']}×{m['hidden']}, batch {m['batch']} "
            f"({parameters} parameters), seeded torch-style initialisation.",
            *accuracy_tables(accuracy, "mlp"),
        ],
    )


def example_three(accuracy, losses, summary, loss_plot: str) -> Section:
    s = SIMPLENET_SIZES
    printout = {}
    for dtype in DTYPES:
        picked = losses[(losses.dtype == dtype) & (losses.epoch % TRAINING["log_every"] == 0)]
        for (engine, epoch), loss in picked.set_index(["engine", "epoch"]).loss.items():
            printout.setdefault(epoch, {})[f"{engine} {dtype}"] = f"{loss:.4f}"
    printout = pd.DataFrame([{"epoch": f"{e}/{TRAINING['epochs']}", **v} for e, v in printout.items()])
    rows = []
    for row in summary.itertuples(index=False):
        if row.status != "ok":
            rows.append([row.engine, row.dtype, *[NOT_INSTALLED] * 5])
            continue
        drift = "–" if math.isnan(row.max_drift_vs_pytorch) else fmt_error(row.max_drift_vs_pytorch)
        rows.append([row.engine, row.dtype, *fmt_timing(row), fmt_value(row.first_loss),
                     fmt_value(row.final_loss), drift])
    columns = ["engine", "dtype", "total ms (median)", "IQR ms", "epoch 1 loss", f"epoch {TRAINING['epochs']} loss",
               "max |Δ loss| vs PyTorch"]
    table = pd.DataFrame(rows, columns=columns)
    return Section(
        "Example 3: SimpleNet training",
        [
            f"Linear({s['inputs']},{s['hidden']})-ReLU-Linear({s['hidden']},{s['outputs']}), MSELoss, SGD lr "
            f"{TRAINING['lr']}, {TRAINING['epochs']} epochs on {s['samples']} seeded synthetic samples; every engine "
            f"starts from the same weights. The loss every {TRAINING['log_every']} epochs, as the document prints it:",
            Table(printout),
            Table(table, "Total training time (JAX's includes tracing and compiling its step; engines and dtypes "
                         "interleaved in one session) and how far the loss trajectories drift from PyTorch's:",
                  headline=True),
            NOISY_NOTE,
            Image(loss_plot, "SimpleNet: per-epoch |loss - PyTorch loss| of each engine"),
            *accuracy_tables(accuracy, "simplenet"),
        ],
    )


def speed_section(speed: pd.DataFrame, bars: dict, threads: str, plan) -> Section:
    blocks = [
        "Each way's gradient call is prepared once (tensors built, JIT compiled), then all ways of an example, in "
        "both dtypes, are timed round-robin in one session so that they share the machine's state; a sample "
        f"repeats a fast call until it lasts {MIN_SAMPLE_SECONDS * 1e3:g} ms, with Python's garbage collector "
        "paused inside a sample and run between rounds, as timeit does. Rounds continue (at least "
        f"{plan.speed.min_rounds}) until every way's relative IQR is under {RELATIVE_IQR_LIMIT:.0%} or "
        f"{plan.speed.seconds:g} s have passed. Threads: {threads}. Every ratio, in both dtypes, is to one "
        f"baseline, {BASELINE_NAME} (eager autograd in PyTorch's default dtype, what the document uses), taken "
        "round by round: the median of (sample / the baseline's sample of the same round).",
        NOISY_NOTE,
    ]
    for example in dict.fromkeys(speed.example):
        blocks.append(speed_table(speed, example))
    blocks += [Image(filename, f"speed bars {dtype}") for dtype, filename in bars.items()]
    return Section("Speed", blocks)


def step_section(sweep: pd.DataFrame, plot: str) -> Section:
    best = []
    for (dtype, scheme), group in sweep.groupby(["dtype", "scheme"], sort=False):
        row = group.loc[group.abs_error.idxmin()]
        best.append([scheme, dtype, f"{row.step:.1e}", fmt_error(row.abs_error)])
    table = pd.DataFrame(best, columns=["scheme", "dtype", "best step", "smallest error"])
    return Section(
        "Finite differences against step size",
        [
            "Derivative of the MLP loss along one seeded random unit direction in all its parameters, error "
            "against the mpmath ground truth: truncation error falls with the step, rounding error grows as the "
            "step shrinks (the V); the complex step has no cancellation and stays accurate at any small step.",
            Image(plot, "finite-difference error against step size"),
            Table(table),
        ],
    )


def smallest_flagged(flags: pd.Series):
    """The smallest δ such that every δ' >= δ is flagged (None when even the largest is missed)."""
    smallest = None
    for delta, flagged in flags.sort_index(ascending=False).items():
        if not flagged:
            break
        smallest = delta
    return smallest


def checker_section(sensitivity, cost) -> Section:
    title = "The checker against torch.autograd.gradcheck and jax.test_util.check_grads"
    if isinstance(sensitivity, str):
        return Section(title, [f"{sensitivity}."])
    deltas = sorted(sensitivity.index, reverse=True)
    rows = []
    for column in sensitivity.columns:
        smallest = smallest_flagged(sensitivity[column])
        cells = ["flagged" if sensitivity.loc[d, column] else "missed" for d in deltas]
        rows.append([column, "none" if smallest is None else f"{smallest:.0e}", *cells])
    columns = ["tool (where the error is)", "smallest δ flagged", *[f"δ={d:.0e}" for d in deltas]]
    table = pd.DataFrame(rows, columns=columns)
    cost_rows = [
        [tool, mode, *fmt_timing(row), row.verdict, "–" if math.isnan(row.ratio) else f"{row.ratio:.3g}×"]
        for (tool, mode), row in cost.iterrows()
    ]
    cost_table = pd.DataFrame(cost_rows, columns=["tool", "mode", "median ms", "IQR ms", "verdict",
                                                  "gradverify / torch"])
    return Section(
        title,
        [
            Table(table, "Sensitivity: f(x) = A·tanh(x) with a custom backward multiplied by (1+δ) on every entry "
                         "(spread) or on one entry, float64; which tool flags it? "
                         "(`gradverify.check.benchmarks.sensitivity_table`)", headline=True),
            "Cost: wall time of one check of the document's MLP in float64, tools interleaved until the spreads "
            "are small, as the speed tables (`gradverify.check.benchmarks.cost_table`); `--quick` takes the same "
            "measurement on a smaller budget:",
            Table(cost_table),
        ],
    )


def campaign_section(summary, oracles) -> Section:
    title = "Random-graph campaign"
    if isinstance(summary, str):
        return Section(title, [f"{summary}."])
    row = summary.iloc[0]
    text = (
        f"{row.graphs} random graphs of at most {row.max_nodes} nodes (seed {row.seed}) drawn from the op table, "
        f"each differentiated by the engine and compared with PyTorch, JAX, finite differences, the complex step "
        f"and the mpmath ground truth (`gradverify.fuzz.campaign.run_campaign`): "
        f"{'no failure' if row.passed else f'{row.failures} failures'}, {row.ops_covered} of {row.ops_in_table} "
        f"ops covered, {row.graphs_per_second:.2f} graphs per second."
    )
    table = oracles.rename(columns={"fired": "caught the engine"}).astype(str)
    return Section(title, [text, Table(table, "Which oracle fired:")])


def conditions_section(loads: pd.DataFrame, plan) -> Section:
    table = pd.DataFrame({
        "section": loads.section,
        "load before": loads.load_before.map(lambda v: f"{v:.2f}"),
        "load after": loads.load_after.map(lambda v: f"{v:.2f}"),
        "seconds": loads.seconds.map(lambda v: f"{v:.3g}"),
    })
    return Section(
        "Conditions of the run",
        ["The 1-minute load average (`os.getloadavg`) sampled before and after each section, and each section's "
         "wall time. On a loaded machine timings spread more, and the interleaving keeps ratios fair where "
         f"absolute times are not; timing budgets: {plan.speed.seconds:g} s per example, {plan.training.seconds:g} s "
         f"for training, {plan.checker.seconds:g} s for the checkers.",
         Table(table)],
    )


def method_section() -> Section:
    return Section(
        "How the numbers are made",
        [
            "- Ground truth: the document's hand-derived backpropagation evaluated in mpmath at "
            f"{GROUND_TRUTH_DPS} significant digits, at exactly the (dtype-rounded) inputs each way sees; it is "
            "checked against mpmath's numerical differentiation in `tests/test_examples.py`.\n"
            "- Errors are differences to the ground truth taken in mpmath. *max rel* and *max ulps* skip entries "
            "whose true value is exactly 0 and are large on entries much smaller than the terms summed to get "
            "them (cancellation), which is why a correct float64 gradient can show hundreds of ulps.\n"
            "- Finite differences run in the example's dtype with steps max(|x|, 1)·eps^(1/3) (central) and "
            f"·eps^(1/5) (two-stage Richardson), complex step at h = {COMPLEX_STEP:g}; each step is the one really "
            "taken after rounding. A step that crosses a ReLU kink (SimpleNet) makes any finite difference wrong "
            "there.\n"
            "- Every number is measured when the report runs; `results.json` and the CSV files hold them unrounded."
        ],
    )
