"""``ge.nn``: modules, layers and losses shaped like ``torch.nn``."""
from . import functional
from .layers import CrossEntropyLoss, Linear, LogSoftmax, MSELoss, ReLU, Sequential, Sigmoid, Softmax, Softplus, Tanh
from .module import Module, Parameter

__all__ = [
    "functional", "Module", "Parameter", "Linear", "ReLU", "Sigmoid", "Tanh", "Softplus", "Softmax",
    "LogSoftmax", "Sequential", "MSELoss", "CrossEntropyLoss",
]
