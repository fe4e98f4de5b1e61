"""Audit throughput: units per second in one process, on worker processes and on a local Ray, interleaved.

    python benchmarks/bench_audit.py               # 2 rounds of: one process, 2 processes, Ray 1 worker, Ray 2
    python benchmarks/bench_audit.py --ray-workers 1 2 4 --process-workers --rounds 3

Every run is ``python -m gradverify audit torch`` on the same small op set in a fresh process and a fresh
output folder (nothing resumed); the configurations alternate within each round, so a change in the machine's
load hits them alike.  Every process computes on one thread (OMP_NUM_THREADS=1, which Ray sets for its
one-CPU actors anyway), so one process is not slowed by torch's threads spinning on a loaded machine.
units/s is the audit's own figure (units audited per second of wall clock once the workers are set up:
imports, op registry, Ray start-up excluded); start-up s is that excluded time; wall s is the whole process.  The ratio column divides units/s by the single-process figure of the same round.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OPS = "sin,cos,exp,tanh,sigmoid,log,sqrt,atan,sinh,cosh,nn.functional.hardsigmoid,nn.functional.softplus"


def audit(ops, dtypes, orders, workers=None, ray=False) -> dict:
    """One audit in a fresh process: its report's unit count and timing, and the process's wall time."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "audit.json"
        argv = [sys.executable, "-m", "gradverify", "audit", "torch", "--ops", ops, "--dtypes", dtypes,
                "--orders", orders, "--out", str(Path(scratch) / "out"), "--json", str(report)]
        if workers is not None:
            argv += ["--workers", str(workers)] + (["--ray", "local"] if ray else [])
        began = time.perf_counter()
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        subprocess.run(argv, env=env, cwd=scratch, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)
        wall = time.perf_counter() - began
        summary = json.loads(report.read_text())["summary"]
    return {"units": summary["units_audited"], "units_per_second": summary["units_per_second"],
            "startup_seconds": summary["startup_seconds"], "wall_seconds": round(wall, 1),
            "statuses": summary["statuses"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", default=OPS)
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument("--orders", default="1,2")
    parser.add_argument("--ray-workers", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--process-workers", type=int, nargs="*", default=[2])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    configs = ([("one process", None, False)] + [(f"{w} processes", w, False) for w in args.process_workers]
               + [(f"Ray local, {w} workers", w, True) for w in args.ray_workers])
    rows = {label: [] for label, _, _ in configs}
    for round_ in range(args.rounds):
        for label, workers, ray in configs:
            rows[label].append(audit(args.ops, args.dtypes, args.orders, workers, ray))
            print(f"round {round_ + 1}: {label}: {rows[label][-1]}", flush=True)
    statuses = {json.dumps(row["statuses"], sort_keys=True) for runs in rows.values() for row in runs}
    print(f"\n{'run':24s} {'units':>5s} {'units/s':>8s} {'x one process':>13s} {'start-up s':>10s} {'wall s':>7s}"
          f"   (medians of {args.rounds} interleaved rounds; same statuses in every run: {len(statuses) == 1})")
    alone = rows[configs[0][0]]
    for label, runs in rows.items():
        ratio = statistics.median(r["units_per_second"] / a["units_per_second"] for r, a in zip(runs, alone))
        print(f"{label:24s} {runs[0]['units']:5d} {statistics.median(r['units_per_second'] for r in runs):8.2f} "
              f"{ratio:13.2f} {statistics.median(r['startup_seconds'] for r in runs):10.1f} "
              f"{statistics.median(r['wall_seconds'] for r in runs):7.1f}")


if __name__ == "__main__":
    main()
