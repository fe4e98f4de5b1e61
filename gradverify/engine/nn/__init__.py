"""``ge.nn``: modules, layers and losses shaped like ``torch.nn``."""
from . import functional, init, utils
from .layers import (ELU, GELU, BatchNorm1d, BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, Dropout, Embedding,
                     Flatten, Identity, L1Loss, LayerNorm, LeakyReLU, Linear, LogSoftmax, ModuleDict, ModuleList,
                     MSELoss, NLLLoss, ParameterList, ReLU, Sequential, Sigmoid, SiLU, SmoothL1Loss, Softmax, Softplus,
                     Tanh)
from .module import Module, Parameter

__all__ = [
    "functional", "init", "utils", "Module", "Parameter", "Linear", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softplus",
    "Softmax", "LogSoftmax", "Dropout", "Sequential", "MSELoss", "NLLLoss", "CrossEntropyLoss", "ModuleList",
    "ModuleDict", "ParameterList", "Identity", "Flatten", "GELU", "SiLU", "ELU", "Embedding", "LayerNorm", "L1Loss",
    "SmoothL1Loss", "BCELoss", "BCEWithLogitsLoss", "BatchNorm1d",
]
