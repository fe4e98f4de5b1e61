"""``ge.utils``: torch.utils' data loading (:mod:`.data`)."""
from . import data  # noqa: F401
