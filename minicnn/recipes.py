"""Training recipes: network, data loader, augmentation, optimizer, schedule and loss, in one object.

A :class:`Recipe` holds the settings of a training run (besides the data) and builds every piece
from them. ``RECIPES`` has one per dataset; ``train_classifier`` (what ``minicnn train`` and
``examples/train_*.py`` call) runs one on a dataset and writes the results; ``minicnn tune``
trains the recipes its trials propose with the same :meth:`Recipe.train`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from . import backend, models, optim
from .atomic import atomic_write_bytes
from .diagnostics import gradient_flow_warnings
from .losses import SoftmaxCrossEntropy
from .training import LRSchedule, evaluate, fit
from .validation import check_learning_rate, check_positive_int, is_number

OPTIMIZERS = ("sgd", "adam", "adamw")
DIGIT_DATASETS = ("mnist", "fashion-mnist", "digits")  # not mirror-symmetric: no flips


@dataclass
class Recipe:
    """How to train: the settings of a run, and the pieces built from them.

    - ``model`` / ``model_options``: a :mod:`minicnn.models` preset and its keyword arguments
      (width, dropout, ...);
    - ``epochs``, ``batch_size``;
    - ``optimizer`` (sgd with Nesterov momentum 0.9, adam or adamw), its peak ``lr`` under a
      one-cycle schedule (25% warm-up, stepped every batch) and ``weight_decay``;
    - ``augment``: the strength of the augmentation, 0 = none, 1 = the usual level (digits:
      rotations up to 10 degrees, zooms up to 10%, shifts of 2 pixels (1 below 16 pixels);
      photos: random crops after padding by 1/8 of the size, and horizontal flips);
    - ``label_smoothing`` of the cross-entropy.
    """

    model: str = "mnist_cnn"
    model_options: dict = field(default_factory=dict)
    epochs: int = 5
    batch_size: int = 128
    optimizer: str = "adamw"
    lr: float = 1e-2
    weight_decay: float = 5e-4
    augment: float = 0.0
    label_smoothing: float = 0.0

    def replace(self, **changes) -> Recipe:
        """A copy with ``changes`` (None values ignored); choosing another model drops the
        ``model_options`` of this one (they belong to its preset)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        if "augment" in changes:
            changes["augment"] = float(changes["augment"])  # True/False: the usual level / none
        if changes.get("model", self.model) != self.model and "model_options" not in changes:
            changes["model_options"] = {}
        return dataclasses.replace(self, **changes)

    def check(self, where: str = "recipe") -> Recipe:
        """Refuse bad settings (before any data is loaded, which can take a while)."""
        if self.model not in models.MODELS:
            raise ValueError(f"{where}: unknown model {self.model!r}; choose one of "
                             f"{', '.join(models.MODELS)}")
        for key in ("epochs", "batch_size"):
            check_positive_int(getattr(self, key), key, where)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"{where}: optimizer must be one of {', '.join(OPTIMIZERS)}, got "
                             f"{self.optimizer!r}")
        # the optimizers accept lr=0 (frozen weights); a training run with it learns nothing
        if check_learning_rate(self.lr, where) <= 0:
            raise ValueError(f"{where}: lr must be > 0, got {self.lr}")
        for key, high in (("weight_decay", math.inf), ("label_smoothing", 1.0),
                          ("augment", math.inf)):
            value = getattr(self, key)
            if not is_number(value) or not 0 <= value < high:
                raise ValueError(f"{where}: {key} must be a number in [0, {high}), got {value!r}")
        return self

    # -- the pieces ---------------------------------------------------------------------------
    def build_model(self, input_shape, num_classes: int, seed: int):
        return models.MODELS[self.model](tuple(input_shape), num_classes, seed=seed,
                                         **self.model_options)

    def augmentation(self, dataset: str, input_shape):
        """The random transform of the training batches, or None (``augment`` = 0)."""
        from .data import Compose, RandomAffine, RandomCrop, RandomHorizontalFlip

        s = float(self.augment)
        if s <= 0:
            return None
        _, h, w = input_shape
        if dataset in DIGIT_DATASETS:
            shift = (2 if h >= 16 else 1) / h  # a fraction of the size (RandomAffine's rule)
            return RandomAffine(degrees=10 * s, scale=0.1 * s, translate=s * shift)
        pad = max(1, round(s * h / 8))
        return Compose([RandomCrop(padding=pad, mode="constant"), RandomHorizontalFlip()])

    def build_optimizer(self, params):
        if self.optimizer == "sgd":
            return optim.SGD(params, lr=self.lr, momentum=0.9, nesterov=True,
                             weight_decay=self.weight_decay)
        kind = optim.Adam if self.optimizer == "adam" else optim.AdamW
        return kind(params, lr=self.lr, weight_decay=self.weight_decay)

    def loss(self) -> SoftmaxCrossEntropy:
        return SoftmaxCrossEntropy(label_smoothing=self.label_smoothing)

    def train(self, model, train, val=None, *, dataset: str, seed: int, callbacks=(),
              verbose: int = 0, **fit_options):
        """Train ``model`` on ``train`` = (x, y) with this recipe; returns its History.
        ``fit_options`` go to :func:`minicnn.fit` (checkpoint, resume, val_name, ...)."""
        from .data import DataLoader

        x, y = train
        loader = DataLoader(x, y, batch_size=self.batch_size, shuffle=True, seed=seed,
                            transform=self.augmentation(dataset, x.shape[1:]))
        optimizer = self.build_optimizer(model.parameters())
        schedule = optim.OneCycleLR(optimizer, max_lr=self.lr,
                                    total_steps=max(2, self.epochs * len(loader)), pct_start=0.25)
        return fit(model, self.loss(), optimizer, loader, val=val, epochs=self.epochs,
                   callbacks=[LRSchedule(schedule, per="batch"), *callbacks], verbose=verbose,
                   **fit_options)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


RECIPES = {
    # The default MNIST run (measured on 2 CPU cores, numba backend, see the README): the
    # 32-wide mnist_cnn, 6 epochs without augmentation: 99.44-99.46% test accuracy over seeds
    # 0-2, 135-139 s of training (the 24-wide one for 5 epochs: 99.40-99.46%, 77-84 s).
    "mnist": Recipe(model_options={"width": 32, "dropout": 0.1}, epochs=6, lr=1e-2,
                    label_smoothing=0.05),
    # the fastest road to 99%: a 16-wide network without dropout, one epoch of small batches
    # at a high peak learning rate
    "mnist-fast": Recipe(model_options={"width": 16, "dropout": 0.0}, epochs=1, batch_size=64,
                         lr=1.5e-2, label_smoothing=0.05),
    # longer: the same network, augmentation on, 15 epochs: 99.65%
    "mnist-long": Recipe(model_options={"width": 32, "dropout": 0.1}, epochs=15, lr=1e-2,
                         augment=1.0, label_smoothing=0.05),
    "fashion-mnist": Recipe(epochs=15, lr=4e-3, label_smoothing=0.1),
    "digits": Recipe(epochs=30, batch_size=32, lr=4e-3),
    # the VGG-style preset with random crops + flips: on 2 CPU cores it trains as fast as
    # cifar_resnet and was more accurate after one epoch (see the presets' docstrings)
    "cifar10": Recipe(model="cifar_vgg", epochs=20, lr=4e-3, augment=1.0, label_smoothing=0.1),
    "folder": Recipe(epochs=20, batch_size=64, lr=3e-3, augment=1.0, label_smoothing=0.1),
}


def normalize_as_trained(x, metadata):
    """Normalize images the way a model's training data was: its metadata (written by
    ``train_classifier``) records the per-channel mean and std. Unchanged when it records none."""
    from .data import Normalize

    norm = (metadata or {}).get("normalization")
    if not norm:
        return x
    return Normalize(norm["mean"], norm["std"])(x, None)


def load_data(dataset: str, data_dir=None, image_size=None, channels=None, seed: int = 0,
              verbose: int = 1):
    """``(x_train, y_train), (x_test, y_test), class_names`` for a dataset name."""
    from .data import load_dataset

    kwargs = {}
    if dataset == "folder":
        kwargs = {"seed": seed, "verbose": verbose}
        if image_size is not None:
            kwargs["size"] = image_size
        if channels is not None:
            kwargs["channels"] = channels
    elif dataset == "digits":
        kwargs = {"seed": seed}
    return load_dataset(dataset, data_dir, **kwargs)


# -- which images a model was tested on -----------------------------------------------------------
#
# MNIST, Fashion-MNIST, CIFAR-10 and folders with train/ and test/ sub-folders come with their
# test set. digits and flat image folders are *split* by a seed: evaluating such a model on a split
# drawn with another seed would score images it was trained on. So a model file records its split
# (the seed and a fingerprint of the held-out images), and evaluation draws exactly that split again.

class SplitMismatchError(ValueError):
    """The held-out images a model was tested on cannot be drawn again."""


def split_is_drawn(dataset: str, data_dir=None) -> bool:
    """Whether ``dataset``'s train/test split is drawn with a seed (rather than given)."""
    if dataset == "digits":
        return True
    if dataset == "folder":
        root = Path(data_dir)
        return not ((root / "train").is_dir() and ((root / "test").is_dir() or
                                                    (root / "val").is_dir()))
    return False


def held_out_fingerprint(x_test, y_test) -> str:
    """SHA-256 of the held-out images and labels (their bytes, in order)."""
    digest = hashlib.sha256(np.ascontiguousarray(x_test).tobytes())
    digest.update(np.ascontiguousarray(y_test, dtype=np.int64).tobytes())
    return digest.hexdigest()


def split_record(dataset: str, data_dir, seed: int, x_test, y_test) -> dict:
    """What a model file keeps of its train/test split (``metadata["split"]``)."""
    return {"drawn": split_is_drawn(dataset, data_dir), "seed": int(seed),
            "test_images": int(len(y_test)), "test_sha256": held_out_fingerprint(x_test, y_test)}


def load_test_data(dataset: str, data_dir, metadata: dict, verbose: int = 1):
    """``(x_test, y_test, class_names)`` to score a model with ``metadata`` on ``dataset``.

    On the model's own dataset, when that dataset's split is drawn (digits, a flat image folder),
    this is exactly the held-out part of the split the model was trained beside: drawn again with
    the recorded seed and checked against the recorded fingerprint. A model that does not record
    its split, or whose held-out images cannot be drawn again (the files changed, another flat
    folder), raises :class:`SplitMismatchError`: scoring it would count images it was trained on.
    """
    shape = metadata.get("input_shape") or [3, 32, 32]
    folder = {"image_size": tuple(shape[1:]), "channels": shape[0]} if dataset == "folder" else {}
    if not (split_is_drawn(dataset, data_dir) and dataset == metadata.get("dataset")):
        _, (x_test, y_test), names = load_data(dataset, data_dir, verbose=verbose, **folder)
        return x_test, y_test, names
    split = metadata.get("split")
    where = "this image folder" if dataset == "folder" else dataset
    if not isinstance(split, dict) or not isinstance(split.get("seed"), int):
        raise SplitMismatchError(
            f"the model file does not record the train/test split it was trained with, and "
            f"{where} is split by a seed: its held-out images cannot be told apart from its "
            "training images. Retrain it with this version of minicnn (model files now record "
            "the split), or evaluate on a test set of its own (a folder with train/ and test/).")
    _, (x_test, y_test), names = load_data(dataset, data_dir, seed=split["seed"], verbose=verbose,
                                           **folder)
    if held_out_fingerprint(x_test, y_test) != split.get("test_sha256"):
        raise SplitMismatchError(
            f"the held-out images of {where}, drawn again with the model's seed "
            f"{split['seed']}, are not the {split.get('test_images', '?')} images it was tested "
            "on (files added, removed or changed, or another folder): some of them may have been "
            "trained on. Evaluate on a folder with train/ and test/ sub-folders instead, whose "
            "test images are scored as they are.")
    return x_test, y_test, names


def train_classifier(dataset: str = "mnist", *, recipe: str | None = None, data_dir=None,
                     model: str | None = None, epochs: int | None = None,
                     batch_size: int | None = None, lr: float | None = None,
                     weight_decay: float | None = None, augment: bool | None = None,
                     label_smoothing: float | None = None, seed: int = 0, out=None,
                     backend_name: str | None = None, verbose: int = 1, resume: bool = False,
                     limit: int | None = None, image_size=None, channels=None,
                     diagnostics: int | None = None, callbacks=()) -> dict:
    """Train a classifier on ``dataset`` with ``RECIPES[recipe or dataset]`` (every setting can
    be overridden) and write the results into ``out``.

    Writes ``model.safetensors`` (with class names, input shape and normalization in its
    metadata), ``history.json``, ``curves.png``, ``results.json`` and a resumable
    ``checkpoint.safetensors``. Returns the results dict (test accuracy, times, paths).
    ``limit`` uses only the first ``limit`` training and test images (for quick smoke runs).
    ``callbacks`` go to ``fit`` too. ``diagnostics=N`` records gradient flow every N steps
    (``fit``'s option): it is kept in ``history.json``, drawn into ``gradient_flow.png`` and its
    warnings are printed and returned as ``results["gradient_flow_warnings"]``.
    """
    from .data import Normalize

    settings = RECIPES[recipe or dataset].replace(
        model=model, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
        augment=augment, label_smoothing=label_smoothing).check("train_classifier")
    if limit is not None:
        check_positive_int(limit, "limit", "train_classifier")
    if backend_name:
        backend.set_backend(backend_name)
    out = Path(out) if out is not None else \
        Path("runs") / f"{dataset}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)

    (x_train, y_train), (x_test, y_test), class_names = load_data(
        dataset, data_dir, image_size=image_size, channels=channels, seed=seed, verbose=verbose)
    split = split_record(dataset, data_dir, seed, x_test, y_test)
    if limit is not None:  # a quick run: at most `limit` training and `limit` test images
        x_train, y_train = x_train[:limit], y_train[:limit]
        x_test, y_test = x_test[:limit], y_test[:limit]
    normalize = Normalize.fit(x_train)
    x_train, x_test = normalize(x_train, None), normalize(x_test, None)

    input_shape = tuple(x_train.shape[1:])
    net = settings.build_model(input_shape, len(class_names), seed)
    net.metadata = {
        "class_names": list(class_names), "input_shape": list(input_shape), "dataset": dataset,
        "normalization": {"mean": normalize.mean.tolist(), "std": normalize.std.tolist()},
        "recipe": settings.to_dict(), "split": split,
    }
    if verbose:
        net.summary()
        print(f"{dataset}: {len(x_train):,} training and {len(x_test):,} test images, "
              f"{len(class_names)} classes; backend {net.backend}; output in {out}")

    start = time.perf_counter()
    history = settings.train(net, (x_train, y_train), val=(x_test, y_test), val_name="test",
                             dataset=dataset, seed=seed, verbose=verbose,
                             checkpoint=out / "checkpoint.safetensors", resume=resume,
                             diagnostics=diagnostics, callbacks=callbacks)
    wall = time.perf_counter() - start
    train_seconds = sum(record["time_s"] for record in history.epochs)
    final = evaluate(net, SoftmaxCrossEntropy(), x_test, y_test)

    net.save(out / "model.safetensors")
    history.save(out / "history.json")
    history.plot(out / "curves.png")
    results = {
        "dataset": dataset, "test_accuracy": final["acc"], "test_loss": final["loss"],
        "epochs": len(history), "train_seconds": train_seconds, "wall_seconds": wall,
        "images_per_s": float(np.mean(history["images_per_s"])) if len(history) else None,
        "backend": net.backend, "settings": settings.to_dict(), "seed": seed,
        "model_file": str(out / "model.safetensors"),
    }
    if history.diagnostics:
        history.plot_gradient_flow(out / "gradient_flow.png")
        results["gradient_flow_warnings"] = gradient_flow_warnings(history.diagnostics)
    atomic_write_bytes(out / "results.json", json.dumps(results, indent=2).encode())
    if verbose and history.diagnostics:
        warnings = results["gradient_flow_warnings"]
        print(f"gradient flow ({len(history.diagnostics)} steps recorded, "
              f"{out / 'gradient_flow.png'}): " + ("; ".join(warnings) if warnings else
                                                   "nothing alarming"))
    if verbose:
        print(f"test accuracy {final['acc']:.2%} after {len(history)} epochs; "
              f"training {train_seconds:.1f} s; files in {out}")
    return results
