"""The one exception type for files tinydeeplab cannot use: it says which file and what is wrong."""


class PresetError(ValueError):
    """A preset, checkpoint or data file is missing, unreadable or inconsistent with the model."""
