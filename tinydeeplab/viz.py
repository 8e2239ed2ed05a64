"""Pictures of segmentations: colour label maps, overlays on the image, and comparison figures.

>>> import numpy as np
>>> labels = np.array([[0, 1], [255, 2]], np.uint8)
>>> colorize(labels, default_palette(3))[1, 0].tolist()         # the ignore label is black
[0, 0, 0]
>>> overlay(np.full((2, 2, 3), 200, np.uint8), labels, default_palette(3)).shape
(2, 2, 3)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .data.base import voc_palette as default_palette  # noqa: F401  (the VOC colour map)


def colorize(labels, palette, ignore_label: int = 255) -> np.ndarray:
    """Label map (H, W) -> RGB (H, W, 3) uint8; ``ignore_label`` and unknown labels are black."""
    labels = np.asarray(labels)
    palette = np.asarray(palette, np.uint8)
    table = np.zeros((max(256, len(palette)), 3), np.uint8)
    table[:len(palette)] = palette
    if ignore_label is not None and ignore_label < len(table):
        table[ignore_label] = 0
    return table[labels.astype(np.int64)]


def overlay(image, labels, palette, alpha: float = 0.5, ignore_label: int = 255) -> np.ndarray:
    """Blend the colour label map over an RGB uint8 image: ``(1 - alpha) * image + alpha * colour``.

    Pixels with the ignore label keep the image unchanged.
    """
    image = np.asarray(image)
    if image.shape[:2] != np.shape(labels):
        raise ValueError(f"image {image.shape} and labels {np.shape(labels)} differ in size")
    colour = colorize(labels, palette, ignore_label).astype(np.float32)
    out = (1 - alpha) * image.astype(np.float32) + alpha * colour
    keep = np.asarray(labels) == ignore_label
    out[keep] = image[keep]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def save_png(path, array) -> Path:
    """Write an (H, W) or (H, W, 3) uint8 array as PNG (atomically: temp file, then rename)."""
    from PIL import Image

    from .atomic import open_for_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open_for_write(path) as f:
        Image.fromarray(np.asarray(array, np.uint8)).save(f, format="PNG")
    return path


def prediction_figure(path, images, predictions, palette, class_names=None, labels=None,
                      ignore_label: int = 255, title=None) -> Path:
    """A grid: one row per image with the image, the ground truth (when ``labels``), the prediction."""
    from matplotlib.figure import Figure  # no pyplot: leaves the user's (e.g. notebook) backend alone
    from matplotlib.patches import Patch

    cols = 3 if labels is not None else 2
    n = len(images)
    fig = Figure(figsize=(3.2 * cols, 2.6 * n + 0.6))
    axes = fig.subplots(n, cols, squeeze=False)
    for i in range(n):
        panels = [("image", images[i])]
        if labels is not None:
            panels.append(("ground truth", overlay(images[i], labels[i], palette, 0.6, ignore_label)))
        panels.append(("prediction", overlay(images[i], predictions[i], palette, 0.6, ignore_label)))
        for ax, (name, picture) in zip(axes[i], panels):
            ax.imshow(picture)
            ax.set_axis_off()
            if i == 0:
                ax.set_title(name)
    if class_names is not None:
        handles = [Patch(color=np.asarray(palette[k]) / 255, label=name) for k, name in enumerate(class_names)]
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06 if class_names is not None else 0, 1, 1))
    from .atomic import open_for_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open_for_write(path) as f:
        fig.savefig(f, dpi=100, format="png")
    return path
