"""``ge.special``: the torch.special functions the engine has (``erf``)."""
from .api import erf

__all__ = ["erf"]
