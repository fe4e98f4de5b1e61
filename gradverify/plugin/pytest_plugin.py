"""gradverify's pytest plugin, loaded through the ``pytest11`` entry point.

Fixtures:

``gradcheck(fn, *inputs, **options)``
    checks the gradients of ``fn`` with :func:`gradverify.check_grad` and
    fails the test with its report unless the verdict is "pass"; returns the
    :class:`~gradverify.check.CheckResult`.  ``options`` are check_grad's and
    override the configured profile and tolerances.
``grad_regression.check(fn, *inputs, basename=None)``
    compares the value and gradients of ``fn`` with a baseline stored beside
    the test, in the pytest-regressions layout: ``test_module/BASENAME.json``
    (plus an ``.npz``) next to ``test_module.py``, ``BASENAME`` defaulting to
    the test's name.  A missing baseline is written and the test fails (run it
    again); a drift beyond the tolerance fails with the drift table;
    ``--force-regen`` rewrites the baselines that drifted.

Options, on the command line or under their ini name in pytest.ini or
pyproject.toml's ``[tool.pytest.ini_options]`` (the command line wins):

=================================  =============================  ==========================================
command line                       ini                            meaning
=================================  =============================  ==========================================
``--gradverify-profile``           ``gradverify_profile``         gradcheck preset: fast, default, thorough
``--gradverify-rtol``, ``-atol``   ``gradverify_rtol``, ``_atol`` gradcheck: check_grad's rtol / atol
``--gradverify-regress-ulps``      ``gradverify_regress_ulps``    grad_regression tolerance in ulps
``--gradverify-regress-atol``      ``gradverify_regress_atol``    grad_regression absolute tolerance
``--force-regen``                  (none)                         rewrite drifted grad_regression baselines
=================================  =============================  ==========================================

This module is imported by every pytest run in an environment where
gradverify is installed, so it imports only pytest and the standard library
at import time; numpy and the checker load when a fixture is first used.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import pathlib
import re

import pytest

from gradverify.regress.options import TOLERANCE_OPTIONS, Option

PROFILES = {
    "fast": {"mode": "fast"},
    "default": {},
    "thorough": {"mode": "full", "order": 2},
}
"""gradcheck presets: random projections only (large models), check_grad's defaults, or the whole
Jacobian plus second order."""

CHECK_OPTIONS = (
    Option("profile", str, "default", f"gradcheck preset, one of {', '.join(PROFILES)} (default: default)"),
    Option("rtol", float, None, "gradcheck: check_grad's rtol (default: derived from the dtype)"),
    Option("atol", float, None, "gradcheck: check_grad's atol (default: derived from the dtype)"),
)
REGRESS_PREFIX = "regress_"
SETTINGS = pytest.StashKey[dict]()


def _all_options():
    """(setting name, Option) for every option: check_grad's, then the regression tolerance's."""
    return [(o.name, o) for o in CHECK_OPTIONS] + [(REGRESS_PREFIX + o.name, o) for o in TOLERANCE_OPTIONS]


def pytest_addoption(parser):
    """Register the options in the table of the module docstring."""
    group = parser.getgroup("gradverify", "gradverify: gradient checks and gradient-regression baselines")
    for setting, option in _all_options():
        text = option.help if setting == option.name else (
            f"grad_regression: {option.help} (default {option.default:g} when recording, else the baseline's)")
        group.addoption(f"--gradverify-{setting.replace('_', '-')}", dest=f"gradverify_{setting}",
                        type=option.type, default=None, help=text)
        parser.addini(f"gradverify_{setting}", text, default="")
    # pytest-regressions defines --force-regen too; define it only when it is not there to do so.
    if importlib.util.find_spec("pytest_regressions") is None:
        try:
            group.addoption("--force-regen", action="store_true", default=False, dest="force_regen",
                            help="grad_regression: rewrite the baselines that differ (those tests still fail once)")
        except ValueError:  # another plugin already defined it, with the same meaning
            pass


def pytest_configure(config):
    """Read the gradverify options once, so that a bad value stops the run with a usage error."""
    values = {}
    for setting, option in _all_options():
        value = config.getoption(f"gradverify_{setting}", default=None)
        if value is None:
            text = config.getini(f"gradverify_{setting}")
            if text in ("", None):
                continue
            try:
                value = option.type(text)
            except ValueError:
                raise pytest.UsageError(
                    f"ini option gradverify_{setting}: expected a {option.type.__name__}, got {text!r}") from None
        if option.type is float and not 0 <= value < float("inf"):
            raise pytest.UsageError(f"gradverify_{setting}: expected a finite number >= 0, got {value}")
        values[setting] = value
    profile = values.pop("profile", "default")
    if profile not in PROFILES:
        raise pytest.UsageError(f"gradverify_profile: expected one of {', '.join(PROFILES)}, got {profile!r}")
    config.stash[SETTINGS] = {
        "check": {**PROFILES[profile], **{k: v for k, v in values.items() if not k.startswith(REGRESS_PREFIX)}},
        "regress": {k[len(REGRESS_PREFIX):]: v for k, v in values.items() if k.startswith(REGRESS_PREFIX)},
    }


@pytest.fixture
def gradcheck(request):
    """``gradcheck(fn, *inputs, **options)``: assert ``fn``'s gradients with check_grad; returns its result."""
    configured = request.config.stash[SETTINGS]["check"]

    def check(fn, *inputs, **options):
        from gradverify.check import check_grad

        result = check_grad(fn, *inputs, **{**configured, **options})
        if not result.passed:
            pytest.fail(str(result), pytrace=False)
        return result

    return check


class GradRegression:
    """The ``grad_regression`` fixture: values and gradients compared with a baseline beside the test."""

    def __init__(self, datadir: pathlib.Path, default_basename: str, tolerance: dict, force_regen: bool):
        self.datadir = datadir
        self.default_basename = default_basename
        self.tolerance = tolerance
        self.force_regen = force_regen
        self._used = set()

    def check(self, fn, *inputs, basename: str | None = None):
        """Compare ``fn``'s value and gradients at ``inputs`` with the baseline ``basename`` (default: the test)."""
        from gradverify._files import describe
        from gradverify.regress.cases import measure

        name = basename or self.default_basename
        if name in self._used:
            raise ValueError(f"basename: {name!r} was already checked in this test; pass a distinct basename=")
        self._used.add(name)
        path = self.datadir / f"{name}.json"
        measurement = measure(fn, inputs, repeats=1)
        try:
            self._check(name, path, measurement)
        except OSError as err:
            pytest.fail(f"grad_regression: {describe(err)}", pytrace=False)

    def _check(self, name, path, measurement):
        from gradverify.regress import baseline as baseline_format
        from gradverify.regress.drift import Tolerance
        from gradverify.regress.gate import compare

        def write(why: str, details: str = ""):
            record = {name: measurement.record(baseline_format.FULL_LIMIT)}
            try:
                baseline_format.write(baseline_format.Baseline(record, Tolerance(**self.tolerance)), path,
                                      replace=self.force_regen)
            except baseline_format.BaselineExists as err:
                pytest.fail(f"grad_regression: {why} and --force-regen is set, but {err}\n{details}".rstrip(),
                            pytrace=False)
            pytest.fail(f"grad_regression: {why} and --force-regen is set; rewrote {path}\n{details}".rstrip(),
                        pytrace=False)

        if not path.exists():
            try:
                baseline_format.write(baseline_format.Baseline({name: measurement.record(baseline_format.FULL_LIMIT)},
                                                               Tolerance(**self.tolerance)), path)
                pytest.fail(f"grad_regression: no baseline for {name!r}; created {path}: run the test again",
                            pytrace=False)
            except baseline_format.BaselineExists:
                pass  # another process recorded it meanwhile: compare with theirs
        try:
            stored = baseline_format.read(path)
        except baseline_format.BaselineError as err:
            if self.force_regen:
                write(str(err))
            pytest.fail(f"grad_regression: {err} (rewrite it with --force-regen)", pytrace=False)
        tolerance = dataclasses.replace(stored.tolerance, **self.tolerance)
        report = compare(stored, str(path), {name: measurement}, {}, baseline_format.environment(), tolerance)
        if not report.passed:
            if self.force_regen:
                write(f"{name!r} differed", report.text())
            pytest.fail(report.text(), pytrace=False)


@pytest.fixture
def grad_regression(request):
    """``grad_regression.check(fn, *inputs, basename=None)``: fail when values or gradients drift from the baseline."""
    return GradRegression(
        datadir=request.path.parent / request.path.stem,
        default_basename=re.sub(r"\W", "_", request.node.name),
        tolerance=request.config.stash[SETTINGS]["regress"],
        force_regen=bool(request.config.getoption("force_regen", default=False)),
    )
