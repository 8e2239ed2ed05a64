"""Mini-batches for training: shuffle, load, transform and stack items in a background thread.

A :class:`BatchLoader` yields ``(x, y)`` per batch:

* ``x`` (N, H, W, 3) **float32** model input ``image * scale + offset``, normalised by
  ``converter.normalize`` — pass the model's own ``converter=model.preprocessor`` so training and
  inference see the same numbers (per-channel values included); without one, ``scale``/``offset``
  (default ``1/127.5`` and ``-1``: pixels in -1..1); with ``scale=None, offset=None`` the raw **uint8** images;
* ``y`` (N, H, W) **int32** class indices, 255 = ignore.

Batches are prepared by one worker thread, ``prefetch`` batches ahead, while the caller computes (PIL
and NumPy release the GIL for the heavy parts).  ``prefetch=0`` loads in the calling thread (debugging).

Reproducibility: the order of epoch ``e`` is a permutation drawn from ``(seed, e)``, and item ``i`` is
transformed with its own generator ``numpy.random.default_rng([seed, e, i])``, so batches do not
depend on thread timing.  Each ``iter(loader)`` uses ``loader.epoch`` and then advances it by one;
``set_epoch(e)`` selects an epoch explicitly (call it before each epoch to make resuming exact).

>>> from tinydeeplab.data import SyntheticShapes, RandomCrop
>>> loader = BatchLoader(SyntheticShapes(6, size=(24, 24)), batch_size=4, transform=RandomCrop(16))
>>> len(loader)
1
>>> x, y = next(iter(loader))
>>> x.shape, x.dtype.name, y.shape, y.dtype.name
((4, 16, 16, 3), 'float32', (4, 16, 16), 'int32')

Data parallel (``shard=(rank, world_size)``): ``batch_size`` is the *global* batch. Every rank draws the
same epoch order and the same global batches, and takes its own consecutive slice of ``batch_size /
world_size`` items of each: over the ranks every image is seen once per epoch, and rank ``r`` of ``n``
sees exactly the items that one process would have at positions ``r*b .. (r+1)*b - 1`` of its batch
(with the same augmentation draws), whatever ``n`` is, so a run resumes with another number of ranks.

>>> loader = BatchLoader(SyntheticShapes(8, size=(8, 8)), batch_size=4, shard=(1, 2), shuffle=False)
>>> [b.tolist() for b in loader.batches(0)]
[[2, 3], [6, 7]]
"""
from __future__ import annotations

import queue
import threading

import numpy as np

from ..errors import TinyDeepLabError
from .files import one_line
from .errors import DatasetError, LoaderError


class BatchLoader:
    """Iterate a dataset in shuffled, transformed, stacked batches (see the module docstring).

    ``len(loader)`` is the number of batches per epoch (a short last batch is dropped when
    ``drop_last``).  Every item of a batch must end up the same size (use ``RandomCrop`` for training,
    or ``batch_size=1`` / ``PadTo`` / ``Resize`` for evaluation); otherwise a :class:`DatasetError` is
    raised.  An exception while loading or transforming an item is re-raised in the caller as a
    :class:`LoaderError` naming the item, with the original exception as its cause.
    """

    def __init__(self, dataset, batch_size: int, transform=None, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = True, prefetch: int = 2, scale=1 / 127.5, offset=-1.0, converter=None,
                 shard=None):
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if int(prefetch) < 0:
            raise ValueError(f"prefetch must be >= 0, got {prefetch}")
        if int(seed) < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.transform = transform
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.prefetch = int(prefetch)
        self.shard = None if shard is None else (int(shard[0]), int(shard[1]))     # (rank, world size)
        if self.shard is not None:
            rank, size = self.shard
            if not 0 <= rank < size:
                raise ValueError(f"shard must be (rank, world_size) with 0 <= rank < world_size, got {shard}")
            if self.batch_size % size:
                raise DatasetError(f"the global batch of {self.batch_size} images does not split evenly over "
                                   f"{size} processes; give a batch size that is a multiple of {size}")
        if converter is None and (scale is not None or offset is not None):
            from ..models.preprocessor import ImageConverter
            converter = ImageConverter(scale=scale, offset=offset)
        self.converter = converter                # normalises each batch (None: raw uint8 images)
        self.epoch = 0
        n = len(dataset)
        if n == 0:
            raise DatasetError(f"dataset {dataset!r} is empty")
        if len(self) == 0:
            raise DatasetError(f"dataset has {n} items, fewer than batch_size={self.batch_size} with "
                               f"drop_last=True: an epoch would have no batches")

    def __len__(self) -> int:
        n, b = len(self.dataset), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration use epoch ``epoch`` (its shuffle order and augmentation draws)."""
        if int(epoch) < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def order(self, epoch: int) -> np.ndarray:
        """Dataset indices in the order epoch ``epoch`` visits them.  (len(dataset),) int64."""
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, int(epoch)]).permutation(n)

    def batches(self, epoch: int) -> list[np.ndarray]:
        """The index arrays of the ``len(self)`` batches of epoch ``epoch`` (this rank's part with ``shard``)."""
        order, b = self.order(epoch), self.batch_size
        batches = [order[k * b:(k + 1) * b] for k in range(len(self))]
        if self.shard is None:
            return batches
        rank, size = self.shard
        return [batch[rank * len(batch) // size:(rank + 1) * len(batch) // size] for batch in batches]

    def load_item(self, index: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Item ``index`` as epoch ``epoch`` sees it: read, then transform with its own generator."""
        image, label = self.dataset[int(index)]
        if self.transform is not None:
            rng = np.random.default_rng([self.seed, int(epoch), int(index)])
            image, label = self.transform(image, label, rng)
        image, label = np.asarray(image), np.asarray(label)
        channels = getattr(self.dataset, "channels", 3)
        if image.ndim != 3 or image.shape[2] != channels or label.shape != image.shape[:2]:
            raise DatasetError(f"expected image (H, W, {channels}) and label (H, W), got {image.shape} and "
                               f"{label.shape}")
        return image, label

    def load_batch(self, indices, epoch: int, batch: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Load, transform and stack ``indices``.  Returns x (N, H, W, 3), y (N, H, W) int32."""
        images, labels = [], []
        for index in indices:
            try:
                image, label = self.load_item(index, epoch)
            except Exception as e:
                raise LoaderError(self._failure(int(index), epoch, batch, e), index=int(index)) from e
            if images and label.shape != labels[0].shape:
                raise DatasetError(
                    f"BatchLoader: items of one batch must have the same size, but item {int(indices[0])} "
                    f"is {labels[0].shape[0]}x{labels[0].shape[1]} and item {int(index)} is "
                    f"{label.shape[0]}x{label.shape[1]} (batch {batch}, epoch {epoch}); add a RandomCrop, "
                    f"Resize or PadTo transform, or use batch_size=1")
            images.append(image)
            labels.append(label)
        x = np.stack(images)                                                  # (N, H, W, C) uint8 (or stack dtype)
        if self.converter is not None:
            x = self.converter.normalize(x, copy=False)                        # (N, H, W, C) float32
        y = np.stack(labels).astype(np.int32)                                 # (N, H, W)
        return x, y

    def _failure(self, index: int, epoch: int, batch: int, err: Exception) -> str:
        """One line: the item (name and files), where in the run, and the cause, briefly.

        A project error (e.g. a label changed since the dataset was validated) already names its file;
        any other error gets its type and the item's files (when the dataset lists them).
        """
        try:
            name = f" ({self.dataset.names[index]!r})"
        except Exception:
            name = ""
        cause = one_line(err) or type(err).__name__
        if not isinstance(err, TinyDeepLabError):
            cause = f"{type(err).__name__}: {cause}"
        try:
            files = [str(p) for p in self.dataset.files(index)]
        except Exception:
            files = []
        if files and not any(f in cause for f in files):
            cause += f" (files {', '.join(files)})"
        return f"BatchLoader: dataset item {index}{name} (batch {batch}, epoch {epoch}) failed: {cause}"

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1
        batches = self.batches(epoch)
        if self.prefetch == 0:
            return (self.load_batch(idx, epoch, b) for b, idx in enumerate(batches))
        return self._threaded(batches, epoch)

    def _threaded(self, batches, epoch):
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    pass
            return False

        def work():
            for b, idx in enumerate(batches):
                if stop.is_set():
                    return
                try:
                    item = ("batch", self.load_batch(idx, epoch, b))
                except BaseException as e:  # noqa: BLE001 - handed to the consumer, never swallowed
                    put(("error", e))
                    return
                if not put(item):
                    return
            put(("done", None))

        thread = threading.Thread(target=work, name=f"BatchLoader-epoch{epoch}", daemon=True)
        thread.start()
        try:
            while True:
                try:
                    kind, payload = q.get(timeout=0.1)
                except queue.Empty:
                    if not thread.is_alive() and q.empty():
                        raise LoaderError("BatchLoader: the worker thread ended without a batch or an error")
                    continue
                if kind == "done":
                    break
                if kind == "error":
                    raise payload
                yield payload
        finally:
            stop.set()           # an early break or an error: the worker stops after its current batch

    def __repr__(self) -> str:
        return (f"BatchLoader({self.dataset!r}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"seed={self.seed}, epoch={self.epoch}, prefetch={self.prefetch})")
