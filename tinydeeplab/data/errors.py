"""Exception types of :mod:`tinydeeplab.data` (defined in :mod:`tinydeeplab.errors`): each message says
which file or item and what was expected."""
from ..errors import DatasetError, LoaderError

__all__ = ["DatasetError", "LoaderError"]
