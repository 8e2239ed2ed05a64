"""Write the JAX reference of average pooling as the atrous DenseNet uses it: ``tests/fixtures/avg_pool_jax.npz``.

This is a developer tool. It needs ``jax`` (e.g. the keras-hub virtualenv ``/work/kerasenv``); neither the
package nor its tests import it: ``tests/test_ops_avg_pool_jax.py`` compares the committed file with every
backend. The shared ``ops_jax.npz`` (``tools/make_op_fixtures.py``) covers Keras's own pools; this file adds
KerasHub DenseNet's transition pool on odd sides and tinydeeplab's extension for atrous encoders, dilated
windows and explicit padding, written independently in ``jax.lax``, float64::

    y = reduce_window(x, 0, add, window (1, KH, KW, 1), strides (1, sh, sw, 1), padding, window_dilation (1, dh, dw, 1))
        / reduce_window(ones, ...same...)              (the count of real pixels: padding is not averaged in)

``padding`` is JAX's ``"VALID"`` / ``"SAME"`` (its rule for a dilated window is Keras's) or explicit pairs.
The file holds, per case, ``<case>/x``, ``<case>/options`` (JSON: op, pool_size, stride, padding,
dilation), ``<case>/y``, a random cotangent ``<case>/dy`` and JAX's vector-Jacobian product ``<case>/grad_x``,
in the layout of ``ops_jax.npz``. Run from the repository root::

    /work/kerasenv/bin/python tools/make_avg_pool_fixtures.py [--out tests/fixtures/avg_pool_jax.npz]
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from make_op_fixtures import fixture_main, save_fixture         # tools/ is on sys.path when this script runs

CASES = {  # x shape, pool, stride, padding, dilation
    "transition_valid_odd": ((2, 7, 9, 3), (2, 2), (2, 2), "valid", (1, 1)),        # DenseNet: floors 7 -> 3
    "transition_os16": ((1, 6, 8, 2), (2, 2), (1, 1), ((0, 1), (0, 1)), (1, 1)),     # de-strided, rate 1
    "transition_os8": ((1, 8, 6, 2), (2, 2), (1, 1), ((0, 2), (0, 2)), (2, 2)),      # de-strided on a rate-2 map
    "dilated_same": ((2, 7, 8, 2), (3, 2), (2, 1), "same", (2, 3)),
    "dilated_valid": ((1, 9, 7, 2), (2, 3), (1, 2), "valid", (3, 2)),
    "explicit_uneven": ((1, 5, 6, 3), (3, 3), (2, 2), ((2, 0), (1, 2)), (1, 1)),
}


def avg_pool(x, *, pool_size, stride, padding, dilation):
    """Window sum over window sum of ones, as Keras 3's JAX ``average_pool`` does, with a window dilation."""
    import jax.numpy as jnp
    from jax import lax

    dims, steps, dil = (1, *pool_size, 1), (1, *stride, 1), (1, *dilation, 1)
    pad = padding.upper() if isinstance(padding, str) else ((0, 0), *map(tuple, padding), (0, 0))
    total = lax.reduce_window(x, 0.0, lax.add, dims, steps, pad, window_dilation=dil)
    count = lax.reduce_window(jnp.ones((1, *x.shape[1:3], 1), x.dtype), 0.0, lax.add, dims, steps, pad,
                              window_dilation=dil)
    return total / count


def make(out: Path) -> None:
    import jax
    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(121)
    arrays = {}
    for name, (xs, pool, stride, padding, dilation) in CASES.items():
        options = {"pool_size": pool, "stride": stride, "padding": padding, "dilation": dilation}
        x = rng.standard_normal(xs)
        y, vjp = jax.vjp(lambda a: avg_pool(a, **options), x)
        dy = rng.standard_normal(np.shape(y))
        (gx,) = vjp(dy)
        arrays.update({f"{name}/x": x, f"{name}/y": np.asarray(y), f"{name}/dy": dy, f"{name}/grad_x": np.asarray(gx)})
        arrays[f"{name}/options"] = np.array(json.dumps({"op": "avg_pool2d", **options}))
    save_fixture(out, arrays, f"jax {jax.__version__}")


if __name__ == "__main__":
    fixture_main(make, "tests/fixtures/avg_pool_jax.npz", __doc__)
