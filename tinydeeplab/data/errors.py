"""Exception types of :mod:`tinydeeplab.data`: each message says which file or item and what was expected."""


class DatasetError(ValueError):
    """A dataset is laid out wrongly, a file is missing or unreadable, or a label is out of range."""


class LoaderError(RuntimeError):
    """An item failed to load (or transform) in a :class:`~tinydeeplab.data.BatchLoader` worker.

    ``index`` is the dataset item that failed; the original exception is ``__cause__``, so the traceback
    shows where in the worker thread it happened.
    """

    def __init__(self, message: str, index: int | None = None):
        super().__init__(message)
        self.index = index
