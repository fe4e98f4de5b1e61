"""Work items on Ray with a resumable journal; fuzz campaigns on Ray give the single-machine results."""
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gradverify.distributed import Journal, run_items
from gradverify.fuzz.campaign import Shard, run_campaign

REPO = Path(__file__).resolve().parents[1]
TIMING = ("seconds", "startup_seconds", "graphs_per_second")


def _report(result):
    return {key: value for key, value in result.to_dict().items() if key not in TIMING}


def _square(x):
    return {"square": x * x}


def test_a_journal_keeps_results_and_ignores_a_torn_last_line(tmp_path):
    path = tmp_path / "run.jsonl"
    journal = Journal(path, {"run": 1})
    journal.record(0, {"a": 1})
    journal.record("b", [2])
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"key": 5, "resu')  # killed while writing
    reopened = Journal(path, {"run": 1})
    assert reopened.results == {0: {"a": 1}, "b": [2]}
    reopened.record(5, {"c": 3})
    assert Journal(path, {"run": 1}).results == {0: {"a": 1}, "b": [2], 5: {"c": 3}}
    with pytest.raises(ValueError, match="records another run"):
        Journal(path, {"run": 2})


def test_run_items_skips_what_the_journal_holds(tmp_path):
    journal = Journal(tmp_path / "run.jsonl", {"squares": 4})
    journal.record(1, {"square": -1})  # a finished item is not run again, whatever it holds
    arrived = []
    results = run_items(_square, {k: k for k in range(4)}, journal=journal,
                        on_result=lambda key, result: arrived.append(key))
    assert arrived == [0, 2, 3]
    assert results == {0: {"square": 0}, 1: {"square": -1}, 2: {"square": 4}, 3: {"square": 9}}
    assert Journal(tmp_path / "run.jsonl", {"squares": 4}).results == results


def _journal_lines(path):
    return path.read_text().count("\n") if path.exists() else 0


def test_a_killed_campaign_resumes_from_its_journal_without_losing_finished_graphs(tmp_path):
    path = tmp_path / "fuzz.jsonl"
    argv = [sys.executable, "-m", "gradverify", "fuzz", "--graphs", "10", "--seed", "3", "--max-nodes", "4",
            "--workers", "1", "--jax-every", "1", "--no-shrink", "--journal", str(path)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while _journal_lines(path) < 4 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    finished = _journal_lines(path) - 1  # the header line
    assert 3 <= finished < 10, "the campaign was not killed half-way"
    resumed = run_campaign(10, 3, max_nodes=4, shrink=False, journal=path)
    assert _journal_lines(path) - 1 == 10  # only the graphs left were checked and recorded
    assert _report(resumed) == _report(run_campaign(10, 3, max_nodes=4, shrink=False))


@pytest.fixture
def ray():
    return pytest.importorskip("ray", reason="Ray is not installed (pip install 'gradverify[ray]')")


class _Stop(Exception):
    pass


def _stop_after(count):
    seen = []

    def on_graph(index, outcome):
        seen.append(index)
        if len(seen) == count:
            raise _Stop

    return on_graph


def test_a_campaign_on_ray_gives_the_single_machine_results_and_resumes(ray, tmp_path):
    shard = Shard.parse("2/3")
    alone = run_campaign(24, 4, max_nodes=5, shard=shard, shrink=False)
    # A journal left by a killed run: three graphs done, the last line torn.
    partial = tmp_path / "fuzz.jsonl"
    with pytest.raises(_Stop):
        run_campaign(24, 4, max_nodes=5, shard=shard, shrink=False, journal=partial, on_graph=_stop_after(3))
    with open(partial, "a", encoding="utf-8") as handle:
        handle.write('{"key": 7, "res')
    on_ray = run_campaign(24, 4, max_nodes=5, shard=shard, shrink=False, workers=2, ray="local", journal=partial)
    assert _report(on_ray) == _report(alone)
    entries = [line for line in partial.read_text().split("\n")[1:] if line.startswith('{"key": ') and
               line.endswith("}")]
    assert len(entries) == alone.graphs  # the three journalled graphs were merged, not checked again


def test_run_items_on_ray_merges_results_as_they_arrive(ray, tmp_path):
    journal = Journal(tmp_path / "run.jsonl", {"factorials": 6})
    journal.record(0, 1)
    arrived = []
    # Ray workers import the function by name: a library function, not one of this test module.
    results = run_items(math.factorial, {k: k for k in range(6)}, address="local", journal=journal, workers=2,
                        on_result=lambda key, result: arrived.append(key))
    assert sorted(arrived) == [1, 2, 3, 4, 5]
    assert results == {k: math.factorial(k) for k in range(6)}
    assert Journal(tmp_path / "run.jsonl", {"factorials": 6}).results == results
