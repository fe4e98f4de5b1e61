"""``ge.nn``: modules, layers and losses shaped like ``torch.nn``."""
from . import functional, init
from .layers import (CrossEntropyLoss, Dropout, LeakyReLU, Linear, LogSoftmax, MSELoss, NLLLoss, ReLU, Sequential,
                     Sigmoid, Softmax, Softplus, Tanh)
from .module import Module, Parameter

__all__ = [
    "functional", "init", "Module", "Parameter", "Linear", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softplus",
    "Softmax", "LogSoftmax", "Dropout", "Sequential", "MSELoss", "NLLLoss", "CrossEntropyLoss",
]
