"""torch cholesky_inverse: second order mode is wrong in float64 (check_grad, torch gradcheck agree).

Found by `python -m gradverify audit torch` on sample 8 (shapes [(5, 5)], upper=True).
Exit status 1 while the defect exists, 0 once it is fixed.
"""
import sys

import torch

XS = [torch.tensor([[0.9981247866281745, 0.0018404174230682176, 0.002088249316292328, 0.0008044420785824052, 0.0012693818219667052], [0.0, 1.0005505360925742, -0.00013358785621806727, 0.0014582241734482795, -0.0007355297008290019], [0.0, 0.0, 1.0008498105307402, 0.00029844187415631275, 0.0010463151621535579], [0.0, 0.0, 0.0, 1.0004888212551712, 0.0010577483097491016], [0.0, 0.0, 0.0, 0.0, 0.9996313236267257]], dtype=torch.float64)]

import types, unittest, zlib

# The OpInfo sample itself (torch's test utilities want expecttest only for a TestCase base class).
sys.modules.setdefault('expecttest', types.SimpleNamespace(TestCase=unittest.TestCase))
from torch.testing._internal.common_methods_invocations import op_db  # noqa: E402

OP = next(op for op in op_db if (op.name, op.variant_test_name) == ('cholesky_inverse', ''))
torch.manual_seed(3356595758)
SAMPLE = list(OP.sample_inputs('cpu', torch.float64, requires_grad=True))[8]
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

xs = [x.detach().double().requires_grad_() for x in XS]
ok = torch.autograd.gradgradcheck(outputs, xs, check_fwd_over_rev=True, check_rev_over_rev=False, raise_exception=False, check_undefined_grad=False, check_batched_grad=False)
print('torch agrees the derivative is right' if ok else 'torch\'s own check fails too')
sys.exit(0 if ok else 1)
