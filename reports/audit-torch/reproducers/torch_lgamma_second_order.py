"""torch lgamma: second order mode is wrong in float64 (check_grad, mpmath agree).

Found by `python -m gradverify audit torch` on sample 0 (shapes [(20,)]).
Exit status 1 while the defect exists, 0 once it is fixed.
"""
import sys

import torch

XS = [torch.tensor([-4.826984902407649, -7.582430495695129, -0.6046891126565539, -1.5411692216498662, -1.9719097652168658, -4.146041530864057, -5.4215280659972755, -4.784169829877467, -4.150805063878843, 7.380839390984031, 5.576059452216908, -8.315684908389088, 4.177597026003685, 2.047386382824099, -4.076012721760325, -3.063683029231029, -3.342174545322517, -5.439777184204883, 4.480518929058965, 2.685009210157367], dtype=torch.float64)]


def outputs(*xs):
    result = torch.lgamma(xs[0])
    result = result if isinstance(result, (tuple, list)) else (result,)
    return tuple(result[k] for k in [0])

OUT, OUT_ELEMENT, IN, IN_ELEMENT = 0, 13, 0, 13
TRUTH, ALLOWANCE, ORACLE = 0.6263238466273717, 3.782753805362418e-14, 'mpmath'

x = XS[0].clone().requires_grad_()
(g,) = torch.autograd.grad(outputs(x, *XS[1:])[0].sum(), x, create_graph=True)
(h,) = torch.autograd.grad(g.sum(), x)
value = h.reshape(-1)[IN_ELEMENT].item()

error = abs(value - TRUTH)
print(f"{value!r} where the truth ({ORACLE}) is {TRUTH!r}: error {error:.3g}, allowance {ALLOWANCE:.3g}")
sys.exit(0 if error <= ALLOWANCE else 1)
