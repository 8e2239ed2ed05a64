"""Data-parallel training over MPI: N processes (ranks), one model copy each, one global batch.

``mpiexec -n N tinydeeplab train ...`` (or ``srun``) starts N copies of the same program. Each rank:

1. reads its own slice of every global batch (:class:`~tinydeeplab.data.BatchLoader` with
   ``shard=(rank, N)``: the epoch order depends only on ``(seed, epoch)``, so the ranks agree on it
   without talking, and every image is seen once per epoch);
2. runs forward and backward on its slice; batch norm can reduce its statistics over all ranks
   (:func:`sync_batchnorm`, see :mod:`tinydeeplab.functional.batchnorm`);
3. averages the gradients with the other ranks (:class:`GradientBuckets`) and takes the same SGD step,
   so the weights stay identical everywhere.

Why averaging gives the big-batch gradient. The loss of the global batch is the weighted mean over all
valid pixels, ``L = sum_r S_r / W`` with ``S_r`` rank r's summed pixel losses, ``W_r`` its pixel weight
(the number of valid pixels without class weights) and ``W = sum_r W_r``. With ``L_r = S_r / W_r``::

    L = sum_r (W_r / W) L_r          dL/dtheta = (1 / N) sum_r  c_r dL_r/dtheta,   c_r = N W_r / W

so rank r back-propagates ``c_r`` (not 1) from its own loss and the ranks *average* the gradients; with
equal pixel counts ``c_r = 1``. One small allreduce of ``[S_r, W_r]`` per step gives every rank ``L``
and ``W``: the same loss everywhere, hence the same divergence decision (:meth:`World.agree` makes it
explicit).

Communication is MPI through mpi4py's uppercase, buffer-based calls (``Iallreduce``, ``Ibcast`` on NumPy
arrays: no pickling). Every wait polls ``Test`` until a deadline (:data:`TIMEOUT_S`): a rank that died,
hangs or stopped early makes the others raise :class:`~tinydeeplab.errors.DistributedError` instead of
waiting forever. mpi4py is imported only here and only for a run with more than one process, so
tinydeeplab needs it only for that (``pip install 'tinydeeplab[mpi]'``).

Single process (``World.single()``): every method is the identity and nothing is imported.

>>> world = World.single()
>>> world.size, world.rank, world.is_root
(1, 0, True)
>>> world.allreduce(np.array([1.0, 2.0]), "a test").tolist()
[1.0, 2.0]
>>> world.agree(None) is None
True
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

from ..backend import ops_for, to_numpy
from ..errors import DistributedError
from ..nn.hooks import gradients_ready

SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE", "SLURM_STEP_NUM_TASKS")
"""Environment variables that a launcher sets to the number of processes: MPICH's and Intel MPI's Hydra
(``PMI_SIZE``), Open MPI, MVAPICH, PMIx, and Slurm's ``srun``."""

TIMEOUT_S = float(os.environ.get("TINYDEEPLAB_MPI_TIMEOUT", 600))
"""Seconds a rank waits for one collective operation before it gives up (``$TINYDEEPLAB_MPI_TIMEOUT``)."""

BUCKET_MB = 25.0
"""Gradient bucket size in MB: big enough to reach the allreduce bandwidth, small enough to start early."""

SPIN_S = 0.005
"""Seconds a wait polls without sleeping (a sleeping rank does not progress the allreduce: latency)."""

MESSAGE_BYTES = 1024
"""Length of the fixed buffer in which :meth:`World.agree` sends a reason from one rank to all."""


def launched_size(environ=None) -> int:
    """Number of processes the launcher started (1 when not launched by mpiexec / srun).

    >>> launched_size({"PMI_SIZE": "4"}), launched_size({})
    (4, 1)
    """
    environ = os.environ if environ is None else environ
    for name in SIZE_VARIABLES:
        try:
            size = int(environ.get(name, ""))
        except ValueError:
            continue
        if size >= 1:
            return size
    return 1


_active = None                    # the World of this process once a distributed command set it up


def active_world():
    """The :class:`World` that :meth:`World.from_environment` set up in this process (None before)."""
    return _active


class World:
    """This process's place among the ranks of a run and the few collective operations training needs."""

    def __init__(self, comm=None, timeout: float = TIMEOUT_S):
        self.comm = comm
        self.rank = 0 if comm is None else comm.Get_rank()
        self.size = 1 if comm is None else comm.Get_size()
        self.timeout = float(timeout)

    @classmethod
    def single(cls) -> "World":
        return cls(None)

    @classmethod
    def from_environment(cls, distributed: bool | None = None, timeout: float = TIMEOUT_S) -> "World":
        """The MPI world when ``distributed`` is True, or None and a launcher started several processes;
        else a single process. Needs mpi4py (:class:`~tinydeeplab.errors.DistributedError` without it)."""
        global _active
        if distributed is False or (distributed is None and launched_size() <= 1):
            return cls.single()
        try:
            from mpi4py import MPI
        except ImportError as err:
            raise DistributedError(f"a distributed run needs mpi4py ({err}): pip install 'tinydeeplab[mpi]' "
                                   "(or mpi4py built against your cluster's MPI)") from None
        world = _active = cls(MPI.COMM_WORLD, timeout)
        if world.size > 1:
            world._install_excepthook()
        return world

    @property
    def is_root(self) -> bool:
        """Rank 0: the one that writes checkpoints, presets, metrics and the progress line."""
        return self.rank == 0

    @property
    def where(self) -> str:
        """``"rank 1 of 4"``: how messages name this process."""
        return f"rank {self.rank} of {self.size}"

    # -- waiting, with a deadline -----------------------------------------------------------------
    def wait(self, request, what: str, timeout: float | None = None) -> None:
        """Complete ``request`` (a non-blocking MPI operation), polling ``Test`` until ``timeout`` seconds
        (default :attr:`timeout`) have passed; then :class:`~tinydeeplab.errors.DistributedError`."""
        timeout = self.timeout if timeout is None else timeout
        start = time.monotonic()
        pause = 0.0                              # spin for the first few ms (MPI progresses inside Test) ...
        while not request.Test():
            now = time.monotonic()
            if now - start > timeout:
                raise DistributedError(f"{self.where}: {what} did not complete within {timeout:g} s: another "
                                       f"rank died, hangs or stopped early (see its error above)")
            if now - start > SPIN_S:             # ... then poll gently: a long wait is a slow rank anyway
                pause = min(max(pause * 2, 1e-4), 2e-3)
                time.sleep(pause)

    def allreduce(self, array, what: str, op: str = "SUM") -> np.ndarray:
        """Element-wise sum (or ``op`` "MAX", "MIN") of ``array`` over the ranks, a new array."""
        array = np.ascontiguousarray(array)
        if self.size == 1:
            return array.copy()
        from mpi4py import MPI

        out = np.empty_like(array)
        self.wait(self.comm.Iallreduce(array, out, op=getattr(MPI, op)), what)
        return out

    def barrier(self, what: str, timeout: float | None = None) -> None:
        """Wait until every rank got here (e.g. while rank 0 alone checks the dataset: ``timeout=math.inf``,
        as a failing rank 0 stops every rank itself)."""
        if self.size > 1:
            self.wait(self.comm.Ibarrier(), what, timeout)

    def broadcast_(self, array, what: str, root: int = 0) -> np.ndarray:
        """Overwrite ``array`` (contiguous, in place) with rank ``root``'s copy; returns it."""
        if self.size > 1:
            self.wait(self.comm.Ibcast(array, root=root), what)
        return array

    def agree(self, problem: str | None) -> str | None:
        """A collective decision: None when no rank has a problem, else the problem of the lowest rank that
        has one, on every rank, so all ranks stop together with the same message."""
        if self.size == 1:
            return problem
        first = int(self.allreduce(np.array([self.rank if problem else self.size]), "the stop decision", "MIN")[0])
        if first == self.size:
            return None
        message = np.zeros(MESSAGE_BYTES, np.uint8)
        if self.rank == first:
            text = str(problem).encode()[:MESSAGE_BYTES]
            message[:len(text)] = np.frombuffer(text, np.uint8)
        self.broadcast_(message, "the stop message", root=first)
        return bytes(message).rstrip(b"\0").decode(errors="replace")

    def sum_statistics(self, local):
        """The ``reduce`` of synchronized batch norm: per-channel sums (k, C) float64 added over the ranks."""
        return self.allreduce(np.asarray(local, np.float64), "the batch-norm statistics allreduce")

    # -- failure ------------------------------------------------------------------------------
    def abort(self, code: int = 2) -> None:
        """Stop every rank of the run now (``MPI_Abort``): after this rank has said why, on one line."""
        sys.stderr.flush()
        sys.stdout.flush()
        if self.size > 1:
            self.comm.Abort(code)

    def _install_excepthook(self) -> None:
        """An unexpected exception (a bug) on one rank: its traceback, then stop all ranks (no hang)."""
        plain = sys.excepthook

        def hook(kind, value, tb):
            plain(kind, value, tb)
            print(f"tinydeeplab: {self.where} failed ({kind.__name__}); stopping every rank", file=sys.stderr)
            self.abort(1)
        sys.excepthook = hook


def fail_all(world, command: str, message: str, code: int = 2) -> int:
    """Print ``tinydeeplab CMD: error: rank R of N: message`` and stop every rank; returns ``code``."""
    if world is not None and world.size > 1 and not message.startswith("rank "):
        message = f"{world.where}: {message}"
    print(f"tinydeeplab {command}: error: {message}", file=sys.stderr)
    if world is not None:
        world.abort(code)
    return code


# -- the model: the same start, synchronized batch norm, averaged gradients -------------------------
def broadcast_state(model, world) -> None:
    """Give every rank rank 0's parameters and buffers (one message), whatever each rank built or loaded."""
    if world.size == 1:
        return
    slots = model.slots()
    arrays = {name: to_numpy(table[key]) for name, (table, key) in slots.items()}
    flat = np.concatenate([a.astype(np.float64).ravel() for a in arrays.values()])
    world.broadcast_(flat, "the initial weights broadcast")
    offset = 0
    for name, (table, key) in slots.items():
        a = arrays[name]
        table[key] = ops_for(table[key]).to_device(flat[offset:offset + a.size].reshape(a.shape).astype(a.dtype))
        offset += a.size


def average_buffers(model, world) -> None:
    """Average the batch-norm moving statistics over the ranks (without SyncBN each rank's differ), so
    that the checkpoint does not depend on which rank writes it."""
    if world.size == 1:
        return
    buffers = [(mod, key) for _, mod in model.modules() for key in mod.buffers]
    if not buffers:
        return
    host = [to_numpy(mod.buffers[key]) for mod, key in buffers]
    total = world.allreduce(np.concatenate([a.astype(np.float64).ravel() for a in host]),
                            "the moving-statistics allreduce") / world.size
    offset = 0
    for (mod, key), a in zip(buffers, host):
        mod.buffers[key] = ops_for(mod.buffers[key]).to_device(total[offset:offset + a.size].reshape(a.shape)
                                                                .astype(a.dtype))
        offset += a.size


def sync_batchnorm(model, world, enabled: bool = True) -> int:
    """Make every batch norm of ``model`` compute training statistics over all ranks (``enabled``), or over
    its own batch (not ``enabled``); returns the number of batch norms changed."""
    from ..nn.layers import BatchNorm

    reduce = world.sum_statistics if enabled and world.size > 1 else None
    norms = [mod for _, mod in model.modules() if isinstance(mod, BatchNorm)]
    for mod in norms:
        mod.sync = reduce
    return len(norms)


class GradientBuckets:
    """Average the gradients of ``model`` over the ranks, in buckets sent *during* the backward pass.

    The parameter-owning modules are cut, in reverse registration order (roughly the order in which the
    backward pass finishes them: the head first, the stem last), into buckets of about ``bucket_mb`` MB.
    :func:`~tinydeeplab.nn.hooks.gradients_ready` calls :meth:`_ready` after each module's backward; when
    a bucket's last module is done its gradients are packed into one flat buffer and a non-blocking
    ``Iallreduce`` starts, while backward goes on through the layers below. Buckets start strictly in
    index order (MPI needs the same collectives in the same order on every rank). After the backward
    the remaining buckets start, all are awaited, divided by N and copied back into ``grads``.

    ``stats`` after each step: ``backward_s`` (backward with the hooks), ``wait_s`` (time blocked after
    it: the communication that did not overlap), ``buckets``, ``bytes``.
    """

    def __init__(self, model, world, bucket_mb: float = BUCKET_MB):
        self.model, self.world = model, world
        owners = [mod for _, mod in model.modules() if mod.params][::-1]
        limit = max(float(bucket_mb), 1e-6) * 1e6
        self.buckets: list[list] = [[]]                  # [(module, key, offset, shape)] per bucket
        self.sizes: list[int] = [0]
        self.bucket_of: dict[int, int] = {}
        for mod in owners:
            if self.sizes[-1] * 4 >= limit:
                self.buckets.append([])
                self.sizes.append(0)
            for key, p in mod.params.items():
                self.buckets[-1].append((mod, key, self.sizes[-1], tuple(p.shape)))
                self.sizes[-1] += int(np.prod(p.shape))
            self.bucket_of[id(mod)] = len(self.buckets) - 1
        self.dtype = np.result_type(*[p.dtype for _, p in model.named_parameters()]) if owners else np.float32
        self.stats: dict = {}

    def backward(self, dout):
        """``model.backward(dout)`` with the gradients averaged over the ranks; returns the input gradient."""
        n = len(self.buckets)
        self._remaining = [len({id(m) for m, *_ in b}) for b in self.buckets]
        self._started, self._requests, self._sent, self._received = 0, [], [], []
        t0 = time.perf_counter()
        with gradients_ready(self.model, self._ready):
            dx = self.model.backward(dout)
        t1 = time.perf_counter()
        self._remaining = [0] * n                        # parameters the backward never reached: zeros
        self._start_in_order()
        for k, request in enumerate(self._requests):
            self.world.wait(request, f"the allreduce of gradient bucket {k + 1}/{n}")
        for bucket, received in zip(self.buckets, self._received):
            received /= self.world.size
            for mod, key, offset, shape in bucket:
                size = int(np.prod(shape))
                mod.grads[key] = ops_for(mod.params[key]).to_device(received[offset:offset + size].reshape(shape)
                                                                    .astype(mod.params[key].dtype))
        self.stats = {"backward_s": t1 - t0, "wait_s": time.perf_counter() - t1, "buckets": n,
                      "bytes": sum(self.sizes) * np.dtype(self.dtype).itemsize}
        return dx

    def _ready(self, name, module) -> None:
        k = self.bucket_of.get(id(module))
        if k is None:
            return
        self._remaining[k] -= 1
        self._start_in_order()
        if self._requests:                               # let MPI progress the ones in flight
            from mpi4py import MPI
            MPI.Request.Testall(self._requests)

    def _start_in_order(self) -> None:
        from mpi4py import MPI

        while self._started < len(self.buckets) and self._remaining[self._started] <= 0:
            k = self._started
            send = np.zeros(self.sizes[k], self.dtype)
            for mod, key, offset, shape in self.buckets[k]:
                g = mod.grads.get(key)
                if g is not None:
                    send[offset:offset + int(np.prod(shape))] = to_numpy(g).ravel()
            received = np.empty_like(send)
            self._requests.append(self.world.comm.Iallreduce(send, received, op=MPI.SUM))
            self._sent.append(send)                      # MPI reads it until the request completes
            self._received.append(received)
            self._started += 1


def loss_weights(world, loss: float, weight: float) -> tuple[float, float]:
    """``(global loss, c_r)`` from this rank's mean loss and pixel weight (see the module docstring)."""
    if world.size == 1:
        return loss, 1.0
    total_loss, total_weight = world.allreduce(np.array([loss * weight, weight], np.float64), "the loss allreduce")
    if total_weight <= 0:
        return 0.0, 0.0
    return float(total_loss / total_weight), float(world.size * weight / total_weight)
