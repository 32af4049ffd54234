"""The ``minicnn`` command: train, evaluate, explain, predict, bench.

    minicnn train --dataset mnist
    minicnn train --image-folder photos/ --image-size 64 --epochs 20
    minicnn evaluate runs/mnist-.../model.safetensors --dataset mnist
    minicnn explain runs/mnist-.../model.safetensors --dataset mnist --out report/
    minicnn predict runs/mnist-.../model.safetensors digit.png
    minicnn bench --backends numpy,numba
    minicnn export runs/mnist-.../model.safetensors --onnx mnist.onnx
    minicnn studio
    minicnn tune --dataset digits --trials 20 --retrain-best

``python -m minicnn`` is the same command. Bad input ends with a one-line message and exit code 2;
``--debug`` (or ``MINICNN_DEBUG=1``) shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .backend import BACKENDS
from .data.registry import BUILT_IN as DATASET_CHOICES  # --image-folder names the other one
from .data.registry import DATASETS
from .models import PRESETS
from .validation import NON_NEGATIVE_INT, POSITIVE_INT, UsageError


@dataclass(frozen=True)
class Command:
    """One ``minicnn`` command: its help line, its description, the function that adds its
    arguments and the one that runs it (returning the exit code)."""

    summary: str
    description: str
    arguments: Callable
    handler: Callable
    backend: bool = True  # takes --backend (bench chooses its backends with --backends)


#: every command, in the order ``minicnn --help`` lists them
COMMANDS: dict[str, Command] = {}


def command(name: str, summary: str, description: str, arguments: Callable,
            backend: bool = True):
    """Register the decorated function as the handler of command ``name``, with its help and
    its arguments beside it."""
    def register(handler):
        COMMANDS[name] = Command(summary, description, arguments, handler, backend)
        return handler
    return register


# -- shared by several commands ----------------------------------------------------------------

def _add_common(parser: argparse.ArgumentParser, backend: bool = True) -> None:
    if backend:  # bench chooses its backends with --backends
        parser.add_argument("--backend", choices=BACKENDS, default=None,
                            help="compute backend (default: $MINICNN_BACKEND, else numba when "
                                 "installed, else numpy)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or summaries")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (also: MINICNN_DEBUG=1)")


def _source_arguments(parser, default: str, folder_help: str) -> None:
    """--dataset or --image-folder (one of them), and --data-dir."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--dataset", choices=DATASET_CHOICES, default=None,
                        help=f"a built-in dataset (default: {default})")
    source.add_argument("--image-folder", metavar="DIR", help=folder_help)
    parser.add_argument("--data-dir", metavar="DIR",
                        help="folder holding the dataset's files (else the usual places are "
                             "searched: $MINICNN_DATA, ~/.cache/minicnn, data/, /usr/share/datasets)")


def _dataset_and_folder(args, default):
    """``(dataset, data folder)`` that --image-folder, --dataset and --data-dir name."""
    if args.image_folder:
        return "folder", args.image_folder
    return args.dataset or default, args.data_dir


# -- minicnn train -----------------------------------------------------------------------------

def _train_arguments(train) -> None:
    from .recipes import RECIPE_RULES

    _source_arguments(train, "mnist", "your own images: one sub-folder per class (or train/ and "
                                      "test/ sub-folders holding the class folders)")
    train.add_argument("--model", choices=tuple(PRESETS), default=None,
                       help="network preset (default: the dataset's recipe: mnist_cnn, or "
                            "cifar_vgg for cifar10)")
    preset = train.add_mutually_exclusive_group()
    preset.add_argument("--fast", action="store_true",
                        help="MNIST only: the fastest road to 99%% (a 16-wide network, 1 epoch)")
    preset.add_argument("--long", action="store_true",
                        help="MNIST only: the longer recipe (15 epochs, augmentation)")
    train.add_argument("--epochs", type=RECIPE_RULES["epochs"].parse,
                       help="number of epochs (default: the recipe's)")
    train.add_argument("--batch-size", type=RECIPE_RULES["batch_size"].parse,
                       help="images per training step")
    train.add_argument("--lr", type=RECIPE_RULES["lr"].parse,
                       help="peak learning rate of the one-cycle schedule")
    train.add_argument("--weight-decay", type=RECIPE_RULES["weight_decay"].parse,
                       help="AdamW's decoupled weight decay")
    train.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                       help="random rotations/zooms/shifts (digits) or crops+flips (photos)")
    train.add_argument("--image-size", type=POSITIVE_INT.parse, default=None,
                       help="image folder: resize images to this many pixels square (default 32)")
    train.add_argument("--channels", type=int, choices=(1, 3), default=None,
                       help="image folder: 1 = grayscale, 3 = RGB (default 3)")
    train.add_argument("--seed", type=NON_NEGATIVE_INT.parse, default=0,
                       help="seed of weights, shuffling, augmentation")
    train.add_argument("--out", metavar="DIR",
                       help="output folder (default runs/<dataset>-<timestamp>)")
    train.add_argument("--resume", action="store_true",
                       help="continue from --out/checkpoint.safetensors (after Ctrl-C); "
                            "without --out, the latest run of this dataset under runs/")
    train.add_argument("--limit", type=POSITIVE_INT.parse,
                       help="train on the first N images only (smoke test)")
    train.add_argument("--studio", action="store_true",
                       help="watch the run live in minicnn studio (the URL is printed)")
    train.add_argument("--diagnostics", type=POSITIVE_INT.parse, nargs="?", const=50, default=None,
                       metavar="N",
                       help="record gradient flow every N steps (default 50): per-layer gradient "
                            "norms, update/weight ratios, activations, dead ReLUs; writes "
                            "gradient_flow.png and prints warnings (vanishing/exploding gradients)")


@command("train", "train a classifier on a dataset or image folder",
         "Train a CNN and write the model, history and training curves into --out.",
         _train_arguments)
def cmd_train(args) -> int:
    from .recipes import train_classifier

    dataset, data_dir = _dataset_and_folder(args, default="mnist")
    if dataset != "mnist" and (args.long or args.fast):
        raise UsageError(f"--{'long' if args.long else 'fast'} is a preset of the MNIST recipe; "
                         f"for {dataset} set --epochs, --lr, ... yourself")
    if DATASETS[dataset].channels is not None and (args.image_size or args.channels):
        raise UsageError("--image-size and --channels apply to --image-folder only "
                         f"({dataset} has a fixed image shape)")
    recipe = None
    if dataset == "mnist" and (args.long or args.fast):
        recipe = "mnist-long" if args.long else "mnist-fast"
    size = (args.image_size, args.image_size) if args.image_size else None
    callbacks, diagnostics = [], args.diagnostics
    if args.studio:
        callbacks.append(_start_studio_for_training())
        diagnostics = diagnostics or 50  # the live view's gradient norms
    out = args.out
    if args.resume and out is None:
        out = _latest_run(dataset)
        print(f"resuming the latest run of {dataset}: {out}", file=sys.stderr)
    try:
        train_classifier(dataset, recipe=recipe, data_dir=data_dir, model=args.model,
                         epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         weight_decay=args.weight_decay, augment=args.augment, seed=args.seed,
                         out=out, verbose=0 if args.quiet else 1,
                         resume=args.resume, limit=args.limit, image_size=size,
                         channels=args.channels, diagnostics=diagnostics, callbacks=callbacks)
    except KeyboardInterrupt:
        print("\ninterrupted; resume with the same command plus --resume --out <the run folder>",
              file=sys.stderr)
        return 130
    return 0


def _latest_run(dataset: str) -> Path:
    """The most recent ``runs/<dataset>-*`` folder holding a checkpoint (``--resume``)."""
    runs = sorted(Path("runs").glob(f"{dataset}-*/checkpoint.safetensors"),
                  key=lambda p: p.stat().st_mtime)
    if not runs:
        raise UsageError(f"--resume without --out: no run of {dataset} with a checkpoint under "
                         f"{Path('runs').resolve()}; pass the run folder with --out")
    return runs[-1].parent


def _start_studio_for_training():
    """Serve the studio's live view of this run from a background thread; returns the callback
    that feeds it."""
    import threading

    from .studio import AttachedTraining, StudioApp, TrainingMonitor, make_server

    monitor = TrainingMonitor(every=10)
    server = make_server(StudioApp(None, AttachedTraining(monitor)), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True, name="minicnn-studio").start()
    print(f"minicnn studio: watch this run at {server.url}", file=sys.stderr)
    return monitor


# -- minicnn evaluate, minicnn explain ---------------------------------------------------------

def _evaluate_arguments(parser, report_required: bool = False) -> None:
    parser.add_argument("model", help="a model file written by minicnn (.safetensors)")
    _source_arguments(parser, "the one the model was trained on", "evaluate on your own images")
    parser.add_argument("--batch-size", type=POSITIVE_INT.parse, default=512,
                        help="images per forward pass")
    parser.add_argument("--out", metavar="DIR", required=report_required,
                        help="folder for the report" if report_required else
                        "also write a report (metrics, plots, report.html) into DIR")


@command("explain", "write a report: metrics, mistakes, Grad-CAM, filters (report.html)",
         "Evaluate a saved model and write metrics.json, classification_report.txt, the "
         "figures (confusion matrix, most confident mistakes, Grad-CAM, saliency, filters, "
         "feature maps) and one self-contained report.html into --out. The same as "
         "`minicnn evaluate MODEL --out DIR`.",
         lambda parser: _evaluate_arguments(parser, report_required=True))
@command("evaluate", "accuracy and loss of a model on a test set",
         "Evaluate a saved model on a dataset's test split.",
         _evaluate_arguments)
def cmd_evaluate(args) -> int:
    from . import load_model
    from .data import normalize_as_trained
    from .losses import SoftmaxCrossEntropy
    from .training import evaluate

    model = load_model(args.model)
    metadata = model.metadata or {}
    dataset, (x_test, y_test, class_names) = _load_eval_data(args, metadata)
    x_test = normalize_as_trained(x_test, metadata)
    scores = evaluate(model, SoftmaxCrossEntropy(), x_test, y_test, batch_size=args.batch_size)
    print(f"{dataset} test set: accuracy {scores['acc']:.2%}, loss {scores['loss']:.4f} "
          f"({len(x_test):,} images)")
    shifts = (metadata.get("recipe") or {}).get("test_shifts") or 0
    if shifts:  # the score training reported: each image and its shifted copies
        shifted = evaluate(model, SoftmaxCrossEntropy(), x_test, y_test,
                           batch_size=args.batch_size, shifts=int(shifts))
        print(f"  with the test-time shifts of its recipe ({shifts} pixel, 5 views): accuracy "
              f"{shifted['acc']:.2%}, loss {shifted['loss']:.4f}")
    if args.out:
        from .report import write_report

        write_report(model, x_test, y_test, class_names, args.out, dataset=dataset,
                     model_path=args.model, verbose=0 if args.quiet else 1)
    return 0


def _load_eval_data(args, metadata):
    """``(dataset, (x_test, y_test, class_names))``: for the model's own dataset, exactly the
    held-out images of the split it was trained beside (``data.splits.load_test_data``)."""
    from .data.splits import load_test_data

    dataset, data_dir = _dataset_and_folder(args, default=metadata.get("dataset"))
    if dataset is None:
        raise SystemExit("minicnn evaluate: --dataset is required (the model file does not "
                         "say which dataset it was trained on)")
    return dataset, load_test_data(dataset, data_dir, metadata, verbose=0 if args.quiet else 1)


# -- minicnn predict ---------------------------------------------------------------------------

def _predict_arguments(predict) -> None:
    predict.add_argument("model", help="a model file written by minicnn (.safetensors)")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="PNG or JPEG files")
    predict.add_argument("--top", type=POSITIVE_INT.parse, default=3,
                         help="how many classes to show per image")


@command("predict", "classify image files", "Print the most likely classes of each image.",
         _predict_arguments)
def cmd_predict(args) -> int:
    from PIL import UnidentifiedImageError

    from . import load_model
    from .data import class_names_of, normalize_as_trained
    from .data.images import read_image

    model = load_model(args.model)
    metadata = model.metadata or {}
    input_shape = tuple(metadata.get("input_shape") or model.input_shape or ())
    if len(input_shape) != 3:
        raise SystemExit(f"minicnn predict: {args.model} does not record its input shape")
    images, names, failed = [], [], 0
    for path in args.images:
        try:
            images.append(read_image(path, input_shape))
            names.append(path)
        except (OSError, UnidentifiedImageError) as err:
            print(f"{path}: cannot read image ({err})", file=sys.stderr)
            failed += 1
    if images:
        probs = model.predict(normalize_as_trained(np.stack(images), metadata))
        top = max(1, min(args.top, probs.shape[1]))
        class_names = class_names_of(metadata, probs.shape[1])
        for path, p in zip(names, probs):
            best = np.argsort(p)[::-1][:top]
            labels = ", ".join(f"{class_names[i]} {p[i]:.1%}" for i in best)
            print(f"{path}: {labels}")
    return 1 if failed else 0


# -- minicnn bench -----------------------------------------------------------------------------

def _bench_arguments(bench) -> None:
    bench.add_argument("--backends", default=None,
                       help="comma-separated backends (default: all that run here)")
    bench.add_argument("--batch-size", type=POSITIVE_INT.parse, default=128,
                       help="images per training step and per inference batch (default 128)")
    bench.add_argument("--steps", type=POSITIVE_INT.parse, default=20,
                       help="timed training steps and inference batches (default 20)")


@command("bench", "training and inference speed of the backends",
         "Training and inference images/s of the reference network on each backend, each "
         "backend in a fresh process of its own (benchmarks/bench_train.py compares with "
         "PyTorch).",
         _bench_arguments, backend=False)
def cmd_bench(args) -> int:
    from . import backend, benchmark

    names = args.backends.split(",") if args.backends else backend.available_backends()
    for name in names:
        if name not in BACKENDS:
            raise UsageError(f"--backends: unknown backend {name!r}; choose from {BACKENDS}")
        backend.check_available(name)
    try:
        benchmark.bench(names, args.batch_size, args.steps, verbose=0 if args.quiet else 1)
    except RuntimeError as err:  # a backend's process failed: its error is in the message
        raise SystemExit(str(err)) from None
    return 0


# -- minicnn studio ----------------------------------------------------------------------------

def _studio_arguments(studio) -> None:
    studio.add_argument("model", nargs="?", help="a model file (default: a small MNIST model)")
    studio.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 "
                             "opens it to the network, with a warning)")
    studio.add_argument("--port", type=NON_NEGATIVE_INT.parse, default=0,
                        help="port (default 0: a free one; the URL is printed)")
    studio.add_argument("--layers", metavar="DIR",
                        help="a `minicnn exercises` folder: the page runs your backward passes "
                             "(those whose exercises pass) instead of minicnn's")


@command("studio", "a local web page: draw a digit, watch both passes and a training run",
         "Serve minicnn studio on this machine: draw a digit (or pick a test image) and "
         "see every layer's output and the gradient of a class score or of the loss with "
         "respect to it, each with its formula; check a gradient numerically on the spot; "
         "watch a short training run. Without MODEL a small MNIST model is trained first "
         "(once).",
         _studio_arguments)
def cmd_studio(args) -> int:
    from .studio import build_app, serve

    app = build_app(args.model, verbose=0 if args.quiet else 1, your_layers=args.layers)
    serve(app, args.host, args.port, verbose=0 if args.quiet else 1)
    return 0


# -- minicnn export ----------------------------------------------------------------------------

def _export_arguments(export) -> None:
    export.add_argument("model", help="a model file written by minicnn (.safetensors)")
    export.add_argument("--onnx", metavar="OUT", required=True, help="the .onnx file to write")
    export.add_argument("--opset", type=POSITIVE_INT.parse, default=17,
                        help="ONNX opset version (default 17)")


@command("export", 'write a model as ONNX (pip install "minicnn[onnx]")',
         "Write a minicnn model file as an ONNX model (inputs: normalized images "
         "(N, C, H, W); outputs: logits and probabilities), check it with the ONNX checker "
         "and, when onnxruntime is installed, compare its probabilities with minicnn's.",
         _export_arguments)
def cmd_export(args) -> int:
    from . import load_model
    from .interop import to_onnx

    if args.opset < 17:
        raise UsageError(f"--opset must be >= 17, got {args.opset}")
    model = load_model(args.model)
    try:
        path = to_onnx(model, args.onnx, opset=args.opset)
    except ImportError as err:
        print(f"minicnn export: error: {err}", file=sys.stderr)
        return 2
    shape = tuple(model.input_shape or model.metadata.get("input_shape"))
    message = f"wrote {path} (opset {args.opset}, input (N, {', '.join(map(str, shape))}))"
    try:
        import onnxruntime
    except ImportError:
        print(message + "; onnxruntime is not installed, so it was not run", file=sys.stderr)
        return 0
    x = np.random.default_rng(0).standard_normal((8, *shape)).astype(np.float32)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    probabilities = session.run(["probabilities"], {"images": x})[0]
    difference = float(np.abs(probabilities - model.predict(x)).max())
    if not args.quiet:
        print(f"{message}; onnxruntime's probabilities differ from minicnn's by at most "
              f"{difference:.1e} on 8 random inputs")
    return 0


# -- minicnn exercises -------------------------------------------------------------------------

def _exercises_arguments(parser) -> None:
    from .exercises.commands import add_arguments

    add_arguments(parser)


@command("exercises", "a graded course in backprop: write the backward passes yourself",
         "Write the backward passes of the Dense layer, ReLU, softmax cross-entropy, "
         "max and average pooling, im2col, the convolution and col2im, and BatchNorm, "
         "the convolution's forward pass and two optimizers yourself; `check` grades "
         "them on drawn cases, says which entries are wrong and names the classic "
         "mistakes; `train` trains MNIST with them.",
         _exercises_arguments)
def cmd_exercises(args) -> int:
    return args.action_handler(args)  # each action sets its own (_exercises_arguments)


# -- minicnn tune ------------------------------------------------------------------------------

def _tune_arguments(parser) -> None:
    from .tuning.settings import SETTINGS_RULES
    from .tuning.space import DEFAULT_SPACE, PARAMETERS
    from .tuning.study import HEARTBEAT_SECONDS

    def setting(name):  # the argument type of a TuneSettings number, from its rule
        return SETTINGS_RULES[name].parse

    _source_arguments(parser, "digits", "your own images, one folder per class")
    parser.add_argument("--image-size", type=POSITIVE_INT.parse,
                        help="image folder: resize to this size square")
    parser.add_argument("--channels", type=int, choices=(1, 3), help="image folder: 1 or 3")
    parser.add_argument("--limit", type=setting("limit"),
                        help="use the first N training images only")
    parser.add_argument("--trials", type=setting("trials"), default=20,
                        help="the study's total number of finished trials (default 20); "
                             "re-running continues up to it")
    parser.add_argument("--epochs", type=setting("epochs"), default=10,
                        help="epochs per trial (default 10)")
    parser.add_argument("--val-fraction", type=setting("val_fraction"), default=0.2,
                        help="share of the training set held out for validation (default 0.2)")
    parser.add_argument("--space", metavar="FILE",
                        help="search space as JSON, e.g. {\"lr\": {\"low\": 1e-4, \"high\": 0.1, "
                             "\"log\": true}, \"batch_size\": [32, 64], \"activation\": \"relu\"}")
    group = parser.add_argument_group(
        "search space flags", "LOW:HIGH searches a range (log scale for --lr and "
        "--weight-decay), A,B,C a list of choices, V fixes the value; they override --space")
    for name in PARAMETERS:
        flag = "--" + name.replace("_", "-")
        default = DEFAULT_SPACE[name]
        shown = (f"{default['low']:g}:{default['high']:g}" if isinstance(default, dict)
                 else ",".join(map(str, default)))
        group.add_argument(flag, dest=f"space_{name}", metavar="SPEC",
                           help=f"default {shown}")
    parser.add_argument("--pruner", choices=("median", "halving", "none"), default="median",
                        help="stop weak trials after an epoch: median (default) or successive "
                             "halving")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="do not make the first trial the default configuration")
    parser.add_argument("--storage", metavar="URL",
                        help="Optuna storage (default sqlite:///<out>/study.db); an RDB URL "
                             "shared by several machines runs one study on all of them")
    parser.add_argument("--study-name", help="default minicnn-<dataset>; the same name resumes")
    parser.add_argument("--out", metavar="DIR", help="output folder (default runs/tune-<dataset>)")
    parser.add_argument("--seed", type=setting("seed"), default=0,
                        help="seed of the validation split, the trials' training and the sampler")
    parser.add_argument("--sampler-seed", type=setting("sampler_seed"),
                        help="seed of the TPE sampler only (give each parallel worker its own)")
    parser.add_argument("--timeout", type=setting("timeout"),
                        help="start no new trial after this many seconds")
    parser.add_argument("--heartbeat", type=setting("heartbeat"), default=HEARTBEAT_SECONDS,
                        metavar="SECONDS",
                        help=f"a running trial's heartbeat in the storage (default "
                             f"{HEARTBEAT_SECONDS}); a trial whose worker missed two is marked "
                             "FAIL and run again")
    parser.add_argument("--no-plots", dest="plots", action="store_false",
                        help="do not draw the PNG plots")
    parser.add_argument("--retrain-best", action="store_true",
                        help="train the best configuration on the whole training set and report "
                             "its test accuracy")


@command("tune", 'search hyperparameters with Optuna (pip install "minicnn[tune]")',
         "Search learning rate, batch size, optimizer, weight decay, width, kernel size, "
         "activation, dropout, depth and augmentation with Optuna (TPE + pruning) on a "
         "validation split of the training set; writes the trials, the best configuration "
         "and plots into --out. The study is stored in SQLite (resumable); any Optuna RDB URL "
         "as --storage lets several machines work on one study.",
         _tune_arguments)
def cmd_tune(args) -> int:
    from .tuning.study import StorageError

    try:
        return _run_tune(args)
    except (ImportError, StorageError) as err:  # Optuna or a database driver missing, or the
        # storage cannot be opened: the message says why (and which extra to install)
        print(f"minicnn tune: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; the finished trials are saved: run the same command again to "
              "continue the study", file=sys.stderr)
        return 130


def _run_tune(args) -> int:
    """``minicnn tune``: the parsed arguments as one :class:`minicnn.tuning.TuneSettings`."""
    from dataclasses import fields

    from .tuning import TuneSettings, tune
    from .tuning.space import PARAMETERS, parse_flag, parse_space, read_space_file

    dataset, data_dir = _dataset_and_folder(args, default="digits")
    space = read_space_file(args.space) if args.space else {}
    space.update({name: parse_flag(name, getattr(args, f"space_{name}")) for name in PARAMETERS
                  if getattr(args, f"space_{name}") is not None})
    parse_space(space)  # a mistake in the space is reported before any data is loaded
    given = {f.name: getattr(args, f.name) for f in fields(TuneSettings) if hasattr(args, f.name)}
    given.update(dataset=dataset, data_dir=data_dir, space=space, verbose=0 if args.quiet else 1,
                 image_size=(args.image_size,) * 2 if args.image_size else None)
    tune(TuneSettings(**given))
    return 0


# -- the command -------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="minicnn", description="Train, evaluate and inspect convolutional networks "
        "written from scratch in NumPy.")
    parser.add_argument("--version", action="version", version=f"minicnn {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, record in COMMANDS.items():
        parser_of = commands.add_parser(name, help=record.summary, description=record.description)
        record.arguments(parser_of)
        _add_common(parser_of, backend=record.backend)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from . import backend
    from .data import DatasetFileError, DatasetNotFoundError
    from .data.splits import SplitMismatchError
    from .io import ModelFileError

    debug = getattr(args, "debug", False) or os.environ.get("MINICNN_DEBUG", "") not in ("", "0")
    try:
        if getattr(args, "backend", None):
            backend.set_backend(args.backend)  # the one place the command chooses a backend
        return COMMANDS[args.command].handler(args)
    # Bad input of any kind (arguments, files, settings; MemoryBudgetError is a ValueError)
    # ends with a one-line message and exit code 2, never a traceback (--debug shows it).
    except (DatasetNotFoundError, DatasetFileError, ModelFileError, FileNotFoundError,
            backend.BackendUnavailableError, ValueError, TypeError, OSError) as err:
        if debug:
            raise
        print(f"minicnn {args.command}: error: {err}", file=sys.stderr)
        if not isinstance(err, (UsageError, SplitMismatchError, DatasetNotFoundError,
                                DatasetFileError, ModelFileError, FileNotFoundError,
                                backend.BackendUnavailableError)):
            print("(run again with --debug, or MINICNN_DEBUG=1, to see the full traceback)",
                  file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
