"""Write the JAX reference values of CSPNet's ops: ``tests/fixtures/cspnet_ops_jax.npz``.

A developer tool beside :mod:`make_op_fixtures` (same file layout, same helpers; that tool's shared
``ops_jax.npz`` is left as it is). It needs ``jax``; ``tests/test_ops_cspnet.py`` reads the committed file.

* ``leaky_relu`` at KerasHub CSPNet's ``negative_slope=0.01`` (``keras.layers.LeakyReLU`` calls
  ``keras.ops.leaky_relu``, which on the JAX backend is ``jax.nn.leaky_relu``), on inputs holding the kink
  ``0`` exactly, and at slope 0 (plain ReLU, but with slope 1 at 0 as ``jnp.where(x >= 0, ...)``);
* ``split``: ``keras.ops.split(x, 2, axis=-1)`` is ``jnp.split``; its vector-Jacobian product stacks the two
  cotangents (``<case>/y0``, ``<case>/y1``, ``<case>/dy0``, ``<case>/dy1``).

Run from the repository root (float64, ``jax_enable_x64``)::

    /work/kerasenv/bin/python tools/make_cspnet_op_fixtures.py [--out tests/fixtures/cspnet_ops_jax.npz]
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from make_op_fixtures import KINKS, fixture_main, save_fixture


def make(out: Path) -> None:
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(53)
    arrays = {}
    for name, slope, shape in (("leaky_relu_0.01", 0.01, (1, 4, 4, 3)), ("leaky_relu_0.01_batch", 0.01, (2, 3, 5, 4)),
                               ("leaky_relu_0", 0.0, (1, 4, 4, 3))):
        x = np.concatenate([KINKS, rng.standard_normal(int(np.prod(shape)) - len(KINKS)) * 4]).reshape(shape)
        y, vjp = jax.vjp(lambda a: jax.nn.leaky_relu(a, slope), x)
        dy = rng.standard_normal(np.shape(y))
        arrays.update({f"{name}/x": x, f"{name}/y": np.asarray(y), f"{name}/dy": dy,
                       f"{name}/grad_x": np.asarray(vjp(dy)[0]),
                       f"{name}/options": np.array(json.dumps({"op": "leaky_relu", "negative_slope": slope}))})
    for name, shape in (("split_halves", (2, 3, 4, 6)), ("split_halves_2", (1, 5, 3, 2))):
        x = rng.standard_normal(shape)
        (y0, y1), vjp = jax.vjp(lambda a: tuple(jnp.split(a, 2, axis=-1)), x)
        dy0, dy1 = rng.standard_normal(np.shape(y0)), rng.standard_normal(np.shape(y1))
        arrays.update({f"{name}/x": x, f"{name}/y0": np.asarray(y0), f"{name}/y1": np.asarray(y1),
                       f"{name}/dy0": dy0, f"{name}/dy1": dy1, f"{name}/grad_x": np.asarray(vjp((dy0, dy1))[0]),
                       f"{name}/options": np.array(json.dumps({"op": "split", "sections": 2}))})
    save_fixture(out, arrays, f"jax {jax.__version__}")


def main(argv=None) -> None:
    fixture_main(make, "tests/fixtures/cspnet_ops_jax.npz", __doc__, argv)


if __name__ == "__main__":
    main()
