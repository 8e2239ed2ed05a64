"""Write the plain-JAX reference of a separable DeepLabV3+ head: ``tests/fixtures/separable_jax.npz``.

This is a developer tool. It needs ``jax`` (a separate virtualenv, e.g. ``/work/jaxenv``); neither the
package nor its tests import it: ``tests/test_separable.py`` compares the committed file with
tinydeeplab's ``DeepLabV3Backbone(..., separable=True)``.

The graph is the DeepLabV3+ paper's head (Chen et al. 2018, sec. 3.1-3.2) written out in ``jax.lax``,
independently of tinydeeplab, in float64 (``jax_enable_x64``) with batch norm in training mode (batch
statistics, biased variance, epsilon 1e-3; moving statistics updated with momentum 0.99)::

    sep_r(x)   = relu(bn(pointwise 1x1(relu(bn(depthwise 3x3, dilation r, "SAME" (x))))))
                 depthwise: lax.conv_general_dilated(..., feature_group_count=C, rhs_dilation=(r, r))
    ASPP(hi)   = relu(bn(1x1(concat[relu(bn(1x1 hi)), sep_r(hi) for r in RATES,
                                     resize(relu(bn(1x1(mean_hw hi))))])))
    head       = sep_1(sep_1(concat[resize(ASPP(hi), low's size), relu(bn(1x1 low))]))

``resize`` is ``jax.image.resize(..., "bilinear")`` (half-pixel centres). The largest rate exceeds the
5 x 6 map, so that branch has only its centre tap live: JAX computes the dead taps (zeros times weights),
tinydeeplab skips them; both must agree.

The file holds the inputs ``x/high`` (N, 5, 6, 12) and ``x/low`` (N, 20, 24, 6), every parameter and
batch-norm statistic under ``param/<tinydeeplab name>`` (names relative to ``DeepLabV3Backbone``), the
output ``y``, a random cotangent ``dy``, the vector-Jacobian products ``grad/high``, ``grad/low`` and
``grad/<parameter>``, the moving statistics after the step ``moving/<name>``, and the sizes as JSON in
``config``. Run from the repository root::

    /work/jaxenv/bin/python tools/make_separable_fixtures.py [--out tests/fixtures/separable_jax.npz]
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from make_op_fixtures import fixture_main, save_fixture         # tools/ is on sys.path when this script runs

N, HIGH, LOW = 2, (5, 6, 12), (20, 24, 6)       # batch; (h, w, C) of the ASPP input and of the low-level map
RATES, CHANNELS, PROJECTION = (1, 2, 6), 8, 4   # ASPP rates, ASPP / head width, low-level projection width
EPS, MOMENTUM = 1e-3, 0.99                      # Keras BatchNormalization defaults


def layer_shapes() -> dict[str, tuple]:
    """``{tinydeeplab parameter name: shape}``; a name ending in ``bn`` stands for a batch norm's four arrays."""
    c_hi, c_lo, f = HIGH[2], LOW[2], CHANNELS
    shapes = {"aspp.branch0.conv.kernel": (1, 1, c_hi, f), "aspp.branch0.bn": f}

    def separable(prefix, c_in):
        shapes.update({f"{prefix}.depthwise.kernel": (3, 3, c_in, 1), f"{prefix}.depthwise_bn": c_in,
                       f"{prefix}.pointwise.kernel": (1, 1, c_in, f), f"{prefix}.pointwise_bn": f})

    for i in range(len(RATES)):
        separable(f"aspp.branch{i + 1}", c_hi)
    shapes.update({"aspp.pooling.conv.kernel": (1, 1, c_hi, f), "aspp.pooling.bn": f,
                   "aspp.projection.conv.kernel": (1, 1, (2 + len(RATES)) * f, f), "aspp.projection.bn": f,
                   "low_level_projection.conv.kernel": (1, 1, c_lo, PROJECTION), "low_level_projection.bn": PROJECTION})
    separable("head.conv0", f + PROJECTION)
    separable("head.conv1", f)
    return shapes


def random_parameters(rng) -> dict[str, np.ndarray]:
    """He-scaled kernels; batch norms with gamma, beta and moving statistics away from 1 / 0."""
    out = {}
    for name, shape in layer_shapes().items():
        if name.endswith("bn"):
            out.update({f"{name}.gamma": rng.uniform(0.5, 1.5, shape), f"{name}.beta": rng.normal(0, 0.2, shape),
                        f"{name}.moving_mean": rng.normal(0, 0.2, shape),
                        f"{name}.moving_variance": rng.uniform(0.5, 1.5, shape)})
        else:
            fan_in = np.prod(shape[:2]) if ".depthwise." in name else np.prod(shape[:3])   # per output channel
            out[name] = rng.normal(0, np.sqrt(2.0 / fan_in), shape)
    return out


def head(jax, params, high, low):
    """The head's output (N, 20, 24, CHANNELS) and ``{name: new moving statistic}``."""
    import jax.numpy as jnp
    from jax import lax

    moving = {}
    dims = ("NHWC", "HWIO", "NHWC")

    def conv(x, name, rate=1):
        return lax.conv_general_dilated(x, params[name], (1, 1), "SAME", rhs_dilation=(rate, rate),
                                        dimension_numbers=dims)

    def depthwise(x, name, rate):
        kh, kw, c, m = params[name].shape
        return lax.conv_general_dilated(x, params[name].reshape(kh, kw, 1, c * m), (1, 1), "SAME",
                                        rhs_dilation=(rate, rate), dimension_numbers=dims, feature_group_count=c)

    def bn_relu(x, name):
        mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))          # biased batch variance
        for stat, batch in (("moving_mean", mean), ("moving_variance", var)):
            moving[f"{name}.{stat}"] = params[f"{name}.{stat}"] * MOMENTUM + batch * (1 - MOMENTUM)
        y = params[f"{name}.gamma"] * (x - mean) / jnp.sqrt(var + EPS) + params[f"{name}.beta"]
        return jnp.maximum(y, 0.0)

    def separable(x, prefix, rate):
        x = bn_relu(depthwise(x, f"{prefix}.depthwise.kernel", rate), f"{prefix}.depthwise_bn")
        return bn_relu(conv(x, f"{prefix}.pointwise.kernel"), f"{prefix}.pointwise_bn")

    def resize(x, hw):
        return jax.image.resize(x, (x.shape[0], *hw, x.shape[3]), "bilinear")

    parts = [bn_relu(conv(high, "aspp.branch0.conv.kernel"), "aspp.branch0.bn")]
    parts += [separable(high, f"aspp.branch{i + 1}", rate) for i, rate in enumerate(RATES)]
    pooled = bn_relu(conv(high.mean(axis=(1, 2), keepdims=True), "aspp.pooling.conv.kernel"), "aspp.pooling.bn")
    parts.append(resize(pooled, high.shape[1:3]))
    aspp = bn_relu(conv(jnp.concatenate(parts, axis=-1), "aspp.projection.conv.kernel"), "aspp.projection.bn")
    projected = bn_relu(conv(low, "low_level_projection.conv.kernel"), "low_level_projection.bn")
    e = jnp.concatenate([resize(aspp, low.shape[1:3]), projected], axis=-1)
    return separable(separable(e, "head.conv0", 1), "head.conv1", 1), moving


def make(out: Path) -> None:
    import jax
    jax.config.update("jax_enable_x64", True)

    rng = np.random.default_rng(20181)
    params = random_parameters(rng)
    high, low = rng.standard_normal((N, *HIGH)), rng.standard_normal((N, *LOW))
    trainable = {k: v for k, v in params.items() if not k.endswith(("moving_mean", "moving_variance"))}
    stats = {k: v for k, v in params.items() if k not in trainable}

    def f(weights, hi, lo):
        return head(jax, {**weights, **stats}, hi, lo)

    y, vjp, moving = jax.vjp(f, trainable, high, low, has_aux=True)
    dy = rng.standard_normal(y.shape)
    d_weights, d_high, d_low = vjp(dy)
    arrays = {"x/high": high, "x/low": low, "y": np.asarray(y), "dy": dy,
              "grad/high": np.asarray(d_high), "grad/low": np.asarray(d_low)}
    arrays.update({f"param/{k}": v for k, v in params.items()})
    arrays.update({f"grad/{k}": np.asarray(v) for k, v in d_weights.items()})
    arrays.update({f"moving/{k}": np.asarray(v) for k, v in moving.items()})
    arrays["config"] = np.array(json.dumps({"rates": RATES, "channels": CHANNELS, "projection_filters": PROJECTION,
                                            "high": HIGH, "low": LOW, "batch": N, "jax": jax.__version__}))
    save_fixture(out, arrays, f"jax {jax.__version__}")


def main(argv=None) -> None:
    fixture_main(make, "tests/fixtures/separable_jax.npz", __doc__, argv)


if __name__ == "__main__":
    main()
