"""The kernel-launch counter (tinydeeplab.kernels.cuda.launches), on the CUDA simulator."""
import numpy as np
import pytest
from numba import cuda

from model_factories import tiny_segmenter
from tinydeeplab import backend
from tinydeeplab.kernels import cuda as G
from tinydeeplab.kernels.cuda import gemm as ggemm
from tinydeeplab.kernels.cuda.launches import count_launches


def test_a_gemm_is_one_launch_and_a_split_gemm_two():
    rng = np.random.default_rng(0)
    a = G.to_device(rng.standard_normal((5, 40)).astype(np.float32))
    b = G.to_device(rng.standard_normal((40, 3)).astype(np.float32))
    with count_launches() as plain:
        c1 = ggemm.matmul(a, b, split_k=1)
    with count_launches() as split:
        c2 = ggemm.matmul(a, b, split_k=2)
    assert sum(plain.values()) == 1 and sum(split.values()) == 2
    assert split - plain == {"_sum_splits": 1}                  # the second launch adds the splits
    expected = G.to_host(a) @ G.to_host(b)
    np.testing.assert_allclose(G.to_host(c1), expected, rtol=1e-5, atol=1e-5)   # executed, not only counted
    np.testing.assert_allclose(G.to_host(c2), expected, rtol=1e-5, atol=1e-5)


def test_device_functions_are_not_launches_and_the_method_is_put_back():
    @cuda.jit(device=True)
    def twice(v):
        return 2 * v

    @cuda.jit
    def double_all(x):
        i = cuda.grid(1)
        if i < x.size:
            x[i] = twice(x[i])

    x = G.to_device(np.arange(4, dtype=np.float32))
    with count_launches() as counts:
        double_all[1, 4](x)
        double_all[1, 4](x)
    double_all[1, 4](x)                                          # after the block: not counted
    assert counts == {"double_all": 2}
    np.testing.assert_array_equal(G.to_host(x), 8 * np.arange(4, dtype=np.float32))


def test_not_executing_skips_the_kernel():
    @cuda.jit
    def fill(x):
        i = cuda.grid(1)
        if i < x.size:
            x[i] = 7.0

    x = G.to_device(np.zeros(3, np.float32))
    with count_launches(execute=False) as counts:
        fill[1, 3](x)
    assert counts == {"fill": 1}
    np.testing.assert_array_equal(G.to_host(x), np.zeros(3, np.float32))


def _step_launches(model, x, y, training, execute):
    """Launches of one inference forward, or one training step (forward, loss, backward), on cuda."""
    with backend.use_backend("cuda"):
        ops = backend.ops()
        model.to("cuda")
        xd = ops.to_device(x)
        with count_launches(execute=execute) as counts:
            logits = model.forward(xd, training=training)
            if training:
                _, cache = ops.softmax_cross_entropy_forward(logits, y)
                model.zero_grad()
                model.backward(ops.softmax_cross_entropy_backward(1.0, cache))
        model.to("numpy")
    return counts


@pytest.mark.slow
@pytest.mark.parametrize("training", [False, True])
def test_counting_without_executing_gives_the_executed_count(training):
    """The host code between launches depends on shapes only, so the dry count is the real one."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 8, 8, 3)).astype(np.float32)
    y = rng.integers(0, 3, (2, 8, 8))
    executed = _step_launches(tiny_segmenter(), x, y, training, execute=True)
    dry = _step_launches(tiny_segmenter(), x, y, training, execute=False)
    assert sum(executed.values()) > 20
    assert dry == executed


def test_the_gpu_benchmark_counts_one_gemm_per_conv_and_two_kernels_per_batch_norm(monkeypatch):
    """bench_gpu.py --count-launches on the ResNet50 DeepLabV3+ (inference, not executed, 32x32)."""
    from collections import Counter
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_gpu
    from tinydeeplab.models.recipes import build_model

    previous = backend.get_backend()
    try:
        counts = bench_gpu.count_launches_per_call(["infer1"], size=32)["infer1"]
    finally:
        backend.set_backend(previous)
    layers = Counter(type(m).__name__ for _, m in build_model("resnet50", 21).modules())
    assert counts["gemm"] == layers["Conv2D"]
    assert counts["_coefficients"] == counts["_normalize"] == layers["BatchNorm"]
