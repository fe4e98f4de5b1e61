"""torch mvlgamma.mvlgamma_p_3: second order mode is wrong in float64 (check_grad, mpmath agree).

Found by `python -m gradverify audit torch` on sample 1 (shapes [(5, 5)], 2).
Exit status 1 while the defect exists, 0 once it is fixed.
"""
import sys

import torch

XS = [torch.tensor([[2.4705904627519435, 1.1694078214773007, 4.464452363467739, 4.022225645332008, 3.8188203886475915], [2.7921470548697513, 2.1898339688346202, 2.490808691446752, 2.78989760872388, 8.235396379075793], [7.383139185769096, 0.8231487932607087, 6.722754151168408, 5.716821347444713, 2.8252162147242914], [3.3032607917520145, 3.171750909153256, 2.1812163296810283, 6.865800605388956, 6.017921015907646], [2.9351433636844213, 3.3165624420271556, 3.736575074522056, 3.488293885359172, 1.1029228435277834]], dtype=torch.float64)]


def outputs(*xs):
    result = torch.mvlgamma(xs[0], 2)
    result = result if isinstance(result, (tuple, list)) else (result,)
    return tuple(result[k] for k in [0])

OUT, OUT_ELEMENT, IN, IN_ELEMENT = 0, 1, 0, 1
TRUTH, ALLOWANCE, ORACLE = 4.35791181463736, 2.6320101955276385e-13, 'mpmath'

x = XS[0].clone().requires_grad_()
(g,) = torch.autograd.grad(outputs(x, *XS[1:])[0].sum(), x, create_graph=True)
(h,) = torch.autograd.grad(g.sum(), x)
value = h.reshape(-1)[IN_ELEMENT].item()

error = abs(value - TRUTH)
print(f"{value!r} where the truth ({ORACLE}) is {TRUTH!r}: error {error:.3g}, allowance {ALLOWANCE:.3g}")
sys.exit(0 if error <= ALLOWANCE else 1)
