"""Small model builders shared by the model, preset and backend tests."""

from tinydeeplab.models import DeepLabV3Backbone, DeepLabV3ImageSegmenter, ResNetBackbone


def tiny_segmenter(*, plus=True, block_type="bottleneck_block", pre_activation=False, num_classes=3,
                   output_stride=None, seed=0, blocks=(1, 2), separable=False):
    """A two-stack ResNet DeepLab with 4-channel layers: small enough for every-entry gradient checks
    (``separable``: the DeepLabV3+ paper's separable ASPP and decoder)."""
    enc = ResNetBackbone([4], [3], [4, 4], list(blocks), [1, 2], block_type=block_type,
                         use_pre_activation=pre_activation, output_stride=output_stride, seed=seed)
    bb = DeepLabV3Backbone(enc, "P3", 2, [1, 2], low_level_feature_key="P2" if plus else None,
                           projection_filters=2, num_channels=4, separable=separable, seed=seed + 1)
    return DeepLabV3ImageSegmenter(bb, num_classes, seed=seed + 2)


def randomize_batchnorm(model, rng):
    """Non-trivial BN parameters and moving statistics (fresh 0/1 values hide bugs)."""
    for _, mod in model.modules():
        if "moving_mean" in mod.buffers:
            c = mod.params["gamma"].shape
            mod.params["gamma"] = rng.uniform(0.5, 1.5, c).astype(mod.params["gamma"].dtype)
            mod.params["beta"] = rng.normal(0, 0.2, c).astype(mod.params["beta"].dtype)
            mod.buffers["moving_mean"] = rng.normal(0, 0.2, c).astype(mod.buffers["moving_mean"].dtype)
            mod.buffers["moving_variance"] = rng.uniform(0.5, 1.5, c).astype(mod.buffers["moving_variance"].dtype)
    return model


def assert_cpu_matches_reference(model, x, c):
    """A training-mode forward and backward of ``model`` on the numpy and cpu backends: logits, input gradient
    and every weight gradient agree to float32 round-off (gradients relative to the model's largest: a
    weight whose gradient is exactly 0 in exact arithmetic gets float32 noise on both)."""
    import numpy as np

    from tinydeeplab import use_backend

    results = {}
    for backend in ("numpy", "cpu"):
        with use_backend(backend):
            y = model.forward(x, training=True)
            model.zero_grad()
            dx = model.backward(c)
            results[backend] = (y, dx, {k: g.copy() for k, g in model.named_gradients()})
    (y0, dx0, g0), (y1, dx1, g1) = results["numpy"], results["cpu"]
    np.testing.assert_allclose(y1, y0, rtol=1e-4, atol=1e-4 * float(np.abs(y0).max()))
    np.testing.assert_allclose(dx1, dx0, rtol=1e-4, atol=1e-4 * float(np.abs(dx0).max()))
    scale = max(float(np.abs(g).max()) for g in g0.values())
    for k in g0:
        np.testing.assert_allclose(g1[k], g0[k], rtol=1e-3, atol=1e-5 * scale, err_msg=k)


def assert_preset_round_trip(model, directory, encoder_class, shape):
    """Save ``model`` as a KerasHub preset in ``directory``, load it back: an ``encoder_class`` encoder that gives
    the same logits, bit for bit, on a random batch of ``shape`` (N, H, W, 3)."""
    import warnings

    import numpy as np

    from tinydeeplab import load_keras_preset, save_keras_preset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                                    # 4-channel head: tinydeeplab-only
        save_keras_preset(model, directory)
    again = load_keras_preset(directory)
    assert isinstance(again.backbone.image_encoder, encoder_class)
    x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    np.testing.assert_array_equal(again.forward(x), model.forward(x))


def assert_atrous_holds_strided(strided, dense, output_stride, step, size=64):
    """Same weights, strides traded for dilation: ``dense`` (built with ``output_stride``) rebuilds from its
    config, puts P5 at 1/output_stride, and its P5 holds the strided P5 at every ``step``-th position (float64,
    NumPy reference backend)."""
    import numpy as np

    from tinydeeplab.backend import use_backend

    dense.load_state_dict(strided.state_dict())
    assert dense.pyramid_strides["P5"] == output_stride
    assert type(dense).from_config(dense.get_config()).pyramid_strides == dense.pyramid_strides
    x = np.random.default_rng(1).normal(size=(1, size, size, 3))
    with use_backend("numpy"):
        p5, q5 = strided.forward(x)["P5"], dense.forward(x)["P5"]
    assert q5.shape[1] == size // output_stride
    np.testing.assert_allclose(q5[:, ::step, ::step], p5, rtol=1e-10, atol=1e-12)
