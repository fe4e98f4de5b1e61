"""Progress of the long commands: a rich progress bar on a terminal, plain lines elsewhere (CI logs, pipes).

Without a terminal a bar shows nothing until the end, so there a line is
printed whenever a new stage starts and every ``every`` steps within one.
"""
from __future__ import annotations

import time
from contextlib import contextmanager


@contextmanager
def progress(label: str, total: int, every: int = 10, console=None):
    """Yield ``step(stage, detail="")``, which counts one step of ``total`` done (progress goes to stderr).

    On a terminal the bar shows ``stage: detail``; otherwise a line
    ``label [k/total, s] stage: detail`` is printed when the stage changes and
    every ``every`` steps.
    """
    from rich.console import Console

    console = console or Console(stderr=True)
    if console.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (TextColumn("{task.description:<48}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task(label, total=total)

            def step(stage, detail=""):
                bar.update(task, description=f"{stage}: {detail}" if detail else stage, advance=1)

            yield step
        return
    started = time.perf_counter()
    state = {"done": 0, "stage": None, "printed_at": 0}

    def step(stage, detail=""):
        state["done"] += 1
        if stage != state["stage"] or state["done"] - state["printed_at"] >= every:
            state["stage"], state["printed_at"] = stage, state["done"]
            text = f"{stage}: {detail}" if detail else stage
            console.print(f"{label} [{state['done']}/{total}, {time.perf_counter() - started:.0f} s] {text}",
                          markup=False, highlight=False, soft_wrap=True)

    yield step
