"""Make the tiny CamVid sample the notebooks use (run once by a maintainer who has CamVid; not needed to run them).

    python notebooks/data/make_camvid_sample.py /path/to/camvid      # the SegNet layout: train/, trainannot/, ...

Writes, next to this file:

* ``camvid_sample/train/*.png`` and ``camvid_sample/trainannot/*.png``: 3 training frames and their
  labels, downscaled from 360x480 to 144x192 (images bilinear, labels nearest neighbour, so the labels
  keep the SegNet values 0..10 and 11 = void). The 3 frames are the ones with the most classes present.
* ``camvid_train_class_counts.csv``: for every one of the 367 training labels (full resolution), the
  number of pixels of each of the 11 classes and of void: the input of median-frequency weighting.

Source: CamVid (Brostow et al. 2009) in the SegNet release (Badrinarayanan et al. 2017).
"""
import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
SIZE = (192, 144)                      # PIL (width, height): 360x480 / 2.5
CLASSES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
           "Pedestrian", "Bicyclist"]


def main(root: Path) -> None:
    labels = sorted((root / "trainannot").glob("*.png"))
    counts = []
    for path in labels:
        label = np.asarray(Image.open(path))                                     # (360, 480), 0..11
        counts.append(np.bincount(label.ravel(), minlength=12)[:12])
    counts = np.array(counts)                                                    # (367, 12)
    header = "image," + ",".join(CLASSES) + ",void"
    rows = [f"{p.stem}," + ",".join(str(int(v)) for v in row) for p, row in zip(labels, counts)]
    (HERE / "camvid_train_class_counts.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    # the 3 frames with the most classes present (ties: the first), spread over the sequence
    present = (counts[:, :11] > 0).sum(1)
    thirds = np.array_split(np.arange(len(labels)), 3)
    chosen = [int(part[np.argmax(present[part])]) for part in thirds]
    for sub in ("train", "trainannot"):
        (HERE / "camvid_sample" / sub).mkdir(parents=True, exist_ok=True)
    for i in chosen:
        name = labels[i].name
        image = Image.open(root / "train" / name).convert("RGB").resize(SIZE, Image.BILINEAR)
        label = Image.open(labels[i]).resize(SIZE, Image.NEAREST)
        image.save(HERE / "camvid_sample" / "train" / name, optimize=True)
        label.save(HERE / "camvid_sample" / "trainannot" / name, optimize=True)
        print(name, "classes present:", int(present[i]))


if __name__ == "__main__":
    main(Path(sys.argv[1]).expanduser())
