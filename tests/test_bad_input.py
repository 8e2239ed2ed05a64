"""Bad arguments raise ValueError with a message that names the argument and its shape (or value)."""
import numpy as np
import pytest

from tinydeeplab import functional as F

f32, f64 = np.float32, np.float64


def z(*shape, dtype=f32):
    return np.zeros(shape, dtype)


X = z(1, 4, 4, 3)                 # (N, H, W, C)
W = z(3, 3, 3, 2)                 # (KH, KW, C, F)
GAMMA = z(3)
LOGITS = z(1, 2, 2, 5)

CASES = {
    # conv2d: arrays
    "conv x not an array": (lambda: F.conv2d_forward(X.tolist(), W), r"x must be a numpy.ndarray, got list"),
    "conv x ndim": (lambda: F.conv2d_forward(z(4, 4, 3), W), r"x must have 4 dimensions .*got shape \(4, 4, 3\)"),
    "conv w ndim": (lambda: F.conv2d_forward(X, z(3, 3, 3)), r"w must have 4 dimensions .*\(3, 3, 3\)"),
    "conv channel mismatch": (lambda: F.conv2d_forward(X, z(3, 3, 2, 2)),
                              r"x has 3 channels \(shape \(1, 4, 4, 3\)\).*w expects 2 .*\(3, 3, 2, 2\)"),
    "conv bias shape": (lambda: F.conv2d_forward(X, W, z(3)), r"b must have shape \(2,\) .*w \(3, 3, 3, 2\).*got shape \(3,\)"),
    "conv bias ndim": (lambda: F.conv2d_forward(X, W, z(1, 2)), r"b must have 1 dimensions .*\(1, 2\)"),
    "conv int x": (lambda: F.conv2d_forward(X.astype(np.int64), W), r"x must be float32 or float64, got dtype int64"),
    "conv float16 w": (lambda: F.conv2d_forward(X, W.astype(np.float16)), r"w must be float32 or float64, got dtype float16"),
    "conv mixed dtypes": (lambda: F.conv2d_forward(X, W.astype(f64)), r"x: float32, w: float64"),
    "conv mixed bias dtype": (lambda: F.conv2d_forward(X, W, z(2, dtype=f64)), r"b: float64"),
    "conv stride 0": (lambda: F.conv2d_forward(X, W, stride=0), r"stride must be >= 1, got 0"),
    "conv stride negative pair": (lambda: F.conv2d_forward(X, W, stride=(1, -2)), r"stride must be >= 1, got \(1, -2\)"),
    "conv stride float": (lambda: F.conv2d_forward(X, W, stride=1.5), r"stride must be an int or a pair of ints, got 1.5"),
    "conv stride bool": (lambda: F.conv2d_forward(X, W, stride=True), r"stride must be an int"),
    "conv dilation 0": (lambda: F.conv2d_forward(X, W, dilation=0), r"dilation must be >= 1, got 0"),
    "conv dilation triple": (lambda: F.conv2d_forward(X, W, dilation=(1, 2, 3)), r"dilation must be an int or a pair"),
    "conv padding word": (lambda: F.conv2d_forward(X, W, padding="full"), r"padding must be .*got 'full'"),
    "conv padding negative": (lambda: F.conv2d_forward(X, W, padding=-1), r"padding must be >= 0, got -1"),
    "conv padding triple": (lambda: F.conv2d_forward(X, W, padding=(1, 1, 1)), r"padding must be .*\(1, 1, 1\)"),
    "conv padding half pairs": (lambda: F.conv2d_forward(X, W, padding=((1, 2), 3)), r"padding must be .*\(\(1, 2\), 3\)"),
    "conv padding negative pair": (lambda: F.conv2d_forward(X, W, padding=((0, 0), (1, -1))), r"padding\[1\] must be >= 0"),
    "conv window larger than input": (lambda: F.conv2d_forward(X, z(5, 3, 3, 2), padding="valid"),
                                      r"x \(shape \(1, 4, 4, 3\)\) height of size 4 .*effective window 5"),
    "conv dilated window larger than input": (lambda: F.conv2d_forward(X, W, dilation=(1, 3), padding="valid"),
                                              r"x \(shape \(1, 4, 4, 3\)\) width .*effective window 7 \(kernel 3, dilation 3\)"),
    "conv backward dy shape": (lambda: F.conv2d_backward(z(1, 3, 3, 2), F.conv2d_forward(X, W)[1]),
                               r"dy must have the forward output's shape \(1, 4, 4, 2\), got \(1, 3, 3, 2\)"),
    # zero_pad2d
    "pad x ndim": (lambda: F.zero_pad2d_forward(z(4, 4), 1), r"x must have 4 dimensions .*\(4, 4\)"),
    "pad negative": (lambda: F.zero_pad2d_forward(X, (1, -1)), r"padding must be >= 0, got \(1, -1\)"),
    "pad string": (lambda: F.zero_pad2d_forward(X, "same"), r"padding must be an int, \(ph, pw\) .*'same'"),
    "pad half pairs": (lambda: F.zero_pad2d_forward(X, ((1, 1), 2)), r"padding must be an int, \(ph, pw\)"),
    # batchnorm
    "bn x ndim": (lambda: F.batchnorm_forward(z(4, 3), GAMMA, GAMMA, GAMMA, GAMMA, training=True),
                  r"x must have 4 dimensions .*\(4, 3\)"),
    "bn gamma shape": (lambda: F.batchnorm_forward(X, z(4), GAMMA, GAMMA, GAMMA, training=True),
                       r"gamma must have shape \(3,\) to match the channels of x \(1, 4, 4, 3\), got shape \(4,\)"),
    "bn moving_var shape": (lambda: F.batchnorm_forward(X, GAMMA, GAMMA, GAMMA, z(1, 3), training=False),
                            r"moving_var must have 1 dimensions"),
    "bn mixed dtypes": (lambda: F.batchnorm_forward(X, GAMMA, GAMMA.astype(f64), GAMMA, GAMMA, training=True),
                        r"beta: float64"),
    "bn int x": (lambda: F.batchnorm_forward(X.astype(np.int32), GAMMA, GAMMA, GAMMA, GAMMA, training=True),
                 r"x must be float32 or float64, got dtype int32"),
    "bn training not bool": (lambda: F.batchnorm_forward(X, GAMMA, GAMMA, GAMMA, GAMMA, training="yes"),
                             r"training must be True or False"),
    "bn eps negative": (lambda: F.batchnorm_forward(X, GAMMA, GAMMA, GAMMA, GAMMA, training=True, eps=-1.0),
                        r"eps must be a number >= 0"),
    "moving_average momentum": (lambda: F.moving_average(GAMMA, GAMMA, 1.5), r"momentum must be a number in \[0, 1\]"),
    "moving_average shapes": (lambda: F.moving_average(GAMMA, z(4), 0.9), r"moving \(3,\) and batch_value \(4,\)"),
    # relu
    "relu int": (lambda: F.relu_forward(np.zeros((2, 2), np.int8)), r"x must be float32 or float64, got dtype int8"),
    # max_pool2d
    "pool larger than input": (lambda: F.max_pool2d_forward(z(1, 2, 5, 1), pool_size=3),
                               r"x \(shape \(1, 2, 5, 1\)\) height of size 2 .*effective window 3"),
    "pool size 0": (lambda: F.max_pool2d_forward(X, pool_size=0), r"pool_size must be >= 1, got 0"),
    "pool stride 0": (lambda: F.max_pool2d_forward(X, stride=(0, 1)), r"stride must be >= 1, got \(0, 1\)"),
    "pool padding word": (lambda: F.max_pool2d_forward(X, padding="reflect"), r"padding must be .*'reflect'"),
    "pool window in padding": (lambda: F.max_pool2d_forward(X, pool_size=2, stride=1, padding=2),
                               r"leaves a pooling window entirely in the padding .*\(1, 4, 4, 3\)"),
    "pool int x": (lambda: F.max_pool2d_forward(X.astype(np.uint8)), r"x must be float32 or float64, got dtype uint8"),
    "gap x ndim": (lambda: F.global_avg_pool_forward(z(2, 3)), r"x must have 4 dimensions .*\(2, 3\)"),
    # resize
    "resize size 0": (lambda: F.bilinear_resize_forward(X, (0, 4)), r"size must be >= 1, got \(0, 4\)"),
    "resize size negative": (lambda: F.bilinear_resize_forward(X, -3), r"size must be >= 1, got -3"),
    "resize size shape": (lambda: F.bilinear_resize_forward(X, (2, 2, 2)), r"size must be an int or a pair of ints"),
    "resize size float": (lambda: F.bilinear_resize_forward(X, (2.5, 2)), r"size must be an int or a pair of ints"),
    "resize x ndim": (lambda: F.bilinear_resize_forward(z(4, 4, 3), (8, 8)), r"x must have 4 dimensions .*\(4, 4, 3\)"),
    "resize int x": (lambda: F.bilinear_resize_forward(X.astype(np.int16), (8, 8)), r"x must be float32 or float64"),
    "upsample factor 0": (lambda: F.upsample_bilinear_forward(X, 0), r"factor must be >= 1, got 0"),
    "resize backward dy": (lambda: F.bilinear_resize_backward(z(1, 4, 4, 3), F.bilinear_resize_forward(X, (8, 8))[1]),
                           r"dy must have the forward output's shape \(1, 8, 8, 3\)"),
    # concat / split / add
    "concat mismatched H": (lambda: F.concat_forward([z(1, 2, 2, 1), z(1, 3, 2, 1)]),
                            r"xs must agree on N, H, W .*xs\[0\]: \(1, 2, 2, 1\), xs\[1\]: \(1, 3, 2, 1\)"),
    "concat mismatched N": (lambda: F.concat_forward([z(2, 2, 2, 1), z(1, 2, 2, 4)]),
                            r"xs\[0\]: \(2, 2, 2, 1\), xs\[1\]: \(1, 2, 2, 4\)"),
    "concat empty": (lambda: F.concat_forward([]), r"xs must be a non-empty list"),
    "concat not a list": (lambda: F.concat_forward(X), r"xs must be a non-empty list of \(N, H, W, C\) arrays"),
    "concat ndim": (lambda: F.concat_forward([X, z(4, 4, 3)]), r"xs\[1\] must have 4 dimensions .*\(4, 4, 3\)"),
    "concat mixed dtypes": (lambda: F.concat_forward([X, X.astype(f64)]), r"xs\[0\]: float32, xs\[1\]: float64"),
    "split sizes sum": (lambda: F.split_forward(X, [1, 1]), r"sizes \[1, 1\] add up to 2 but x \(shape \(1, 4, 4, 3\)\) has 3"),
    "split sizes zero": (lambda: F.split_forward(X, [0, 3]), r"sizes must be a non-empty list of ints >= 1"),
    "split backward count": (lambda: F.split_backward([z(1, 4, 4, 1)], F.split_forward(X, [1, 2])[1]),
                             r"dys must be a list of 2 gradients"),
    "add shapes": (lambda: F.add_forward(X, z(1, 4, 4, 2)), r"a: \(1, 4, 4, 3\), b: \(1, 4, 4, 2\)"),
    "add dtypes": (lambda: F.add_forward(X, X.astype(f64)), r"a: float32, b: float64"),
    # softmax cross-entropy
    "ce label out of range": (lambda: F.softmax_cross_entropy_forward(LOGITS, np.array([[[0, 7], [-1, 255]]])),
                              r"labels must be in \[0, 5\).*ignore_label=255; found bad values -1, 7"),
    "ce label 255 without ignore": (lambda: F.softmax_cross_entropy_forward(LOGITS, np.array([[[0, 1], [2, 255]]]),
                                                                            ignore_label=None),
                                    r"found bad values 255"),
    "ce float labels": (lambda: F.softmax_cross_entropy_forward(LOGITS, np.zeros((1, 2, 2))),
                        r"labels must have an integer dtype, got float64"),
    "ce bool labels": (lambda: F.softmax_cross_entropy_forward(LOGITS, np.zeros((1, 2, 2), bool)),
                       r"labels must have an integer dtype, got bool"),
    "ce labels shape": (lambda: F.softmax_cross_entropy_forward(LOGITS, np.zeros((1, 2, 3), np.int64)),
                        r"labels must have shape \(N, H, W\) = \(1, 2, 2\) .*\(1, 2, 2, 5\), got \(1, 2, 3\)"),
    "ce labels ndim": (lambda: F.softmax_cross_entropy_forward(LOGITS, np.zeros((1, 2, 2, 1), np.int64)),
                       r"labels must have 3 dimensions"),
    "ce int logits": (lambda: F.softmax_cross_entropy_forward(LOGITS.astype(np.int64), np.zeros((1, 2, 2), np.int64)),
                      r"logits must be float32 or float64, got dtype int64"),
    "ce class_weights shape": (lambda: F.softmax_cross_entropy_forward(LOGITS, np.zeros((1, 2, 2), np.int64),
                                                                       class_weights=z(4)),
                               r"class_weights must have shape \(5,\) to match the K axis of logits \(1, 2, 2, 5\)"),
    "ce class_weights negative": (lambda: F.softmax_cross_entropy_forward(LOGITS, np.zeros((1, 2, 2), np.int64),
                                                                          class_weights=-np.ones(5, f32)),
                                  r"class_weights must be finite and >= 0"),
    "ce dloss array": (lambda: F.softmax_cross_entropy_backward(
        np.ones(3), F.softmax_cross_entropy_forward(LOGITS, np.zeros((1, 2, 2), np.int64))[1]),
                       r"dloss must be a real number"),
}


@pytest.mark.parametrize("call,match", list(CASES.values()), ids=list(CASES))
def test_bad_input_raises_value_error_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_ce_error_lists_at_most_ten_bad_values():
    labels = np.arange(100, 130).reshape(1, 5, 6)
    with pytest.raises(ValueError, match=r"found bad values 100, 101, .*, 109, \.\.\.$"):
        F.softmax_cross_entropy_forward(z(1, 5, 6, 3), labels)
