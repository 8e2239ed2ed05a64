"""The preset error type (defined with the rest of the hierarchy in :mod:`tinydeeplab.errors`)."""
from ..errors import PresetError

__all__ = ["PresetError"]
