"""Write the JAX reference values of the mobile encoder ops: ``tests/fixtures/ops_jax.npz``.

This is a developer tool. It needs ``jax`` (keep it in a separate virtualenv, e.g.
``python3 -m venv /work/venv-jax && /work/venv-jax/bin/pip install jax numpy``); neither the package nor
its tests import it: ``tests/test_ops_jax.py`` compares the committed file with the NumPy reference.

Every op is computed the way Keras 3's JAX backend computes it (``keras/src/backend/jax/nn.py``), in
float64 (``jax_enable_x64``) so that only the maths, not round-off, can differ:

* ``depthwise_conv2d``: ``lax.conv_general_dilated`` with the kernel reshaped ``(KH, KW, 1, C*M)``,
  ``feature_group_count=C``, ``"SAME"``/``"VALID"`` padding and ``rhs_dilation`` (Keras ``depthwise_conv``);
* ``sigmoid``, ``swish`` (``silu``), ``hard_sigmoid``, ``hard_swish`` (``hard_silu``), ``leaky_relu``:
  ``jax.nn``, whose gradients at the kinks are the convention tinydeeplab follows; the inputs include the
  kinks ``-3, 0, 3`` exactly;
* ``avg_pool2d``: ``lax.reduce_window`` sum divided by the window sum of ones for ``"same"`` (Keras
  ``average_pool``), by ``KH * KW`` for ``"valid"``;
* ``channel_scale``: ``x * s``; ``stochastic_depth``: ``where(keep, x / keep_prob, 0)`` for a stored mask.

For each case the file holds the inputs (``<case>/x`` ...), the options as a JSON string
(``<case>/options``), the forward output (``<case>/y``), a random cotangent (``<case>/dy``) and the
vector-Jacobian products of every input (``<case>/grad_x`` ...). Run from the repository root::

    /work/venv-jax/bin/python tools/make_op_fixtures.py [--out tests/fixtures/ops_jax.npz]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np

DEPTHWISE_CASES = {  # x shape, kernel (KH, KW, C, M), stride, dilation, padding
    "depthwise_same": ((2, 7, 6, 3), (3, 3, 3, 1), (1, 1), (1, 1), "same"),
    "depthwise_stride2_mult2": ((1, 8, 7, 2), (3, 3, 2, 2), (2, 2), (1, 1), "same"),
    "depthwise_dilated": ((1, 9, 9, 2), (3, 3, 2, 1), (1, 1), (2, 2), "same"),
    "depthwise_rate_beyond_map": ((1, 5, 5, 2), (3, 3, 2, 1), (1, 1), (6, 6), "same"),
    "depthwise_5x5_valid": ((1, 8, 9, 3), (5, 5, 3, 2), (1, 2), (1, 1), "valid"),
    "depthwise_even_kernel": ((2, 6, 5, 2), (2, 4, 2, 1), (2, 1), (1, 1), "same"),
}
POOL_CASES = {  # x shape, pool, stride, padding
    "avg_pool_valid": ((2, 6, 7, 3), (2, 2), (2, 2), "valid"),
    "avg_pool_same_3x3s2": ((1, 7, 6, 2), (3, 3), (2, 2), "same"),
    "avg_pool_same_3x3s1": ((1, 5, 5, 2), (3, 3), (1, 1), "same"),
    "avg_pool_same_uneven": ((2, 5, 8, 2), (2, 3), (1, 2), "same"),
}
ACTIVATIONS = ("sigmoid", "swish", "hard_sigmoid", "hard_swish", "leaky_relu")
KINKS = np.array([-3.0, 0.0, 3.0, -6.0, 6.0, -40.0, 40.0])


def jax_ops():
    """The ops as Keras 3's JAX backend computes them: name -> ``f(*arrays, **options)``."""
    import jax
    import jax.numpy as jnp
    from jax import lax
    jax.config.update("jax_enable_x64", True)

    def depthwise(x, w, *, stride, dilation, padding):
        kh, kw, c, m = w.shape
        return lax.conv_general_dilated(x, w.reshape(kh, kw, 1, c * m), tuple(stride), padding.upper(),
                                        rhs_dilation=tuple(dilation), dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        feature_group_count=c)

    def avg_pool(x, *, pool_size, stride, padding):
        dims, steps = (1, *pool_size, 1), (1, *stride, 1)
        pooled = lax.reduce_window(x, 0.0, lax.add, dims, steps, padding.upper())
        if padding == "valid":
            return pooled / np.prod(pool_size)
        counts = lax.reduce_window(jnp.ones((1, *x.shape[1:3], 1), x.dtype), 0.0, lax.add, dims, steps, "SAME")
        return pooled / counts

    return jax, {
        "depthwise_conv2d": depthwise,
        "sigmoid": jax.nn.sigmoid,
        "swish": jax.nn.silu,
        "hard_sigmoid": jax.nn.hard_sigmoid,
        "hard_swish": jax.nn.hard_silu,
        "leaky_relu": lambda x, *, negative_slope: jax.nn.leaky_relu(x, negative_slope),
        "avg_pool2d": avg_pool,
        "channel_scale": lambda x, s: x * s,
        "stochastic_depth": lambda x, *, keep, keep_prob: jnp.where(
            keep.reshape(-1, 1, 1, 1), x / keep_prob, 0.0),
    }


def cases(rng):
    """``(case name, op, inputs {name: array}, options)`` for every fixture case."""
    for name, (xs, ws, stride, dilation, padding) in DEPTHWISE_CASES.items():
        yield name, "depthwise_conv2d", {"x": rng.standard_normal(xs), "w": rng.standard_normal(ws)}, \
            {"stride": stride, "dilation": dilation, "padding": padding}
    for op in ACTIVATIONS:
        x = np.concatenate([KINKS, rng.standard_normal(41) * 4]).reshape(1, 4, 4, 3)
        yield op, op, {"x": x}, ({"negative_slope": 0.2} if op == "leaky_relu" else {})
    yield "leaky_relu_slope_0.3", "leaky_relu", {"x": rng.standard_normal((2, 3, 3, 2))}, {"negative_slope": 0.3}
    for name, (xs, pool, stride, padding) in POOL_CASES.items():
        yield name, "avg_pool2d", {"x": rng.standard_normal(xs)}, \
            {"pool_size": pool, "stride": stride, "padding": padding}
    yield "channel_scale", "channel_scale", {"x": rng.standard_normal((2, 3, 4, 5)),
                                             "s": rng.random((2, 1, 1, 5))}, {}
    yield "stochastic_depth", "stochastic_depth", {"x": rng.standard_normal((4, 2, 3, 2))}, \
        {"keep": np.array([True, False, True, True]), "keep_prob": 0.75}


def make(out: Path) -> None:
    jax, ops = jax_ops()
    rng = np.random.default_rng(16)
    arrays = {}
    for name, op, inputs, options in cases(rng):
        f = ops[op]
        names = list(inputs)
        y, vjp = jax.vjp(lambda *a: f(*a, **options), *[inputs[k] for k in names])
        dy = rng.standard_normal(np.shape(y))
        grads = vjp(dy)
        arrays.update({f"{name}/{k}": np.asarray(v) for k, v in inputs.items()})
        arrays.update({f"{name}/grad_{k}": np.asarray(g) for k, g in zip(names, grads)})
        arrays[f"{name}/y"], arrays[f"{name}/dy"] = np.asarray(y), dy
        stored = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in options.items()}
        arrays[f"{name}/options"] = np.array(json.dumps({"op": op, **stored}))
    save_fixture(out, arrays, f"jax {jax.__version__}")


def save_fixture(out: Path, arrays: dict, made_by: str) -> None:
    """Write ``arrays`` to ``out`` as a compressed ``.npz``, atomically (never a half-written fixture)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".npz")
    os.close(fd)
    np.savez_compressed(tmp, **arrays)
    os.chmod(tmp, 0o644)                                         # mkstemp makes it private
    os.replace(tmp, out)
    print(f"wrote {out} ({len(arrays)} arrays, {made_by})")


def fixture_main(make_fixture, default_out: str, doc: str, argv=None) -> None:
    """The command line of a fixture tool: ``--out PATH`` (default ``default_out``), then ``make_fixture(out)``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(default_out),
                        help="where to write the fixture (default: %(default)s)")
    make_fixture(parser.parse_args(argv).out)


def main(argv=None) -> None:
    fixture_main(make, "tests/fixtures/ops_jax.npz", __doc__, argv)


if __name__ == "__main__":
    main()
