"""Synthetic shapes: a segmentation problem made on the fly, for demos, tests and quick training runs.

Each image is a smooth random colour gradient (sometimes with a soft stripe texture) plus pixel noise,
with 1-4 filled shapes painted on it.  Classes: 0 background, 1 circle, 2 square (axis-aligned or
rotated), 3 triangle.  Colours are random for every shape and for the background, so only the *shape*
tells the class.  Shapes have a radius of 12-28 % of the shorter image side, lie inside the image, and
overlap one another by at most a quarter of their area (later shapes are painted on top).  Edges are
crisp: a pixel belongs to a shape when its centre is inside, and image and label agree exactly.

Item ``i`` depends only on ``(seed, i)`` (its own ``numpy.random.default_rng([seed, i])``), so items can
be generated in any order, in any thread, and are the same every time.
"""
from __future__ import annotations

import numpy as np

from .base import SegmentationDataset
from .errors import DatasetError

SHAPE_CLASSES = ["background", "circle", "square", "triangle"]
SHAPE_PALETTE = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [0, 130, 200]], np.uint8)

MIN_RADIUS, MAX_RADIUS = 0.12, 0.28      # fraction of the shorter image side
MAX_OVERLAP = 0.25                       # of a new shape's area covering earlier shapes
MIN_CONTRAST = 90.0                      # Euclidean RGB distance of a shape's colour from the background


def _shape_mask(cls: int, yy, xx, cy, cx, r, angle) -> np.ndarray:
    """Pixels (centres ``yy``, ``xx``) inside a shape of class ``cls`` and radius ``r``.  (H, W) bool.

    The radius sets the size: a circle of radius r; a square of equal area (half side 0.886 r); an
    equilateral triangle with circumradius 1.3 r.
    """
    dy, dx = yy - cy, xx - cx
    if cls == 1:
        return dy * dy + dx * dx <= r * r
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy                   # coordinates in the shape's frame
    if cls == 2:
        a = 0.886 * r
        return (np.abs(u) <= a) & (np.abs(v) <= a)
    # triangle: inside all three half-planes whose outward normals are 120 degrees apart
    inside = np.ones(yy.shape, bool)
    apothem = 0.65 * r                                         # circumradius 1.3 r / 2
    for k in range(3):
        t = np.pi / 2 + 2 * np.pi * k / 3
        inside &= np.cos(t) * u + np.sin(t) * v <= apothem
    return inside


def _bounding_radius(cls: int, r: float) -> float:
    return {1: r, 2: 0.886 * np.sqrt(2) * r, 3: 1.3 * r}[cls]


class SyntheticShapes(SegmentationDataset):
    """``length`` random images of size ``size`` = (H, W) with circles, squares and triangles.

    >>> ds = SyntheticShapes(length=4, size=(32, 40), seed=0)
    >>> image, label = ds[1]
    >>> image.shape, image.dtype.name, label.shape, label.dtype.name
    ((32, 40, 3), 'uint8', (32, 40), 'uint8')
    >>> bool((ds[1][1] == label).all()), ds.class_names
    (True, ['background', 'circle', 'square', 'triangle'])
    """

    num_classes = len(SHAPE_CLASSES)

    def __init__(self, length: int = 1000, size=(96, 96), seed: int = 0, max_shapes: int = 4,
                 colour_hints: bool = False):
        if int(length) < 1:
            raise DatasetError(f"length must be >= 1, got {length}")
        h, w = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
        if min(h, w) < 8:
            raise DatasetError(f"size must be at least 8x8, got {h}x{w}")
        if not 1 <= int(max_shapes):
            raise DatasetError(f"max_shapes must be >= 1, got {max_shapes}")
        self.length = int(length)
        self.size = (h, w)
        self.seed = int(seed)
        self.max_shapes = int(max_shapes)
        self.colour_hints = bool(colour_hints)
        self.class_names = list(SHAPE_CLASSES)
        self.palette = SHAPE_PALETTE.copy()

    def __len__(self) -> int:
        return self.length

    @property
    def names(self) -> list[str]:
        return [f"shapes_s{self.seed}_{i:06d}" for i in range(self.length)]

    def _background(self, rng, yy, xx) -> np.ndarray:
        h, w = self.size
        c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        theta = rng.uniform(0, 2 * np.pi)
        t = (np.cos(theta) * xx / w + np.sin(theta) * yy / h)                  # (H, W)
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
        bg = c0 + (c1 - c0) * t[..., None]                                     # (H, W, 3)
        if rng.random() < 0.5:                                                 # soft stripes
            phi, period = rng.uniform(0, 2 * np.pi), rng.uniform(0.2, 0.6) * min(h, w)
            stripes = np.sin(2 * np.pi * (np.cos(phi) * xx + np.sin(phi) * yy) / period)
            bg = bg + rng.uniform(10, 30) * stripes[..., None]
        if self.colour_hints:                                                  # greyish, so hue marks shapes
            bg = bg.mean(axis=2, keepdims=True) + 0.25 * (bg - bg.mean(axis=2, keepdims=True))
        return bg

    def _colour(self, rng, cls: int) -> np.ndarray:
        """A random RGB colour; with ``colour_hints`` its hue lies near the class's own hue
        (circle red, square green, triangle blue, +- 30 degrees), so colour helps, shape decides
        between close hues."""
        if not self.colour_hints:
            return rng.uniform(0, 255, 3)
        hue = ((cls - 1) / 3 + rng.uniform(-1 / 12, 1 / 12)) % 1.0
        sat, val = rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.0)
        k = (np.array([5.0, 3.0, 1.0]) + hue * 6) % 6                           # HSV -> RGB
        return 255 * val * (1 - sat * np.clip(np.minimum(k, 4 - k), 0, 1))

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, i])
        h, w = self.size
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5                 # pixel centres, (H, W)
        image = self._background(rng, yy, xx)                                  # (H, W, 3) float
        label = np.zeros((h, w), np.uint8)                                     # (H, W)
        side = min(h, w)
        for _ in range(int(rng.integers(1, self.max_shapes + 1))):
            cls = int(rng.integers(1, 4))
            for _attempt in range(20):
                r = rng.uniform(MIN_RADIUS, MAX_RADIUS) * side
                br = _bounding_radius(cls, r)
                cy, cx = rng.uniform(br, h - br), rng.uniform(br, w - br)
                angle = 0.0 if (cls == 2 and rng.random() < 0.5) else rng.uniform(0, 2 * np.pi)
                mask = _shape_mask(cls, yy, xx, cy, cx, r, angle)
                area = int(mask.sum())
                if area and (label[mask] > 0).sum() <= MAX_OVERLAP * area:
                    break
            else:
                continue                                                       # no room: skip it
            under = image[mask].mean(axis=0)
            for _attempt in range(20):                                         # stand out locally
                colour = self._colour(rng, cls)
                if np.linalg.norm(colour - under) >= MIN_CONTRAST:
                    break
            image[mask] = colour
            label[mask] = cls
        image += rng.normal(0.0, rng.uniform(3.0, 12.0), image.shape)         # pixel noise
        return np.clip(np.rint(image), 0, 255).astype(np.uint8), label
