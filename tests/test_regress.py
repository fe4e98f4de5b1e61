"""``gradverify regress``: record then compare, drift detection, and exit code 2 for unusable baselines or cases.

The cases are a custom ``torch.autograd.Function`` whose backward scales one
gradient entry by ``1 + DRIFT``: recording with DRIFT = 0 and comparing with
DRIFT = 1e-6 is "a refactored custom op changed one gradient entry by 1e-6".
"""
import importlib.metadata
import json
import os
import pathlib
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from gradverify.cli import main
from gradverify.regress import baseline as baseline_format
from gradverify.regress.cases import load_cases

torch = pytest.importorskip("torch")

CASES_SOURCE = '''
import torch

DRIFT = {drift!r}


class Cube(torch.autograd.Function):
    """x ** 3 with a hand-written backward; entry 1 of its gradient is scaled by 1 + DRIFT."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        scale = torch.ones_like(x)
        scale[1] += DRIFT
        return grad * 3 * x ** 2 * scale


def loss(x, w):
    return (Cube.apply(x) * w).sin().sum()


def layer(a, b):
    return torch.tanh(a @ b)


CASES = {{
    f"cube[{{dtype}}]": (loss, (torch.linspace(0.5, 1.5, 6, dtype=dtype), torch.linspace(-1, 1, 6, dtype=dtype)))
    for dtype in (torch.float64, torch.float32)
}}
CASES["layer"] = (layer, (torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(3, 4),
                          torch.linspace(0, 2, 8, dtype=torch.float64).reshape(4, 2)))
'''


def write_cases(path, drift=0.0):
    path.write_text(CASES_SOURCE.format(drift=drift))
    return str(path)


def regress(capsys, *argv):
    """Run ``gradverify regress ARGV`` in this process; returns (exit code, stdout, stderr)."""
    code = main(["regress", *argv, "--repeats", "1"])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def recorded(tmp_path, capsys):
    """A cases file (DRIFT = 0) and the baseline recorded from it."""
    cases = write_cases(tmp_path / "cases.py")
    baseline = tmp_path / "baseline" / "cube.json"
    code, out, _ = regress(capsys, "record", "--cases", cases, "--out", str(baseline))
    assert code == 0
    assert f"recorded 3 cases to {baseline}" in out
    return cases, baseline


def test_record_then_compare_passes_bit_for_bit(recorded, capsys):
    cases, baseline = recorded
    code, out, _ = regress(capsys, "compare", "--cases", cases, "--baseline", str(baseline))
    assert code == 0
    assert "OK: all 3 cases hold" in out
    for name in ("cube[torch.float64]", "cube[torch.float32]", "layer"):
        assert name in out
    document = json.loads(baseline.read_text())
    assert document["format_version"] == 1
    assert document["cases"]["cube[torch.float64]"]["gradients"][0]["storage"] == "full"
    assert document["environment"]["packages"]["torch"] == importlib.metadata.version("torch")


def test_drift_of_1e_6_in_one_custom_backward_entry_fails_naming_case_and_entry(recorded, tmp_path, capsys):
    cases, baseline = recorded
    write_cases(tmp_path / "cases.py", drift=1e-6)
    code, out, _ = regress(capsys, "compare", "--cases", cases, "--baseline", str(baseline))
    assert code == 1
    assert "FAILED: 2 of 3 cases: cube[torch.float64], cube[torch.float32]" in out
    assert "cube[torch.float64]:\n  grad[0][1] = " in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip().startswith(("cube", "layer"))}
    assert rows["cube[torch.float64]"][1:3] == ["drift", "1e-06"]
    assert rows["cube[torch.float64]"][4] == "grad[0][1]"
    # float32: 1 + 1e-6 rounds to 1 + 8 ulps of 1; the products round again, so roughly 8 ulps.
    assert rows["cube[torch.float32]"][1] == "drift" and rows["cube[torch.float32]"][4] == "grad[0][1]"
    assert 5e-7 < float(rows["cube[torch.float32]"][2]) < 2e-6
    assert 4 < float(rows["cube[torch.float32]"][3]) < 17
    assert rows["layer"][1:3] == ["ok", "0"]


def test_tolerance_option_widens_the_gate(recorded, tmp_path, capsys):
    cases, baseline = recorded
    write_cases(tmp_path / "cases.py", drift=1e-6)
    code, out, _ = regress(capsys, "compare", "--cases", cases, "--baseline", str(baseline), "--ulps", "1e10")
    assert code == 0
    assert "tolerance 1e+10 ulps" in out


def test_machine_outputs_junit_json_and_step_summary(recorded, tmp_path, capsys, monkeypatch):
    cases, baseline = recorded
    write_cases(tmp_path / "cases.py", drift=1e-6)
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    junit = tmp_path / "regress.xml"
    code, out, _ = regress(capsys, "compare", "--cases", cases, "--baseline", str(baseline),
                           "--junit-xml", str(junit), "--json")
    assert code == 1
    report = json.loads(out)
    assert report["exit_code"] == 1 and not report["passed"]
    drifted = {c["name"]: c for c in report["cases"]}["cube[torch.float64]"]
    assert drifted["status"] == "drift"
    assert drifted["gradients"][0]["where"] == "grad[0][1]"
    assert drifted["gradients"][0]["max_rel_drift"] == pytest.approx(1e-6, rel=1e-3)
    suite = ET.parse(junit).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures")) == ("3", "2")
    assert all(float(case.get("time")) > 0 for case in suite.iter("testcase"))
    failures = {case.get("name"): case.find("failure") for case in suite.iter("testcase")}
    assert failures["layer"] is None
    assert failures["cube[torch.float64]"].get("message").startswith("drift: grad[0][1] = ")
    markdown = summary.read_text()
    assert "❌ FAILED: 2 of 3 cases" in markdown
    assert "| cube[torch.float64] | drift | 1e-06 |" in markdown


def test_max_slowdown_fails_a_case_slower_than_the_ratio(recorded, capsys):
    cases, baseline = recorded
    code, out, _ = regress(capsys, "compare", "--cases", cases, "--baseline", str(baseline),
                           "--max-slowdown", "1e-9")
    assert code == 1
    assert "slower than the baseline (limit 1e-09x)" in out


def test_added_and_removed_cases_fail(recorded, tmp_path, capsys):
    cases, baseline = recorded
    source = (tmp_path / "cases.py").read_text().replace('CASES["layer"]', 'CASES["renamed"]')
    (tmp_path / "cases.py").write_text(source)
    code, out, _ = regress(capsys, "compare", "--cases", cases, "--baseline", str(baseline))
    assert code == 1
    assert "renamed:\n  not in the baseline" in out
    assert "layer:\n  in the baseline but no longer among the cases" in out


def test_changed_inputs_fail_and_ask_for_a_new_recording(recorded, tmp_path, capsys):
    cases, baseline = recorded
    source = (tmp_path / "cases.py").read_text().replace("linspace(0.5, 1.5, 6", "linspace(0.5, 1.6, 6")
    (tmp_path / "cases.py").write_text(source)
    code, out, _ = regress(capsys, "compare", "--cases", cases, "--baseline", str(baseline))
    assert code == 1
    assert "cube[torch.float64]:\n  the inputs differ from the baseline's" in out


def test_a_case_that_raises_cannot_be_recorded_and_fails_compare(recorded, tmp_path, capsys):
    cases, baseline = recorded
    source = (tmp_path / "cases.py").read_text() + "\nCASES['layer'] = (lambda a, b: 1 / 0, CASES['layer'][1])\n"
    (tmp_path / "cases.py").write_text(source)
    code, _, err = regress(capsys, "record", "--cases", cases, "--out", str(tmp_path / "other.json"))
    assert code == 2
    assert "case 'layer' cannot be recorded: ZeroDivisionError: division by zero" in err
    code, out, _ = regress(capsys, "compare", "--cases", cases, "--baseline", str(baseline))
    assert code == 1
    assert "layer:\n  evaluating the case raised ZeroDivisionError: division by zero" in out


def test_missing_baseline_exits_2(tmp_path, capsys):
    cases = write_cases(tmp_path / "cases.py")
    code, _, err = regress(capsys, "compare", "--cases", cases, "--baseline", str(tmp_path / "nowhere.json"))
    assert code == 2
    assert f"baseline {tmp_path / 'nowhere.json'} is missing" in err


def test_truncated_baseline_exits_2(recorded, capsys):
    cases, baseline = recorded
    baseline.write_text(baseline.read_text()[:200])
    code, _, err = regress(capsys, "compare", "--cases", cases, "--baseline", str(baseline))
    assert code == 2
    assert "is corrupt (not valid JSON, truncated?)" in err


def test_truncated_arrays_file_exits_2(recorded, capsys):
    cases, baseline = recorded
    (arrays,) = baseline.parent.glob("cube.*.npz")
    arrays.write_bytes(arrays.read_bytes()[:100])
    code, _, err = regress(capsys, "compare", "--cases", cases, "--baseline", str(baseline))
    assert code == 2
    assert f"baseline arrays file {arrays} is corrupt" in err


def test_unknown_format_version_exits_2(recorded, capsys):
    cases, baseline = recorded
    baseline.write_text(baseline.read_text().replace('"format_version": 1', '"format_version": 99'))
    code, _, err = regress(capsys, "compare", "--cases", cases, "--baseline", str(baseline))
    assert code == 2
    assert "has format version 99; this gradverify reads version 1" in err


@pytest.mark.parametrize("source, message", [
    ("CASES = None\n", "expected a module-level CASES mapping name -> (fn, inputs), found NoneType"),
    ("import no_such_module_here\n", "could not load it: ModuleNotFoundError"),
    ("CASES = {'a': 1}\n", "case 'a' must be (fn, inputs)"),
])
def test_cases_that_cannot_be_loaded_exit_2(recorded, tmp_path, capsys, source, message):
    _, baseline = recorded
    (tmp_path / "bad_cases.py").write_text(source)
    code, _, err = regress(capsys, "compare", "--cases", str(tmp_path / "bad_cases.py"), "--baseline", str(baseline))
    assert code == 2
    assert "cases cannot be loaded" in err and message in err


def test_interrupted_record_leaves_the_previous_baseline_whole(recorded, tmp_path, capsys, monkeypatch):
    cases, baseline = recorded
    before = {p.name: p.read_bytes() for p in baseline.parent.iterdir()}
    write_cases(tmp_path / "cases.py", drift=1e-3)
    real_replace = os.replace

    def interrupted(src, dst):
        if str(dst).endswith(".json"):
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(["regress", "record", "--cases", cases, "--out", str(baseline), "--update", "--repeats", "1"])
    monkeypatch.setattr(os, "replace", real_replace)
    capsys.readouterr()
    after = {p.name: p.read_bytes() for p in baseline.parent.iterdir()}
    assert {name: after[name] for name in before} == before
    assert not [name for name in after if name.endswith(".tmp")]
    write_cases(tmp_path / "cases.py", drift=0.0)
    code, _, _ = regress(capsys, "compare", "--cases", cases, "--baseline", str(baseline))
    assert code == 0


ENGINE_CASES_SOURCE = """
import gradverify.engine as ge

SCALE = {scale!r}
CASES = {{"engine_exp": (lambda x: (x.exp() * SCALE).sum(), (ge.tensor([0.5, 1.0, 2.0], dtype=ge.float64),))}}
"""


def test_committed_baseline_covers_the_document_examples():
    committed = baseline_format.read(pathlib.Path(__file__).resolve().parents[1] / "baselines" / "document.json")
    assert set(committed.cases) == set(load_cases(None))
    assert {case.dtype for case in committed.cases.values()} == {"float64", "float32"}


def test_command_line_entry_point_runs_the_gate(tmp_path, capsys):
    cases = tmp_path / "engine_cases.py"
    cases.write_text(ENGINE_CASES_SOURCE.format(scale=1.0))
    baseline = tmp_path / "engine.json"
    assert regress(capsys, "record", "--cases", str(cases), "--out", str(baseline))[0] == 0
    cases.write_text(ENGINE_CASES_SOURCE.format(scale=1 + 1e-6))
    done = subprocess.run(
        [sys.executable, "-m", "gradverify", "regress", "compare", "--cases", str(cases), "--baseline", str(baseline),
         "--repeats", "1"], capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert done.returncode == 1, done.stderr
    assert "engine_exp:\n  value = " in done.stdout and "\n  grad[0][2] = " in done.stdout
