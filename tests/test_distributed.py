"""Data parallel over MPI, proven with two ranks (``mpiexec -n 2``, which fits the 2-core CI machine).

The ranks run ``tests/mpi_checks.py`` in a subprocess; this process runs the same setup alone and
compares:

* with SyncBN, 2 ranks x batch 2 == 1 process x batch 4: epoch losses, last gradients and weights (and
  moving statistics) after 4 steps, to float32 round-off; the two ranks hold identical weights;
* without SyncBN, each rank's batch-norm statistics are those of one process run on its shard;
* a checkpoint written by 2 ranks resumes in 1 process (same global batch) to the run that never stopped;
* a rank that raises stops every rank with one line naming it, the last checkpoint intact; a rank that
  never answers makes the others give up after the timeout (no hang);
* ``tinydeeplab train`` and ``evaluate`` from the command line on 2 ranks; the evaluation's mIoU and
  confusion matrix equal the single-process ones.

Needs ``pip install '.[mpi]'`` (mpi4py and the mpich wheel's ``mpiexec``); CI installs it, and there a
missing MPI fails instead of skipping.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import mpi_checks as M  # noqa: E402

from tinydeeplab.data import BatchLoader  # noqa: E402
from tinydeeplab.train.checkpoint import load_checkpoint  # noqa: E402
from tinydeeplab.train.distributed import launched_size  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _mpiexec() -> str | None:
    beside = Path(sys.executable).parent / "mpiexec"          # the mpich wheel's, in the same environment
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def _why_not() -> str | None:
    if _mpiexec() is None:
        return "no mpiexec (pip install '.[mpi]' brings the mpich wheel's)"
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install '.[mpi]')"
    return None


if _why_not() is not None and os.environ.get("CI"):
    raise RuntimeError(f"CI must run the MPI tests, but {_why_not()}")
needs_mpi = pytest.mark.skipif(_why_not() is not None, reason=str(_why_not()))


def mpirun(*args, n=2, timeout=600, expect=0) -> subprocess.CompletedProcess:
    """``mpiexec -n 2 python ARGS`` from the repository root, one thread per rank."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    env = {k: v for k, v in env.items() if k not in ("PMI_SIZE", "PMI_RANK", "PMI_FD")}
    proc = subprocess.run([_mpiexec(), "-n", str(n), sys.executable, *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if expect is not None and proc.returncode != expect:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ranks")
    mpirun(REPO / "tests" / "mpi_checks.py", "train", out)
    return out


def _close(got, want, what, rtol, floor=1e-6):
    """``got`` within ``rtol`` of the largest entry of ``want`` (at least ``floor``)."""
    scale = max(float(np.max(np.abs(want))), floor)
    worst = float(np.max(np.abs(np.asarray(got, np.float64) - want)))
    assert worst <= rtol * scale, f"{what}: max |diff| {worst:.3g} > {rtol:g} x max |value| {scale:.3g}"


@needs_mpi
def test_sync_bn_two_ranks_equal_one_process_with_the_global_batch(ranks, tmp_path):
    net = M.model()
    history = M.trainer(tmp_path, 2, None, net).fit()          # 2 epochs x 2 steps of the global batch 4
    want = {**M.arrays(net), "loss": np.array([r["train_loss"] for r in history])}
    r0, r1 = (np.load(ranks / f"rank{r}.npz") for r in (0, 1))
    for key in want:
        if key.startswith(("w:", "g:")):
            assert np.array_equal(r0[key], r1[key]), f"{key}: the ranks differ"
    _close(r0["loss"], want["loss"], "epoch losses", 1e-5)
    # a gradient's round-off follows the step's gradient scale, not one small array's (a BN beta near 0)
    g_scale = max(float(np.max(np.abs(v))) for k, v in want.items() if k.startswith("g:"))
    for key, value in want.items():
        if key.startswith("g:"):
            _close(r0[key], value, key, 3e-3, floor=g_scale)   # after 4 steps of training: amplified round-off
        else:
            _close(r0[key], value, key, 1e-4, floor=0.05)


@needs_mpi
def test_without_sync_bn_each_rank_has_its_own_shards_statistics(ranks):
    loader = BatchLoader(M.dataset(), M.GLOBAL_BATCH, shuffle=False, prefetch=0, converter=M.model().preprocessor)
    x, _ = next(iter(loader))
    half = M.GLOBAL_BATCH // 2
    for r in (0, 1):
        got = np.load(ranks / f"rank{r}.npz")
        shard = x[r * half:(r + 1) * half]
        assert np.array_equal(got["x"], shard)                  # its consecutive half of the global batch
        want = M.batch_statistics(M.model(), shard)
        for key, value in want.items():
            np.testing.assert_allclose(got["bn:" + key], value, rtol=1e-6, atol=1e-7, err_msg=key)
        other = M.batch_statistics(M.model(), x)                # not the global batch's
        assert any(not np.allclose(got["bn:" + k], v) for k, v in other.items())


@needs_mpi
def test_a_checkpoint_of_two_ranks_resumes_in_one_process(ranks, tmp_path):
    resumed = M.trainer(ranks / "resume", 2)
    assert resumed.resume()["epoch"] == 1                       # written by rank 0 of 2 after epoch 1
    resumed.fit()                                               # epoch 2 in one process, batch 4
    straight = M.trainer(tmp_path, 2)
    straight.fit()
    got, want = resumed.model.state_dict(), straight.model.state_dict()
    for key in want:
        _close(got[key], want[key], key, 1e-4, floor=0.05)


@needs_mpi
def test_a_failing_rank_stops_every_rank_with_one_line_and_keeps_the_checkpoint(tmp_path):
    proc = mpirun(REPO / "tests" / "mpi_checks.py", "fail", tmp_path, expect=None, timeout=300)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.startswith("tinydeeplab train: error:")]
    assert len(lines) == 1, proc.stderr
    assert "rank 1 of 2" in lines[0] and "truncated PNG (injected failure)" in lines[0]
    checkpoint = tmp_path / "run" / "checkpoint.npz"
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())[-1]["epoch"] == 1
    assert load_checkpoint(checkpoint, M.model())["epoch"] == 1          # intact: the last good epoch


@needs_mpi
def test_a_rank_that_never_answers_makes_the_others_give_up_after_the_timeout(tmp_path):
    proc = mpirun(REPO / "tests" / "mpi_checks.py", "hang", tmp_path, 2, expect=None, timeout=100)
    assert proc.returncode != 0
    assert "rank 0 of 2: the test allreduce did not complete within 2 s" in proc.stderr
    assert float((tmp_path / "elapsed.txt").read_text()) < 30


@needs_mpi
def test_train_and_evaluate_on_two_ranks_from_the_command_line(tmp_path):
    from test_cli import _folder_dataset
    from tinydeeplab.cli import main

    data = _folder_dataset(tmp_path / "data", n=4, size=32)
    common = ["--dataset", "folder", "--data", str(data), "--num-classes", "2"]
    out = tmp_path / "run"
    proc = mpirun("-m", "tinydeeplab.cli", "train", *common, "--model", "tiny", "--epochs", "1", "--batch-size", "2",
                  "--crop", "32", "32", "--warmup", "0", "--out", out)
    assert "on 2 processes (1 per process, synchronized batch norm)" in proc.stderr
    assert (out / "checkpoint.npz").exists() and (out / "preset").is_dir()
    assert proc.stdout.count("done:") == 1                         # rank 0 alone reports
    ev = ["evaluate", "--checkpoint", out / "checkpoint.npz", *common, "--split", "val"]
    mpirun("-m", "tinydeeplab.cli", *ev, "--json", tmp_path / "two.json")
    assert main([str(a) for a in ev] + ["--json", str(tmp_path / "one.json")]) == 0
    two, one = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("two", "one"))
    assert two["confusion"] == one["confusion"] and two["miou"] == one["miou"]
    assert sum(map(sum, one["confusion"])) > 0


def test_the_launcher_is_detected_from_its_environment():
    assert launched_size({"PMI_SIZE": "2"}) == 2
    assert launched_size({"OMPI_COMM_WORLD_SIZE": "8"}) == 8
    assert launched_size({"SLURM_STEP_NUM_TASKS": "64"}) == 64
    assert launched_size({"PMI_SIZE": "junk"}) == 1 and launched_size({}) == 1
