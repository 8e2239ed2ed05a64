"""Command line: ``tinydeeplab demo | train | evaluate | predict | summary | parity | export-onnx``.

Errors in what the user typed (bad paths, bad presets) are printed as one line and exit with
status 2; a traceback means a bug in tinydeeplab.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

from .errors import OptionError, TinyDeepLabError
from .models.head import is_binary, label_classes
from .train.losses import LOSSES


# -- option values: checked where they are parsed, so the error names the option ------------------
def _number(kind, *, low=None, high=None, low_open=False, high_open=False, what=None):
    """An argparse ``type`` for a finite number in a range; the message says what was expected."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        ok = math.isfinite(value)
        if ok and low is not None:
            ok = value > low if low_open else value >= low
        if ok and high is not None:
            ok = value < high if high_open else value <= high
        if not ok:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    parse.__name__ = kind.__name__
    return parse


POSITIVE_INT = _number(int, low=1, what="an integer >= 1")
NON_NEGATIVE_INT = _number(int, low=0, what="an integer >= 0")
POSITIVE = _number(float, low=0, low_open=True, what="a finite number > 0")
NON_NEGATIVE = _number(float, low=0, what="a finite number >= 0")
FRACTION = _number(float, low=0, high=1, high_open=True, what="a number in [0, 1)")
UNIT = _number(float, low=0, high=1, what="a number in [0, 1]")
FINITE = _number(float, what="a finite number")


def CHANNELS(text: str):
    """``--in-channels``: a count >= 1, or ``auto`` (the first image's)."""
    return "auto" if text == "auto" else POSITIVE_INT(text)


class UsageError(OptionError):
    """A command line argparse cannot parse; ``prog`` is the (sub)command it belongs to."""

    def __init__(self, message: str, prog: str):
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``tinydeeplab CMD: error: ...``; the usage is in ``--help``)."""

    def error(self, message):
        raise UsageError(f"{message} (see {self.prog} --help)", self.prog)


class _HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to every option whose default is a value (not None or a flag's False)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (action.option_strings and "%(default)" not in text and default not in (None, False, argparse.SUPPRESS)
                and not isinstance(action, argparse._HelpAction)):
            shown = " ".join(str(v) for v in default) if isinstance(default, (list, tuple)) else default
            text += f" (default: {shown})"
        return text


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


def open_dataset(name, root, split, num_classes=None, colour_map=None, unknown_colour="error", channels=None,
                 binary_class=None):
    """The ``split`` of dataset ``name``; ``channels`` (a count or "auto") reads a folder's multi-channel
    stacks; ``binary_class``: that class (label 1) against the rest (label 0). A folder dataset with
    ``num_classes=1`` holds binary masks: labels 0 and 1 (and 255, ignored)."""
    from . import data

    dataset = _open_dataset(name, root, split, 2 if num_classes == 1 else num_classes, colour_map, unknown_colour,
                            channels)
    return dataset if binary_class is None else data.OneVsRest(dataset, binary_class)


def _open_dataset(name, root, split, num_classes, colour_map, unknown_colour, channels):
    from . import data

    if colour_map is None and unknown_colour != "error":
        raise OptionError(f"--unknown-colour {unknown_colour} needs --colour-map FILE (it says what to do with "
                          f"mask colours the map lacks)")
    if colour_map is not None and name != "folder":
        raise OptionError(f"--colour-map is for --dataset folder (RGB masks), not --dataset {name}")
    if channels is not None and name != "folder":
        raise OptionError(f"--in-channels {channels} needs --dataset folder (the {name} reader is RGB)")

    if name == "shapes":
        return data.SyntheticShapes(length=400 if split == "train" else 100, seed=0 if split == "train" else 1000,
                                    colour_hints=True)
    if root is None:
        raise OptionError(f"--data DIR is required for --dataset {name}")
    if name == "voc":
        return data.VOCSegmentation(root, split)
    if name == "sbd":
        return data.SBDSegmentation(root, split)
    if name == "camvid":
        return data.CamVid(root, split)
    if num_classes is None and colour_map is None:
        raise OptionError("--dataset folder needs --num-classes (or --colour-map FILE for RGB masks)")
    base = Path(root) / split if (Path(root) / split).is_dir() else Path(root)
    return data.FolderDataset(base / "images", base / "masks", num_classes, colour_map=colour_map,
                              unknown_colour=unknown_colour, channels=channels)


def _normalisation(args, channels: int, dtype: str):
    """``(scale, offset)`` from ``--mean``/``--std`` (x = (pixel - mean) / std, per channel), or None to keep
    the model's own; the files of a dtype other than uint8 need them (one-line OptionError otherwise)."""
    if args.mean is None and args.std is None:
        if dtype != "uint8":
            raise OptionError(f"the images are {dtype}: give --mean and --std (one value, or one per channel of "
                              f"the {channels}, in the files' units) so that x = (pixel - mean) / std")
        return None
    if args.mean is None or args.std is None:
        raise OptionError("give both --mean and --std, or neither")
    for option, values in (("--mean", args.mean), ("--std", args.std)):
        if len(values) not in (1, channels):
            raise OptionError(f"{option}: {len(values)} values for {channels}-channel images; give 1 or {channels}")
    mean, std = np.asarray(args.mean, np.float64), np.asarray(args.std, np.float64)
    if (std <= 0).any():
        raise OptionError(f"--std must be > 0, got {' '.join(f'{v:g}' for v in args.std)}")
    return (1 / std).tolist(), (-mean / std).tolist()


def load_model(args):
    """The model of ``--preset`` or ``--checkpoint`` (exactly one)."""
    from .errors import CheckpointError
    from .io.keras_preset import load_keras_preset, model_from_configs
    from .train.checkpoint import load_checkpoint, read_checkpoint

    if bool(args.preset) == bool(args.checkpoint):
        raise OptionError("give exactly one of --preset DIR or --checkpoint FILE")
    if args.preset:
        return _place(load_keras_preset(args.preset), args)
    header = read_checkpoint(args.checkpoint)[0]
    configs = header.get("meta", {}).get("model_configs")
    if configs is None:
        raise CheckpointError(f"{args.checkpoint}: this checkpoint does not record its architecture "
                              "(written by tinydeeplab train / demo?)")
    model = model_from_configs(configs, source=str(args.checkpoint))
    load_checkpoint(args.checkpoint, model)
    return _place(model, args)


def _place(model, args):
    """Move the model's weights once to where the selected backend keeps them (inputs/outputs stay on the host)."""
    from .backend import get_backend

    return model.to(get_backend())


RUN_KEYS = ("model", "init-preset", "in-channels", "adapt-channels", "mean", "std", "output-stride",
            "atrous-rates", "decoder", "separable", "dataset", "data", "split", "num-classes", "binary-class",
            "loss", "colour-map", "unknown-colour", "class-weights", "batch-size", "crop", "min-scale",
            "max-scale", "lr", "schedule", "warmup", "momentum", "weight-decay", "clip-norm", "seed")
"""The ``train`` options recorded in the checkpoint; a resumed run must repeat them (or ``--override``)."""


def _run_config(args, num_classes: int) -> dict:
    values = {key: getattr(args, key.replace("-", "_")) for key in RUN_KEYS}
    values["num-classes"] = num_classes
    for key in ("data", "init-preset", "colour-map"):
        if values[key] is not None:
            values[key] = str(Path(values[key]).resolve())
    values["crop"] = list(values["crop"])
    for key in ("mean", "std"):
        if values[key] is not None:
            values[key] = list(values[key])
    if values["atrous-rates"] is not None:
        values["atrous-rates"] = list(values["atrous-rates"])
    return values


BINARY_METRICS = ("foreground_iou", "foreground_dice", "background_iou")


def _head_channels(args, train_set) -> int:
    """The model's output channels: the dataset's classes, or 1 (a sigmoid head) for a binary task
    (``--binary``, ``--binary-class NAME``, or a folder dataset with ``--num-classes 1``)."""
    k = train_set.num_classes
    if not (args.binary or args.binary_class is not None or args.num_classes == 1):
        return k
    if k != 2:
        raise OptionError(f"--binary needs two classes (0 rest, 1 foreground), --dataset {args.dataset} has {k} "
                          f"({', '.join(train_set.class_names)}): choose the foreground with --binary-class NAME")
    return 1


def _output_dir(path, option: str) -> Path:
    """``path`` as a directory we may write into (created), or a one-line error naming ``option``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OptionError(f"{option} {path}: exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OptionError(f"{option} {path}: cannot create the directory ({err.strerror or err})") from None
    return path


def _output_file(path, option: str) -> Path:
    """Check before any work that ``path`` can be written (its folder exists, it is not a directory)."""
    path = Path(path)
    if path.is_dir():
        raise OptionError(f"{option} {path}: is a directory; give a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OptionError(f"{option} {path}: the directory {parent} does not exist")
    return path


def _world(args):
    """The ranks of this run: MPI when launched by mpiexec / srun with N > 1 or ``--distributed``."""
    from .train.distributed import World

    return World.from_environment(True if args.distributed else None)


SEPARABLE_HELP = ("the DeepLabV3+ paper's head: atrous separable convs (depthwise 3x3 + BN + ReLU + pointwise 1x1 + "
                  "BN + ReLU) in the ASPP branches and a two-conv separable V3+ decoder; a tinydeeplab extension, "
                  "its presets load in tinydeeplab only")

CONFIG_EXCLUDE = ("restart", "override")
"""``train`` options left out of the run's config.toml: what to do with the run directory, not the run."""


def _eval_size(args, val_set):
    """The size the model will be evaluated at: --eval-size, CamVid's 360x480, the val split's first image."""
    if args.eval_size:
        return tuple(args.eval_size)
    if args.dataset == "camvid":
        return (360, 480)
    return val_set.read_label(0).shape[:2] if val_set is not None and len(val_set) else None


def _warn_dead_taps(model, args, val_set) -> None:
    """One warning line when an ASPP branch is a 1x1 conv at the crop, or gains taps at the evaluation size."""
    from .models.atrous import aspp_warning

    message = aspp_warning(model, tuple(args.crop), _eval_size(args, val_set))
    if message:
        print(f"warning: {message}", file=sys.stderr)


def cmd_train(args) -> int:
    from contextlib import nullcontext

    from .config_file import config_values, write_config
    from .data.validate import validate_dataset
    from .io.keras_preset import load_keras_preset
    from .models.recipes import build_model, recipe_output_stride
    from .train.builder import build_trainer, median_frequency_weights
    from .train.distributed import sync_batchnorm
    from .train.rundir import RunLock, show_value

    if args.init_preset:
        given = [f"--{k}" if isinstance(v, bool) else f"--{k} {show_value(v)}"
                 for k in ("model", "atrous-rates", "decoder", "separable")
                 if (v := getattr(args, k.replace("-", "_"))) is not None]
        if given:
            raise OptionError(f"{given[0]} conflicts with --init-preset {args.init_preset}: the preset defines "
                              "the architecture; give one of them")
    args.model = args.model or (None if args.init_preset else "small")
    if args.min_scale > args.max_scale:
        raise OptionError(f"--min-scale {args.min_scale:g} is above --max-scale {args.max_scale:g}")
    world = _world(args)
    out = _output_dir(args.out, "--out")
    with RunLock(out) if world.is_root else nullcontext():   # one writer per run directory, first file to preset
        labels = dict(colour_map=args.colour_map, unknown_colour=args.unknown_colour, binary_class=args.binary_class)
        train_set = open_dataset(args.dataset, args.data, args.split, args.num_classes, **labels,
                                 channels=args.in_channels)
        channels, dtype = getattr(train_set, "channels", 3), getattr(train_set, "dtype", "uint8")
        if args.in_channels is not None:
            args.in_channels = channels                     # "auto" recorded as the count it found
        normalise = _normalisation(args, channels, dtype)
        val_set = (open_dataset(args.dataset, args.data, args.val_split, args.num_classes, **labels,
                                channels=args.in_channels)
                   if args.val_split else None)
        for split, dataset in ((args.split, train_set), (args.val_split, val_set)):
            if dataset is not None and world.is_root:  # every item read once now: a bad one fails here
                validate_dataset(dataset, out / ".dataset-check.json", name=f"{args.dataset} {split}",
                                 progress=sys.stderr)
        world.barrier("waiting for rank 0 to check the dataset", timeout=math.inf)
        k = _head_channels(args, train_set)            # 1: a binary head (the foreground logit)
        if args.init_preset:
            model = load_keras_preset(args.init_preset, output_stride=args.output_stride, in_channels=channels,
                                      adapt=args.adapt_channels)
            if normalise is not None:
                model.preprocessor = model.preprocessor.with_values(*normalise)       # --mean/--std replace them
            if model.num_classes != k:
                raise OptionError(f"--init-preset {args.init_preset} has {model.num_classes} classes, the dataset {k}")
        else:
            model = build_model(args.model, k, seed=args.seed, output_stride=args.output_stride,
                                atrous_rates=args.atrous_rates, decoder=args.decoder or "v3plus",
                                in_channels=channels, separable=bool(args.separable),
                                **dict(zip(("scale", "offset"), normalise or ())))
            args.output_stride = args.output_stride or recipe_output_stride(args.model)   # recorded as built
            args.atrous_rates = list(model.backbone.config["dilation_rates"])
            args.decoder = args.decoder or "v3plus"
            args.separable = bool(args.separable)
        if world.is_root:
            _warn_dead_taps(model, args, val_set)
        weights = median_frequency_weights(train_set) if args.class_weights == "median-frequency" else None
        if weights is not None and world.is_root:
            print("median-frequency class weights: " + ", ".join(
                f"{name} {w:.2f}" for name, w in zip(train_set.class_names, weights)), file=sys.stderr)
        trainer = build_trainer(model, train_set, out_dir=out, epochs=args.epochs, batch_size=args.batch_size,
                                crop=args.crop, scale_range=(args.min_scale, args.max_scale), lr=args.lr,
                                schedule=args.schedule, warmup=args.warmup, momentum=args.momentum,
                                weight_decay=args.weight_decay, clip_norm=args.clip_norm or None, seed=args.seed,
                                val_set=val_set, run_config=_run_config(args, k), allow_changes=args.override,
                                world=world, class_weights=weights, loss=args.loss)
        sync = world.size > 1 if args.sync_bn is None else args.sync_bn
        sync_batchnorm(model, world, sync)
        loader = trainer.train_loader
        ranks = (f" on {world.size} processes ({args.batch_size // world.size} per process, "
                 f"{'synchronized' if sync else 'per-process'} batch norm)" if world.size > 1 else "")
        if world.is_root:                                  # rank 0 alone talks and writes
            print(f"training {model.num_parameters():,} parameters on {len(train_set)} {args.dataset} images "
                  f"({len(loader)} batches of {args.batch_size} per epoch{ranks}); outputs in {out}", file=sys.stderr)
        resume = not args.restart and trainer.checkpoint_path.exists()
        if resume:
            trainer.resume()                           # refuses changed settings before config.toml is replaced
        if world.is_root:
            write_config(out / "config.toml", {**config_values(build_parser().train, args, exclude=CONFIG_EXCLUDE),
                                               **_run_config(args, k), "out": str(out.resolve())},
                         header="the options of this run: tinydeeplab train --config THIS_FILE --out NEW_DIR repeats it")
        trainer.fit(resume=resume)
        model.to("numpy")                                  # back to the host (a no-op on the host backends)
        if not world.is_root:
            return 0
        preset = _replace_preset(model, out / "preset")
    print(f"done: {out / 'checkpoint.npz'}, {out / 'metrics.csv'}, "
          f"{out / 'curves.png'}, {preset}")
    return 0


def _replace_preset(model, preset: Path) -> Path:
    """Write ``model`` as ``preset``, atomically replacing an older one (a resumed or extended run)."""
    import warnings

    from .io.keras_preset import save_keras_preset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                # narrow models: the tinydeeplab-only warning
        return save_keras_preset(model, preset, overwrite=True)


def _tta(args) -> dict:
    tta = {"scales": tuple(args.scales), "flip": args.flip}
    if args.window:
        tta["window"] = tuple(args.window)
    return tta


def _evaluation_channels(asked, model_channels: int):
    """The ``channels`` of the folder reader for a model reading ``model_channels``: stacks of that many
    when asked (``--in-channels C`` or ``auto``) or when the model is not RGB; RGB images (None) otherwise."""
    if asked is not None and asked != "auto" and asked != model_channels:
        raise OptionError(f"--in-channels {asked}: the model reads {model_channels} channels")
    return model_channels if asked is not None or model_channels != 3 else None


def cmd_evaluate(args) -> int:
    from .atomic import write_text
    from .train import evaluate
    from .train.evaluate import miou_check

    if args.tolerance is not None and args.expect_miou is None:
        raise OptionError(f"--tolerance {args.tolerance:g} needs --expect-miou X (the mIoU to compare with)")
    for path, option in ((args.json, "--json"), (args.figure, "--figure")):
        if path:
            _output_file(path, option)                 # before an hour of evaluation, not after
    world = _world(args)
    model = load_model(args)
    if args.figure and model.in_channels != 3:
        raise OptionError(f"--figure draws RGB images; this model reads {model.in_channels} channels")
    dataset = open_dataset(args.dataset, args.data, args.split, args.num_classes, colour_map=args.colour_map,
                           unknown_colour=args.unknown_colour, binary_class=args.binary_class,
                           channels=_evaluation_channels(args.in_channels, model.in_channels))
    if dataset.num_classes != label_classes(model.num_classes):
        binary = (" (a binary model: labels 0 rest, 1 foreground; pick the foreground with --binary-class NAME)"
                  if is_binary(model.num_classes) else "")
        raise OptionError(f"the model predicts {label_classes(model.num_classes)} classes{binary}, --dataset "
                          f"{args.dataset} has {dataset.num_classes}")
    t0 = time.perf_counter()
    r = evaluate(model, dataset, world=world, **_tta(args))
    if not world.is_root:                              # rank 0 prints and writes the results
        return 0
    counted = int(r["confusion"].matrix.sum())
    print(r["confusion"].table(dataset.class_names))
    if counted == 0:
        print(f"{args.dataset} {args.split}: {len(dataset)} images but no labelled pixel (every label pixel is the "
              f"ignore label 255, or lies outside the preprocessor's crop): mIoU and pixel accuracy are undefined")
    else:
        print(f"{args.dataset} {args.split}: {len(dataset)} images, mIoU {r['miou']:.4f}, "
              f"pixel accuracy {r['pixel_accuracy']:.4f} ({time.perf_counter() - t0:.0f} s)")
        if is_binary(model.num_classes):
            print(f"foreground {dataset.class_names[1]}: IoU {r['foreground_iou']:.4f}, Dice "
                  f"{r['foreground_dice']:.4f}; background IoU {r['background_iou']:.4f}")
    if args.figure:
        from .viz import prediction_figure

        shown = [dataset[i] for i in np.linspace(0, len(dataset) - 1, min(4, len(dataset))).astype(int)]
        prediction_figure(args.figure, [im for im, _ in shown], [model.segment(im) for im, _ in shown],
                          dataset.palette, dataset.class_names, labels=[lab for _, lab in shown],
                          title=f"{args.dataset} {args.split}: mIoU {r['miou']:.3f}")
        print(f"wrote {args.figure}")
    if args.json:
        import json

        finite = lambda v: v if isinstance(v, (int, float)) and math.isfinite(v) else None  # noqa: E731
        write_text(args.json, json.dumps({"miou": finite(r["miou"]), "pixel_accuracy": finite(r["pixel_accuracy"]),
                                          "iou": [finite(v) for v in r["iou"]], "labelled_pixels": counted,
                                          **{k: finite(r[k]) for k in BINARY_METRICS if k in r},
                                          "class_names": dataset.class_names,
                                          "confusion": r["confusion"].matrix.tolist()}, indent=1, allow_nan=False))
        print(f"wrote {args.json}")
    if args.expect_miou is not None:
        ok, line = miou_check(r["miou"], args.expect_miou, 0.005 if args.tolerance is None else args.tolerance)
        print(line)
        if not ok:
            print(f"tinydeeplab evaluate: reference check failed: {line}", file=sys.stderr)
            return 1
    return 0


def cmd_predict(args) -> int:
    from .progress import Progress
    from .train.tiling import DEFAULT_WINDOW, STREAM_ABOVE, model_input_size, segment_tiled
    from .viz import default_palette, overlay, save_png

    window, overlap = _predict_tiling(args)
    names = _output_names(args.images)
    colour_map = _predict_colour_map(args)
    model = load_model(args)
    out = Path(args.out)
    labelled = label_classes(model.num_classes)           # a binary head predicts 2 labels
    if colour_map is not None and len(colour_map) != labelled:
        raise OptionError(f"--colour-map {args.colour_map} has {len(colour_map)} classes, the model predicts "
                          f"{labelled}")
    palette = default_palette(labelled) if colour_map is None else colour_map.palette
    for path, name in zip(args.images, names):
        image = _read_large_image(path, model.in_channels)
        rgb = image.shape[2] == 3 and image.dtype == np.uint8                       # drawable under the overlay
        tiles = window
        if tiles is None:
            _, (mh, mw) = model_input_size(model.preprocessor, *image.shape[:2], args.full_image)
            if mh * mw > STREAM_ABOVE:
                tiles = DEFAULT_WINDOW
                print(f"{path}: {mw}x{mh} model-input pixels > {STREAM_ABOVE:,}: tiling in "
                      f"{tiles[1]}x{tiles[0]} windows (choose with --window H W)", file=sys.stderr)
        bar = Progress(tiles is not None)
        labels = segment_tiled(model, image, window=tiles, overlap=overlap, full_image=args.full_image,
                               scales=tuple(args.scales), flip=args.flip,
                               progress=lambda done, total: bar.show(f"{path}: tile {done}/{total}"))
        bar.done()
        colours = np.empty(image.shape[:2] + (3,), np.uint8)                         # (H, W, 3) uint8
        for r in range(0, image.shape[0], 256):                                      # no float copy of it all
            colours[r:r + 256] = (overlay(image[r:r + 256], labels[r:r + 256], palette) if rgb
                                  else palette[labels[r:r + 256]])                  # not RGB: the colour mask
        labels_png, overlay_png = out / f"{name}_labels.png", out / f"{name}_overlay.png"
        save_png(labels_png, labels)
        save_png(overlay_png, colours)
        written = f"{labels_png}, {overlay_png}"
        if colour_map is not None:
            colours_png = save_png(out / f"{name}_colours.png", colour_map.colours(labels))    # (H, W, 3)
            written += f", {colours_png} ({_class_shares(labels, colour_map.names)})"
        print(f"{path}: {image.shape[1]}x{image.shape[0]} -> {written}")
    return 0


def _predict_colour_map(args):
    """The ``--colour-map`` of ``predict``, read before the model (a bad file fails first), or None."""
    from .data.colour_map import ColourMap

    return None if args.colour_map is None else ColourMap.read(args.colour_map)


def _class_shares(labels, names) -> str:
    """The classes of a label map by share of its pixels, largest first (``255``: not labelled).

    >>> _class_shares(np.array([[0, 1, 1, 255]]), ["sky", "road"])
    'road 50 %, sky 25 %, not labelled 25 %'
    """
    counts = np.bincount(np.asarray(labels, np.int64).ravel(), minlength=256)
    shown = [(int(counts[k]), names[k] if k < len(names) else "not labelled") for k in np.flatnonzero(counts)]
    return ", ".join(f"{name} {100 * n / labels.size:.0f} %" for n, name in sorted(shown, key=lambda t: -t[0]))


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


def _read_large_image(path, channels: int = 3) -> np.ndarray:
    """:func:`read_image` (``channels`` other than 3: the stack, checked to have that many), without Pillow's
    decompression-bomb warning for images up to twice its pixel limit (large images are what tiled
    prediction is for); above that a one-line error."""
    from .data.stacks import read_stack

    import warnings

    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            if channels == 3 and Path(path).suffix.lower() != ".npy":    # a 3-channel .npy is a stack
                return read_image(path)
            image = read_stack(path)
            if image.shape[2] != channels:
                raise OptionError(f"{path}: {image.shape[2]} channels; the model reads {channels}")
            return image
        except Image.DecompressionBombError as err:
            raise OptionError(f"{path}: {err}") from None


def _preset_or_recipe(args):
    """The model of ``args.preset``: a preset directory, or a recipe name (randomly initialised)."""
    from .io.keras_preset import load_keras_preset
    from .models.recipes import RECIPES, build_model

    separable = getattr(args, "separable", False)
    if args.preset in RECIPES and not Path(args.preset).exists():
        return build_model(args.preset, args.num_classes, separable=separable)
    if separable:
        raise OptionError(f"--separable is an option of a recipe; the preset {args.preset} defines its architecture")
    return load_keras_preset(args.preset)


def cmd_summary(args) -> int:
    model = _preset_or_recipe(args)
    n_stats = sum(b.size for _, b in model.named_buffers())
    print(f"{args.preset}: {model.num_parameters():,} trainable parameters "
          f"(backbone {model.backbone.num_parameters():,}) + {n_stats:,} batch-norm statistics "
          f"= {model.num_parameters() + n_stats:,} weights (Keras's count_params); {model.num_classes} classes")
    for name, p in model.named_parameters():
        print(f"  {name:70s} {str(p.shape):>22s}")
    if args.size:
        from .models.atrous import atrous_convs, format_atrous_table
        from .models.cost import format_cost_table

        print(format_atrous_table(atrous_convs(model, args.size), args.size))
        print(format_cost_table(model, args.size))
    return 0


def cmd_export_onnx(args) -> int:
    from .io.onnx_export import export_onnx, require_onnx

    out = _output_file(args.out, "OUT")
    if out.exists() and not args.force:
        raise OptionError(f"OUT {out}: exists; give --force to replace it")
    require_onnx()                                     # before loading the model: fail fast, in one line
    model = _preset_or_recipe(args)
    export_onnx(model, out, size=args.size, overwrite=True)
    h, w = args.size or ("H", "W")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): NHWC float32 images (N, {h}, {w}, 3) -> logits "
          f"(N, {h}, {w}, {model.num_classes}); N{'' if args.size else ', H and W'} dynamic")
    return 0


def read_image(path) -> np.ndarray:
    """An RGB uint8 (H, W, 3) array from an image file, or a one-line DatasetError naming the file.

    16-bit and float images are scaled to 8 bits, or refused, by the dataset readers' own rule
    (:func:`tinydeeplab.data.read_rgb`).
    """
    from .data import read_rgb

    return read_rgb(path)


def _read_cases(path) -> dict:
    """The arrays of a ``--cases`` .npz archive (fully read), or a one-line error naming the file."""
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise OptionError(f"--cases {path}: file not found")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise OptionError(f"--cases {path}: a single .npy array; expected an .npz archive of input_<case> and "
                              f"logits_<case> arrays")
        with data:
            return {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, EOFError, KeyError, OSError, ValueError) as err:
        if isinstance(err, OptionError):
            raise
        raise OptionError(f"--cases {path}: not a readable .npz archive (truncated or corrupt?): {err}") from None


def cmd_parity(args) -> int:
    from . import parity
    from .io.keras_preset import keras_incompatibilities, load_keras_preset

    model = load_keras_preset(args.preset)
    unbuildable = keras_incompatibilities(model)
    if unbuildable and not args.cases:
        raise OptionError(f"{args.preset}: KerasHub cannot build this model ({'; '.join(unbuildable)}); compare "
                          "with stored outputs instead (--cases)")
    if args.cases:
        rows = parity.compare_with_cases(model, _read_cases(args.cases))
        print(f"tinydeeplab vs stored Keras results in {args.cases}")
    else:
        if args.image:
            x, _ = model.preprocessor(read_image(args.image))                       # (1, h, w, 3)
        else:
            h, w = args.size or model.preprocessor.image_size or (512, 512)
            x = np.random.default_rng(0).normal(size=(1, h, w, model.in_channels)).astype(np.float32)
        try:
            theirs = parity.keras_stages(args.preset, x, model)
        except RuntimeError as err:
            raise ValueError(str(err)) from None
        rows = parity.compare(parity.tinydeeplab_stages(model, x), theirs)
        print(f"tinydeeplab vs KerasHub on {'image ' + args.image if args.image else 'a random input'} "
              f"of shape {x.shape}")
    print(parity.format_table(rows, args.tolerance))
    ok, summary = parity.verdict(rows, args.tolerance)
    print(summary)
    return 0 if ok else 1


def _backend_arg(parser) -> None:
    from .backend import BACKENDS, HELP

    parser.add_argument("--backend", choices=BACKENDS, help=f"{HELP} (default: $TINYDEEPLAB_BACKEND, else cpu)")


PREDICT_DESCRIPTION = (
    "Writes NAME_labels.png (class index per pixel) and NAME_overlay.png for every image. A preset whose "
    "preprocessor has image_size and crop_to_aspect_ratio (KerasHub's default) sees only the centred crop "
    "with that aspect ratio: pixels outside it get label 255 unless --full-image. With --window H W the "
    "image is labelled tile by tile (window in model-input pixels, after the preset's resize), tiles "
    "overlapping by --overlap pixels and blended with linear ramp weights, holding class scores for one "
    "row of tiles only; without --window, images of more than 2048x2048 model-input pixels are tiled in "
    "512x512 windows automatically (said on stderr). Tiles change what the ASPP image-pooling branch "
    "averages over, so tiled labels can differ from whole-image ones.")


def _colour_map_args(parser) -> None:
    parser.add_argument("--colour-map", metavar="FILE",
                        help="a folder dataset with RGB masks: class name -> colour, as JSON {\"name\": [r, g, b], "
                             "...} or CSV name,r,g,b (class index = order in the file)")
    parser.add_argument("--unknown-colour", choices=("error", "ignore"), default="error",
                        help="a mask colour not in --colour-map: refuse the file, or give the pixel the ignore "
                             "label 255")


def _binary_class_arg(parser) -> None:
    parser.add_argument("--binary-class", metavar="NAME",
                        help="binary task from a multi-class dataset: class NAME (e.g. camvid's Road) is the "
                             "foreground, every other class the rest; void stays ignored")


def _distributed_args(parser) -> None:
    parser.add_argument("--distributed", action="store_true",
                        help="run data parallel over MPI (needs mpi4py: pip install 'tinydeeplab[mpi]'); "
                             "default: on when mpiexec or srun started more than one process")


def build_parser() -> argparse.ArgumentParser:
    common = dict(formatter_class=_HelpFormatter)
    p = _Parser(prog="tinydeeplab", description=__doc__.splitlines()[0], **common)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    d = sub.add_parser("demo", help="train a small DeepLabV3+ on synthetic shapes (offline), evaluate, draw",
                       description="Trains a small DeepLabV3+ on generated shapes (circles, squares, triangles; "
                       "about two minutes on 2 CPU cores), prints the per-class IoU and mIoU, and writes "
                       "predictions.png, curves.png, metrics.csv/json, checkpoint.npz and a preset to --out.",
                       **common)
    d.add_argument("--out", default="tinydeeplab-demo", help="output directory")
    d.add_argument("--model", default="small", help="architecture recipe: tiny or small")
    d.add_argument("--epochs", type=POSITIVE_INT, default=14, help="epochs")
    d.add_argument("--steps-per-epoch", type=POSITIVE_INT, default=50, help="batches per epoch")
    d.add_argument("--batch-size", type=POSITIVE_INT, default=8, help="images per batch")
    d.add_argument("--size", type=POSITIVE_INT, default=96, help="image side in pixels")
    d.add_argument("--lr", type=POSITIVE, default=0.1, help="peak learning rate (cosine schedule)")
    d.add_argument("--seed", type=NON_NEGATIVE_INT, default=0, help="seed of the weights, data and augmentation")
    d.add_argument("--resume", action="store_true", help="continue an interrupted demo in --out")
    d.set_defaults(func=cmd_demo)
    t = sub.add_parser("train", help="train DeepLabV3+ on a dataset",
                       description="Trains with SGD + momentum, weight decay, cosine/poly schedule with warm-up, "
                       "random scale/crop/flip and gradient-norm clipping. Writes checkpoint.npz after every "
                       "epoch, metrics.csv/json, curves.png and finally a preset to --out. When --out already "
                       "has a checkpoint the run resumes from it (bitwise as if never stopped), with the same "
                       "settings (--override NAME to change one; more --epochs extend the run). One process "
                       "at a time may use an --out directory. Training stops at the first sign of divergence "
                       "(a non-finite loss, or one 1000x its running median) and never checkpoints a "
                       "non-finite state.", **common)
    t.add_argument("--dataset", choices=DATASETS, required=True, help="dataset format")
    t.add_argument("--data", help="dataset root directory (not needed for shapes)")
    t.add_argument("--split", default="train", help="training split")
    t.add_argument("--val-split", help="split to evaluate after every epoch (e.g. val; default: none)")
    t.add_argument("--num-classes", type=POSITIVE_INT, help="classes of a folder dataset (1: binary masks, labels "
                                                            "0 and 1, and a sigmoid head)")
    _colour_map_args(t)
    t.add_argument("--model", help="architecture recipe: tiny, small, medium, resnet18, resnet50, mobilenetv3-small, "
                                   "mobilenetv3-large, densenet-tiny, cspnet-tiny (default: small, "
                                   "or the --init-preset's architecture)")
    t.add_argument("--init-preset", help="start from the weights (and architecture) of this preset directory")
    t.add_argument("--in-channels", type=CHANNELS, metavar="C",
                   help="read a folder dataset's images as C-channel stacks (.npy, TIFF pages, grey PNG...; 'auto': "
                        "the first image's count); default: RGB images (docs/guides/multichannel.md)")
    t.add_argument("--adapt-channels", choices=("repeat", "mean", "zero"),
                   help="how --init-preset's first kernel is re-made for another channel count: repeat (an RGB "
                        "image repeated into C channels keeps its logits), mean (grey images keep theirs), zero "
                        "(the first 3 channels are RGB, the extra ones start at zero weight)")
    t.add_argument("--mean", type=FINITE, nargs="+", metavar="M",
                   help="per-channel mean of the images (1 or C values, the files' units): x = (pixel - mean) / std "
                        "replaces the model's scale and offset; needed for uint16 and float32 images")
    t.add_argument("--std", type=POSITIVE, nargs="+", metavar="S", help="per-channel standard deviation, with --mean")
    t.add_argument("--output-stride", type=int, choices=(8, 16, 32),
                   help="encoder output stride (the last stacks dilated instead of strided; default: the recipe's)")
    t.add_argument("--atrous-rates", type=POSITIVE_INT, nargs="+", metavar="RATE",
                   help="ASPP dilation rates (default: the recipe's, chosen for its design crop)")
    t.add_argument("--decoder", choices=("v3plus", "v3"),
                   help="v3plus: the low-level P2 decoder; v3: head on the ASPP map (default: v3plus)")
    t.add_argument("--separable", action="store_true", default=None, help=SEPARABLE_HELP)
    t.add_argument("--class-weights", choices=("none", "median-frequency"), default="none",
                   help="loss weight per class; median-frequency: w_c = median(f) / f_c, f_c = pixels of c / pixels "
                        "of the training images that contain c")
    t.add_argument("--eval-size", type=POSITIVE_INT, nargs=2, metavar=("H", "W"),
                   help="image size the model will be evaluated at, for the dead-tap check at start (default: "
                        "360 480 for camvid, else the --val-split's first image)")
    t.add_argument("--epochs", type=POSITIVE_INT, default=30, help="total epochs (a resumed run stops at the same total)")
    t.add_argument("--batch-size", type=POSITIVE_INT, default=8, help="images per batch")
    t.add_argument("--crop", type=POSITIVE_INT, nargs=2, default=(256, 256), metavar=("H", "W"),
                   help="training crop in pixels")
    t.add_argument("--min-scale", type=POSITIVE, default=0.5, help="smallest random rescale of an image before the crop")
    t.add_argument("--max-scale", type=POSITIVE, default=2.0, help="largest random rescale of an image before the crop")
    t.add_argument("--lr", type=POSITIVE, default=0.05, help="peak learning rate")
    t.add_argument("--schedule", choices=("cosine", "poly"), default="poly",
                   help="learning-rate decay after the warm-up (poly: power 0.9)")
    t.add_argument("--warmup", type=NON_NEGATIVE_INT, default=50, help="linear warm-up steps (at most half the run)")
    t.add_argument("--momentum", type=FRACTION, default=0.9, help="SGD momentum")
    t.add_argument("--weight-decay", type=NON_NEGATIVE, default=1e-4, help="L2 weight decay of conv kernels")
    t.add_argument("--clip-norm", type=NON_NEGATIVE, default=5.0,
                   help="clip the global gradient L2 norm to this value (0: no clipping)")
    t.add_argument("--seed", type=NON_NEGATIVE_INT, default=0, help="seed of the weights, data order and augmentation")
    t.add_argument("--binary", action="store_true",
                   help="one-class segmentation: a sigmoid head (one logit, foreground where it is > 0) on a "
                        "two-class dataset (0 rest, 1 foreground); implied by --binary-class and by --num-classes 1")
    _binary_class_arg(t)
    t.add_argument("--loss", choices=LOSSES,
                   help="training loss: ce (softmax cross-entropy); for a binary head bce (sigmoid cross-entropy), "
                        "dice (soft Dice, smoothing 1), focal (gamma 2, alpha 0.25) or bce+dice (default: ce, or "
                        "bce for a binary head)")
    t.add_argument("--out", required=True, help="output directory (the run directory); gets config.toml, the "
                                                "run's effective options")
    t.add_argument("--config", metavar="FILE.toml",
                   help="read options from this TOML file (keys: the option names, e.g. batch-size = 8); options "
                        "given on the command line win")
    t.add_argument("--restart", action="store_true", help="start over, ignoring a checkpoint in --out")
    t.add_argument("--override", nargs="+", default=(), choices=RUN_KEYS, metavar="NAME",
                   help=f"when resuming, accept these changed settings (one of: {', '.join(RUN_KEYS)})")
    _distributed_args(t)
    t.add_argument("--sync-bn", action=argparse.BooleanOptionalAction, default=None,
                   help="data parallel: batch-norm statistics over the global batch (all processes) rather than "
                        "each process's share (default: on with more than one process)")
    _backend_arg(t)
    t.set_defaults(func=cmd_train)
    p.train = t                                        # for --config (main) and the run's config.toml
    for name, helptext in (("evaluate", "per-class IoU and mIoU of a preset or checkpoint on a dataset split"),
                           ("predict", "label PNGs and colour overlays for image files")):
        c = sub.add_parser(name, help=helptext, description=helptext, **common)
        c.add_argument("--preset", help="KerasHub preset directory (or give --checkpoint)")
        _backend_arg(c)
        c.add_argument("--checkpoint", help="checkpoint.npz written by tinydeeplab train or demo (or give --preset)")
        c.add_argument("--scales", type=POSITIVE, nargs="+", default=(1.0,), help="test-time scales")
        c.add_argument("--flip", action="store_true", help="also average the horizontally flipped image")
        c.add_argument("--window", type=POSITIVE_INT, nargs=2, metavar=("H", "W"),
                       help="sliding-window inference with this window (for images larger than the training crop)")
        if name == "evaluate":
            c.add_argument("--dataset", choices=DATASETS, required=True, help="dataset format")
            c.add_argument("--data", help="dataset root directory (not needed for shapes)")
            c.add_argument("--split", default="val", help="split to evaluate")
            c.add_argument("--num-classes", type=POSITIVE_INT, help="classes of a folder dataset")
            c.add_argument("--in-channels", type=CHANNELS, metavar="C",
                           help="read a folder dataset's images as stacks (.npy, TIFF pages, ...) of the model's "
                                "channel count C (or 'auto'); default: stacks for a model that is not RGB, RGB "
                                "images otherwise (give it for a 3-channel model trained on stacks)")
            _colour_map_args(c)
            _binary_class_arg(c)
            c.add_argument("--json", help="also write the metrics to this JSON file (undefined values as null)")
            c.add_argument("--figure", help="also draw 4 images with ground truth and prediction to this PNG")
            c.add_argument("--expect-miou", type=UNIT, metavar="X",
                           help="the published mIoU: exit with status 1 when the measured one differs by more "
                                "than --tolerance")
            c.add_argument("--tolerance", type=NON_NEGATIVE, metavar="T",
                           help="largest |measured - expected| mIoU accepted by --expect-miou (default: 0.005)")
            _distributed_args(c)
            c.set_defaults(func=cmd_evaluate)
        else:
            c.description = PREDICT_DESCRIPTION
            c.add_argument("images", nargs="+", help="image files (same stem in different folders: the "
                           "outputs go to sub-folders of --out named after just enough of their folders)")
            c.add_argument("--out", required=True, help="output directory")
            c.add_argument("--overlap", type=int, metavar="N",
                           help="pixels shared by neighbouring tiles (default: a quarter of the window side)")
            c.add_argument("--colour-map", metavar="FILE",
                           help="also write NAME_colours.png, the labels as RGB colours of this table (JSON "
                                "{\"name\": [r, g, b], ...} or CSV name,r,g,b), and colour the overlay with "
                                "it; pixels without a label (255) get the darkest grey no class uses")
            c.add_argument("--full-image", action="store_true",
                           help="label every pixel: run the model on the whole image at the preset's scale "
                                "instead of its centre crop to the aspect ratio of image_size (default: off, "
                                "pixels outside the crop get 255)")
            c.set_defaults(func=cmd_predict)
    s = sub.add_parser("summary", help="load a KerasHub preset directory and list its parameters", **common)
    s.add_argument("preset", help="preset directory (or kaggle://... with kagglehub installed), or a recipe name "
                                  "(tiny, small, medium, resnet18, resnet50)")
    s.add_argument("--size", type=POSITIVE_INT, nargs=2, metavar=("H", "W"),
                   help="also list every atrous conv (ASPP branches, dilated encoder convs) with its rate, the map "
                        "it sees for an H x W input and its fraction of live taps, and the parameters and "
                        "multiply-adds of each part of the model at that size")
    s.add_argument("--num-classes", type=POSITIVE_INT, default=21, help="classes of a recipe (not of a preset)")
    s.add_argument("--separable", action="store_true", help=SEPARABLE_HELP + " (of a recipe, not of a preset)")
    s.set_defaults(func=cmd_summary)
    q = sub.add_parser("parity", help="compare a preset's outputs in tinydeeplab and KerasHub, layer by layer",
                       description="Runs the preset in tinydeeplab and in KerasHub (needs keras-hub) on the same "
                       "input and prints max |diff| and relative difference per stage (stem, every ResNet "
                       "block, ASPP, decoder, head, logits). With --cases, compares the logits with stored "
                       "Keras outputs instead and needs no Keras. Exit status 1 when a stage exceeds "
                       "--tolerance.", **common)
    q.add_argument("preset", help="preset directory")
    q.add_argument("--image", help="an image file, preprocessed with the preset's image converter")
    q.add_argument("--size", type=POSITIVE_INT, nargs=2, metavar=("H", "W"),
                   help="size of the random input when no --image (default: the preset's image_size, else 512 512)")
    q.add_argument("--cases", help="an .npz with input_<case> and logits_<case> arrays written by Keras")
    q.add_argument("--tolerance", type=POSITIVE, default=1e-4, help="relative tolerance")
    q.set_defaults(func=cmd_parity)
    o = sub.add_parser("export-onnx", help="write a preset's inference graph as an ONNX file (needs the onnx extra)",
                       description="Writes the inference graph (NHWC float32 model-ready images in, logits out, "
                       "batch-norm in inference mode, the classifier before the last upsampling) with the onnx "
                       "package, for ONNX Runtime: pip install 'tinydeeplab[onnx]'. See docs/guides/onnx.md.",
                       **common)
    o.add_argument("preset", help="preset directory, or a recipe name (randomly initialised, for benchmarks)")
    o.add_argument("out", help="the .onnx file to write (atomically)")
    o.add_argument("--size", type=POSITIVE_INT, nargs=2, metavar=("H", "W"),
                   help="fix the input's height and width (default: dynamic; the batch is always dynamic)")
    o.add_argument("--force", action="store_true", help="replace OUT if it exists")
    o.add_argument("--num-classes", type=POSITIVE_INT, default=21, help="classes of a recipe (not of a preset)")
    o.set_defaults(func=cmd_export_onnx)
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
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    config = _config_option(argv)
    if config is not None:
        from .config_file import apply_config
        try:
            apply_config(parser.train, config)         # the file's keys become defaults: flags still win
        except (TinyDeepLabError, OSError) as err:
            print(f"tinydeeplab train: error: {error_message(err)}", file=sys.stderr)
            return 2
    try:
        args = parser.parse_args(argv)
    except UsageError as err:
        print(f"{err.prog}: error: {err}", file=sys.stderr)
        return 2
    command = args.command
    try:
        if getattr(args, "backend", None):
            from .backend import set_backend
            set_backend(args.backend)
        else:
            from .backend import get_backend, ops
            ops(get_backend())                         # $TINYDEEPLAB_BACKEND: fail now, in one line
        return args.func(args)
    except BrokenPipeError:        # output piped into head & co.
        return 0
    except KeyboardInterrupt:
        return _interrupted(command)
    except (TinyDeepLabError, OSError, ValueError) as err:
        from .train.distributed import active_world

        world = active_world()
        if world is not None and world.size > 1:      # one line naming the rank, then every rank stops
            return _distributed_failure(world, command, err)
        print(f"tinydeeplab {command}: error: {error_message(err)}", file=sys.stderr)
        return 2
    except SystemError as err:     # Ctrl-C inside a Numba parallel region surfaces as a SystemError
        if _caused_by_interrupt(err):
            return _interrupted(command)
        raise


def _distributed_failure(world, command: str, err: BaseException) -> int:
    """A divergence is decided by all ranks together: rank 0 says it and all exit; any other failure of
    one rank: that rank says it (naming itself) and stops every rank (``MPI_Abort``)."""
    from .errors import DivergenceError
    from .train.distributed import fail_all

    if isinstance(err, DivergenceError):
        if world.is_root:
            print(f"tinydeeplab {command}: error: {error_message(err)}", file=sys.stderr)
        return 2
    return fail_all(world, command, error_message(err))


def _config_option(argv) -> str | None:
    """The FILE of ``train ... --config FILE`` (or ``--config=FILE``) in ``argv``, else None."""
    if not argv or argv[0] != "train":
        return None
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def _interrupted(command: str) -> int:
    print(f"tinydeeplab {command}: interrupted (a training run resumes from its last checkpoint)", file=sys.stderr)
    return 130


def _caused_by_interrupt(err: BaseException) -> bool:
    """Whether a KeyboardInterrupt is in the cause/context chain of ``err`` (or named in its message)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, KeyboardInterrupt) or "KeyboardInterrupt" in str(err):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


if __name__ == "__main__":
    sys.exit(main())
