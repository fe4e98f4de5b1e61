"""torch nextafter: reverse mode is wrong in bfloat16 (check_grad, torch gradcheck in float64 agree).

Found by `python -m gradverify audit torch` on sample 7 (shapes [(10, 1, 5), (1, 10, 5)]).
Exit status 1 while the defect exists, 0 once it is fixed.
"""
import sys

import torch

XS = [torch.tensor([[[-8.5, -1.765625, -4.3125, -2.40625, -7.9375]], [[3.609375, -8.0625, -0.57421875, 3.125, -3.03125]], [[5.09375, 1.1328125, 4.9375, 5.78125, -3.96875]], [[3.265625, -3.890625, 2.828125, -4.6875, 4.15625]], [[1.8203125, -3.515625, -4.40625, 2.328125, 8.375]], [[4.3125, -0.8671875, -0.4375, 5.125, -6.25]], [[2.984375, -2.984375, 5.21875, -3.203125, 0.4453125]], [[3.046875, 6.1875, -1.3203125, 8.1875, -7.625]], [[-1.6015625, -9.0, 0.74609375, 2.546875, -3.640625]], [[3.734375, -1.4609375, -7.8125, 6.90625, 5.5625]]], dtype=torch.bfloat16), torch.tensor([[[4.5625, 7.1875, 3.3125, 4.78125, 7.46875], [-1.8125, -7.03125, -4.4375, -1.203125, -0.98828125], [-0.06103515625, 5.15625, 2.890625, -6.65625, -2.703125], [-2.125, 5.46875, -3.265625, -3.765625, -1.4453125], [-2.296875, -2.21875, -8.8125, 8.0, 4.78125], [-4.25, -5.625, 0.3125, 5.125, -6.46875], [-3.40625, 3.765625, -5.8125, -1.0, -6.78125], [8.375, 4.84375, -8.3125, -4.96875, 3.1875], [0.494140625, 2.390625, -7.375, -4.8125, 4.09375], [-6.875, -1.890625, 3.953125, 4.65625, 0.55859375]]], dtype=torch.bfloat16)]


def outputs(*xs):
    result = torch.nextafter(xs[0], xs[1])
    result = result if isinstance(result, (tuple, list)) else (result,)
    return tuple(result[k] for k in [0])

xs = [x.detach().double().requires_grad_() for x in XS]
ok = torch.autograd.gradcheck(outputs, xs, raise_exception=False, check_undefined_grad=False, check_batched_grad=False)
print('torch agrees the derivative is right' if ok else 'torch\'s own check fails too')
sys.exit(0 if ok else 1)
