"""torch special.ndtr: forward mode is wrong in bfloat16 (check_grad, mpmath agree).

Found by `python -m gradverify audit torch` on sample 0 (shapes [(20,)]).
Exit status 1 while the defect exists, 0 once it is fixed.
"""
import sys

import torch

XS = [torch.tensor([-8.5, -1.765625, -4.3125, -2.40625, -7.9375, 3.609375, -8.0625, -0.57421875, 3.125, -3.03125, 5.09375, 1.1328125, 4.9375, 5.78125, -3.96875, 3.265625, -3.890625, 2.828125, -4.6875, 4.15625], dtype=torch.bfloat16)]


def outputs(*xs):
    result = torch.special.ndtr(xs[0])
    result = result if isinstance(result, (tuple, list)) else (result,)
    return tuple(result[k] for k in [0])

OUT, OUT_ELEMENT, IN, IN_ELEMENT = 0, 6, 0, 6
TRUTH, ALLOWANCE, ORACLE = 3.0583780814614486e-15, 7.645945203653622e-16, 'mpmath'

import torch.autograd.forward_ad as fwAD

with fwAD.dual_level():
    tangent = torch.zeros(XS[IN].numel(), dtype=XS[IN].dtype)
    tangent[IN_ELEMENT] = 1
    duals = [fwAD.make_dual(x, tangent.reshape(x.shape)) if j == IN else x for j, x in enumerate(XS)]
    t = fwAD.unpack_dual(outputs(*duals)[OUT]).tangent
    value = 0.0 if t is None else t.reshape(-1)[OUT_ELEMENT].item()

error = abs(value - TRUTH)
print(f"{value!r} where the truth ({ORACLE}) is {TRUTH!r}: error {error:.3g}, allowance {ALLOWANCE:.3g}")
sys.exit(0 if error <= ALLOWANCE else 1)
