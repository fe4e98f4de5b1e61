"""Fault injection: concurrency, kill -9, malformed baselines, I/O failures and crafted files (issue 19).

Every scenario asserts three things: no traceback (in-process runs would raise), the right verdict (exit 0/1/2
as the CLI documents; never a pass for a broken baseline), and no data lost (the previous baseline or file stays
whole).  The default run uses small counts; the ``nightly`` tests run the full ones (50 concurrent pairs, 20
kill -9 loops, hundreds of one-field edits).
"""
import copy
import errno
import io
import json
import multiprocessing
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gradverify.engine as ge
from gradverify import _files
from gradverify.cli import main
from gradverify.plugin.pytest_plugin import GradRegression
from gradverify.regress import baseline as baseline_format

FORK = multiprocessing.get_context("fork")
ROOT = pathlib.Path(__file__).resolve().parents[1]
NIGHTLY = settings.get_current_profile_name() == "nightly"

CASES_SOURCE = """
import gradverify.engine as ge

SCALE = {scale!r}
SIZE = {size!r}
CASES = {{
    "small": (lambda x: (x.exp() * SCALE).sum(), (ge.tensor([0.5, 1.0, 2.0], dtype=ge.float64),)),
    "wide": (lambda x, w: (x * w).tanh() * SCALE,
             (ge.arange(SIZE, dtype=ge.float64) / SIZE, ge.arange(SIZE, dtype=ge.float64) + 1.0)),
}}
"""


def write_cases(path, scale=1.0, size=8):
    path.write_text(CASES_SOURCE.format(scale=scale, size=size))
    return str(path)


def run(capsys, *argv):
    """``gradverify ARGV`` in this process: (exit code, stdout, stderr); an escaping exception fails the test."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str, *names) -> str:
    """The single stderr line of a usage error, after checking it names each of ``names``."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gradverify ") and ": error: " in lines[0], err
    assert "Traceback" not in err
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    return lines[0]


@pytest.fixture
def recorded(tmp_path, capsys):
    """Cases (two engine functions, the wide one sketched) and the baseline recorded from them."""
    cases = write_cases(tmp_path / "cases.py")
    baseline = tmp_path / "base" / "b.json"
    code, _, err = run(capsys, "regress", "record", "--cases", cases, "--out", str(baseline), "--repeats", "1",
                       "--full-limit", "4")
    assert code == 0, err
    return cases, baseline


def compare(capsys, cases, baseline, *extra):
    return run(capsys, "regress", "compare", "--cases", cases, "--baseline", str(baseline), "--repeats", "1", *extra)


def snapshot(folder: pathlib.Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith(".")}


# --- concurrency ----------------------------------------------------------------------------------------------


def _quiet_main(argv):
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    sys.exit(main(argv))


def _writer(cases, baseline, *extra):
    argv = ["regress", "record", "--cases", cases, "--out", str(baseline), "--update", "--repeats", "1", *extra]
    return FORK.Process(target=_quiet_main, args=(argv,))


def run_together(*processes) -> list:
    """Start ``processes`` at once, wait for all; their exit codes."""
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    return [process.exitcode for process in processes]


def _which_cases_hold(capsys, baseline, candidates) -> list:
    """The candidate cases files the baseline holds for (compare exits 0); any exit 2 fails the test."""
    holding = []
    for cases in candidates:
        code, _, err = compare(capsys, cases, baseline)
        assert code in (0, 1), err
        if code == 0:
            holding.append(cases)
    return holding


def concurrent_pairs(tmp_path, capsys, pairs):
    first, second = write_cases(tmp_path / "one.py", 1.0), write_cases(tmp_path / "two.py", 2.0)
    baseline = tmp_path / "shared" / "b.json"
    for _ in range(pairs):
        assert run_together(_writer(first, baseline), _writer(second, baseline)) == [0, 0]
        assert len(_which_cases_hold(capsys, baseline, (first, second))) == 1  # one writer's whole baseline
        assert len(list(baseline.parent.glob("b.*.npz"))) == 1
    return pairs


def test_concurrent_record_pairs_leave_one_whole_baseline(tmp_path, capsys):
    concurrent_pairs(tmp_path, capsys, pairs=4)


@pytest.mark.nightly
def test_fifty_concurrent_record_pairs_leave_one_whole_baseline(tmp_path, capsys):
    concurrent_pairs(tmp_path, capsys, pairs=50)


def test_plugin_force_regen_and_record_writers_at_once_leave_one_whole_baseline(tmp_path, capsys):
    cases = write_cases(tmp_path / "one.py", 1.0)
    baseline = tmp_path / "b.json"
    regen = GradRegression(tmp_path, "b", {}, force_regen=True)

    def plugin_writer():
        x = ge.tensor([0.5, 1.0, 2.0], dtype=ge.float64)
        try:
            regen.check(lambda x: (x.exp() * 3.0).sum(), x, basename="b")
        except pytest.fail.Exception:
            pass

    for _ in range(3):
        assert run_together(_writer(cases, baseline), FORK.Process(target=plugin_writer)) == [0, 0]
        assert baseline_format.read(baseline).cases  # whole: it validates and its arrays are there
        assert len(list(tmp_path.glob("b.*.npz"))) == 1


def kill_loops(tmp_path, capsys, loops):
    """Start a record, kill -9 it at a random moment, check the baseline; returns the leftovers found."""
    old = write_cases(tmp_path / "old.py", 1.0, size=300_000)
    new = write_cases(tmp_path / "new.py", 2.0, size=300_000)
    baseline = tmp_path / "k" / "b.json"
    argv = ("--full-limit", "1000000")
    assert run(capsys, "regress", "record", "--cases", old, "--out", str(baseline), "--repeats", "1", *argv)[0] == 0
    rng = random.Random(0)
    left_over = 0
    for loop in range(loops):
        writer = _writer(new if loop % 2 else old, baseline, *argv)
        writer.start()
        time.sleep(rng.uniform(0.0, 0.6))
        os.kill(writer.pid, signal.SIGKILL)
        writer.join()
        assert len(_which_cases_hold(capsys, baseline, (old, new))) == 1
        left_over += len(list(baseline.parent.glob(".b.*.tmp")))
    time.sleep(0.01)  # the next writer starts after the leftovers were made
    assert run_together(_writer(old, baseline, *argv)) == [0]
    assert not list(baseline.parent.glob(".b.*.tmp"))  # the next writer removed every killed writer's temp file
    assert _which_cases_hold(capsys, baseline, (old, new)) == [old]
    return left_over


def test_kill_9_during_record_leaves_a_whole_baseline_and_the_next_writer_cleans_up(tmp_path, capsys):
    kill_loops(tmp_path, capsys, loops=4)


@pytest.mark.nightly
def test_twenty_kill_9_loops_during_record(tmp_path, capsys):
    left_over = kill_loops(tmp_path, capsys, loops=20)
    print(f"20 kill -9 loops: {left_over} temporary files left by killed writers, all removed by the next one")


def _save_forever(path):
    big = ge.tensor(np.random.default_rng(0).standard_normal(4_000_000))
    while True:
        ge.save({"w": big}, path)


def test_kill_9_during_ge_save_leaves_the_file_whole_and_the_next_save_removes_the_temp_files(tmp_path):
    path = tmp_path / "model.pt"
    ge.save({"w": ge.ones(3)}, path)
    for delay in (0.3, 0.5, 0.7):
        saver = FORK.Process(target=_save_forever, args=(path,))
        saver.start()
        time.sleep(delay)
        os.kill(saver.pid, signal.SIGKILL)
        saver.join()
        assert set(ge.load(path)) == {"w"}  # the old or a complete new file, never a partial one
    time.sleep(0.01)
    ge.save({"w": ge.ones(3)}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_a_live_writers_temp_file_is_not_removed(tmp_path):
    path = tmp_path / "f.bin"
    held = _files._held_temporary(path)  # a writer still running: its temp file is locked
    os.utime(held.name, (0, 0))
    _files.write_text(path, "new")
    assert pathlib.Path(held.name).exists() and path.read_text() == "new"
    held.close()
    os.utime(held.name, (0, 0))
    _files.write_text(path, "newer")
    assert not pathlib.Path(held.name).exists()


# --- a validated, versioned baseline format -------------------------------------------------------------------


def test_a_case_recorded_with_gradients_and_read_without_them_is_an_error(recorded, tmp_path, capsys):
    cases, baseline = recorded
    document = json.loads(baseline.read_text())
    document["cases"]["small"]["gradients"] = []
    baseline.write_text(json.dumps(document))
    write_cases(tmp_path / "cases.py", scale=1.01)
    code, _, err = compare(capsys, cases, baseline)
    assert code == 2
    one_line_error(err, "field cases.small.gradients", "0 gradients for 1 inputs")


def test_a_measured_case_with_fewer_gradients_than_its_record_fails(recorded):
    from gradverify.regress.cases import measure
    from gradverify.regress.gate import DRIFT, compare_case

    _, baseline = recorded
    record = baseline_format.read(baseline).cases["small"]
    measurement = measure(lambda x: (x.exp()).sum(), (ge.tensor([0.5, 1.0, 2.0], dtype=ge.float64),), 1)
    measurement.gradients = []
    report = compare_case("small", measurement, record, baseline_format.Tolerance())
    assert (report.status, report.message) == (DRIFT, "the case has 0 gradients; the baseline has 1")


INFORMATIONAL = ("created", "environment", "tolerance", "sketch.full_limit", "timing", "deterministic", "norm")
"""Fields an edit of which may leave compare passing: they describe the recording, not what it recorded
(a sketch's norm is informational too: drift is measured against the current array's norm)."""

HOSTILE = [None, True, False, 0, -1, 1, 2.5, 1e308, -1e-300, "", "x", "<f8", "<f4", "|b1", "a" * 64, [], [1], [[]],
           {}, {"a": 1}, [None], {"shape": [], "dtype": "<f8"}]


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*prefix, i))


def _nudged(value):
    """A value of the same type, slightly different: the edits most likely to pass unnoticed."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * (1 + 1e-3) + 1e-300
    if isinstance(value, str):
        return value[:-1] + ("0" if value[-1:] != "0" else "1")
    if isinstance(value, list):
        return value[:-1] if value else [0]
    return {**value, "extra": 0}


def mutate(document, path, how, value):
    """``document`` with one field at ``path`` replaced by ``value``, nudged, deleted, or given a sibling."""
    edited = copy.deepcopy(document)
    if not path:
        return value
    parent = edited
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if how == "delete":
        del parent[last]
    elif how == "nudge":
        parent[last] = _nudged(parent[last])
    elif how == "rename" and isinstance(parent, dict):
        parent[f"{last}_"] = parent.pop(last)
    else:
        parent[last] = value
    return edited


def _informational(path) -> bool:
    text = ".".join(str(p) for p in path)
    return any(part in text.split(".") or text.startswith(part) for part in INFORMATIONAL)


def judge_edit(path, how, code, err, *, drifted, changed):
    """The verdict on one edited baseline: exit 2 names a field; a pass only for a harmless edit."""
    assert "Traceback" not in err
    if not changed:
        return
    if code == 2:
        line = one_line_error(err)
        top = str(path[0]) if path else ""
        assert ("field " in line or "format" in line or "arrays file" in line or "arrays_file" in line
                or "does not describe" in line or "not a gradverify baseline" in line), line
        assert not top or top in line or "arrays" in line or "format" in line, line
    elif code == 0:
        assert _informational(path), f"silent pass: {how} {path}"
        assert not drifted or "tolerance" in map(str, path), f"silent pass of a drift: {how} {path}"
    else:  # a drift is the right verdict for the drifted function, and for a baseline recording another case
        assert code == 1 and (drifted or path[:1] == ("cases",)), f"wrong verdict {code}: {how} {path}"


@pytest.fixture(scope="module")
def property_baseline(tmp_path_factory):
    """A recorded baseline, its JSON, every path in it, and the one-case JSON the plugin's layout needs."""
    folder = tmp_path_factory.mktemp("property")
    cases = write_cases(folder / "cases.py")
    drifted = write_cases(folder / "drifted.py", scale=1.01)
    baseline = folder / "b.json"
    assert main(["regress", "record", "--cases", cases, "--out", str(baseline), "--repeats", "1",
                 "--full-limit", "4"]) == 0
    document = json.loads(baseline.read_text())
    # The plugin's baselines hold one case named after the test: here "b", the module's "small" case.
    single = {**document, "cases": {"b": document["cases"]["small"]}}
    return folder, cases, drifted, document, single


EDITS = st.tuples(st.sampled_from(["replace", "nudge", "delete", "rename"]), st.sampled_from(HOSTILE))
EXAMPLES = 400 if NIGHTLY else 40


def _edited_baseline(folder, document, path, how, value, tmp_name):
    edited = mutate(document, path, how, value)
    target = folder / tmp_name / "b.json"
    target.parent.mkdir(exist_ok=True)
    for npz in folder.glob("b.*.npz"):
        shutil.copyfile(npz, target.with_name(npz.name))
    target.write_text(json.dumps(edited))
    return target, edited != document


def check_edit_in_cli(property_baseline, capsys, path, how, value) -> list:
    """``regress compare`` of the unchanged and of the drifted cases against the edited baseline; exit codes."""
    folder, cases, drifted, document, _ = property_baseline
    target, changed = _edited_baseline(folder, document, path, how, value, "cli")
    capsys.readouterr()
    codes = []
    for source, is_drifted in ((cases, False), (drifted, True)):
        code, _, err = compare(capsys, source, target)
        judge_edit(path, how, code, err, drifted=is_drifted, changed=changed)
        codes.append(code)
    return codes


def check_edit_in_plugin(property_baseline, path, how, value) -> list:
    """``grad_regression.check`` of the unchanged and of the drifted function against the edited baseline."""
    folder, _, _, _, single = property_baseline
    target, changed = _edited_baseline(folder, single, path, how, value, "plugin")
    codes = []
    for scale, is_drifted in ((1.0, False), (1.01, True)):
        fixture = GradRegression(target.parent, "b", {}, force_regen=False)
        try:
            fixture.check(lambda x: (x.exp() * scale).sum(), ge.tensor([0.5, 1.0, 2.0], dtype=ge.float64))
            code, message = 0, ""
        except pytest.fail.Exception as failure:
            message = str(failure)
            code = 2 if ("baseline" in message and "grad_regression: " in message and "FAILED" not in message
                         and "not rewritten" not in message) else 1
        judge_edit(path, how, code, f"gradverify plugin: error: {message.splitlines()[0]}" if code == 2 else "",
                   drifted=is_drifted, changed=changed)
        codes.append(code)
    return codes


@settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(index=st.integers(0, 10**6), edit=EDITS)
def test_one_field_edits_of_a_baseline_never_crash_or_pass_silently_in_the_cli(property_baseline, capsys, index,
                                                                                  edit):
    paths = list(_paths(property_baseline[3]))
    check_edit_in_cli(property_baseline, capsys, paths[index % len(paths)], *edit)


@settings(max_examples=EXAMPLES)
@given(index=st.integers(0, 10**6), edit=EDITS)
def test_one_field_edits_of_a_baseline_never_crash_or_pass_silently_in_the_plugin(property_baseline, index, edit):
    paths = list(_paths(property_baseline[4]))
    check_edit_in_plugin(property_baseline, paths[index % len(paths)], *edit)


@pytest.mark.nightly
def test_every_one_field_edit_of_a_baseline(property_baseline, capsys):
    """The sweep behind the closing note: every field, every kind of edit, each hostile value, in both surfaces."""
    edits = [("nudge", None), ("delete", None), ("rename", None)] + [("replace", value) for value in HOSTILE]
    for surface, document, check in (("cli", property_baseline[3], lambda *a: check_edit_in_cli(
            property_baseline, capsys, *a)), ("plugin", property_baseline[4], lambda *a: check_edit_in_plugin(
            property_baseline, *a))):
        tally, variants = {0: 0, 1: 0, 2: 0}, 0
        for path in _paths(document):
            for how, value in edits:
                variants += 1
                for code in check(path, how, value):
                    tally[code] += 1
        with capsys.disabled():
            print(f"\n{surface}: {variants} one-field edits, {sum(tally.values())} checks, exit codes {tally}")


@pytest.mark.parametrize("text, reason", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"format": "gradverify-baseline", "format_version": 1, "tolerance": {"ulps": NaN}}', "NaN is not a JSON number"),
    ('{"format": "gradverify-baseline", "format_version": 1, "tolerance": {"ulps": 1e999}}', "out of the range"),
    ("\xff\xfe", "not valid JSON"),
])
def test_unparseable_baselines_exit_2(recorded, capsys, text, reason):
    cases, baseline = recorded
    baseline.write_bytes(text.encode("latin-1"))
    code, _, err = compare(capsys, cases, baseline)
    assert code == 2
    one_line_error(err, baseline, reason)


# --- exit codes hold everywhere -------------------------------------------------------------------------------


@pytest.fixture
def tiny_fs(tmp_path):
    """A 256 KiB tmpfs (root only; ENOSPC and a read-only mount are then real, not simulated)."""
    mount = tmp_path / "fs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_during_record_exits_2_and_keeps_the_old_baseline(recorded, tmp_path, tiny_fs, capsys):
    cases, _ = recorded
    baseline = tiny_fs / "b.json"
    assert run(capsys, "regress", "record", "--cases", cases, "--out", str(baseline), "--repeats", "1")[0] == 0
    before = snapshot(tiny_fs)
    big = write_cases(tmp_path / "big.py", size=300_000)
    code, _, err = run(capsys, "regress", "record", "--cases", big, "--out", str(baseline), "--update",
                       "--repeats", "1", "--full-limit", "1000000")
    assert code == 2
    one_line_error(err, tiny_fs, "No space left on device")
    assert snapshot(tiny_fs) == before and not list(tiny_fs.glob(".*.tmp"))
    assert compare(capsys, cases, baseline)[0] == 0


def test_a_read_only_mount_exits_2_before_measuring(recorded, tiny_fs, capsys):
    cases, _ = recorded
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], check=True)
    code, _, err = run(capsys, "regress", "record", "--cases", cases, "--out", str(tiny_fs / "b.json"), "--repeats",
                       "1")
    assert code == 2
    one_line_error(err, tiny_fs, "Read-only file system")


def test_enospc_at_any_write_exits_2_naming_the_path(recorded, capsys, monkeypatch):
    cases, baseline = recorded
    before = snapshot(baseline.parent)
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    code, _, err = run(capsys, "regress", "record", "--cases", cases, "--out", str(baseline), "--update",
                       "--repeats", "1")
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert code == 2
    one_line_error(err, "No space left on device", "b.")
    assert snapshot(baseline.parent) == before


OUTPUTS = ["record --out", "compare --junit-xml", "GITHUB_STEP_SUMMARY", "fuzz --json", "mutants --json",
           "report --out"]
BAD_PATHS = ["missing folder", "folder", "under a file", "empty", "long name"]
# An empty GITHUB_STEP_SUMMARY means "not on GitHub", and report's --out '' is the current folder: both valid.
VALID = {("GITHUB_STEP_SUMMARY", "empty"), ("report --out", "empty")}


@pytest.mark.parametrize("command, where", [(c, w) for c in OUTPUTS for w in BAD_PATHS if (c, w) not in VALID])
def test_bad_output_paths_exit_2_before_any_work(recorded, tmp_path, capsys, monkeypatch, command, where):
    cases, baseline = recorded
    (tmp_path / "file").write_text("")
    path = {"missing folder": tmp_path / "nowhere" / "x.json", "folder": tmp_path,
            "under a file": tmp_path / "file" / "x.json", "empty": "", "long name": tmp_path / ("n" * 300)}[where]
    if command == "report --out" and where in ("missing folder", "folder"):
        path = tmp_path / "file" if where == "folder" else tmp_path / "file" / "sub"  # it expects a folder
    if command == "record --out" and where == "missing folder":
        path = tmp_path / "file" / "deeper" / "x.json"  # record makes missing folders, where it can
    worked = []
    monkeypatch.setattr("gradverify.regress.cli.measure", lambda *a: worked.append(a))
    monkeypatch.setattr("gradverify.fuzz.campaign.run_campaign", lambda *a, **k: worked.append(a))
    monkeypatch.setattr("gradverify.fuzz.mutants.kill_matrix", lambda *a, **k: worked.append(a))
    monkeypatch.setattr("gradverify.report.build.build_report", lambda *a, **k: worked.append(a))
    argv = {
        "record --out": ["regress", "record", "--cases", cases, "--out", str(path)],
        "compare --junit-xml": ["regress", "compare", "--cases", cases, "--baseline", str(baseline),
                                "--junit-xml", str(path)],
        "GITHUB_STEP_SUMMARY": ["regress", "compare", "--cases", cases, "--baseline", str(baseline)],
        "fuzz --json": ["fuzz", "--graphs", "1", "--json", str(path)],
        "mutants --json": ["mutants", "--graphs", "1", "--json", str(path)],
        "report --out": ["report", "--quick", "--out", str(path)],
    }[command]
    if command == "GITHUB_STEP_SUMMARY":
        monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(path))
    code, _, err = run(capsys, *argv)
    assert code == 2 and not worked
    one_line_error(err)
    if str(path):
        assert str(path) in err or str(pathlib.Path(path).parent) in err or "--out" in err


@pytest.mark.parametrize("damage, cause", [
    (lambda b: b.unlink() or b.mkdir(), "Is a directory"),
    (lambda b: b.unlink(), "is missing"),
    (lambda b: b.parent.joinpath(b.name + "x" * 300), "File name too long"),
])
def test_unusable_baseline_paths_exit_2(recorded, capsys, damage, cause):
    cases, baseline = recorded
    target = damage(baseline) or baseline
    code, _, err = compare(capsys, cases, target)
    assert code == 2
    one_line_error(err, cause)


def test_without_root_privileges_unreadable_and_read_only_paths_exit_2(recorded, tmp_path):
    """Real permissions: the commands run as root without the capabilities that bypass them (setpriv)."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to drop the permission-bypassing capabilities")
    cases, baseline = recorded
    baseline.chmod(0o000)
    (tmp_path / "ro").mkdir(mode=0o555)
    drop = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner",
            "--inh-caps", "-dac_override,-dac_read_search,-fowner"]
    for argv, named in ((["regress", "compare", "--cases", cases, "--baseline", str(baseline)], baseline),
                        (["regress", "record", "--cases", cases, "--out", str(tmp_path / "ro" / "b.json")],
                         tmp_path / "ro")):
        done = subprocess.run([*drop, sys.executable, "-m", "gradverify", *argv, "--repeats", "1"],
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert done.returncode == 2, done.stderr
        one_line_error(done.stderr, named, "Permission denied")


def test_an_unreadable_baseline_exits_2(recorded, capsys, monkeypatch):
    cases, baseline = recorded
    real = pathlib.Path.read_bytes

    def refused(self):
        if self == baseline:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(pathlib.Path, "read_bytes", refused)
    code, _, err = compare(capsys, cases, baseline)
    assert code == 2
    one_line_error(err, baseline, "Permission denied")


def test_a_failing_step_summary_after_the_run_exits_2_and_the_report_is_printed(recorded, tmp_path, capsys,
                                                                                    monkeypatch):
    cases, baseline = recorded
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setattr("gradverify.regress.cli.check_output", lambda path: summary.mkdir())
    code, out, err = compare(capsys, cases, baseline)
    assert code == 2 and "OK: all 2 cases hold" in out
    one_line_error(err, "GITHUB_STEP_SUMMARY", summary)


@pytest.mark.parametrize("source", ["import sys\nsys.exit(0)\n", "import sys\nsys.exit('bye')\n",
                                    "raise RuntimeError('broken')\n", "CASES = {}\n"])
@pytest.mark.parametrize("action", ["record", "compare"])
def test_a_cases_module_that_exits_or_raises_while_loading_exits_2(recorded, tmp_path, capsys, source, action):
    _, baseline = recorded
    bad = tmp_path / "bad_cases.py"
    bad.write_text(source)
    target = ["--out", str(tmp_path / "new.json")] if action == "record" else ["--baseline", str(baseline)]
    code, _, err = run(capsys, "regress", action, "--cases", str(bad), *target, "--repeats", "1")
    assert code == 2
    one_line_error(err, "cases cannot be loaded")
    assert not (tmp_path / "new.json").exists()


def test_a_case_that_calls_sys_exit_is_an_error_not_an_exit(recorded, tmp_path, capsys):
    cases, baseline = recorded
    source = pathlib.Path(cases).read_text() + "\nimport sys\nCASES['small'] = (lambda x: sys.exit(0), " \
                                                "CASES['small'][1])\n"
    pathlib.Path(cases).write_text(source)
    code, out, _ = compare(capsys, cases, baseline)
    assert code == 1 and "evaluating the case raised SystemExit" in out


@pytest.mark.parametrize("argv, named", [
    (["fuzz", "--seed", "-1"], "--seed"),
    (["fuzz", "--max-nodes", "500"], "--max-nodes"),
    (["mutants", "--seed", "-1"], "--seed"),
])
def test_fuzz_arguments_are_bounded(capsys, argv, named):
    code, _, err = run(capsys, *argv)
    assert code == 2
    one_line_error(err, named)


@pytest.mark.parametrize("command", [["fuzz", "--graphs", "1"], ["mutants", "--graphs", "1"]])
def test_an_unusable_jax_cache_exits_2_naming_the_variable(tmp_path, capsys, monkeypatch, command):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("GRADVERIFY_JAX_CACHE", str(tmp_path / "file" / "cache"))
    code, _, err = run(capsys, *command)
    assert code == 2
    one_line_error(err, tmp_path / "file", "GRADVERIFY_JAX_CACHE")


# --- overwriting and read-only baselines ----------------------------------------------------------------------


def test_record_refuses_to_replace_a_baseline_without_update(recorded, tmp_path, capsys):
    cases, baseline = recorded
    before = snapshot(baseline.parent)
    code, _, err = run(capsys, "regress", "record", "--cases", cases, "--out", str(baseline), "--repeats", "1")
    assert code == 2
    one_line_error(err, baseline, "exists: pass --update")
    assert snapshot(baseline.parent) == before


def test_a_read_only_baseline_is_not_replaced_by_update_or_force_regen(recorded, tmp_path, capsys):
    cases, baseline = recorded
    baseline.chmod(0o444)
    before = snapshot(baseline.parent)
    code, _, err = run(capsys, "regress", "record", "--cases", cases, "--out", str(baseline), "--update",
                       "--repeats", "1")
    assert code == 2
    one_line_error(err, "marked read-only")
    document = json.loads(baseline.read_text())
    single = tmp_path / "plugin"
    single.mkdir()
    for npz in baseline.parent.glob("b.*.npz"):
        shutil.copyfile(npz, single / npz.name)
    (single / "b.json").write_text(json.dumps({**document, "cases": {"b": document["cases"]["small"]}}))
    (single / "b.json").chmod(0o444)
    plugin_before = snapshot(single)
    with pytest.raises(pytest.fail.Exception, match="marked read-only"):
        GradRegression(single, "b", {}, force_regen=True).check(lambda x: (x.exp() * 1.01).sum(),
                                                                 ge.tensor([0.5, 1.0, 2.0], dtype=ge.float64))
    assert snapshot(single) == plugin_before and snapshot(baseline.parent) == before


# --- bounded memory -------------------------------------------------------------------------------------------


def _zip(path, members, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _npy_header(shape, dtype="<f8"):
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def _npy(array):
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


OBJECT = {"format": "gradverify.engine.save", "version": 1, "object": {"tensor": 0},
          "tensors": [{"storage": 0, "offset": 0, "dtype": "<f8", "shape": [2], "strides": [8],
                       "requires_grad": False, "parameter": False}]}


def test_ge_load_refuses_an_array_declaring_terabytes_in_a_small_file(tmp_path):
    bomb = _npy_header((10**12,)) + b"\0" * 16
    path = _zip(tmp_path / "bomb.pt", {"object.json": json.dumps(OBJECT), "storage_0.npy": bomb})
    assert path.stat().st_size < 1000
    with pytest.raises(ValueError, match="declares 8000000000000 bytes of data .* but holds 16"):
        ge.load(path)


def test_ge_load_refuses_stride_tricks(tmp_path):
    tensors = [{**OBJECT["tensors"][0], "shape": [10**12], "strides": [0]}]
    path = _zip(tmp_path / "stride.pt", {"object.json": json.dumps({**OBJECT, "tensors": tensors}),
                                         "storage_0.npy": _npy(np.zeros(2))})
    with pytest.raises(ValueError, match="views more memory than its storage's 16 bytes: a stride trick"):
        ge.load(path)


def test_ge_save_writes_a_broadcast_view_as_its_own_memory(tmp_path):
    x = ge.tensor([1.0, 2.0]).expand(3, 2)
    ge.save(x, tmp_path / "x.pt")
    np.testing.assert_array_equal(ge.load(tmp_path / "x.pt").numpy(), np.array([[1.0, 2.0]] * 3))


def test_a_zip_bomb_is_refused_unless_large_arrays_are_allowed(tmp_path):
    zeros = _npy(np.zeros(2**23))  # 64 MiB that deflate stores in about 64 KiB
    object_json = json.dumps({**OBJECT, "tensors": [{**OBJECT["tensors"][0], "shape": [2**23]}]})
    path = _zip(tmp_path / "bomb.pt", {"object.json": object_json, "storage_0.npy": zeros}, zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 2**18
    with pytest.raises(ValueError, match="expands .* stored bytes into 67108864 bytes, over the limit"):
        ge.load(path)
    assert ge.load(path, allow_large=True).shape == (2**23,)


def test_the_baseline_reader_reads_only_referenced_arrays_and_bounds_their_size(recorded, capsys, monkeypatch):
    cases, baseline = recorded
    (npz,) = baseline.parent.glob("b.*.npz")
    with zipfile.ZipFile(npz, "a", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("unreferenced.npy", _npy(np.zeros(2**23)))
    read = []
    real = _files.read_npy_member
    monkeypatch.setattr(baseline_format, "read_npy_member", lambda a, name, large: read.append(name) or
                        real(a, name, large))
    assert compare(capsys, cases, baseline)[0] == 0
    assert read and "unreferenced.npy" not in read
    document = json.loads(baseline.read_text())
    key = document["cases"]["small"]["gradients"][0]["key"]
    with zipfile.ZipFile(npz) as archive:
        members = {name: archive.read(name) for name in archive.namelist() if name != f"{key}.npy"}
    members[f"{key}.npy"] = _npy(np.zeros(2**23))
    _zip(npz, members, zipfile.ZIP_DEFLATED)
    code, _, err = compare(capsys, cases, baseline)
    assert code == 2
    one_line_error(err, npz, key, "over the limit")


UNREFERENCED_BYTES = 2**32 if NIGHTLY else 2**28  # 4 GiB nightly: the multi-GB case; 256 MiB by default


def _add_zero_member(path, name, size):
    """Append a deflated .npy member of ``size`` bytes of zeros to the zip ``path``, streamed (a few MB on disk)."""
    chunk = bytes(2**22)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive, archive.open(name, "w", force_zip64=True) as out:
        out.write(_npy_header((size // 8,)))
        for _ in range(size // len(chunk)):
            out.write(chunk)


def _peak_rss_mib(statement):
    """Peak resident memory (MiB) of a fresh interpreter that runs ``statement`` and exits 0."""
    code = f"import resource\n{statement}\nprint(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    return float(done.stdout.strip().splitlines()[-1])


def test_an_unreferenced_member_of_gigabytes_is_never_decompressed(recorded, tmp_path):
    """Measured as memory, not by watching calls: compare and ge.load peak at the same RSS with or without it."""
    cases, baseline = recorded
    (npz,) = baseline.parent.glob("b.*.npz")
    compare_statement = ("from gradverify.cli import main\n"
                         f"assert main(['regress', 'compare', '--cases', {cases!r}, '--baseline', {str(baseline)!r},"
                         " '--repeats', '1']) == 0")
    saved = tmp_path / "x.pt"
    ge.save({"w": ge.arange(4, dtype=ge.float64)}, saved)
    load_statement = f"import gradverify.engine as ge\nassert ge.load({str(saved)!r})['w'].shape == (4,)"
    before = [_peak_rss_mib(compare_statement), _peak_rss_mib(load_statement)]
    _add_zero_member(npz, "unreferenced.npy", UNREFERENCED_BYTES)
    _add_zero_member(saved, "unreferenced.npy", UNREFERENCED_BYTES)
    assert npz.stat().st_size < UNREFERENCED_BYTES / 100
    after = [_peak_rss_mib(compare_statement), _peak_rss_mib(load_statement)]
    for without, with_member in zip(before, after):
        assert with_member - without < 64, (before, after)  # decompressing it would add UNREFERENCED_BYTES
