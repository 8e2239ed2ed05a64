"""The exceptions tinydeeplab raises for things a user can fix: one hierarchy, one message style.

Every message is one line that says *what* is wrong and *where*: the file, the config key, the
command-line option or the dataset item. The command line prints ``tinydeeplab CMD: error: <message>``
and exits with status 2 for any of these (and for any ``OSError``); a traceback means a bug.

::

    TinyDeepLabError                 base of everything below (a ValueError, as bad input is)
    ├── PresetError                  a preset directory / config / weight file
    ├── DatasetError                 a dataset's layout, an image or label file, an item
    │   └── LoaderError              an item that failed inside the batch loader (``index``)
    ├── CheckpointError              a checkpoint file, or a run directory's state
    ├── TrainingError                a training run that cannot go on
    │   ├── DivergenceError          the loss or the gradient norm became non-finite or exploded
    │   └── DistributedError         a data-parallel run: MPI missing, or another process failed or hangs
    └── OptionError                  a command-line option or a function argument out of range
        └── BackendError             a backend that is unknown or cannot run here (also an ImportError)

>>> try:
...     raise CheckpointError("runs/a/checkpoint.npz: truncated")
... except TinyDeepLabError as err:
...     print(type(err).__name__, "-", err)
CheckpointError - runs/a/checkpoint.npz: truncated
"""
from __future__ import annotations


class TinyDeepLabError(ValueError):
    """Something the user can fix; the message names the file, key, option or item."""


class PresetError(TinyDeepLabError):
    """A preset, its config or weight files are missing, unreadable or inconsistent with the model."""


class DatasetError(TinyDeepLabError):
    """A dataset is laid out wrongly, a file is missing or unreadable, or a label is out of range."""


class LoaderError(DatasetError):
    """An item failed to load (or transform) in a :class:`~tinydeeplab.data.BatchLoader` worker.

    ``index`` is the dataset item that failed; the original exception is ``__cause__``.
    """

    def __init__(self, message: str, index: int | None = None):
        super().__init__(message)
        self.index = index


class CheckpointError(TinyDeepLabError):
    """A checkpoint is missing, corrupt, non-finite or does not match; or a run directory is in use."""


class TrainingError(TinyDeepLabError):
    """A training run cannot start or go on (e.g. its settings conflict with the run it resumes)."""


class DivergenceError(TrainingError, FloatingPointError):
    """The loss (or the gradient norm) became non-finite or exploded; the message names epoch and step."""


class DistributedError(TrainingError):
    """A data-parallel (MPI) run cannot go on: mpi4py is missing, or a collective operation did not complete
    in time (another process died, hangs or stopped); the message names this process's rank."""


class OptionError(TinyDeepLabError):
    """A command-line option (or an argument) has a value that cannot work; the message names it."""


class BackendError(OptionError, ImportError):
    """The selected backend is unknown or cannot run on this machine (e.g. cuda without a GPU)."""
