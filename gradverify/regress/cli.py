"""``python -m gradverify regress record|compare``: the gradient-regression gate for CI.

Exit codes of ``compare``: 0 when every case holds; 1 when a case drifted
beyond the tolerance, got slower than ``--max-slowdown``, raised, or is
missing from the baseline or from the cases; 2 when the baseline is missing,
corrupt, malformed or of an unknown format version, the cases cannot be
loaded, or a file cannot be read or written (one line naming the path and the
cause).  Output files (``--junit-xml``, ``$GITHUB_STEP_SUMMARY``) are checked
before the cases run, so a finished run does not lose its report.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import sys

from gradverify._files import atomic_write, check_output, describe
from gradverify.cli import UsageError

from . import baseline as baseline_format
from .cases import DEFAULT_REPEATS, USER_CODE_ERRORS, CasesError, load_cases, measure
from .drift import Tolerance
from .gate import compare
from .options import TOLERANCE_OPTIONS


def configure(parser):
    """Add the ``record`` and ``compare`` actions and their options."""
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    record_help = "measure the cases and write a baseline"
    compare_help = "measure the cases and compare them with a baseline"
    record = actions.add_parser("record", help=record_help, description=record_help + ".")
    compare_parser = actions.add_parser("compare", help=compare_help, description=compare_help + ".")
    for action in (record, compare_parser):
        action.add_argument("--cases", metavar="FILE_OR_MODULE", default=None,
                            help="a Python file or module defining CASES = {name: (fn, inputs)} "
                                 "(default: the document's examples in float64 and float32)")
        action.add_argument("--repeats", type=int, default=DEFAULT_REPEATS,
                            help=f"timed forward+backward runs per case (default {DEFAULT_REPEATS})")
    record.add_argument("--out", required=True, metavar="BASELINE",
                        help="the baseline to write: BASELINE.json plus an .npz of arrays beside it")
    record.add_argument("--update", action="store_true",
                        help="replace the baseline if it exists (without it, record refuses to overwrite one)")
    record.add_argument("--full-limit", type=int, default=baseline_format.FULL_LIMIT,
                        help="arrays with more entries are stored as a digest plus random projections "
                             f"(default {baseline_format.FULL_LIMIT})")
    for option in TOLERANCE_OPTIONS:
        record.add_argument(f"--{option.name}", type=option.type, default=option.default,
                            help=f"{option.help} (default {option.default:g}; stored in the baseline)")
        compare_parser.add_argument(f"--{option.name}", type=option.type, default=None,
                                    help=f"{option.help} (default: the baseline's)")
    compare_parser.add_argument("--baseline", required=True, help="the baseline written by `regress record`")
    compare_parser.add_argument("--max-slowdown", type=float, default=None, metavar="R",
                                help="fail a case whose best time exceeds R times the baseline's (default: "
                                     "report the slowdown only; timings only compare on the same machine)")
    compare_parser.add_argument("--junit-xml", metavar="PATH", default=None, help="also write a JUnit XML report")
    compare_parser.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    compare_parser.add_argument("--allow-large-arrays", action="store_true",
                                help="read baseline arrays past the size limit (max(16 MiB, 64 x their stored "
                                     "bytes)) that guards against crafted files")


def run(args) -> int:
    """Run ``record`` or ``compare``; returns the exit code."""
    if args.repeats < 1:
        raise UsageError(f"--repeats: expected at least 1, got {args.repeats}")
    given = {o.name: getattr(args, o.name) for o in TOLERANCE_OPTIONS if getattr(args, o.name) is not None}
    return _record(args, given) if args.action == "record" else _compare(args, given)


def _tolerance(base: Tolerance, given: dict) -> Tolerance:
    """``base`` with the tolerance options given on the command line."""
    try:
        return dataclasses.replace(base, **given)
    except ValueError as err:
        raise UsageError(f"--{err}") from None


def _cases(args) -> dict:
    try:
        return load_cases(args.cases)
    except CasesError as err:
        raise UsageError(f"cases cannot be loaded: {err}") from None


def _output(flag: str, path: str) -> str:
    """``path`` after checking a file can be written there (before the work whose report it receives)."""
    try:
        check_output(path)
    except OSError as err:
        raise UsageError(describe(err, flag)) from None
    return path


def _record(args, given_tolerance: dict) -> int:
    tolerance = _tolerance(Tolerance(), given_tolerance)
    if args.full_limit < 0:
        raise UsageError(f"--full-limit: expected a number of entries >= 0, got {args.full_limit}")
    if not args.out or pathlib.Path(args.out).is_dir():
        raise UsageError(f"--out {args.out!r}: expected the path of a baseline (NAME or NAME.json), got "
                         f"{'a folder' if args.out else 'an empty path'}")
    target = baseline_format.json_path(args.out)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        check_output(target)
        baseline_format.check_replaceable(target, args.update)
    except OSError as err:
        raise UsageError(describe(err, "--out")) from None
    except baseline_format.BaselineExists as err:
        raise UsageError(str(err)) from None
    records = {}
    for name, (fn, inputs) in _cases(args).items():
        try:
            records[name] = measure(fn, inputs, args.repeats).record(args.full_limit)
        except USER_CODE_ERRORS as err:  # a case is user code: report which one failed and how
            raise UsageError(f"case {name!r} cannot be recorded: {type(err).__name__}: {err}") from err
        if not records[name].deterministic:
            print(f"warning: case {name!r} is not deterministic (two runs differ): compare may fail on reruns",
                  file=sys.stderr)
    baseline = baseline_format.Baseline(records, tolerance, full_limit=args.full_limit)
    try:
        path = baseline_format.write(baseline, target, replace=args.update)
    except OSError as err:
        raise UsageError(describe(err, "--out")) from None
    except baseline_format.BaselineError as err:
        raise UsageError(str(err)) from None
    print(f"recorded {len(records)} cases to {path} (tolerance {tolerance})")
    return 0


def _compare(args, given_tolerance: dict) -> int:
    if args.max_slowdown is not None and not args.max_slowdown > 0:
        raise UsageError(f"--max-slowdown: expected a ratio > 0, got {args.max_slowdown}")
    if not args.baseline:
        raise UsageError("--baseline: expected the path of a baseline, got ''")
    if args.junit_xml is not None:
        _output("--junit-xml", args.junit_xml)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        _output("GITHUB_STEP_SUMMARY", summary)
    try:
        baseline = baseline_format.read(args.baseline, allow_large=args.allow_large_arrays)
    except baseline_format.BaselineError as err:
        raise UsageError(str(err)) from None
    tolerance = _tolerance(baseline.tolerance, given_tolerance)
    measurements, errors = {}, {}
    for name, (fn, inputs) in _cases(args).items():
        try:
            measurements[name] = measure(fn, inputs, args.repeats)
        except USER_CODE_ERRORS as err:  # a case that raises is a regression of that case, reported in the table
            errors[name] = f"{type(err).__name__}: {err}"
    report = compare(baseline, str(baseline_format.json_path(args.baseline)), measurements, errors,
                     baseline_format.environment(), tolerance, args.max_slowdown)
    print(json.dumps(report.to_dict(), indent=1) if args.json else report.text())
    try:
        if args.junit_xml:
            atomic_write(args.junit_xml, lambda f: f.write(report.junit_xml().encode()))
        if summary:
            with open(summary, "a", encoding="utf-8") as handle:
                handle.write(report.markdown())
    except OSError as err:
        raise UsageError(describe(err, "--junit-xml" if args.junit_xml and err.filename == args.junit_xml
                                  else "GITHUB_STEP_SUMMARY")) from None
    return report.exit_code
