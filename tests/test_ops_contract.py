"""The op contract every backend keeps (``docs/ops.md``): the reference's names and signatures, and the
reference's validation, i.e. the same ``ValueError`` (type and message) for the same bad call, forward
and backward. The per-op comparisons of results are in the other ``test_ops_*.py`` modules."""
import importlib
import inspect

import numpy as np
import pytest

from backends import BACKENDS, NEEDS_CUDA, host, on, ops
from strategies import normal
from tinydeeplab import backend
from tinydeeplab import functional as R
from tinydeeplab.kernels import cpu as K


@pytest.mark.parametrize("name", BACKENDS)
def test_backend_exports_the_reference_ops_with_the_same_signatures(name):
    mod = ops(name)
    assert mod is importlib.import_module(f"tinydeeplab.kernels.{name}") and backend.ops("numpy") is R
    for op in R.__all__:
        assert hasattr(mod, op), op
        if callable(getattr(R, op)):
            assert inspect.signature(getattr(mod, op)) == inspect.signature(getattr(R, op)), op


def test_cpu_backend_exports_exactly_the_reference_names():
    assert backend.ops("cpu") is K
    assert sorted(K.__all__) == sorted(R.__all__)
    public = lambda m: {n for n in dir(m) if not n.startswith("_") and callable(getattr(m, n))  # noqa: E731
                        and not inspect.ismodule(getattr(m, n))}
    assert public(K) == public(R)


def test_cpu_ops_without_a_kernel_are_the_reference_functions():
    for op in ("concat", "split", "add", "zero_pad2d", "global_avg_pool", "dropout", "channel_scale",
               "stochastic_depth"):
        for half in ("forward", "backward"):
            assert getattr(K, f"{op}_{half}") is getattr(R, f"{op}_{half}")
    assert K.moving_average is R.moving_average


@NEEDS_CUDA
def test_cuda_refuses_host_arrays_with_a_clear_message():
    with pytest.raises(ValueError, match="device array on the cuda backend.*to_device"):
        ops("cuda").relu_forward(np.zeros((1, 2, 2, 1), np.float32))


# ---------------------------------------------------------------------------------------------------
# Bad input: the same ValueError (type and message) as the reference
# ---------------------------------------------------------------------------------------------------

def _f32(*shape):
    return np.zeros(shape, np.float32)


BAD_CALLS = [
    ("conv2d_forward", (_f32(1, 4, 4), _f32(3, 3, 3, 2)), {}),                      # x not 4-D
    ("conv2d_forward", (np.zeros((1, 4, 4, 3), np.int32), _f32(3, 3, 3, 2)), {}),   # integer x
    ("conv2d_forward", (_f32(1, 4, 4, 3), _f32(3, 3, 2, 2)), {}),                   # channel mismatch
    ("conv2d_forward", (_f32(1, 4, 4, 3), _f32(3, 3, 3, 2), _f32(3)), {}),          # bias length
    ("conv2d_forward", (_f32(1, 4, 4, 3), np.zeros((3, 3, 3, 2))), {}),             # mixed dtypes
    ("conv2d_forward", (_f32(1, 4, 4, 3), _f32(3, 3, 3, 2)), {"stride": 0}),
    ("conv2d_forward", (_f32(1, 4, 4, 3), _f32(3, 3, 3, 2)), {"dilation": (1, -1)}),
    ("conv2d_forward", (_f32(1, 4, 4, 3), _f32(3, 3, 3, 2)), {"padding": "full"}),
    ("conv2d_forward", (_f32(1, 4, 4, 3), _f32(3, 3, 3, 2)), {"padding": ((1, 2), 3)}),
    ("conv2d_forward", (_f32(1, 2, 2, 3), _f32(3, 3, 3, 2)), {"padding": "valid"}),  # window too big
    ("batchnorm_forward", (_f32(1, 2, 2, 3), _f32(3), _f32(3), _f32(3), _f32(2)), {"training": True}),
    ("batchnorm_forward", (_f32(1, 2, 2, 3), _f32(3), _f32(3), _f32(3), _f32(3)), {"training": 1}),
    ("batchnorm_forward", (_f32(1, 2, 2, 3), _f32(3), _f32(3), _f32(3), _f32(3)),
     {"training": False, "eps": -1.0}),
    ("moving_average", (_f32(3), _f32(2), 0.9), {}),
    ("moving_average", (_f32(3), _f32(3), 1.5), {}),
    ("relu_forward", ([1.0, 2.0],), {}),
    ("relu_forward", (np.zeros((2, 2), np.int32),), {}),
    ("dropout_forward", (_f32(1, 2, 2, 1),), {"rate": 1.0, "rng": np.random.default_rng(0)}),
    ("max_pool2d_forward", (_f32(1, 2, 2, 1),), {"pool_size": 3, "stride": 1}),
    ("max_pool2d_forward", (_f32(1, 4, 4, 1),), {"pool_size": 0}),
    ("max_pool2d_forward", (_f32(1, 4, 4, 1),), {"pool_size": 2, "padding": 2}),     # window in padding
    ("bilinear_resize_forward", (_f32(1, 4, 4, 1), (0, 3)), {}),
    ("bilinear_resize_forward", (_f32(4, 4, 1), (2, 3)), {}),
    ("upsample_bilinear_forward", (_f32(1, 4, 4, 1), 1.5), {}),
    ("zero_pad2d_forward", (_f32(1, 4, 4, 1), "same"), {}),
    ("concat_forward", ([_f32(1, 2, 2, 1), _f32(1, 3, 2, 1)],), {}),                # N, H, W differ
    ("split_forward", (_f32(1, 2, 2, 3), [1, 1]), {}),                              # sizes do not add up
    ("add_forward", (_f32(1, 2, 2, 3), _f32(1, 2, 2, 2)), {}),
    ("softmax_cross_entropy_forward", (_f32(1, 2, 2, 3), np.array([[[0, 1], [2, 3]]])), {}),
    ("softmax_cross_entropy_forward", (_f32(1, 2, 2, 3), np.zeros((1, 2, 2), np.float32)), {}),
    ("softmax_cross_entropy_forward", (_f32(1, 2, 2, 3), np.zeros((1, 2, 3), np.int64)), {}),
    ("softmax_cross_entropy_forward", (_f32(1, 2, 2, 3), np.zeros((1, 2, 2), np.int64)),
     {"class_weights": np.array([1.0, -1.0, 1.0], np.float32)}),
    ("softmax_cross_entropy_forward", (_f32(1, 2, 2, 3), np.zeros((1, 2, 2), np.int64)),
     {"class_weights": _f32(4)}),
    ("sigmoid_binary_cross_entropy_forward", (_f32(1, 2, 2, 3), np.zeros((1, 2, 2), np.int64)), {}),  # 3 logits
    ("sigmoid_binary_cross_entropy_forward", (_f32(1, 2, 2, 1), np.zeros((1, 2, 2), np.int64)), {"pos_weight": -1}),
    ("dice_loss_forward", (_f32(1, 2, 2, 1), np.array([[[0, 1], [2, 0]]])), {}),            # label 2
    ("dice_loss_forward", (_f32(1, 2, 2, 1), np.zeros((1, 2, 2), np.int64)), {"smooth": -1.0}),
    ("sigmoid_focal_loss_forward", (_f32(1, 2, 2, 1), np.zeros((1, 2, 2), np.float32)), {}),  # float labels
    ("sigmoid_focal_loss_forward", (_f32(1, 2, 2, 1), np.zeros((1, 2, 2), np.int64)), {"alpha": 2.0}),
    ("depthwise_conv2d_forward", (_f32(1, 4, 4), _f32(3, 3, 3, 1)), {}),             # x not 4-D
    ("depthwise_conv2d_forward", (_f32(1, 4, 4, 3), _f32(3, 3, 2, 1)), {}),          # channel mismatch
    ("depthwise_conv2d_forward", (_f32(1, 4, 4, 3), _f32(3, 3, 3, 2), _f32(3)), {}),  # bias is C * M long
    ("depthwise_conv2d_forward", (_f32(1, 4, 4, 3), np.zeros((3, 3, 3, 1))), {}),    # mixed dtypes
    ("depthwise_conv2d_forward", (_f32(1, 4, 4, 3), _f32(3, 3, 3, 1)), {"stride": 0}),
    ("depthwise_conv2d_forward", (_f32(1, 4, 4, 3), _f32(3, 3, 3, 1)), {"padding": "full"}),
    ("depthwise_conv2d_forward", (_f32(1, 2, 2, 3), _f32(3, 3, 3, 1)), {"padding": "valid"}),  # window too big
    ("sigmoid_forward", ([1.0, 2.0],), {}),
    ("swish_forward", (np.zeros((2, 2), np.int32),), {}),
    ("hard_sigmoid_forward", (np.zeros((2, 2), np.int64),), {}),
    ("hard_swish_forward", ("x",), {}),
    ("leaky_relu_forward", (_f32(1, 2, 2, 1),), {"negative_slope": "0.2"}),
    ("leaky_relu_forward", (_f32(1, 2, 2, 1),), {"negative_slope": float("inf")}),
    ("avg_pool2d_forward", (_f32(1, 4, 4, 1),), {"padding": 1}),                     # Keras modes only
    ("avg_pool2d_forward", (_f32(1, 4, 4, 1),), {"pool_size": 0}),
    ("avg_pool2d_forward", (_f32(1, 2, 2, 1),), {"pool_size": 3}),                   # window too big
    ("avg_pool2d_forward", (_f32(2, 4),), {}),
    ("channel_scale_forward", (_f32(2, 4, 4, 3), _f32(1, 1, 1, 3)), {}),             # one scale for two samples
    ("channel_scale_forward", (_f32(2, 4, 4, 3), _f32(2, 4, 4, 3)), {}),
    ("channel_scale_forward", (_f32(1, 4, 4, 3), np.zeros((1, 1, 1, 3))), {}),       # mixed dtypes
    ("stochastic_depth_forward", (_f32(2, 2, 2, 1),), {"rate": 1.0, "rng": np.random.default_rng(0)}),
    ("stochastic_depth_forward", (_f32(2, 2, 2, 1),), {"rate": 0.5, "rng": np.random.default_rng(0),
                                                       "training": 1}),
]


def _error_message(fn, *args, **kwargs):
    with pytest.raises(ValueError) as info:
        fn(*args, **kwargs)
    return str(info.value)


def _on(name, value):
    """Arrays (also inside a list, as concat takes them) moved to backend ``name``."""
    if isinstance(value, list):
        return [_on(name, v) for v in value]
    return on(name, value)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("op,args,kwargs", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_forward_input_raises_the_reference_error(name, op, args, kwargs):
    moved = [_on(name, a) for a in args]
    moved_kw = {k: _on(name, v) for k, v in kwargs.items()}
    assert _error_message(getattr(ops(name), op), *moved, **moved_kw) == _error_message(getattr(R, op), *args, **kwargs)


@pytest.mark.parametrize("name", BACKENDS)
def test_bad_backward_input_raises_the_reference_error(rng, name):
    x = normal(rng, (1, 4, 4, 2), np.float32)
    w = normal(rng, (3, 3, 2, 3), np.float32)
    p = [np.ones(2, np.float32)] * 4
    mod = ops(name)
    cases = [
        ("conv2d", (x, w), {}, _f32(1, 4, 4, 2)),                 # wrong dy shape
        ("batchnorm", (x, *p), {"training": True}, _f32(1, 4, 4, 3)),
        ("relu", (x,), {}, np.zeros((1, 4, 4, 2), np.int64)),     # integer dy
        ("max_pool2d", (x,), {"pool_size": 2}, _f32(1, 3, 3, 2)),
        ("bilinear_resize", (x, (3, 5)), {}, _f32(1, 5, 3, 2)),
        ("zero_pad2d", (x, 1), {}, _f32(1, 4, 4, 2)),
        ("add", (x, x), {}, _f32(1, 4, 4, 3)),
        ("depthwise_conv2d", (x, w[..., :2]), {}, _f32(1, 4, 4, 2)),       # dy has C channels, not C * M
        ("sigmoid", (x,), {}, np.zeros((1, 4, 4, 2), np.int64)),
        ("hard_swish", (x,), {}, _f32(1, 4, 4, 1)),
        ("leaky_relu", (x,), {}, _f32(4, 4, 2)),
        ("avg_pool2d", (x,), {"pool_size": 2}, _f32(1, 3, 3, 2)),
        ("channel_scale", (x, p[0].reshape(1, 1, 1, 2)), {}, _f32(1, 4, 4, 3)),
        ("stochastic_depth", (x,), {"rate": 0.5, "rng": np.random.default_rng(0)}, _f32(2, 4, 4, 2)),
    ]
    for op, args, kwargs, bad_dy in cases:
        _, cache = getattr(mod, op + "_forward")(*(_on(name, a) for a in args), **kwargs)
        _, c_ref = getattr(R, op + "_forward")(*args, **kwargs)
        assert (_error_message(getattr(mod, op + "_backward"), on(name, bad_dy), cache)
                == _error_message(getattr(R, op + "_backward"), bad_dy, c_ref)), op
    _, cache = mod.split_forward(on(name, x), [1, 1])
    _, c_ref = R.split_forward(x, [1, 1])
    for bad in ([on(name, _f32(1, 4, 4, 1))], [on(name, _f32(1, 4, 4, 1)), on(name, _f32(1, 4, 4, 2))]):
        assert (_error_message(mod.split_backward, bad, cache)
                == _error_message(R.split_backward, [host(b) for b in bad], c_ref))
    logits, labels = normal(rng, (1, 2, 2, 3), np.float32), np.zeros((1, 2, 2), np.int64)
    _, cache = mod.softmax_cross_entropy_forward(on(name, logits), labels)
    _, c_ref = R.softmax_cross_entropy_forward(logits, labels)
    for bad in ("1.0", True, np.ones(2)):
        assert (_error_message(mod.softmax_cross_entropy_backward, bad, cache)
                == _error_message(R.softmax_cross_entropy_backward, bad, c_ref))
