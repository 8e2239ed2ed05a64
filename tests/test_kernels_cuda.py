"""What is particular to the CUDA backend (``tinydeeplab.kernels.cuda``), against NumPy.

The ops themselves are compared with the reference on every backend in ``tests/test_ops_*.py``. Here:
the tiled GEMM in both tile configurations and with split-K, the caching allocator, the simulator fix,
the SGD/clipping kernels, ``Module.to``, the backend's one-line error without a GPU, and a whole
DeepLabV3+ training step (logits, loss, every gradient, the weights after SGD) on cuda vs numpy.

Runs on Numba's CUDA simulator (``tests/conftest.py`` sets ``NUMBA_ENABLE_CUDASIM=1``), where every GPU
thread is a Python thread, so the shapes are tiny; ``TINYDEEPLAB_REAL_CUDA=1`` runs the same tests on a
GPU. Comparisons use the one ``assert_close`` of ``tests/backends.py``.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
from numba import cuda, float64

from backends import assert_close
from model_factories import randomize_batchnorm, tiny_segmenter
from tinydeeplab import backend
from tinydeeplab.kernels import cuda as G
from tinydeeplab.kernels.cuda import gemm as ggemm
from tinydeeplab.kernels.cuda.device import SIMULATED

try:
    G.check_available()
except ImportError as err:  # TINYDEEPLAB_REAL_CUDA=1 on a machine without a GPU
    pytest.skip(str(err), allow_module_level=True)

dev, host = G.to_device, G.to_host


def normal(rng, shape, dtype=np.float32):
    return rng.normal(size=shape).astype(dtype)


# ---------------------------------------------------------------------------------------------------
# Tiled GEMM
# ---------------------------------------------------------------------------------------------------

def check_gemm(rng, m, k, n, trans_a, trans_b, accumulate, **options):
    """``matmul`` on the device against ``op(A) @ op(B) (+ C)`` in NumPy."""
    a = normal(rng, (k, m) if trans_a else (m, k))
    b = normal(rng, (n, k) if trans_b else (k, n))
    c0 = normal(rng, (m, n))
    expected = (a.T if trans_a else a) @ (b.T if trans_b else b) + (c0 if accumulate else 0)
    out = dev(c0)
    ggemm.matmul(dev(a), dev(b), out, trans_a=trans_a, trans_b=trans_b, accumulate=accumulate, **options)
    assert_close(out, expected)


@pytest.mark.parametrize("tiles", [ggemm.SIMULATOR_TILES, ggemm.GPU_TILES], ids=["sim16", "gpu64"])
@pytest.mark.parametrize("trans_a,trans_b,accumulate", [(False, False, False), (True, False, True),
                                                        (False, True, False)])
def test_gemm_matches_numpy(rng, tiles, trans_a, trans_b, accumulate):
    check_gemm(rng, 37, 21, 19, trans_a, trans_b, accumulate, tiles=tiles)   # not multiples of any tile: edges


@pytest.mark.parametrize("trans_a,trans_b,accumulate", [(False, False, False), (True, False, True),
                                                        (False, True, True)])
@pytest.mark.parametrize("split_k", [2, 3, 50])
def test_gemm_split_k_matches_numpy(rng, split_k, trans_a, trans_b, accumulate):
    """K = 45 cut into 2, 3 or (more than its 3 steps of 16) 50 slices, each a block of its own, then summed."""
    check_gemm(rng, 21, 45, 18, trans_a, trans_b, accumulate, split_k=split_k)


def test_split_k_is_chosen_for_few_tiles_and_a_long_k(monkeypatch):
    monkeypatch.setattr(ggemm, "target_blocks", lambda: 264)             # an H200: 132 multiprocessors
    tiles = ggemm.GPU_TILES
    assert ggemm.choose_split_k(147, 64, 524288, tiles) == 88            # stem dW: 3 tiles -> 88 slices
    assert ggemm.choose_split_k(131072, 64, 576, tiles) == 1             # forward GEMM: 2048 tiles already
    assert ggemm.choose_split_k(147, 64, 1000, tiles) == 1000 // ggemm.SPLIT_K_MIN_DEPTH   # K too short to cut more


@pytest.mark.skipif(SIMULATED, reason="the simulator has no device memory manager")
def test_caching_allocator_reuses_a_freed_block():
    from tinydeeplab.kernels.cuda import allocator
    a = cuda.device_array((1000, 3), np.float32)
    pointer = a.device_ctypes_pointer.value
    del a
    before = allocator.stats()["hits"]
    b = cuda.device_array((3, 999), np.float32)                        # same size class (12 KiB)
    assert b.device_ctypes_pointer.value == pointer
    assert allocator.stats()["hits"] == before + 1
    b.copy_to_device(np.ones((3, 999), np.float32))
    assert b.copy_to_host().sum() == 3 * 999


def test_a_wrong_kernel_result_is_caught(rng):
    """The comparison can fail: a GEMM asked for A @ B but checked against A^T @ B must not pass."""
    a, b = normal(rng, (5, 5)), normal(rng, (5, 3))
    with pytest.raises(AssertionError):
        assert_close(ggemm.matmul(dev(a), dev(b)), a.T @ b)


# ---------------------------------------------------------------------------------------------------
# Optimizer kernels, Module.to, backend errors
# ---------------------------------------------------------------------------------------------------

def _conv_with_grads(seed):
    from tinydeeplab.nn import Conv2D
    r = np.random.default_rng(seed)
    conv = Conv2D(2, 3, 3, use_bias=True, seed=seed)
    conv.grads = {k: r.normal(size=v.shape).astype(np.float32) for k, v in conv.params.items()}
    return conv


@pytest.mark.parametrize("momentum,nesterov", [(0.9, False), (0.9, True), (0.0, False)])
def test_sgd_and_clipping_on_device_match_the_host(momentum, nesterov):
    from tinydeeplab.train.optim import SGD, clip_grad_norm
    on_host, on_gpu = _conv_with_grads(3), _conv_with_grads(3).to("cuda")
    on_gpu.grads = {k: dev(g) for k, g in on_host.grads.items()}
    norms = [clip_grad_norm(m, 0.5) for m in (on_host, on_gpu)]
    np.testing.assert_allclose(norms[1], norms[0], rtol=1e-6)
    opts = [SGD(m, 0.1, momentum=momentum, weight_decay=0.01, nesterov=nesterov) for m in (on_host, on_gpu)]
    for _ in range(2):
        for opt in opts:
            opt.step()
    for key, p in on_host.params.items():
        assert G.is_device_array(on_gpu.params[key])
        assert_close(on_gpu.params[key], p)
    for name, v in opts[0].state_dict().items():
        assert_close(opts[1].state_dict()[name], v)


def test_module_to_moves_params_and_buffers_and_back():
    from tinydeeplab.nn import BatchNorm
    bn = BatchNorm(3)
    bn.grads = {"gamma": np.ones(3, np.float32)}
    bn.to("cuda")
    assert all(G.is_device_array(v) for v in (*bn.params.values(), *bn.buffers.values())) and bn.grads == {}
    bn.to("numpy")
    assert all(isinstance(v, np.ndarray) for v in (*bn.params.values(), *bn.buffers.values()))
    with pytest.raises(ValueError, match="must be one of"):
        bn.to("gpu")


@pytest.mark.skipif(not SIMULATED, reason="a property of the CUDA simulator")
@pytest.mark.parametrize("use_fix", [True, False], ids=["locked", "simulator-own"])
def test_simulator_shared_array_survives_a_thread_switch(monkeypatch, use_fix):
    """A thread switch between the simulator's look-up of a block's shared array and its store gave two
    threads arrays of their own (tinydeeplab.kernels.cuda.simulator). Force that switch (sleep after the
    look-up): the locked method still shares one array; the simulator's own loses the other threads' writes."""
    import time

    from numba.cuda.simulator import kernelapi

    from tinydeeplab.kernels.cuda import simulator

    assert kernelapi.FakeCUDAShared.array is simulator.shared_array          # installed at import

    class SwitchAfterLookup(dict):
        def get(self, key, default=None):
            value = super().get(key, default)
            time.sleep(0.02)                                    # every other thread runs here (even on a loaded machine)
            return value

    init = kernelapi.FakeCUDAShared.__init__

    def slow_init(self, *args):
        init(self, *args)
        self._allocations = SwitchAfterLookup()

    monkeypatch.setattr(kernelapi.FakeCUDAShared, "__init__", slow_init)
    if not use_fix:
        monkeypatch.setattr(kernelapi.FakeCUDAShared, "array", simulator.original_shared_array)

    @cuda.jit
    def block_sum(base, out):
        s = cuda.shared.array(8, float64)
        t = cuda.threadIdx.x
        s[t] = base[0] + t
        cuda.syncthreads()
        if t == 0:
            acc = 0.0
            for i in range(8):
                acc += s[i]
            out[0] = acc

    base = np.array([np.random.default_rng().uniform(1, 2)])   # fresh values: stale memory cannot match
    out = np.zeros(1)
    block_sum[1, 8](base, out)
    expected = 0.0
    for t in range(8):                                          # the kernel's order of additions: exact
        expected += base[0] + t
    assert (out[0] == expected) == use_fix


@pytest.mark.skipif(not SIMULATED, reason="needs a machine where the simulator is the only CUDA")
def test_set_backend_cuda_without_gpu_fails_in_one_line():
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0"}
    code = "from tinydeeplab import backend; backend.set_backend('cuda')"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    if proc.returncode == 0:
        pytest.skip("a CUDA GPU is available here")
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("tinydeeplab.errors.BackendError: backend 'cuda' is not available (no usable CUDA GPU")
    assert "NUMBA_ENABLE_CUDASIM=1" in last
    assert "During handling" not in proc.stderr and proc.stderr.count("File ") <= 4   # a short traceback


# ---------------------------------------------------------------------------------------------------
# Whole model: one training step on cuda vs numpy
# ---------------------------------------------------------------------------------------------------

def _training_step(model, x, y, name, cw):
    """Forward, loss, backward, clip and one SGD step on backend ``name``; everything returned on the host."""
    from tinydeeplab.train.optim import SGD, clip_grad_norm
    with backend.use_backend(name):
        ops = backend.ops()
        if name == "cuda":
            model.to("cuda")
            x = dev(x)
        logits = model.forward(x, training=True)
        loss, cache = ops.softmax_cross_entropy_forward(logits, y, class_weights=cw)
        model.zero_grad()
        dx = model.backward(ops.softmax_cross_entropy_backward(1.0, cache))
        grads = {k: backend.to_numpy(g) for k, g in model.named_gradients()}
        norm = clip_grad_norm(model, 1e3)                  # large: measured, not clipped (clipping: SGD test)
        SGD(model, 0.05, momentum=0.9, weight_decay=1e-3).step()
        state = {k: backend.to_numpy(v) for k, v in model.state_dict().items()}
        if name == "cuda":
            assert G.is_device_array(logits) and G.is_device_array(dx)
            assert all(G.is_device_array(v) for v in model.state_dict().values())
            model.to("numpy")
        return {"logits": backend.to_numpy(logits), "loss": loss, "dx": backend.to_numpy(dx), "grads": grads,
                "norm": norm, "state": state}


def _compare_training_steps(make_model, x, y, cw):
    """cuda vs numpy. float32: round-off tolerances (the gradients of a deep net with batch norm amplify
    round-off; the CPU backend differs from numpy as much). float64: agreement to ~1e-9."""
    ref = _training_step(make_model(), x, y, "numpy", cw)
    got = _training_step(make_model(), x, y, "cuda", cw)
    f64 = x.dtype == np.float64
    tol = dict(rtol=1e-9, atol_scale=1e-9) if f64 else dict(rtol=1e-3, atol_scale=1e-4)
    close = (lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-8, atol=1e-9 * max(1.0, np.abs(e).max()))) \
        if f64 else assert_close
    close(got["logits"], ref["logits"])
    np.testing.assert_allclose(got["loss"], ref["loss"], rtol=1e-9 if f64 else 1e-5)
    assert got["dx"].dtype == ref["dx"].dtype
    np.testing.assert_allclose(got["dx"], ref["dx"], rtol=tol["rtol"],
                               atol=tol["atol_scale"] * max(1.0, np.abs(ref["dx"]).max()))
    assert got["grads"].keys() == ref["grads"].keys()
    for k in ref["grads"]:                                 # every weight gradient
        g, e = got["grads"][k], ref["grads"][k]
        assert g.dtype == e.dtype, k
        np.testing.assert_allclose(g, e, rtol=tol["rtol"], atol=tol["atol_scale"] * max(1.0, np.abs(e).max()),
                                   err_msg=k)
    np.testing.assert_allclose(got["norm"], ref["norm"], rtol=1e-8 if f64 else 1e-4)  # after them: a bad one is named
    for k in ref["state"]:                                 # weights after SGD, BN moving statistics
        close(got["state"][k], ref["state"][k])


def test_tiny_segmenter_training_step_matches_numpy():
    rng = np.random.default_rng(0)
    x = normal(rng, (2, 16, 16, 3))
    y = rng.integers(0, 3, (2, 16, 16))
    y[0, :2] = 255
    make = lambda: randomize_batchnorm(tiny_segmenter(), np.random.default_rng(1))  # noqa: E731
    _compare_training_steps(make, x, y, np.array([1.0, 2.0, 0.5], np.float32))


@pytest.mark.slow
def test_tiny_recipe_training_step_matches_numpy_in_float64():
    """``build_model("tiny")`` at 32x32, batch 2, dropout on. In float32 its P5 batch norms normalise 2 values
    per channel and amplify round-off ~1000x (cuda and cpu both differ from numpy by ~1e-3 in the gradient
    norm), so this whole-recipe check runs in float64, where every number must agree to ~1e-9."""
    from tinydeeplab.models.recipes import build_model
    rng = np.random.default_rng(0)
    x = normal(rng, (2, 32, 32, 3), np.float64)
    y = rng.integers(0, 4, (2, 32, 32))
    y[1, -3:] = 255

    def make():
        model = randomize_batchnorm(build_model("tiny", 4, seed=0), np.random.default_rng(1)).astype(np.float64)
        model.backbone.aspp.projection.dropout.rate = 0.2   # the same host-drawn mask on both backends
        return model
    _compare_training_steps(make, x, y, None)


def test_predict_is_host_in_host_out(rng):
    model = tiny_segmenter()
    x = normal(rng, (1, 16, 16, 3))
    with backend.use_backend("numpy"):
        ref = model.predict(x)
    model.to("cuda")
    with backend.use_backend("cuda"):
        out = model.predict(x)
    assert isinstance(out, np.ndarray)
    assert_close(out, ref)
