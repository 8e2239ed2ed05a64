#!/usr/bin/env python
"""Keras evidence for C-channel presets: tests/fixtures/v3plus_tiny/cases_4ch.npz.

Two steps, in two environments (tinydeeplab needs Numba, the Keras environment does not have it)::

    PYTHONPATH=. python tools/make_multichannel_fixture.py export /tmp/ch4      # project venv
    /work/kerasenv/bin/python tools/make_multichannel_fixture.py keras /tmp/ch4 # keras-hub + jax

``export`` loads the v3plus_tiny fixture preset for 4 input channels (``adapt="repeat"``), saves it as a
preset in DIR with a random 4-channel input; ``keras`` loads that preset with KerasHub's
``DeepLabV3ImageSegmenter.from_preset`` (whose ResNetBackbone reads the 4 of ``image_shape``), runs it
(``training=False``) and writes the input and Keras's logits to the fixture file.
``tests/test_input_channels.py`` then compares tinydeeplab's logits of the same adapted model with them.
"""
import os
import sys
from pathlib import Path

import numpy as np

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "v3plus_tiny"


def export(out: Path) -> None:
    from tinydeeplab import load_keras_preset, save_keras_preset

    model = load_keras_preset(FIXTURE / "preset", in_channels=4, adapt="repeat")
    save_keras_preset(model, out / "preset")
    np.save(out / "input.npy", np.random.default_rng(4).normal(size=(1, 64, 96, 4)).astype(np.float32))


def keras(out: Path) -> None:
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras_hub

    segmenter = keras_hub.models.DeepLabV3ImageSegmenter.from_preset(str(out / "preset"))
    x = np.load(out / "input.npy")
    logits = np.asarray(segmenter(x, training=False), np.float32)
    np.savez(FIXTURE / "cases_4ch.npz", input=x, logits=logits)
    print(f"Keras input {segmenter.backbone.input.shape}, logits {logits.shape} -> {FIXTURE / 'cases_4ch.npz'}")


if __name__ == "__main__":
    step, directory = sys.argv[1], Path(sys.argv[2])
    directory.mkdir(parents=True, exist_ok=True)
    {"export": export, "keras": keras}[step](directory)
