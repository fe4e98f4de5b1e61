"""Benchmark of gradverify's checker against torch.autograd.gradcheck and jax.test_util.check_grads.

1. Sensitivity: a backward multiplied by (1+δ), spread over all entries or
   confined to one, for δ = 1e-2 ... 1e-9, on f(x) = A·tanh(x) with a
   1000-element input (custom torch.autograd.Function / jax.custom_vjp).
2. Cost on the document's MLP (float64, 1029 parameters, batch 8): median
   wall time of gradverify and torch gradcheck in full and fast mode,
   interleaved in one run; the ratio column is gradverify over torch.

Run:  python benchmarks/bench_check.py [--quick] [--repeats N]
"""
import argparse
import time

import pandas as pd
import torch

from gradverify.check.benchmarks import cost_table, sensitivity_table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 200-element input, four values of δ, 2 repeats")
    parser.add_argument("--repeats", type=int, default=7, help="timing repetitions (median reported)")
    args = parser.parse_args(argv)
    # One thread: the machine is shared, and thread oversubscription would blur the comparison.
    torch.set_num_threads(1)
    pd.set_option("display.width", 220)
    start = time.perf_counter()
    table = sensitivity_table(quick=args.quick)
    print("Sensitivity: True = the backward multiplied by (1+δ) was flagged")
    print(table.to_string())
    print(f"({time.perf_counter() - start:.1f} s)\n")
    costs = cost_table(repeats=args.repeats, quick=args.quick)
    print("Cost on the document's MLP (float64, 1029 parameters, batch 8), median seconds, interleaved:")
    print(costs.to_string(float_format=lambda v: f"{v:.4g}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
