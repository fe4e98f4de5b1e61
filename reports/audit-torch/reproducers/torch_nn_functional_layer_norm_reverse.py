"""torch nn.functional.layer_norm: reverse mode is wrong in float32 (check_grad, float64 agree).

Found by `python -m gradverify audit torch` on sample 2 (shapes [(1,), (1,), (1,)], (1,)).
Exit status 1 while the defect exists, 0 once it is fixed.
"""
import sys

import torch

XS = [torch.tensor([-4.3228044509887695], dtype=torch.float32), torch.tensor([-8.478373527526855], dtype=torch.float32), torch.tensor([-1.765825867652893], dtype=torch.float32)]


def outputs(*xs):
    result = torch.nn.functional.layer_norm(xs[0], (1,), xs[1], xs[2])
    result = result if isinstance(result, (tuple, list)) else (result,)
    return tuple(result[k] for k in [0])

OUT, OUT_ELEMENT, IN, IN_ELEMENT = 0, 0, 1, 0
TRUTH, ALLOWANCE, ORACLE = 6.476459993298711e-14, 2.0999874093261354e-18, 'float64'

xs = [x.clone().requires_grad_() for x in XS]
y = outputs(*xs)[OUT].reshape(-1)[OUT_ELEMENT]
(g,) = torch.autograd.grad(y, [xs[IN]], allow_unused=True)
value = 0.0 if g is None else g.reshape(-1)[IN_ELEMENT].item()

error = abs(value - TRUTH)
print(f"{value!r} where the truth ({ORACLE}) is {TRUTH!r}: error {error:.3g}, allowance {ALLOWANCE:.3g}")
sys.exit(0 if error <= ALLOWANCE else 1)
