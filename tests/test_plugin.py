"""The pytest plugin, tested as plugins are: with pytester, in fresh projects that only have gradverify installed.

The project under test has no conftest: the fixtures come from the ``pytest11``
entry point.  Its custom ``torch.autograd.Function`` scales its backward by
``1 + CUBE_DRIFT`` (an environment variable), so a run with CUBE_DRIFT=1e-6 is
"the gradient drifted by 1e-6".
"""
import subprocess
import sys

import pytest

pytest.importorskip("torch")

PROJECT_TESTS = '''
import os

import torch


class Cube(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * 3 * x ** 2 * (1 + float(os.environ.get("CUBE_DRIFT", "0")))


def loss(x):
    return Cube.apply(x).sin().sum()


X = torch.linspace(0.5, 1.5, 5, dtype=torch.float64)


def test_gradients(gradcheck):
    result = gradcheck(loss, X)
    assert result.passed


def test_baseline(grad_regression):
    grad_regression.check(loss, X)
'''


@pytest.fixture
def project(pytester, monkeypatch):
    monkeypatch.delenv("CUBE_DRIFT", raising=False)
    pytester.makepyfile(test_model=PROJECT_TESTS)
    return pytester


def test_fixtures_pass_on_the_second_run_and_both_fail_on_a_1e_6_drift(project, monkeypatch):
    first = project.runpytest()
    first.assert_outcomes(passed=1, failed=1)
    baseline = project.path / "test_model" / "test_baseline.json"
    first.stdout.fnmatch_lines([f"*no baseline for 'test_baseline'; created {baseline}: run the test again*"])
    assert baseline.exists() and len(list(baseline.parent.glob("test_baseline.*.npz"))) == 1

    project.runpytest().assert_outcomes(passed=2)

    monkeypatch.setenv("CUBE_DRIFT", "1e-6")
    drifted = project.runpytest()
    drifted.assert_outcomes(failed=2)
    drifted.stdout.fnmatch_lines(["*FAILED test_model.py::test_gradients - Failed: check_grad: FAIL*"])

    regenerated = project.runpytest("--force-regen", "-k", "baseline")
    regenerated.assert_outcomes(failed=1)
    regenerated.stdout.fnmatch_lines(["*'test_baseline' differed and --force-regen is set; rewrote*"])
    project.runpytest("-k", "baseline").assert_outcomes(passed=1)


def test_a_fresh_interpreter_gets_the_fixtures_from_the_entry_point(project, monkeypatch):
    project.runpytest("-k", "baseline")
    monkeypatch.setenv("CUBE_DRIFT", "1e-6")
    drifted = project.runpytest_subprocess()
    drifted.assert_outcomes(failed=2)
    drifted.stdout.re_match_lines([
        r" *case status max rel drift drift \(ulps\) worst entry value drift slowdown",
        r"test_baseline  drift +1e-06 +\S+ +grad\[0\]\[\d\] ",
        r"  grad\[0\]\[\d\] = \S+ \(baseline \S+\): relative drift 1e-06 = \S+ ulps vs tolerance 4 ulps",
    ])
    drifted.stdout.fnmatch_lines(["*FAILED test_model.py::test_gradients - Failed: check_grad: FAIL*"])


@pytest.mark.parametrize("how", ["pytest.ini", "pyproject.toml", "command line"])
def test_regression_tolerance_from_ini_or_command_line(project, monkeypatch, how):
    args = ["-k", "baseline"]
    if how == "pytest.ini":
        project.makeini("[pytest]\ngradverify_regress_ulps = 1e12\n")
    elif how == "pyproject.toml":
        project.makepyprojecttoml('[tool.pytest.ini_options]\ngradverify_regress_ulps = "1e12"\n')
    else:
        args.append("--gradverify-regress-ulps=1e12")
    project.runpytest(*args)
    monkeypatch.setenv("CUBE_DRIFT", "1e-6")
    project.runpytest(*args).assert_outcomes(passed=1)


def test_gradcheck_profile_and_tolerances_from_ini_and_command_line(pytester):
    pytester.makeini("[pytest]\ngradverify_profile = fast\ngradverify_rtol = 1e-3\n")
    pytester.makepyfile(test_profile='''
import gradverify.check
import gradverify.engine as ge

X = ge.tensor([0.5, 1.0, 2.0], dtype=ge.float64)


def test_options(gradcheck, monkeypatch):
    seen = {}
    real = gradverify.check.check_grad

    def spy(fn, *inputs, **options):
        seen.update(options)
        return real(fn, *inputs, **options)

    monkeypatch.setattr(gradverify.check, "check_grad", spy)
    result = gradcheck(lambda x: (x * x.exp()).sum(), X, atol=1e-9)
    print("OPTIONS", sorted(seen.items()), result.mode, result.order)
''')
    from_ini = pytester.runpytest("-s").stdout.str()
    assert "OPTIONS [('atol', 1e-09), ('mode', 'fast'), ('rtol', 0.001)] fast 1" in from_ini
    from_command_line = pytester.runpytest("-s", "--gradverify-profile=thorough", "--gradverify-rtol=0.01").stdout.str()
    assert "OPTIONS [('atol', 1e-09), ('mode', 'full'), ('order', 2), ('rtol', 0.01)] full 2" in from_command_line
    wrong = pytester.runpytest("--gradverify-profile=quick")
    wrong.stderr.fnmatch_lines(["*gradverify_profile: expected one of fast, default, thorough, got 'quick'*"])


def test_bad_ini_value_is_a_usage_error(project):
    project.makeini("[pytest]\ngradverify_atol = tiny\n")
    result = project.runpytest("-k", "baseline")
    result.stderr.fnmatch_lines(["*ini option gradverify_atol: expected a float, got 'tiny'*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_two_checks_in_one_test_need_distinct_basenames(pytester):
    pytester.makepyfile(test_two='''
import gradverify.engine as ge

X = ge.tensor([1.0, 2.0], dtype=ge.float64)


def test_two(grad_regression):
    grad_regression.check(lambda x: (x * x).sum(), X, basename="square")
    grad_regression.check(lambda x: x.exp().sum(), X, basename="exp")
    grad_regression.check(lambda x: x.exp().sum(), X, basename="exp")
''')
    pytester.runpytest().stdout.fnmatch_lines(["*no baseline for 'square'; created*"])
    pytester.runpytest().stdout.fnmatch_lines(["*no baseline for 'exp'; created*"])
    third = pytester.runpytest()
    third.assert_outcomes(failed=1)
    third.stdout.fnmatch_lines(["*basename: 'exp' was already checked in this test; pass a distinct basename=*"])


def test_plugin_import_is_cheap():
    code = "import sys, gradverify.plugin.pytest_plugin; print(sorted({'numpy', 'torch', 'pandas'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
