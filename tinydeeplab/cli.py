"""Command line: ``tinydeeplab demo | train | evaluate | predict | summary | parity``.

Errors in what the user typed (bad paths, bad presets) are printed as one line and exit with
status 2; a traceback means a bug in tinydeeplab.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from .errors import OptionError, TinyDeepLabError


def cmd_demo(args) -> int:
    from .demo import run_demo

    t0 = time.perf_counter()
    print(f"training a small DeepLabV3+ on synthetic shapes ({args.epochs} epochs x {args.steps_per_epoch} steps "
          f"of {args.batch_size} images {args.size}x{args.size}); outputs in {args.out}", file=sys.stderr)
    r = run_demo(args.out, model_name=args.model, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                 batch_size=args.batch_size, size=args.size, lr=args.lr, seed=args.seed, resume=args.resume)
    print(f"\n{r['num_parameters']:,} parameters trained in {time.perf_counter() - t0:.0f} s")
    print(r["confusion"].table(r["class_names"]))
    print(f"validation mIoU {r['miou']:.4f}, pixel accuracy {r['pixel_accuracy']:.4f}")
    out = r["out_dir"]
    print(f"wrote {out / 'predictions.png'} (overlays), {out / 'curves.png'} (training curves), "
          f"{out / 'metrics.csv'}, {out / 'checkpoint.npz'}, {out / 'preset'}")
    return 0


# -- datasets and models from the command line ---------------------------------------------------
DATASETS = ("voc", "sbd", "camvid", "folder", "shapes")


def open_dataset(name, root, split, num_classes=None):
    from . import data

    if name == "shapes":
        return data.SyntheticShapes(length=400 if split == "train" else 100, seed=0 if split == "train" else 1000,
                                    colour_hints=True)
    if root is None:
        raise ValueError(f"--data DIR is required for --dataset {name}")
    if name == "voc":
        return data.VOCSegmentation(root, split)
    if name == "sbd":
        return data.SBDSegmentation(root, split)
    if name == "camvid":
        return data.CamVid(root, split)
    if num_classes is None:
        raise ValueError("--dataset folder needs --num-classes")
    base = Path(root) / split if (Path(root) / split).is_dir() else Path(root)
    return data.FolderDataset(base / "images", base / "masks", num_classes)


def load_model(args):
    """The model of ``--preset`` or ``--checkpoint`` (exactly one)."""
    from .io.keras_preset import load_keras_preset, model_from_configs
    from .train.checkpoint import load_checkpoint, read_checkpoint

    if bool(args.preset) == bool(args.checkpoint):
        raise ValueError("give exactly one of --preset DIR or --checkpoint FILE")
    if args.preset:
        return _place(load_keras_preset(args.preset), args)
    header = read_checkpoint(args.checkpoint)[0]
    configs = header.get("meta", {}).get("model_configs")
    if configs is None:
        raise ValueError(f"{args.checkpoint}: this checkpoint does not record its architecture "
                         "(written by tinydeeplab train / demo?)")
    model = model_from_configs(configs, source=str(args.checkpoint))
    load_checkpoint(args.checkpoint, model)
    return _place(model, args)


def _place(model, args):
    """Move the model's weights to the GPU once when ``--backend cuda`` (inputs/outputs stay on the host)."""
    return model.to("cuda") if getattr(args, "backend", None) == "cuda" else model


def cmd_train(args) -> int:
    from .data import BatchLoader, Compose, RandomCrop, RandomHorizontalFlip, RandomScale
    from .io.keras_preset import load_keras_preset, preset_configs
    from .models.recipes import build_model
    from .train import SGD, Cosine, Poly, Trainer, evaluate

    train_set = open_dataset(args.dataset, args.data, args.split, args.num_classes)
    val_set = open_dataset(args.dataset, args.data, args.val_split, args.num_classes) if args.val_split else None
    k = train_set.num_classes
    if args.init_preset:
        model = load_keras_preset(args.init_preset)
        if model.num_classes != k:
            raise ValueError(f"{args.init_preset} has {model.num_classes} classes, the dataset {k}")
    else:
        model = build_model(args.model, k, seed=args.seed)
    crop = tuple(args.crop)
    transform = Compose([RandomScale(args.min_scale, args.max_scale), RandomCrop(crop), RandomHorizontalFlip()])
    conv = model.preprocessor
    loader = BatchLoader(train_set, args.batch_size, transform=transform, seed=args.seed,
                         scale=float(conv.scale.ravel()[0]) if conv.scale is not None else 1.0,
                         offset=float(conv.offset.ravel()[0]) if conv.offset is not None else 0.0)
    if conv.scale is not None and conv.scale.size > 1:
        raise ValueError("training needs one scale/offset for all channels (this preset has per-channel values)")
    total = args.epochs * len(loader)
    warmup = min(args.warmup, total // 2)
    schedule = (Cosine(total, args.lr, warmup=warmup) if args.schedule == "cosine"
                else Poly(total, args.lr, warmup=warmup))
    val_fn = (lambda m: evaluate(m, val_set, progress=False)) if val_set is not None else None
    trainer = Trainer(model, SGD(model, args.lr, momentum=args.momentum, weight_decay=args.weight_decay), loader,
                      epochs=args.epochs, lr_schedule=schedule, out_dir=args.out, clip_norm=args.clip_norm,
                      val_fn=val_fn, checkpoint_meta={"model_configs": preset_configs(model)})
    print(f"training {model.num_parameters():,} parameters on {len(train_set)} {args.dataset} images "
          f"({len(loader)} batches of {args.batch_size} per epoch); outputs in {args.out}", file=sys.stderr)
    trainer.fit(resume=not args.restart)
    model.to("numpy")                                  # back from the GPU (a no-op on the CPU backends)
    preset = _replace_preset(model, Path(args.out) / "preset")
    print(f"done: {Path(args.out) / 'checkpoint.npz'}, {Path(args.out) / 'metrics.csv'}, "
          f"{Path(args.out) / 'curves.png'}, {preset}")
    return 0


def _replace_preset(model, preset: Path) -> Path:
    """Write ``model`` as ``preset``, replacing an older one (a resumed or extended run).

    The new preset is complete in ``preset.new`` before the old one moves aside, so an interruption
    leaves either the old preset or the new one (as ``preset.new``), never a half-written directory.
    """
    import shutil
    import warnings

    fresh, old = preset.with_name(preset.name + ".new"), preset.with_name(preset.name + ".old")
    for leftover in (fresh, old):
        if leftover.exists():
            shutil.rmtree(leftover)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                # narrow models: the tinydeeplab-only warning
        model.save_keras_preset(fresh)
    if preset.exists():
        preset.rename(old)
    fresh.rename(preset)
    shutil.rmtree(old, ignore_errors=True)
    return preset


def _tta(args) -> dict:
    tta = {"scales": tuple(args.scales), "flip": args.flip}
    if args.window:
        tta["window"] = tuple(args.window)
    return tta


def cmd_evaluate(args) -> int:
    from .train import evaluate

    model = load_model(args)
    dataset = open_dataset(args.dataset, args.data, args.split, args.num_classes)
    if dataset.num_classes != model.num_classes:
        raise ValueError(f"the model predicts {model.num_classes} classes, {args.dataset} has {dataset.num_classes}")
    t0 = time.perf_counter()
    r = evaluate(model, dataset, **_tta(args))
    print(r["confusion"].table(dataset.class_names))
    print(f"{args.dataset} {args.split}: {len(dataset)} images, mIoU {r['miou']:.4f}, "
          f"pixel accuracy {r['pixel_accuracy']:.4f} ({time.perf_counter() - t0:.0f} s)")
    if args.figure:
        from .viz import prediction_figure

        shown = [dataset[i] for i in np.linspace(0, len(dataset) - 1, min(4, len(dataset))).astype(int)]
        prediction_figure(args.figure, [im for im, _ in shown], [model.segment(im) for im, _ in shown],
                          dataset.palette, dataset.class_names, labels=[lab for _, lab in shown],
                          title=f"{args.dataset} {args.split}: mIoU {r['miou']:.3f}")
        print(f"wrote {args.figure}")
    if args.json:
        import json
        Path(args.json).write_text(json.dumps({"miou": r["miou"], "pixel_accuracy": r["pixel_accuracy"],
                                               "iou": r["iou"], "class_names": dataset.class_names,
                                               "confusion": r["confusion"].matrix.tolist()}, indent=1))
    return 0


def cmd_predict(args) -> int:
    from .train.evaluate import _Progress
    from .train.tiling import DEFAULT_WINDOW, STREAM_ABOVE, model_input_size, segment_tiled
    from .viz import default_palette, overlay, save_png

    window, overlap = _predict_tiling(args)
    names = _output_names(args.images)
    model = load_model(args)
    out = Path(args.out)
    palette = default_palette(model.num_classes)
    for path, name in zip(args.images, names):
        image = _read_large_image(path)
        tiles = window
        if tiles is None:
            _, (mh, mw) = model_input_size(model.preprocessor, *image.shape[:2], args.full_image)
            if mh * mw > STREAM_ABOVE:
                tiles = DEFAULT_WINDOW
                print(f"{path}: {mw}x{mh} model-input pixels > {STREAM_ABOVE:,}: tiling in "
                      f"{tiles[1]}x{tiles[0]} windows (choose with --window H W)", file=sys.stderr)
        bar = _Progress(tiles is not None and sys.stderr.isatty())
        labels = segment_tiled(model, image, window=tiles, overlap=overlap, full_image=args.full_image,
                               scales=tuple(args.scales), flip=args.flip,
                               progress=lambda done, total: bar.show(f"{path}: tile {done}/{total}"))
        bar.done()
        colours = np.empty_like(image)                                               # (H, W, 3) uint8
        for r in range(0, image.shape[0], 256):                                      # no float copy of it all
            colours[r:r + 256] = overlay(image[r:r + 256], labels[r:r + 256], palette)
        labels_png, overlay_png = out / f"{name}_labels.png", out / f"{name}_overlay.png"
        save_png(labels_png, labels)
        save_png(overlay_png, colours)
        print(f"{path}: {image.shape[1]}x{image.shape[0]} -> {labels_png}, {overlay_png}")
    return 0


def _predict_tiling(args):
    """``(window or None, overlap or None)`` of ``predict``, or an OptionError naming the option."""
    from .train.tiling import DEFAULT_WINDOW

    window = None if args.window is None else tuple(args.window)
    if window is not None and min(window) < 1:
        raise OptionError(f"--window H W: both must be positive pixel counts, got {window[0]} {window[1]}")
    if args.overlap is not None:
        limit = min(window or DEFAULT_WINDOW)
        if not 0 <= args.overlap < limit:
            raise OptionError(f"--overlap {args.overlap}: must be >= 0 and smaller than the window's "
                              f"smaller side ({limit})")
    return window, args.overlap


def _output_names(images) -> list[str]:
    """Output name (without ``_labels.png``) per input: the file's stem, under just enough of its
    parent folders to keep apart inputs of the same stem (``a/x.png``, ``b/x.png`` -> ``a/x``, ``b/x``);
    the whole file name when only the extension differs. The same file twice is an error.

    >>> _output_names(["a/x.png", "b/x.png", "c/y.jpg"])
    ['a/x', 'b/x', 'y']
    >>> _output_names(["d/x.png", "d/x.jpg", "e/d/y.png", "f/d/y.png"])
    ['x.png', 'x.jpg', 'e/d/y', 'f/d/y']
    """
    import os

    paths = [Path(os.path.abspath(p)) for p in images]                               # '..' resolved
    seen = {}
    for given, path in zip(images, paths):
        if path in seen:
            raise OptionError(f"{given}: image given twice (as {seen[path]} too)")
        seen[path] = given
    groups: dict[str, list[int]] = {}
    for i, path in enumerate(paths):
        groups.setdefault(path.stem, []).append(i)
    names = [path.stem for path in paths]
    for stem, members in groups.items():
        if len(members) == 1:
            continue
        folders = [paths[i].parent.parts[1:][::-1] for i in members]               # nearest first, no root
        files = [paths[i].name for i in members]

        def distinct(k, whole_name):
            return len({(f[:k], name if whole_name else stem) for f, name in zip(folders, files)}) == len(members)
        k, whole_name = next((k, w) for w in (False, True) for k in range(max(map(len, folders)) + 1)
                             if distinct(k, w))
        for i, folder, name in zip(members, folders, files):
            names[i] = "/".join([*reversed(folder[:k]), name if whole_name else stem])
    return names


def _read_large_image(path) -> np.ndarray:
    """:func:`read_image`, without Pillow's decompression-bomb warning for images up to twice its
    pixel limit (large images are what tiled prediction is for); above that a one-line error."""
    import warnings

    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return read_image(path)
        except Image.DecompressionBombError as err:
            raise OptionError(f"{path}: {err}") from None


def cmd_summary(args) -> int:
    from .io.keras_preset import load_keras_preset

    model = load_keras_preset(args.preset)
    n_stats = sum(b.size for _, b in model.named_buffers())
    print(f"{args.preset}: {model.num_parameters():,} trainable parameters "
          f"(backbone {model.backbone.num_parameters():,}) + {n_stats:,} batch-norm statistics "
          f"= {model.num_parameters() + n_stats:,} weights (Keras's count_params); {model.num_classes} classes")
    for name, p in model.named_parameters():
        print(f"  {name:70s} {str(p.shape):>22s}")
    return 0


def read_image(path) -> np.ndarray:
    """An RGB uint8 (H, W, 3) array from an image file, or a one-line ValueError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise ValueError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{path}: not a readable image ({err})") from None


def cmd_parity(args) -> int:
    from . import parity
    from .io.keras_preset import load_keras_preset

    model = load_keras_preset(args.preset)
    if args.cases:
        with np.load(args.cases, allow_pickle=False) as data:
            rows = parity.compare_with_cases(model, {k: data[k] for k in data.files})
        print(f"tinydeeplab vs stored Keras logits in {args.cases}")
    else:
        if args.image:
            x, _ = model.preprocessor(read_image(args.image))                       # (1, h, w, 3)
        else:
            h, w = args.size or model.preprocessor.image_size or (512, 512)
            x = np.random.default_rng(0).normal(size=(1, h, w, 3)).astype(np.float32)
        try:
            theirs = parity.keras_stages(args.preset, x, model)
        except RuntimeError as err:
            raise ValueError(str(err)) from None
        rows = parity.compare(parity.tinydeeplab_stages(model, x), theirs)
        print(f"tinydeeplab vs KerasHub on {'image ' + args.image if args.image else 'a random input'} "
              f"of shape {x.shape}")
    print(parity.format_table(rows, args.tolerance))
    worst = max(r["relative"] for r in rows)
    print(f"worst relative difference {worst:.3e}: {'OK' if worst <= args.tolerance else 'DIFFERENT'} "
          f"(tolerance {args.tolerance:g})")
    return 0 if worst <= args.tolerance else 1


def _backend_arg(parser) -> None:
    parser.add_argument("--backend", choices=("numpy", "cpu", "cuda"),
                        help="ops backend (default: $TINYDEEPLAB_BACKEND or cpu); cuda runs on the GPU "
                             "(pip install 'tinydeeplab[cuda]')")


PREDICT_DESCRIPTION = (
    "Writes NAME_labels.png (class index per pixel) and NAME_overlay.png for every image. A preset whose "
    "preprocessor has image_size and crop_to_aspect_ratio (KerasHub's default) sees only the centred crop "
    "with that aspect ratio: pixels outside it get label 255 unless --full-image. With --window H W the "
    "image is labelled tile by tile (window in model-input pixels, after the preset's resize), tiles "
    "overlapping by --overlap pixels and blended with linear ramp weights, holding class scores for one "
    "row of tiles only; without --window, images of more than 2048x2048 model-input pixels are tiled in "
    "512x512 windows automatically (said on stderr). Tiles change what the ASPP image-pooling branch "
    "averages over, so tiled labels can differ from whole-image ones.")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tinydeeplab", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="train a small DeepLabV3+ on synthetic shapes (offline), evaluate, draw",
                       description="Trains a small DeepLabV3+ on generated shapes (circles, squares, triangles; "
                       "about two minutes on 2 CPU cores), prints the per-class IoU and mIoU, and writes "
                       "predictions.png, curves.png, metrics.csv/json, checkpoint.npz and a preset to --out.")
    d.add_argument("--out", default="tinydeeplab-demo", help="output directory (default tinydeeplab-demo)")
    d.add_argument("--model", default="small", help="architecture recipe: tiny, small (default)")
    d.add_argument("--epochs", type=int, default=14, help="epochs (default 14)")
    d.add_argument("--steps-per-epoch", type=int, default=50, help="batches per epoch (default 50)")
    d.add_argument("--batch-size", type=int, default=8, help="images per batch (default 8)")
    d.add_argument("--size", type=int, default=96, help="image side in pixels (default 96)")
    d.add_argument("--lr", type=float, default=0.1, help="peak learning rate (default 0.1)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--resume", action="store_true", help="continue an interrupted demo in --out")
    d.set_defaults(func=cmd_demo)
    t = sub.add_parser("train", help="train DeepLabV3+ on a dataset",
                       description="Trains with SGD + momentum, weight decay, cosine/poly schedule with warm-up, "
                       "random scale/crop/flip. Writes checkpoint.npz after every epoch (resumed automatically "
                       "when --out already has one), metrics.csv/json, curves.png and finally a preset.")
    t.add_argument("--dataset", choices=DATASETS, required=True)
    t.add_argument("--data", help="dataset root directory (not needed for shapes)")
    t.add_argument("--split", default="train", help="training split (default train)")
    t.add_argument("--val-split", help="split to evaluate after every epoch (e.g. val)")
    t.add_argument("--num-classes", type=int, help="classes of a folder dataset")
    t.add_argument("--model", default="small", help="architecture: tiny, small, resnet18, resnet50 (default small)")
    t.add_argument("--init-preset", help="start from the weights of a preset directory instead")
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--crop", type=int, nargs=2, default=(256, 256), metavar=("H", "W"), help="training crop")
    t.add_argument("--min-scale", type=float, default=0.5)
    t.add_argument("--max-scale", type=float, default=2.0)
    t.add_argument("--lr", type=float, default=0.05)
    t.add_argument("--schedule", choices=("cosine", "poly"), default="poly")
    t.add_argument("--warmup", type=int, default=50, help="warm-up steps (default 50)")
    t.add_argument("--momentum", type=float, default=0.9)
    t.add_argument("--weight-decay", type=float, default=1e-4)
    t.add_argument("--clip-norm", type=float, default=5.0)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", required=True, help="output directory")
    t.add_argument("--restart", action="store_true", help="ignore an existing checkpoint in --out")
    _backend_arg(t)
    t.set_defaults(func=cmd_train)
    for name, helptext in (("evaluate", "per-class IoU and mIoU of a preset or checkpoint on a dataset split"),
                           ("predict", "label PNGs and colour overlays for image files")):
        c = sub.add_parser(name, help=helptext, description=helptext)
        c.add_argument("--preset", help="KerasHub preset directory")
        _backend_arg(c)
        c.add_argument("--checkpoint", help="checkpoint.npz written by tinydeeplab train or demo")
        c.add_argument("--scales", type=float, nargs="+", default=(1.0,), help="test-time scales (default 1)")
        c.add_argument("--flip", action="store_true", help="also average the horizontally flipped image")
        c.add_argument("--window", type=int, nargs=2, metavar=("H", "W"),
                       help="sliding-window inference with this window (for images larger than the training crop)")
        if name == "evaluate":
            c.add_argument("--dataset", choices=DATASETS, required=True)
            c.add_argument("--data", help="dataset root directory")
            c.add_argument("--split", default="val")
            c.add_argument("--num-classes", type=int, help="classes of a folder dataset")
            c.add_argument("--json", help="also write the metrics to this JSON file")
            c.add_argument("--figure", help="also draw 4 images with ground truth and prediction to this PNG")
            c.set_defaults(func=cmd_evaluate)
        else:
            c.description = PREDICT_DESCRIPTION
            c.add_argument("images", nargs="+", help="image files (same stem in different folders: the "
                           "outputs go to sub-folders of --out named after just enough of their folders)")
            c.add_argument("--out", required=True, help="output directory")
            c.add_argument("--overlap", type=int, metavar="N",
                           help="pixels shared by neighbouring tiles (default: a quarter of the window side)")
            c.add_argument("--full-image", action="store_true",
                           help="label every pixel: run the model on the whole image at the preset's scale "
                                "instead of its centre crop to the aspect ratio of image_size (default: off, "
                                "pixels outside the crop get 255)")
            c.set_defaults(func=cmd_predict)
    s = sub.add_parser("summary", help="load a KerasHub preset directory and list its parameters")
    s.add_argument("preset", help="preset directory (or kaggle://... with kagglehub installed)")
    s.set_defaults(func=cmd_summary)
    q = sub.add_parser("parity", help="compare a preset's outputs in tinydeeplab and KerasHub, layer by layer",
                       description="Runs the preset in tinydeeplab and in KerasHub (needs keras-hub) on the same "
                       "input and prints max |diff| and relative difference per stage (stem, every ResNet "
                       "block, ASPP, decoder, head, logits). With --cases, compares the logits with stored "
                       "Keras outputs instead and needs no Keras. Exit status 1 when a stage exceeds "
                       "--tolerance.")
    q.add_argument("preset", help="preset directory")
    q.add_argument("--image", help="an image file, preprocessed with the preset's image converter")
    q.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                   help="size of the random input when no --image (default: the preset's image_size, else 512 512)")
    q.add_argument("--cases", help="an .npz with input_<case> and logits_<case> arrays written by Keras")
    q.add_argument("--tolerance", type=float, default=1e-4, help="relative tolerance (default 1e-4)")
    q.set_defaults(func=cmd_parity)
    return p


def error_message(err: BaseException) -> str:
    """One line for a user-fixable failure: the project's own message, or an ``OSError`` with its file.

    >>> error_message(PermissionError(13, "Permission denied", "runs/a/checkpoint.npz"))
    'Permission denied (runs/a/checkpoint.npz)'
    >>> error_message(OSError(28, "No space left on device"))
    'No space left on device'
    """
    if isinstance(err, OSError) and not isinstance(err, TinyDeepLabError):
        what = err.strerror or str(err) or type(err).__name__
        where = " -> ".join(str(f) for f in (err.filename, err.filename2) if f is not None)
        return f"{what} ({where})" if where else what
    text = str(err) or type(err).__name__
    return " ".join(text.split())                      # one line, whatever the message held


def main(argv=None) -> int:
    """Run one command; every user-fixable failure ends as one line on stderr and exit status 2."""
    args = build_parser().parse_args(argv)
    command = args.command
    try:
        if getattr(args, "backend", None):
            from .backend import set_backend
            try:
                set_backend(args.backend)
            except ImportError as err:                   # e.g. --backend cuda without a GPU
                raise OptionError(f"--backend {args.backend}: {err}") from None
        return args.func(args)
    except BrokenPipeError:        # output piped into head & co.
        return 0
    except KeyboardInterrupt:
        print(f"tinydeeplab {command}: interrupted (a training run resumes from its last checkpoint)",
              file=sys.stderr)
        return 130
    except (TinyDeepLabError, OSError, ValueError) as err:
        print(f"tinydeeplab {command}: error: {error_message(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
