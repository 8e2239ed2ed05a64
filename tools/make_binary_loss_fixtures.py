"""Write the JAX reference values of the binary losses: ``tests/fixtures/binary_losses_jax.npz``.

This is a developer tool. It needs ``jax`` (a separate virtualenv, e.g. ``/work/jaxenv``); neither the
package nor its tests import it: ``tests/test_binary_loss_jax.py`` compares the committed file with the
NumPy reference (:mod:`tinydeeplab.functional.binary_loss`) on every backend.

The losses are written here a second time, independently, in ``jax.numpy`` from their textbook form
and differentiated by ``jax.grad`` (float64, ``jax_enable_x64``, so only the maths can differ):

* cross-entropy ``-mean_V [w+ y log p + (1 - y) log(1 - p)]`` with ``log p = jax.nn.log_sigmoid(z)`` and
  ``log(1 - p) = log_sigmoid(-z)`` (as ``optax.sigmoid_binary_cross_entropy`` computes it);
* soft Dice ``1 - (2 sum_V p y + s) / (sum_V p + sum_V y + s)``, ``p = jax.nn.sigmoid(z)``;
* focal ``mean_V -alpha_t (1 - p_t)^gamma log p_t`` with ``p_t = p y + (1 - p)(1 - y)`` (as
  ``optax.sigmoid_focal_loss`` / torchvision's ``sigmoid_focal_loss`` write it, ``log p_t`` from the
  cross-entropy above).

Ignored pixels enter as a 0/1 mask multiplying every per-pixel term (and ``|V| = sum mask``). For each case
the file holds ``<case>/logits`` (N, H, W, 1), ``<case>/labels`` (N, H, W) int64, the options as a JSON
string (``<case>/options``, with ``"op"``), the loss (``<case>/loss``) and ``jax.grad`` of it
(``<case>/grad``). Run from the repository root::

    /work/jaxenv/bin/python tools/make_binary_loss_fixtures.py [--out tests/fixtures/binary_losses_jax.npz]
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from make_op_fixtures import fixture_main, save_fixture      # tools/ is the script's first path entry

IGNORE = 255


def jax_losses():
    """``(jax, {op: loss(z (N, H, W, 1), labels (N, H, W), **options) -> scalar})``."""
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)

    def parts(z, labels, ignore_label):
        mask = jnp.ones(labels.shape) if ignore_label is None else (labels != ignore_label).astype(jnp.float64)
        y = jnp.where(labels == 1, 1.0, 0.0) * mask
        return z[..., 0], y, mask

    def bce(z, labels, *, ignore_label=IGNORE, pos_weight=None):
        z, y, mask = parts(z, labels, ignore_label)
        w = 1.0 if pos_weight is None else pos_weight
        terms = -(w * y * jax.nn.log_sigmoid(z) + (1 - y) * jax.nn.log_sigmoid(-z))
        return jnp.sum(terms * mask) / jnp.sum(mask)

    def dice(z, labels, *, ignore_label=IGNORE, smooth=1.0):
        z, y, mask = parts(z, labels, ignore_label)
        p = jax.nn.sigmoid(z) * mask
        return 1.0 - (2 * jnp.sum(p * y) + smooth) / (jnp.sum(p) + jnp.sum(y) + smooth)

    def focal(z, labels, *, ignore_label=IGNORE, gamma=2.0, alpha=0.25):
        z, y, mask = parts(z, labels, ignore_label)
        p = jax.nn.sigmoid(z)
        p_t = p * y + (1 - p) * (1 - y)
        ce = -(y * jax.nn.log_sigmoid(z) + (1 - y) * jax.nn.log_sigmoid(-z))      # -log p_t
        a_t = 1.0 if alpha is None else alpha * y + (1 - alpha) * (1 - y)
        return jnp.sum(a_t * (1 - p_t) ** gamma * ce * mask) / jnp.sum(mask)

    return jax, {"sigmoid_binary_cross_entropy": bce, "dice_loss": dice, "sigmoid_focal_loss": focal}


def cases():
    """``(case name, op, shape, ignore fraction, logit scale, options)`` for every fixture case."""
    yield "bce_plain", "sigmoid_binary_cross_entropy", (2, 5, 4, 1), 0.0, 2.0, {}
    yield "bce_ignore_pos_weight", "sigmoid_binary_cross_entropy", (2, 4, 6, 1), 0.3, 3.0, {"pos_weight": 2.5}
    yield "bce_large_logits", "sigmoid_binary_cross_entropy", (1, 6, 6, 1), 0.2, 30.0, {}
    yield "dice_smooth1", "dice_loss", (2, 5, 5, 1), 0.25, 2.0, {"smooth": 1.0}
    yield "dice_no_smooth", "dice_loss", (1, 7, 3, 1), 0.0, 1.5, {"smooth": 0.0}
    yield "dice_ignore_other_label", "dice_loss", (2, 3, 4, 1), 0.4, 2.0, {"smooth": 0.5, "ignore_label": 3}
    yield "focal_default", "sigmoid_focal_loss", (2, 4, 5, 1), 0.3, 3.0, {"gamma": 2.0, "alpha": 0.25}
    yield "focal_no_alpha_fractional_gamma", "sigmoid_focal_loss", (1, 6, 5, 1), 0.2, 2.0,\
        {"gamma": 1.5, "alpha": None}
    yield "focal_gamma0", "sigmoid_focal_loss", (2, 3, 3, 1), 0.0, 2.0, {"gamma": 0.0, "alpha": 0.6}


def make(out: Path) -> None:
    jax, losses = jax_losses()
    rng = np.random.default_rng(20)
    arrays = {}
    for name, op, shape, ignore_fraction, scale, options in cases():
        ignore = options.get("ignore_label", IGNORE)
        logits = rng.standard_normal(shape) * scale
        labels = rng.integers(0, 2, shape[:3])
        labels[rng.random(shape[:3]) < ignore_fraction] = ignore
        f = losses[op]
        loss, grad = jax.value_and_grad(lambda z: f(z, labels, **options))(logits)
        arrays[f"{name}/logits"], arrays[f"{name}/labels"] = logits, labels.astype(np.int64)
        arrays[f"{name}/loss"], arrays[f"{name}/grad"] = np.asarray(loss), np.asarray(grad)
        arrays[f"{name}/options"] = np.array(json.dumps({"op": op, **options}))
    save_fixture(out, arrays, f"jax {jax.__version__}")


def main(argv=None) -> None:
    fixture_main(make, "tests/fixtures/binary_losses_jax.npz", __doc__, argv)


if __name__ == "__main__":
    main()
