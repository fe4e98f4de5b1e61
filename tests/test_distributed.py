"""Work items on Ray with a resumable journal; fuzz campaigns and audits on Ray give the single-machine results."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gradverify.cli import main
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


def test_journals_without_a_header_concatenate(tmp_path):
    for shard, keys in (("a", ["x", "y"]), ("b", ["z"])):
        journal = Journal(tmp_path / f"{shard}.jsonl", None)
        for key in keys:
            journal.record(key, key.upper())
    (tmp_path / "all.jsonl").write_text((tmp_path / "a.jsonl").read_text() + (tmp_path / "b.jsonl").read_text())
    assert Journal(tmp_path / "all.jsonl", None).results == {"x": "X", "y": "Y", "z": "Z"}


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


def _kill_when(argv, cwd, ready):
    """Run ``argv`` with this worktree's gradverify and kill it with SIGKILL once ``ready()`` holds."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while not ready() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()


def test_a_killed_campaign_resumes_from_its_journal_without_losing_finished_graphs(tmp_path):
    path = tmp_path / "fuzz.jsonl"
    argv = [sys.executable, "-m", "gradverify", "fuzz", "--graphs", "10", "--seed", "3", "--max-nodes", "4",
            "--workers", "1", "--jax-every", "1", "--no-shrink", "--journal", str(path)]
    _kill_when(argv, tmp_path, lambda: _journal_lines(path) >= 4)
    finished = _journal_lines(path) - 1  # the header line
    assert 3 <= finished < 10, "the campaign was not killed half-way"
    resumed = run_campaign(10, 3, max_nodes=4, shrink=False, journal=path)
    assert _journal_lines(path) - 1 == 10  # only the graphs left were checked and recorded
    assert _report(resumed) == _report(run_campaign(10, 3, max_nodes=4, shrink=False))


def test_worker_processes_exit_when_their_parent_is_killed(tmp_path):
    # A SIGKILLed campaign left its two spawned workers waiting on their queues for good, ~800 MB each.
    driver = ("import os, time\n"
              "from gradverify.distributed import ProcessPool, _worker_pid\n"
              "if __name__ == '__main__':\n"
              "    with ProcessPool(2) as pool:\n"
              "        print(*{pid for _, pid in pool.map(_worker_pid, [(k, k) for k in range(8)])}, flush=True)\n"
              "        time.sleep(600)\n")
    (tmp_path / "driver.py").write_text(driver)
    process = subprocess.Popen([sys.executable, "driver.py"], cwd=tmp_path, stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    workers = [int(pid) for pid in process.stdout.readline().split()]
    assert len(workers) == 2
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)


def _alive(pid) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


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


AUDIT = ["audit", "torch", "--ops", "sin,cos,tanh,nn.functional.hardsigmoid", "--dtypes", "float64", "--orders", "1,2"]
RUN_SPECIFIC = ("seconds", "unit_seconds", "units_audited", "startup_seconds", "units_per_second")


def _audit(out, *flags):
    """The audit's exit code, its JSON report without timings or output folder, and its units audited."""
    code = main([*AUDIT, "--out", str(out), "--json", str(out / "report.json"), *flags])
    report = json.loads((out / "report.json").read_text())
    audited = report["summary"]["units_audited"]
    for key in RUN_SPECIFIC:
        del report["summary"][key]
    for finding in report["findings"]:
        finding["reproducer"] = Path(finding["reproducer"]).name
    return code, report, audited


@pytest.fixture(scope="module")
def audited_alone(tmp_path_factory):
    out = tmp_path_factory.mktemp("alone")
    code, report, _ = _audit(out)
    return code, report, (out / "results.jsonl").read_text().splitlines()


def test_a_killed_audit_resumes_without_auditing_its_finished_units_again(audited_alone, tmp_path):
    # Killed in this process, not on Ray: a driver killed with SIGKILL leaves Ray's agent processes behind.
    out = tmp_path / "audit"
    argv = [sys.executable, "-m", "gradverify", *AUDIT, "--out", str(out)]
    _kill_when(argv, tmp_path, lambda: _journal_lines(out / "results.jsonl") >= 4)
    finished = Journal(out / "results.jsonl", None).results
    total = len(audited_alone[2])
    assert 4 <= len(finished) < total, "the audit was not killed half-way"
    code, report, audited = _audit(out, "--resume", "--workers", "2")  # on two processes
    assert audited == total - len(finished)
    resumed = Journal(out / "results.jsonl", None).results
    assert len(resumed) == total and all(resumed[key] == result for key, result in finished.items())
    assert (code, report) == audited_alone[:2]


def test_an_audit_on_ray_gives_the_single_process_report_and_resumes(ray, audited_alone, tmp_path):
    code, report, lines = audited_alone
    assert any(f["op"] == "nn.functional.hardsigmoid" for f in report["findings"])  # a report with findings
    # Results left by a killed run: three units done, the last line torn.
    out = tmp_path / "audit"
    out.mkdir()
    (out / "results.jsonl").write_text("\n".join(lines[:3]) + '\n{"key": "torch:sin#0:flo')
    on_ray = _audit(out, "--ray", "local", "--workers", "2", "--resume")
    assert on_ray == (code, report, len(lines) - 3)
    merged = (out / "results.jsonl").read_text().splitlines()
    assert merged[:3] == lines[:3]  # kept, not audited again
    assert {json.loads(line)["key"] for line in merged if line.endswith("}")} == {json.loads(line)["key"]
                                                                                  for line in lines}
