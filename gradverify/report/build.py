"""Measure everything, draw the figures, and write report.md, report.html, results.json and the CSVs."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from gradverify.examples import examples

from . import measure, plots, sections
from .document import to_html, to_markdown, write_data
from .environment import describe
from .timing import LoadLog
from .ways import WAYS

TITLE = "gradverify report: the document's examples, differentiated every way"
DTYPES = sections.DTYPES


def step_count(plan: measure.Plan) -> int:
    """How many progress ticks :func:`build_report` makes (for the progress bar's total)."""
    per_example = len(DTYPES) * (1 + len(WAYS)) + 1
    trainings = len(measure.TRAINERS) * len(DTYPES) + 1
    sweeps, trace, checker, figures, writing = len(DTYPES), 1, 2, 1, 1
    return 3 * per_example + trainings + sweeps + trace + checker + plan.campaign_graphs + figures + writing


def build_report(out: Path, quick: bool, command: str, tick=lambda stage, detail="": None) -> list:
    """Run every measurement into ``out`` and return the paths written.  ``tick(stage, detail)`` reports progress."""
    out.mkdir(parents=True, exist_ok=True)
    plan = measure.Plan.make(quick)
    header = describe(command)
    cases = examples()
    load = LoadLog()
    with load.section("accuracy and speed"):
        accuracy, speed = measure.differentiate_all(list(cases.values()), DTYPES, WAYS, plan, tick)
    with load.section("SimpleNet training"):
        losses, training = measure.training(DTYPES, plan, tick)
    with load.section("finite-difference steps"):
        sweep = measure.step_sweep(cases["mlp"], DTYPES, plan, tick)
        tick("example 1 trace")
        trace = measure.square_of_sum_trace()
    with load.section("checkers"):
        sensitivity, cost = measure.checker_comparison(quick, plan, tick)
    with load.section("random-graph campaign"):
        campaign, campaign_oracles = measure.campaign_summary(plan, tick)
    loads = load.frame()

    tick("figures")
    figures = {
        "steps": plots.step_sweep(sweep, out / "fd_step_sweep.png",
                                  "MLP loss: error of the derivative along a random direction"),
        "losses": plots.loss_drift(losses, out / "simplenet_loss.png"),
        **{f"speed_{d}": plots.speed_bars(speed, out / f"speed_{d}.png", d) for d in DTYPES},
    }
    report_sections = [
        sections.headline(accuracy, speed, training, campaign, loads),
        sections.example_one(trace, accuracy),
        sections.example_two(accuracy),
        sections.example_three(accuracy, losses, training, figures["losses"].name),
        sections.speed_section(speed, {d: figures[f"speed_{d}"].name for d in DTYPES}, header["threads"], plan),
        sections.step_section(sweep, figures["steps"].name),
        sections.checker_section(sensitivity, cost),
        sections.campaign_section(campaign, campaign_oracles),
        sections.conditions_section(loads, plan),
        sections.method_section(),
    ]
    tick("writing")
    markdown = to_markdown(TITLE, header, report_sections)
    (out / "report.md").write_text(markdown)
    (out / "report.html").write_text(to_html(markdown, TITLE, out))
    results = {"accuracy": accuracy, "speed": speed, "training_losses": losses, "training": training,
               "step_sweep": sweep, "example1_trace": trace, "load": loads}
    optional = {"checker_sensitivity": sensitivity, "checker_cost": cost, "campaign": campaign,
                "campaign_oracles": campaign_oracles}
    results.update({name: table.reset_index() for name, table in optional.items() if isinstance(table, pd.DataFrame)})
    written = write_data(out, header, results)
    return [out / "report.md", out / "report.html", *written, *figures.values()]
