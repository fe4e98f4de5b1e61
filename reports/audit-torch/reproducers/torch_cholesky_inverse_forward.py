"""torch cholesky_inverse: forward mode is wrong in float64 (check_grad, reverse AD agree).

Found by `python -m gradverify audit torch` on sample 11 (shapes [(2, 5, 5)], upper=True).
Exit status 1 while the defect exists, 0 once it is fixed.
"""
import sys

import torch

XS = [torch.tensor([[[0.9995394509943517, 0.0014498206066236728, 0.0008745698753141793, 0.0007905327843741408, -8.030153687329275e-05], [0.0, 0.9986324867432687, -9.125517309833357e-06, -0.0004595843972546637, 0.001181502231873209], [0.0, 0.0, 0.9996064020461852, 0.0010400315864647284, 0.0003552686732562808], [0.0, 0.0, 0.0, 0.9993839167081427, 0.00027907727676433684], [0.0, 0.0, 0.0, 0.0, 0.9997286262254347]], [[0.9997794136658094, 0.0011486219623644321, 0.0003371636924924843, 0.002987800512001189, 0.00035677159417364624], [0.0, 0.9997544135454548, 0.0020778090595775837, -0.0007612159757256349, 0.001265310766670526], [0.0, 0.0, 0.9997672639174205, -0.0003758931148248867, 0.0015493893682584417], [0.0, 0.0, 0.0, 1.0002937884119067, -4.6192304852785405e-05], [0.0, 0.0, 0.0, 0.0, 0.9999522114403075]]], dtype=torch.float64)]

import types, unittest, zlib

# The OpInfo sample itself (torch's test utilities want expecttest only for a TestCase base class).
sys.modules.setdefault('expecttest', types.SimpleNamespace(TestCase=unittest.TestCase))
from torch.testing._internal.common_methods_invocations import op_db  # noqa: E402

OP = next(op for op in op_db if (op.name, op.variant_test_name) == ('cholesky_inverse', ''))
torch.manual_seed(3356595758)
SAMPLE = list(OP.sample_inputs('cpu', torch.float64, requires_grad=True))[11]
SAMPLE = SAMPLE.transform(lambda t: t.detach() if isinstance(t, torch.Tensor) else t)
SLOTS = [('input', None)]


def outputs(*xs):
    first, args = SAMPLE.input, list(SAMPLE.args)
    for (kind, i), x in zip(SLOTS, xs):
        if kind == 'input':
            first = x
        else:
            args[i] = x
    result = OP.gradcheck_wrapper(OP.get_op(), first, *args, **SAMPLE.kwargs)
    result = SAMPLE.output_process_fn_grad(result)
    result = result if isinstance(result, (tuple, list)) else (result,)
    return tuple(result[k] for k in [0])

OUT, OUT_ELEMENT, IN, IN_ELEMENT = 0, 43, 0, 33
TRUTH, ALLOWANCE, ORACLE = -2.0805246766933752e-20, 3.552736730007332e-15, 'reverse AD'

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
