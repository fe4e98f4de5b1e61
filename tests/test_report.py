"""``python -m gradverify report``: one quick run shared by the tests, checked for real, consistent numbers."""
import argparse
import fcntl
import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from gradverify.cli import UsageError
from gradverify.examples import examples
from gradverify.report import cli, measure, numerical, sections, timing
from gradverify.report.document import HEADLINE_START
from gradverify.report.environment import NOT_INSTALLED, describe
from gradverify.report.readme import headline_tables, update_readme
from gradverify.report.ways import WAYS

OUTPUTS = ["report.md", "report.html", "results.json", "accuracy.csv", "speed.csv", "training.csv",
           "training_losses.csv", "step_sweep.csv", "example1_trace.csv", "fd_step_sweep.png", "simplenet_loss.png",
           "speed_float32.png", "speed_float64.png", "checker_sensitivity.csv", "checker_cost.csv", "load.csv"]
EXACT_WAYS = [w.name for w in WAYS if w.kind == "AD"] + ["complex step"]


def run_cli(argv):
    parser = argparse.ArgumentParser()
    cli.configure(parser)
    return cli.run(parser.parse_args(argv))


@pytest.fixture(scope="session")
def report(tmp_path_factory):
    """One quick report per test run, shared by the xdist workers through a lock in their common temp folder."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    out = shared / "quick_report"
    with open(shared / "quick_report.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (out / "exit_code").exists():
                code = run_cli(["--quick", "--out", str(out)])
                (out / "exit_code").write_text(str(code))
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    assert (out / "exit_code").read_text() == "0"
    return out


@pytest.fixture(scope="session")
def accuracy(report):
    return pd.read_csv(report / "accuracy.csv")


def test_quick_report_writes_every_output(report):
    for name in OUTPUTS:
        assert (report / name).stat().st_size > 0, name
    for png in report.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((report / "results.json").read_text())
    assert {"command", "date", "CPU", "versions", "threads"} <= set(results["header"])
    assert "torch intra-op threads 1" in results["header"]["threads"]
    assert len(results["results"]["accuracy"]) == len(pd.read_csv(report / "accuracy.csv"))


def test_html_is_self_contained(report):
    html = (report / "report.html").read_text()
    sources = re.findall(r'<img src="([^"]*)"', html)
    assert len(sources) == 4
    assert all(src.startswith("data:image/png;base64,") for src in sources)
    assert "http://" not in html and "https://" not in html


def test_example_one_gradient_is_exactly_ten_ten_in_every_exact_engine(report, accuracy):
    rows = accuracy[(accuracy.example == "square_of_sum") & accuracy.way.isin(EXACT_WAYS)]
    assert set(rows.way) == set(EXACT_WAYS)
    assert (rows.status == "ok").all()
    assert (rows.max_abs_error == 0).all()
    assert (rows.gradient == 10.0).all() and len(rows) == 2 * 2 * len(EXACT_WAYS)
    markdown = (report / "report.md").read_text()
    for way in EXACT_WAYS:
        assert f"| {way} | (10, 10) | (10, 10) |" in markdown
    trace = pd.read_csv(report / "example1_trace.csv").set_index("node")
    assert trace.loc["f = u^2", "value"] == 25
    assert trace.loc["u = x + y", "value"] == 5
    assert trace["adjoint (reverse, df/dnode)"].tolist() == [10, 10, 10, 1]


def test_engine_and_pytorch_agree_to_1e_12_in_float64(accuracy):
    rows = accuracy[(accuracy.dtype == "float64")]
    for example in ("square_of_sum", "mlp", "simplenet"):
        worst = rows[rows.example == example].groupby("way").max_abs_error.max()
        for engine in ("engine reverse", "engine forward"):
            for torch_way in ("PyTorch reverse", "PyTorch forward (torch.func)"):
                # |engine - torch| <= |engine - truth| + |torch - truth|
                assert worst[engine] + worst[torch_way] <= 1e-12, (example, engine, torch_way)


def _slope(frame, low, high):
    picked = frame[(frame.step >= low) & (frame.step <= high)]
    return np.polyfit(np.log10(picked.step), np.log10(picked.abs_error), 1)[0]


def test_finite_difference_rows_show_their_error_orders(report, accuracy):
    sweep = pd.read_csv(report / "step_sweep.csv")
    f64 = {scheme: group for scheme, group in sweep[sweep.dtype == "float64"].groupby("scheme")}
    assert _slope(f64["central"], 1e-3, 1.0) == pytest.approx(2.0, abs=0.3)
    assert _slope(f64["richardson"], 0.05, 1.0) == pytest.approx(4.0, abs=0.5)
    assert _slope(f64["complex_step"], 1e-3, 1.0) == pytest.approx(2.0, abs=0.3)
    # Rounding: the central difference's error grows again below its best step; the complex step's does not.
    central = f64["central"].set_index("step").abs_error
    assert central.loc[central.index < 1e-10].min() > 1e3 * central.min()
    assert f64["complex_step"][f64["complex_step"].step <= 1e-8].abs_error.max() < 1e-15
    mlp64 = accuracy[(accuracy.example == "mlp") & (accuracy.dtype == "float64")].groupby("way").max_abs_error.max()
    assert mlp64["complex step"] < 1e-15 < mlp64["Richardson extrapolation"] < mlp64["central difference"] < 1e-8
    mlp32 = accuracy[(accuracy.example == "mlp") & (accuracy.dtype == "float32")].groupby("way").max_abs_error.max()
    assert mlp32["central difference"] > 1e3 * mlp64["central difference"]


def _cells_markdown(markdown):
    rows = [line for line in markdown.splitlines() if line.startswith("|") and not re.match(r"\|[-:|]+\|$", line)]
    return [cell.strip().replace("\\|", "|") for row in rows for cell in row.strip("|").split(" | ")]


def _cells_html(html):
    import html as html_lib

    return [html_lib.unescape(c).strip() for c in re.findall(r"<t[hd](?: [^>]*)?>(.*?)</t[hd]>", html, flags=re.S)]


def test_html_and_markdown_hold_the_same_numbers(report):
    markdown_cells = _cells_markdown((report / "report.md").read_text())
    html_cells = _cells_html((report / "report.html").read_text())
    assert markdown_cells == html_cells
    numbers = [c for c in markdown_cells if re.fullmatch(r"-?[0-9.]+(e[-+][0-9]+)?", c)]
    assert len(numbers) > 500


def test_report_numbers_are_the_measured_ones(report, accuracy):
    markdown = (report / "report.md").read_text()
    engine_mlp = accuracy[(accuracy.example == "mlp") & (accuracy.way == "engine reverse")]
    worst64 = engine_mlp[engine_mlp.dtype == "float64"].max_abs_error.max()
    assert f"| engine reverse | AD | " in markdown
    assert sections.fmt_error(worst64) in markdown
    losses = pd.read_csv(report / "training_losses.csv")
    final = losses[(losses.engine == "gradverify engine") & (losses.dtype == "float32") & (losses.epoch == 100)]
    assert f"{final.loss.iloc[0]:.4f}" in markdown


def test_readme_section_copies_the_headline_tables(report, tmp_path):
    markdown = (report / "report.md").read_text()
    tables = headline_tables(markdown)
    assert len(tables) == markdown.count(HEADLINE_START) >= 3
    readme = tmp_path / "README.md"
    readme.write_text("# project\n\n## Report\n\nold text\n\n## Next\n\nkept\n")
    update_readme(report / "report.md", readme)
    once = readme.read_text()
    update_readme(report / "report.md", readme)
    assert readme.read_text() == once
    assert "old text" not in once and "## Next\n\nkept" in once
    assert all(table in once for table in tables)


def test_missing_torch_and_jax_are_reported_as_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setitem(sys.modules, "jax", None)
    square = examples()["square_of_sum"]
    accuracy, speed = measure.differentiate_all([square], ["float32", "float64"], WAYS,
                                                measure.Plan.make(quick=True), lambda *text: None)
    by_way = accuracy.groupby("way").status.first()
    for way in WAYS:
        expected = NOT_INSTALLED if way.backend in ("torch", "jax") else "ok"
        assert by_way[way.name] == expected, way.name
    assert (speed[speed.way.str.startswith(("PyTorch", "JAX"))].status == NOT_INSTALLED).all()
    assert (accuracy[accuracy.way == "engine reverse"].max_abs_error == 0).all()
    table = sections.accuracy_tables(accuracy, "square_of_sum")[0].frame.set_index("way")
    assert table.loc["PyTorch reverse", "float64 max abs"] == NOT_INSTALLED
    assert table.loc["engine reverse", "float64 max abs"] == "0"
    header = describe("test")
    assert f"torch {NOT_INSTALLED}" in header["versions"] and f"jax {NOT_INSTALLED}" in header["versions"]
    _, training = measure.training(["float64"], measure.Plan.make(quick=True), lambda *text: None)
    status = training.set_index("engine").status
    assert status["gradverify engine"] == "ok" and status["PyTorch"] == status["JAX (jit)"] == NOT_INSTALLED
    sensitivity, cost = measure.checker_comparison(True, measure.Plan.make(quick=True), lambda *text: None)
    assert sensitivity == cost == NOT_INSTALLED
    assert sections.checker_section(sensitivity, cost).blocks == [f"{NOT_INSTALLED}."]
    full = measure.Plan.make(quick=False)
    summary, _ = measure.campaign_summary(full, lambda *text: None)
    assert summary == f"needs PyTorch and JAX, {NOT_INSTALLED}"


def test_quick_report_skips_the_campaign_and_says_so(report):
    assert measure.Plan.make(quick=True).campaign_graphs == 0
    markdown = (report / "report.md").read_text()
    assert "## Random-graph campaign\n\nskipped with --quick" in markdown


def test_checker_section_states_the_smallest_flagged_error(report):
    assert sections.smallest_flagged(pd.Series({1e-2: True, 1e-4: False, 1e-6: True})) == 1e-2
    assert sections.smallest_flagged(pd.Series({1e-2: False, 1e-4: True})) is None
    sensitivity = pd.read_csv(report / "checker_sensitivity.csv").set_index("delta")
    markdown = (report / "report.md").read_text()
    for tool in sensitivity.columns:
        smallest = sections.smallest_flagged(sensitivity[tool])
        assert f"| {tool} | {'none' if smallest is None else f'{smallest:.0e}'} | " in markdown


BLOCK_TORCH_AND_JAX = """
import sys
sys.modules["torch"] = None  # makes `import torch` raise ImportError, as when it is not installed
sys.modules["jax"] = None
from gradverify.cli import main
sys.exit(main(["report", "--quick", "--out", sys.argv[1]]))
"""


def test_whole_report_runs_without_torch_and_jax(tmp_path):
    root = pathlib.Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", BLOCK_TORCH_AND_JAX, str(tmp_path)], cwd=root,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    markdown = (tmp_path / "report.md").read_text()
    assert f"torch {NOT_INSTALLED}, jax {NOT_INSTALLED}" in markdown
    assert f"| PyTorch reverse | {NOT_INSTALLED} | {NOT_INSTALLED} |" in markdown
    assert "| engine reverse | (10, 10) | (10, 10) |" in markdown
    accuracy = pd.read_csv(tmp_path / "accuracy.csv")
    assert set(accuracy[accuracy.way.str.startswith(("PyTorch", "JAX"))].status) == {NOT_INSTALLED}
    assert set(accuracy[~accuracy.way.str.startswith(("PyTorch", "JAX"))].status) == {"ok"}


@pytest.mark.parametrize("argv, message", [(["--threads", "0"], "--threads"),
                                           (["--readme", "no/such/README.md"], "--readme")])
def test_bad_arguments_are_usage_errors(argv, message):
    with pytest.raises(UsageError, match=message):
        run_cli(argv)


def cubic(x, y):
    return np.sum(x**3) + np.sum(x * y)


@pytest.mark.parametrize("scheme, dtype, rtol", [("central", np.float64, 1e-9), ("richardson", np.float64, 1e-11),
                                                  ("complex_step", np.float64, 1e-15), ("central", np.float32, 1e-2),
                                                  ("complex_step", np.float32, 1e-6)])
def test_numerical_gradient_reaches_its_scheme_accuracy(scheme, dtype, rtol):
    x = np.array([1.1, -0.3, 2.5], dtype=dtype)
    y = np.array([0.7, 0.2, -1.9], dtype=dtype)
    gx, gy = numerical.gradient(cubic, (x, y), scheme)
    exact_x = 3 * x.astype(np.float64) ** 2 + y
    np.testing.assert_allclose(gx, exact_x, rtol=rtol)
    np.testing.assert_allclose(gy, x.astype(np.float64), rtol=rtol)
    assert gx.dtype == dtype


def test_rounded_line_reports_the_float32_step_really_taken():
    point, direction = [np.array([1.1], dtype=np.float32)], [np.array([1.0])]
    line = numerical.RoundedLine(lambda points: [[p[0]] for p in points], point, direction, np.float32)
    h = 1e-3
    taken = float(np.float32(np.float32(1.1) + h)) - float(np.float32(1.1))
    assert line.displacement(h)[0][0] == taken != h
    assert line.at(h)[0].dtype == np.float32 and line.at(1j * h)[0].dtype == np.complex64


def test_the_answer_comes_first_with_a_verdict_per_example(report, accuracy):
    markdown = (report / "report.md").read_text()
    assert markdown.index("## The answer") < markdown.index("## Example 1")
    answer = markdown[markdown.index("## The answer"):markdown.index("## Example 1")]
    for example in examples().values():
        assert f"**{example.title}: right.**" in answer
    assert "agree with the 40-digit ground truth" in answer and "of the gradient's largest entry" in answer
    # The reason a correct gradient shows hundreds of ulps is given where the number is.
    mlp = next(line for line in answer.splitlines() if "two-layer MLP" in line)
    worst = accuracy[(accuracy.example == "mlp") & accuracy.way.isin(EXACT_WAYS)].max_ulps.max()
    assert f"the worst is {sections.fmt_ulps(worst)} ulps" in mlp and "cancel" in mlp
    assert "the fastest exact way is" in answer and "the time of PyTorch reverse float32" in answer
    assert "**Random-graph campaign**: skipped with --quick" in answer
    assert "1-minute load average" in answer and "timings stayed noisy" in answer


def test_every_ratio_is_to_one_baseline_measured_in_the_same_session(report):
    speed = pd.read_csv(report / "speed.csv")
    mlp = speed[(speed.example == "mlp") & (speed.status == "ok")]
    assert mlp.groupby("dtype").samples.nunique().eq(1).all() and mlp.samples.nunique() == 1
    baseline = mlp[(mlp.way == "PyTorch reverse") & (mlp.dtype == "float32")].iloc[0]
    assert baseline.ratio_to_baseline == 1.0
    assert (mlp.relative_iqr >= 0).all() and set(mlp.noisy) <= {True, False}
    markdown = (report / "report.md").read_text()
    assert "| PyTorch reverse | " in markdown and "float64 vs PyTorch reverse float32" in markdown
    assert f"stayed above {timing.RELATIVE_IQR_LIMIT:.0%}" in markdown


def test_load_is_sampled_around_every_section(report):
    load = pd.read_csv(report / "load.csv")
    assert list(load.section) == ["accuracy and speed", "SimpleNet training", "finite-difference steps", "checkers",
                                  "random-graph campaign"]
    assert (load.load_before >= 0).all() and (load.load_after >= 0).all() and (load.seconds >= 0).all()
    assert "## Conditions of the run" in (report / "report.md").read_text()


def test_simplenet_plot_data_is_the_drift_from_pytorch(report):
    losses = pd.read_csv(report / "training_losses.csv")
    for dtype, group in losses.groupby("dtype"):
        torch_losses = group[group.engine == "PyTorch"].set_index("epoch").loss
        engine = group[group.engine == "gradverify engine"].set_index("epoch")
        np.testing.assert_array_equal(engine.drift_vs_pytorch, (engine.loss - torch_losses).abs())


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.mark.parametrize("noisy_run", [False, True])
def test_timings_repeat_until_stable_or_the_budget_runs_out(monkeypatch, noisy_run):
    clock = FakeClock()
    monkeypatch.setattr(timing.time, "perf_counter", clock)
    durations = iter([1.0, 3.0] * 1000)

    def steady():
        clock.now += 1.0

    def jumpy():
        clock.now += next(durations)

    runs = {"steady": steady, **({"jumpy": jumpy} if noisy_run else {})}
    samples = timing.time_until_stable(runs, timing.Budget(seconds=50.0, min_rounds=4), {name: 1.0 for name in runs})
    rounds = len(samples["steady"])
    if noisy_run:
        assert rounds > 4 and sum(map(sum, samples.values())) >= 50.0  # stopped by the budget
        summary = timing.summarize(samples["jumpy"], samples["steady"])
        assert summary["noisy"] and summary["relative_iqr"] > timing.RELATIVE_IQR_LIMIT
        assert summary["ratio_to_baseline"] == 2.0
    else:
        assert rounds == 4  # stable at once: the minimum
        assert not timing.summarize(samples["steady"])["noisy"]


def test_a_fast_call_is_repeated_until_a_sample_lasts_long_enough(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(timing.time, "perf_counter", clock)

    def fast():
        clock.now += timing.MIN_SAMPLE_SECONDS / 100

    assert timing.calls_per_sample(fast) == 100
    assert timing.calls_per_sample(fast, call_seconds=timing.MIN_SAMPLE_SECONDS) == 1
    samples = timing.time_until_stable({"fast": fast}, timing.Budget(seconds=1.0, min_rounds=3))
    np.testing.assert_allclose(samples["fast"], timing.MIN_SAMPLE_SECONDS / 100)


def test_progress_without_a_terminal_prints_a_line_per_stage_and_every_n_steps():
    import io

    from rich.console import Console

    from gradverify.progress import progress

    stream = io.StringIO()
    with progress("report", 30, every=10, console=Console(file=stream, width=200)) as step:
        for k in range(25):
            step("graphs" if k >= 3 else "ground truth", f"{k}")
    lines = stream.getvalue().splitlines()
    assert [line.split("] ")[1] for line in lines] == ["ground truth: 0", "graphs: 3", "graphs: 13", "graphs: 23"]
    assert lines[1].startswith("report [4/30, ")
