"""gradverify's AD engine: numpy-backed, shaped like PyTorch.

``import gradverify.engine as ge`` and write PyTorch code: ``ge.tensor``,
operators, ``.backward()``, ``ge.nn``, ``ge.optim``, ``ge.autograd`` (grad, backward,
functional, custom ``Function``, gradcheck, gradgradcheck) and ``ge.func`` (grad, vjp,
jvp, hessian, hvp).  Every op comes from the op table (:mod:`gradverify.ops`).

A backward pass releases the graph's saved tensors unless ``retain_graph=True``
(as in PyTorch), so a second backward through the same graph raises.
"""
from . import methods as _methods  # noqa: F401  (attaches operators to Tensor)
from . import autograd, func, functional, nn, optim, random, special, utils
from .api import *  # noqa: F401,F403  (the torch-shaped functions, listed in api.__all__)
from .core import Tensor

Size = tuple
# torch's dtype aliases; here, not in api, whose code uses the builtins of these names.
bool = bool_  # noqa: A001
float = float32  # noqa: A001
int = int32  # noqa: A001
