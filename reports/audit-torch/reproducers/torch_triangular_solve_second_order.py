"""torch triangular_solve: second order mode is wrong in float64 (check_grad, torch gradcheck agree).

Found by `python -m gradverify audit torch` on sample 0 (shapes [(5, 1), (5, 5)]).
Exit status 1 while the defect exists, 0 once it is fixed.
"""
import sys

import torch

XS = [torch.tensor([[-8.596239972526284], [-0.524154812497627], [-3.2519978374491334], [6.846803848769272], [-0.6113253421876204]], dtype=torch.float64), torch.tensor([[-0.9782549598566602, -0.5519049233676977, 0.35586339513321663, 0.023235358759888136, 0.10329910736335465], [-0.15176098274236666, -0.7019814055326558, -0.6377710767439265, -0.5455540024431775, 0.6441400082913294], [0.7486887716938728, -0.5680331983794834, 0.16311364286204566, 0.1923933330222075, 0.025448604668669987], [-0.23536984746570147, -0.4062823375720936, -0.6277223404388935, 0.5560614029682727, 0.22924618200246957], [-0.2657456390799618, 0.011455356795490689, -0.6600779409798578, -0.47016785614875684, -0.7564930674077903]], dtype=torch.float64)]

import types, unittest, zlib

# The OpInfo sample itself (torch's test utilities want expecttest only for a TestCase base class).
sys.modules.setdefault('expecttest', types.SimpleNamespace(TestCase=unittest.TestCase))
from torch.testing._internal.common_methods_invocations import op_db  # noqa: E402

OP = next(op for op in op_db if (op.name, op.variant_test_name) == ('triangular_solve', ''))
torch.manual_seed(1012062724)
SAMPLE = list(OP.sample_inputs('cpu', torch.float64, requires_grad=True))[0]
SAMPLE = SAMPLE.transform(lambda t: t.detach() if isinstance(t, torch.Tensor) else t)
SLOTS = [('input', None), ('arg', 0)]


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
    return tuple(result[k] for k in [0, 1])

xs = [x.detach().double().requires_grad_() for x in XS]
ok = torch.autograd.gradgradcheck(outputs, xs, check_fwd_over_rev=True, check_rev_over_rev=False, raise_exception=False, check_undefined_grad=False, check_batched_grad=False)
print('torch agrees the derivative is right' if ok else 'torch\'s own check fails too')
sys.exit(0 if ok else 1)
