"""Fuzz campaign throughput: cold and warm JAX compilation cache, and Ray at several local workers.

    python benchmarks/bench_campaign.py                       # 200 graphs, 2 workers: cold, then warm
    python benchmarks/bench_campaign.py --ray-workers 1 2 4   # then Ray (local) at 1, 2 and 4 workers, warm

Every run is ``python -m gradverify fuzz --jax-every 1 --no-shrink`` in a fresh process (every oracle and
JAX on every graph).  "cold" starts from an empty JAX compilation cache, so every graph's program is
compiled; "warm" repeats the campaign with the cache the cold run filled (another campaign of the same
seed, or a CI job restoring the cache).  graphs/s is the campaign's own figure (drawing and checking the
graphs, wall clock, start-up excluded); CPU s is the user + system time of the whole process tree.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def campaign(graphs, seed, workers, cache, ray=False) -> dict:
    """One campaign in a fresh process: its JSON report's timing, and the CPU time of its process tree."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "fuzz.json"
        argv = [sys.executable, "-m", "gradverify", "fuzz", "--graphs", str(graphs), "--seed", str(seed),
                "--jax-every", "1", "--no-shrink", "--workers", str(workers), "--json", str(report)]
        if ray:
            argv += ["--ray", "local"]
        env = {**os.environ, "GRADVERIFY_JAX_CACHE": str(cache), "PYTHONPATH": str(REPO)}
        before = _children_cpu()
        subprocess.run(argv, env=env, cwd=scratch, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=False)
        cpu = _children_cpu() - before
        data = json.loads(report.read_text())
    return {"graphs": data["graphs"], "graphs_per_second": data["graphs_per_second"],
            "startup_seconds": data["startup_seconds"], "cpu_seconds": round(cpu, 1), "passed": data["passed"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graphs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--ray-workers", type=int, nargs="*", default=[])
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for label in ("cold", "warm"):
            rows.append((f"{label}, {args.workers} process workers", campaign(args.graphs, args.seed, args.workers,
                                                                                cache)))
            print(rows[-1], flush=True)
        for workers in args.ray_workers:
            rows.append((f"warm, Ray local, {workers} workers", campaign(args.graphs, args.seed, workers, cache,
                                                                         ray=True)))
            print(rows[-1], flush=True)
    print(f"\n{'run':34s} {'graphs':>6s} {'graphs/s':>9s} {'start-up s':>10s} {'CPU s':>7s}  passed")
    for label, row in rows:
        print(f"{label:34s} {row['graphs']:6d} {row['graphs_per_second']:9.2f} {row['startup_seconds']:10.1f} "
              f"{row['cpu_seconds']:7.1f}  {row['passed']}")


if __name__ == "__main__":
    main()
