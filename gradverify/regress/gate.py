"""Comparing measured cases with a baseline, and reporting it: table, Markdown, JUnit XML, JSON.

A case holds when every output and gradient stayed within the tolerance and,
when a ``max_slowdown`` is given, its best time grew by at most that factor.
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .baseline import Baseline, CaseRecord, StoredArray, digest, rademacher_projections
from .cases import Measurement
from .drift import ArrayDrift, Tolerance, changed_shape, entrywise_drift, projected_drift, unchanged

OK, DRIFT, SLOWER, NEW, MISSING, INPUTS_CHANGED, ERROR = (
    "ok", "drift", "slower", "not in baseline", "missing", "inputs changed", "error")
COLUMNS = ["case", "status", "max rel drift", "drift (ulps)", "worst entry", "value drift", "slowdown"]


def array_drift(name: str, stored: StoredArray, current: np.ndarray, tolerance: Tolerance) -> ArrayDrift:
    """How far ``current`` moved from the stored array (entry by entry, or by projections for a sketch)."""
    if tuple(current.shape) != tuple(stored.shape) or current.dtype.str != stored.dtype:
        return changed_shape(name, stored.shape, np.dtype(stored.dtype), current)
    if digest(current) == stored.sha256:
        return unchanged(name)
    if stored.sketched:
        projections = rademacher_projections(current)
        if np.array_equal(projections, stored.data, equal_nan=True):
            # Real changes move the projections' roundings; identical ones mean the stored digest is wrong.
            return ArrayDrift(name, np.inf, np.inf, exceeded=True, estimated=True, note=(
                "its SHA-256 differs from the baseline's but its projections are bit-identical: the baseline's "
                "digest is corrupt, or a change escapes all projections; re-record to trust it"))
        # Against the current array's norm: the stored one is the file's word, and a drift it inflated would pass.
        current_norm = float(np.linalg.norm(current.astype(np.float64).ravel()))
        return projected_drift(name, stored.data, current_norm, projections, current.dtype, tolerance)
    return entrywise_drift(name, stored.data, current, tolerance)


@dataclass
class CaseReport:
    """The verdict on one case: status, the drift of each output and gradient, the slowdown, the best time."""

    name: str
    status: str
    outputs: list = field(default_factory=list)
    gradients: list = field(default_factory=list)
    slowdown: float | None = None
    message: str = ""
    seconds: float | None = None

    @property
    def passed(self) -> bool:
        return self.status == OK

    def details(self, tolerance: Tolerance, max_slowdown: float | None) -> list:
        """Lines saying why the case failed (empty when it held)."""
        if self.message:
            return [self.message]
        lines = [d.describe(tolerance) for d in (*self.outputs, *self.gradients) if d.exceeded]
        if self.status == SLOWER:
            lines.append(f"{self.slowdown:.2f}x slower than the baseline (limit {max_slowdown:g}x)")
        return lines

    def row(self) -> dict:
        """The case's row of the table: the gradient with the largest drift in ulps, the value drift, the slowdown."""
        worst = max(self.gradients, key=lambda d: d.max_ulps, default=None)
        value = max(self.outputs, key=lambda d: d.max_ulps, default=None)
        return {
            "case": self.name,
            "status": self.status,
            "max rel drift": _drift_text(worst, "max_rel"),
            "drift (ulps)": _drift_text(worst, "max_ulps"),
            "worst entry": worst.where if worst is not None and worst.max_ulps > 0 else "",
            "value drift": _drift_text(value, "max_rel"),
            "slowdown": "" if self.slowdown is None else f"{self.slowdown:.2f}x",
        }

    def to_dict(self) -> dict:
        """The case for ``--json``: status, message, slowdown and the drift of every output and gradient."""

        def drift_dict(d: ArrayDrift):
            return {"name": d.name, "where": d.where, "max_rel_drift": _json_float(d.max_rel),
                    "max_ulps": _json_float(d.max_ulps), "exceeded": d.exceeded, "estimated": d.estimated,
                    "baseline": _json_float(d.baseline), "current": _json_float(d.current), "note": d.note}

        return {"name": self.name, "status": self.status, "passed": self.passed, "message": self.message,
                "slowdown": _json_float(self.slowdown), "outputs": [drift_dict(d) for d in self.outputs],
                "gradients": [drift_dict(d) for d in self.gradients]}


def _drift_text(drift: ArrayDrift | None, attribute: str) -> str:
    if drift is None:
        return ""
    value = getattr(drift, attribute)
    return ("~" if drift.estimated else "") + (f"{value:.3g}" if value else "0")


def _json_float(value):
    if value is None or isinstance(value, (bool, int)):
        return value
    value = float(value)
    return value if math.isfinite(value) else str(value)


def compare_case(name: str, measurement: Measurement, record: CaseRecord, tolerance: Tolerance,
                 max_slowdown: float | None = None) -> CaseReport:
    """Compare one measured case with its baseline entry."""
    shapes = [tuple(s) for s in measurement.input_shapes]
    if measurement.inputs_sha256 != record.inputs_sha256 or shapes != [tuple(s) for s in record.input_shapes]:
        return CaseReport(name, INPUTS_CHANGED, message=(
            f"the inputs differ from the baseline's (shapes {[list(s) for s in measurement.input_shapes]} vs "
            f"{[list(s) for s in record.input_shapes]}, or their values): the case changed, so re-record"))
    recorded = (record.backend, record.dtype, record.cotangent_seed)
    if (measurement.backend, measurement.dtype, measurement.cotangent_seed) != recorded:
        return CaseReport(name, INPUTS_CHANGED, message=(
            f"backend {measurement.backend}, dtype {measurement.dtype}, cotangent seed {measurement.cotangent_seed}; "
            f"the baseline has backend {record.backend}, dtype {record.dtype}, cotangent seed "
            f"{record.cotangent_seed}: the case changed, so re-record"))
    for kind, now, then in (("outputs", measurement.outputs, record.outputs),
                            ("gradients", measurement.gradients, record.gradients)):
        if len(now) != len(then):
            return CaseReport(name, DRIFT, message=f"the case has {len(now)} {kind}; the baseline has {len(then)}")
    single = len(record.outputs) == 1
    outputs = [array_drift("value" if single else f"value[{i}]", stored, current, tolerance)
               for i, (stored, current) in enumerate(zip(record.outputs, measurement.outputs))]
    gradients = [array_drift(f"grad[{i}]", stored, current, tolerance)
                 for i, (stored, current) in enumerate(zip(record.gradients, measurement.gradients))]
    slowdown = measurement.timing["best_s"] / record.timing["best_s"] if record.timing["best_s"] > 0 else None
    if any(d.exceeded for d in (*outputs, *gradients)):
        status = DRIFT
    elif max_slowdown is not None and slowdown is not None and slowdown > max_slowdown:
        status = SLOWER
    else:
        status = OK
    return CaseReport(name, status, outputs, gradients, slowdown, seconds=measurement.timing["best_s"])


@dataclass
class GateReport:
    """The comparison of all cases with a baseline."""

    baseline_path: str
    baseline: Baseline
    tolerance: Tolerance
    max_slowdown: float | None
    cases: list
    environment_changes: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(case.passed for case in self.cases)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def frame(self) -> pd.DataFrame:
        """One row per case: status, gradient drift, worst entry, value drift, slowdown."""
        return pd.DataFrame([case.row() for case in self.cases], columns=COLUMNS)

    def failures(self) -> dict:
        """``{case: [reason, ...]}`` for the cases that failed."""
        return {c.name: c.details(self.tolerance, self.max_slowdown) for c in self.cases if not c.passed}

    def header(self) -> str:
        limit = f", max slowdown {self.max_slowdown:g}x" if self.max_slowdown is not None else ""
        return (f"gradverify regress: baseline {self.baseline_path} (recorded {self.baseline.created}), "
                f"tolerance {self.tolerance}{limit}")

    def verdict(self) -> str:
        failed = [c.name for c in self.cases if not c.passed]
        if not failed:
            return f"OK: all {len(self.cases)} cases hold"
        return f"FAILED: {len(failed)} of {len(self.cases)} cases: {', '.join(failed)}"

    def text(self) -> str:
        """The plain-text report printed by ``gradverify regress compare``."""
        lines = [self.header()]
        lines += [f"environment changed: {change}" for change in self.environment_changes]
        lines += ["", self.frame().to_string(index=False), ""]
        for name, reasons in self.failures().items():
            lines += [f"{name}:"] + [f"  {reason}" for reason in reasons]
        lines.append(self.verdict())
        return "\n".join(lines)

    def markdown(self) -> str:
        """The report as GitHub-flavoured Markdown (for ``$GITHUB_STEP_SUMMARY``)."""
        frame = self.frame()
        lines = ["### gradverify regress", "", f"{'✅' if self.passed else '❌'} {self.verdict()}", "",
                 f"Baseline `{self.baseline_path}`, tolerance {self.tolerance}", ""]
        if self.environment_changes:
            lines += [f"- environment changed: {change}" for change in self.environment_changes] + [""]
        lines.append("| " + " | ".join(frame.columns) + " |")
        lines.append("|" + "---|" * len(frame.columns))
        for row in frame.itertuples(index=False):
            lines.append("| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |")
        for name, reasons in self.failures().items():
            lines += ["", f"**{name}**", ""] + [f"- `{reason}`" for reason in reasons]
        return "\n".join(lines) + "\n"

    def junit_xml(self) -> str:
        """The report as JUnit XML: one testcase per case, a failure element for each failing case."""
        failures = self.failures()
        suite = ET.Element("testsuite", name="gradverify regress", tests=str(len(self.cases)),
                           failures=str(len(failures)), errors="0")
        for case in self.cases:
            element = ET.SubElement(suite, "testcase", classname="gradverify.regress", name=case.name)
            if case.seconds is not None:
                element.set("time", f"{case.seconds:.6f}")
            if case.name in failures:
                reasons = failures[case.name]
                failure = ET.SubElement(element, "failure", message=f"{case.status}: {reasons[0]}")
                failure.text = "\n".join(reasons)
        root = ET.Element("testsuites")
        root.append(suite)
        ET.indent(root)
        return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"

    def to_dict(self) -> dict:
        """The report for machines (``--json``); non-finite numbers are written as strings."""
        return {"baseline": self.baseline_path, "passed": self.passed, "exit_code": self.exit_code,
                "tolerance": self.tolerance.to_dict(), "max_slowdown": self.max_slowdown,
                "environment_changes": self.environment_changes, "cases": [c.to_dict() for c in self.cases]}


def environment_changes(recorded: dict, current: dict) -> list:
    """``["numpy 2.3.0 -> 2.4.0", ...]``: what differs between two environments."""
    changes = [f"{key} {recorded.get(key)} -> {current.get(key)}" for key in ("python", "platform")
               if recorded.get(key) != current.get(key)]
    old, new = recorded.get("packages", {}), current.get("packages", {})
    changes += [f"{name} {old.get(name)} -> {new.get(name)}" for name in sorted(set(old) | set(new))
                if old.get(name) != new.get(name)]
    return changes


def compare(baseline: Baseline, baseline_path: str, measurements: dict, errors: dict, current_environment: dict,
            tolerance: Tolerance | None = None, max_slowdown: float | None = None) -> GateReport:
    """Compare ``measurements`` (name -> Measurement) with ``baseline``.

    ``errors`` maps the names of cases that raised to the error text.  Cases
    of the baseline that are no longer defined, and defined cases missing
    from the baseline, fail: the gate cannot vouch for them.
    """
    tolerance = tolerance or baseline.tolerance
    reports = []
    for name in list(measurements) + [n for n in errors if n not in measurements]:
        record = baseline.cases.get(name)
        if name in errors:
            reports.append(CaseReport(name, ERROR, message=f"evaluating the case raised {errors[name]}"))
        elif record is None:
            reports.append(CaseReport(name, NEW, message="not in the baseline: record it again to add this case"))
        else:
            reports.append(compare_case(name, measurements[name], record, tolerance, max_slowdown))
    for name in baseline.cases:
        if name not in measurements and name not in errors:
            reports.append(CaseReport(name, MISSING, message="in the baseline but no longer among the cases"))
    return GateReport(baseline_path, baseline, tolerance, max_slowdown, reports,
                      environment_changes(baseline.environment, current_environment))
