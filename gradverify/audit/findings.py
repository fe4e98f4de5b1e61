"""From unit results to findings: deduplicated by (op, mode), split into new and known, as JSON and Markdown.

A finding is a failing mode of an op that at least one oracle besides
check_grad confirms (see :mod:`gradverify.audit.truth`); the sample with the
most ulps represents it.  Failures no second oracle confirms are kept apart
as "unconfirmed" (listed, never counted as defects, never failing a run).
The known-defects file (JSON: ``{"framework": ..., "defects": [{"op", "mode",
"note"}]}``, ``op`` an OpInfo name or id / JAX name) lists findings already
reported, so a run fails only on new ones.
"""
from __future__ import annotations

import collections
import json
import math
import pathlib
import re

from .unit import STATUSES

KNOWN_DEFECTS = {"torch": pathlib.Path(__file__).with_name("known_defects_torch.json"),
                 "jax": pathlib.Path(__file__).with_name("known_defects_jax.json")}


def load_known(path) -> dict:
    """{(op, mode): note} from a known-defects file; ValueError naming the file when it is malformed."""
    path = pathlib.Path(path)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {(entry["op"], entry["mode"]): entry.get("note", "") for entry in data["defects"]}
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"known-defects file {path}: expected {{'defects': [{{'op', 'mode', 'note'}}]}}: {error}")


def updated_known(framework, known, found) -> str:
    """The known-defects file's text with ``found`` findings added (notes of listed ones are kept)."""
    merged = dict(known)
    for f in found:
        if not f["known"]:
            merged[(f["op"], f["mode"])] = (
                f"{f['dtype']} sample {f['sample']}: {f['observed']!r} where the truth is {f['truth']!r} "
                f"({f['ulps']:.3g} ulps; {', '.join(f['oracles_agreeing'])} agree)")
    defects = [{"op": op, "mode": mode, "note": note} for (op, mode), note in sorted(merged.items())]
    return json.dumps({"framework": framework, "defects": defects}, indent=2) + "\n"


def _known_note(known, op, mode):
    base = op.split(".")
    for name in (op, *(".".join(base[:k]) for k in range(len(base) - 1, 0, -1))):
        if (name, mode) in known:
            return known[(name, mode)]
    return None


def reproducer_name(framework, op, mode) -> str:
    """The reproducer script's file name for (op, mode)."""
    return f"{framework}_{re.sub(r'[^A-Za-z0-9]+', '_', op)}_{mode.replace(' ', '_')}.py"


def collect(results, known, source=None) -> dict:
    """{"findings", "unconfirmed", "expected_by_framework"}: one entry per (op, mode), its worst sample, by op.

    With ``source`` (the framework's :mod:`~gradverify.audit.sources` module), a failure of a mode its
    framework's own tests expect to fail (``source.expected_failure``) that no oracle beyond check_grad and
    the framework's own checker confirms is the framework's known one: it goes to "expected_by_framework".
    """
    groups = {True: {}, False: {}}
    for result in results:
        for failure in result.failures:
            key = (result.unit.op, failure.mode)
            entry = groups[failure.confirmed].get(key)
            if entry is None:
                entry = groups[failure.confirmed][key] = dict(
                    framework=result.unit.framework, op=result.unit.op, mode=failure.mode, samples=0, dtypes=set(),
                    worst=None)
            entry["samples"] += 1
            entry["dtypes"].add(result.unit.dtype)
            if entry["worst"] is None or _size(failure.ulps) > _size(entry["worst"][1].ulps):
                entry["worst"] = (result, failure)
    rows = {"findings": [_row(e, known, True) for _, e in sorted(groups[True].items())],
            "unconfirmed": [_row(e, known, False) for _, e in sorted(groups[False].items())]}
    expected = []
    for kind, found in rows.items():
        for row in found:
            row["framework_expects_it"] = bool(source and source.expected_failure(row["op"], row["mode"], row["dtypes"]))
        mine = [row for row in found if row["framework_expects_it"]
                and all(name == "check_grad" or name.startswith(source.native_checker)
                        for name in row["oracles_agreeing"])]
        rows[kind] = [row for row in found if row not in mine]
        expected += [dict(row, reproducer=None) for row in mine]
    return {**rows, "expected_by_framework": expected}


def _size(value):
    return value if isinstance(value, (int, float)) and not math.isnan(value) else math.inf


def _row(entry, known, confirmed):
    result, failure = entry["worst"]
    note = _known_note(known, entry["op"], entry["mode"])
    return dict(
        framework=entry["framework"], op=entry["op"], mode=entry["mode"], dtype=result.unit.dtype,
        sample=result.unit.sample, order=result.unit.order, sample_description=result.sample,
        failing_samples=entry["samples"], dtypes=sorted(entry["dtypes"]), check=failure.check,
        observed=failure.observed, truth=failure.truth, ulps=failure.ulps,
        oracles_agreeing=[name for name, agrees in failure.oracles.items() if agrees],
        oracles_disagreeing=[name for name, agrees in failure.oracles.items() if not agrees],
        known=note is not None, known_note=note or "", evidence=failure.evidence,
        reproducer=reproducer_name(entry["framework"], entry["op"], entry["mode"]) if confirmed else None,
        reason=result.reason,
    )


def summary(framework, results, seconds, shard) -> dict:
    """Counts of the run: ops, samples, units by status, time, skip reasons."""
    statuses = collections.Counter(r.status for r in results)
    ops = {r.unit.op for r in results}
    checked = {r.unit.op for r in results if r.status in ("pass", "fail", "inconclusive")}
    samples = {(r.unit.op, r.unit.sample, r.unit.dtype) for r in results}
    reasons = collections.Counter(_reason_kind(r.reason) for r in results if r.status in ("skipped", "refused", "error"))
    return dict(framework=framework, shard=shard, ops=len(ops), ops_checked=len(checked), samples=len(samples),
                units=len(results), statuses={s: statuses.get(s, 0) for s in STATUSES},
                dtypes=sorted({r.unit.dtype for r in results}), orders=sorted({r.unit.order for r in results}),
                seconds=round(seconds, 1), unit_seconds=round(sum(r.seconds for r in results), 1),
                not_checked=dict(reasons.most_common(12)))


def _reason_kind(reason):
    return re.sub(r"\d+(\.\d+)?", "N", reason.split(":")[0])[:100]


def _clean(value):
    """JSON-safe: non-finite floats as strings, sets as sorted lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_clean(v) for v in value]
    return value


def to_json(report) -> str:
    return json.dumps(_clean(report), indent=2)


def to_markdown(report) -> str:
    """The findings table and the run's counts as Markdown."""
    s = report["summary"]
    lines = [f"# gradverify audit {s['framework']}", "",
             f"{s['ops']} ops ({s['ops_checked']} with at least one checked sample), {s['samples']} samples, "
             f"{s['units']} units (dtypes {', '.join(s['dtypes'])}; orders {', '.join(map(str, s['orders']))}; "
             f"shard {s['shard']}) in {s['seconds']} s ({s['unit_seconds']} s summed over units).", "",
             *([f"{s['samples_over_max_elements']} samples larger than --max-elements left out.", ""]
               if s.get("samples_over_max_elements") else []),
             "| status | units |", "|---|---|", *[f"| {k} | {v} |" for k, v in s["statuses"].items()], ""]
    lines += _table("Findings (confirmed by a second oracle)", report["findings"], True)
    lines += _table("Unconfirmed disagreements (check_grad alone; not counted as defects)", report["unconfirmed"],
                    False)
    lines += _table("Failures the framework's own tests expect, seen by no oracle beyond check_grad and its own checker "
                    "(not counted)",
                    report.get("expected_by_framework", []), False)
    if s["not_checked"]:
        lines += ["## Units not checked, by reason", "", "| reason | units |", "|---|---|",
                  *[f"| {k} | {v} |" for k, v in s["not_checked"].items()], ""]
    return "\n".join(lines)


def _table(title, rows, with_reproducer):
    lines = [f"## {title}: {len(rows)}", ""]
    if not rows:
        return lines
    lines += ["| op | mode | dtype | sample | observed | truth | ulps | oracles agreeing | known | framework's tests "
              "expect it | reproducer |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['op']} | {row['mode']} | {row['dtype']} | #{row['sample']} ({row['sample_description']}; "
            f"{row['failing_samples']} failing) | {row['observed']:.10g} | {row['truth']:.10g} | {row['ulps']:.3g} | "
            f"{', '.join(row['oracles_agreeing'])} | {'yes' if row['known'] else 'NEW'} | "
            f"{'yes' if row.get('framework_expects_it') else 'no'} | "
            f"{row['reproducer'] if with_reproducer else ''} |")
    return lines + [""]
