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
