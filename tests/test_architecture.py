"""The seams of the package (issue 13): only the backend switch knows about devices, no private name
crosses a module boundary, and every backend exports the same device contract."""
from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from tinydeeplab import functional as R

PACKAGE = Path(__file__).resolve().parents[1] / "tinydeeplab"
DEVICE_FREE = ["nn", "models", "train", "io", "data", "cli.py", "demo.py", "parity.py", "viz.py"]
"""Parts of the package that must not know which backend keeps arrays where."""

DEVICE_WORDS = re.compile(r"cuda|copy_to_host|numba|DeviceNDArray|get_backend\(\)\s*==|isinstance\([^)]*np\.ndarray\)")


def sources(parts):
    for part in parts:
        path = PACKAGE / part
        yield from (sorted(path.rglob("*.py")) if path.is_dir() else [path])


def test_only_the_backend_switch_and_the_kernels_know_about_devices():
    found = []
    for path in sources(DEVICE_FREE):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for m in DEVICE_WORDS.finditer(line):
                found.append(f"{path.relative_to(PACKAGE)}:{n}: {m.group(0)!r} in {line.strip()[:90]}")
    allowed = [f for f in found if "isinstance(" in f and ("image" in f or "images" in f or "obj" in f
                                                           or "value" in f)]   # input checks, not device tests
    assert [f for f in found if f not in allowed] == []


def _package_of(path: Path) -> tuple[str, ...]:
    return ("tinydeeplab", *path.relative_to(PACKAGE).parent.parts)


def _imported_private_names(path: Path):
    """Private names (``_x``, or anything from a ``_module``) that ``path`` imports from another package.

    A package's private module or name used inside that same package is the normal way to keep an
    implementation detail in one place; the seam the issue asks for is between packages.
    """
    here = _package_of(path)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        parts = (node.module or "").split(".") if node.module else []
        if node.level:
            base = here[:len(here) - (node.level - 1)] if node.level > 1 else here
            target = (*base, *parts)
        else:
            target = tuple(parts)
        if target[:1] != ("tinydeeplab",):
            continue                                   # third-party modules are not our seams
        private_module = next((i for i, p in enumerate(target) if p.startswith("_") and not p.startswith("__")), None)
        names = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
        owner = target[:private_module] if private_module is not None else target[:-1] if names else None
        if owner is None:
            continue
        # a private module's package is the folder holding it; a private name's is its module's folder
        if private_module is not None:
            if target[:private_module] != here:
                yield f"{path.relative_to(PACKAGE)}: from {'.'.join(target)} import ..."
        elif names:
            module_package = target if (PACKAGE.parent / Path(*target)).is_dir() else target[:-1]
            if module_package != here:
                yield f"{path.relative_to(PACKAGE)}: from {'.'.join(target)} import {', '.join(names)}"


@pytest.mark.parametrize("name", ["cpu", "cuda"])
def test_every_backend_exports_the_device_contract_with_the_reference_signatures(name):
    from tinydeeplab import backend
    try:
        mod = backend.ops(name)
    except ImportError as err:
        pytest.skip(str(err))
    for fn in R.DEVICE_CONTRACT:
        assert inspect.signature(getattr(mod, fn)) == inspect.signature(getattr(R, fn)), fn


def test_the_host_sgd_update_is_bitwise_the_update_sgd_always_did():
    """The optimizer now calls the backend's sgd_update; on the host that must be the same arithmetic."""
    import numpy as np

    from tinydeeplab.nn import Conv2D
    from tinydeeplab.train import SGD

    rng = np.random.default_rng(0)
    for momentum, nesterov, wd in [(0.9, False, 1e-4), (0.9, True, 1e-2), (0.0, False, 1e-3)]:
        conv = Conv2D(3, 4, 3, use_bias=True, seed=1)
        expected = {k: v.copy() for k, v in conv.params.items()}
        velocity = {k: np.zeros_like(v) for k, v in expected.items()}
        opt = SGD(conv, 0.05, momentum=momentum, weight_decay=wd, nesterov=nesterov)
        for _ in range(3):
            conv.grads = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in conv.params.items()}
            for k, p in expected.items():                      # the update written out, as before the change
                d = conv.grads[k].astype(p.dtype, copy=True)
                if k == "kernel":
                    d += wd * p
                if momentum == 0:
                    p -= 0.05 * d
                    continue
                v = velocity[k]
                v *= momentum
                v += d
                p -= 0.05 * (d + momentum * v) if nesterov else 0.05 * v
            opt.step()
        for k in expected:
            assert np.array_equal(conv.params[k], expected[k]), (momentum, nesterov, k)
