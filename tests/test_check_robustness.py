"""check_grad never passes silently: nondeterminism at any point, bad arguments, NaN outputs, big functions."""
import tracemalloc

import torch

from gradverify import check_grad


def test_fast_mode_memory_is_linear_in_the_number_of_outputs():
    # numpy's allocations, which tracemalloc sees: an n x n matrix would take 200 MB here; the check's own
    # arrays take a few dozen times n x 8 bytes.  A first small run leaves the libraries' one-time caches out.
    check_grad(torch.sin, torch.linspace(0.1, 1.0, 10, dtype=torch.float64), mode="fast")
    n = 5000
    x = torch.linspace(0.1, 1.0, n, dtype=torch.float64)
    tracemalloc.start()
    try:
        result = check_grad(torch.sin, x, mode="fast")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.passed, str(result)
    assert peak < 100 * n * 8, peak
