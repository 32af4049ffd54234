"""Training recipes and training runs: one way to train a network and write what it made.

- A :class:`Recipe` holds the settings of a training run (besides the data) and builds every
  piece from them: network, data loader, augmentation, optimizer, schedule and loss.
  ``RECIPES`` has one per dataset; ``minicnn tune``'s trials train theirs with the same
  :meth:`Recipe.train`.
- :func:`train_run` trains a recipe on data prepared by :func:`minicnn.data.prepare_data` and
  writes a *run folder*: the model file (which ``minicnn evaluate``, ``predict``, ``explain``
  and the studio accept), the history, the curves, ``results.json`` and a resumable checkpoint.
  ``minicnn train`` (:func:`train_classifier`) and ``minicnn tune --retrain-best`` both write
  theirs with it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from . import models, optim
from .atomic import atomic_write_bytes
from .callbacks import WeightAverage
from .data import Compose, DataLoader, RandomAffine, RandomCrop, RandomHorizontalFlip
from .data import dataset as dataset_record
from .data.prepared import PreparedData, prepare_data
from .diagnostics import gradient_flow_warnings
from .losses import SoftmaxCrossEntropy
from .training import LRSchedule, evaluate, fit
from .validation import Number, OneOf, check_positive_int, check_settings

OPTIMIZERS = ("sgd", "adam", "adamw")
#: the rules of a recipe's settings (``minicnn tune`` checks its search space by them too)
RECIPE_RULES = {
    "epochs": Number(int, low=1), "batch_size": Number(int, low=1),
    "optimizer": OneOf(OPTIMIZERS), "lr": Number(low=0, open_low=True),
    "weight_decay": Number(low=0), "augment": Number(low=0),
    "label_smoothing": Number(low=0, high=1, open_high=True),
    "shift": Number(int, low=0), "average": Number(low=0, high=1, open_high=True),
    "test_shifts": Number(int, low=0),
}


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
    - ``shift``: random shifts of up to ``shift`` pixels (a random crop of the image padded by
      repeating its edges), on top of ``augment``; the cheapest augmentation;
    - ``label_smoothing`` of the cross-entropy;
    - ``average``: the decay of a moving average of the weights (:class:`WeightAverage`), which
      becomes the trained network; 0 = none;
    - ``test_shifts``: the final test score averages the logits over each image and its copies
      shifted by this many pixels (``evaluate(shifts=...)``); 0 = the image alone.
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
    shift: int = 0
    average: float = 0.0
    test_shifts: int = 0

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
        check_settings(RECIPE_RULES, {name: getattr(self, name) for name in RECIPE_RULES}, where)
        return self

    # -- the pieces ---------------------------------------------------------------------------
    def build_model(self, input_shape, num_classes: int, seed: int):
        return models.MODELS[self.model](tuple(input_shape), num_classes, seed=seed,
                                         **self.model_options)

    def augmentation(self, dataset: str, input_shape):
        """The random transform of the training batches, or None (``augment`` = 0): crops and
        flips for a dataset whose mirrored images keep their class (photos), small rotations,
        zooms and shifts for one whose don't (digits)."""
        s = float(self.augment)
        shifts = [RandomCrop(padding=self.shift, mode="edge")] if self.shift else []
        if s <= 0:
            return shifts[0] if shifts else None
        _, h, w = input_shape
        if not dataset_record(dataset).flips:
            shift = (2 if h >= 16 else 1) / h  # a fraction of the size (RandomAffine's rule)
            return Compose([RandomAffine(degrees=10 * s, scale=0.1 * s, translate=s * shift),
                            *shifts])
        pad = max(1, round(s * h / 8))
        return Compose([RandomCrop(padding=pad, mode="constant"), RandomHorizontalFlip(), *shifts])

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
        x, y = train
        loader = DataLoader(x, y, batch_size=self.batch_size, shuffle=True, seed=seed,
                            transform=self.augmentation(dataset, x.shape[1:]))
        optimizer = self.build_optimizer(model.parameters())
        schedule = optim.OneCycleLR(optimizer, max_lr=self.lr,
                                    total_steps=max(2, self.epochs * len(loader)), pct_start=0.25)
        averaging = [WeightAverage(self.average)] if self.average else []
        return fit(model, self.loss(), optimizer, loader, val=val, epochs=self.epochs,
                   callbacks=[LRSchedule(schedule, per="batch"), *averaging, *callbacks],
                   verbose=verbose, **fit_options)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


RECIPES = {
    # the default MNIST run, chosen by time to accuracy (docs/usage.md, "Why train_mnist.py is
    # built this way"): the 16-wide mnist_cnn, 8 epochs of augmented digits, scored with
    # 1-pixel test-time shifts
    "mnist": Recipe(model_options={"width": 16, "dropout": 0.0}, epochs=8, lr=1e-2, augment=1.0,
                    label_smoothing=0.05, test_shifts=1),
    # the fastest road to 99%: a 16-wide network without dropout, one epoch of small batches
    # at a high peak learning rate
    "mnist-fast": Recipe(model_options={"width": 16, "dropout": 0.0}, epochs=1, batch_size=64,
                         lr=1.5e-2, label_smoothing=0.05),
    # the best accuracy: a 32-wide network, 20 epochs, test-time shifts as the default
    "mnist-long": Recipe(model_options={"width": 32, "dropout": 0.1}, epochs=20, lr=1e-2,
                         augment=1.0, label_smoothing=0.05, test_shifts=1),
    "fashion-mnist": Recipe(epochs=15, lr=4e-3, label_smoothing=0.1),
    "digits": Recipe(epochs=30, batch_size=32, lr=4e-3),
    # the VGG-style preset with random crops + flips (why not cifar_resnet: benchmarks/README.md)
    "cifar10": Recipe(model="cifar_vgg", epochs=20, lr=4e-3, augment=1.0, label_smoothing=0.1),
    "folder": Recipe(epochs=20, batch_size=64, lr=3e-3, augment=1.0, label_smoothing=0.1),
    # the studio's Train button: a narrow network, a short run to watch
    "studio-demo": Recipe(model_options={"width": 8, "dropout": 0.0}, epochs=1, batch_size=64,
                          lr=3e-3),
}
#: the results of each recipe (accuracy, time) are measured in docs/usage.md and
#: benchmarks/README.md, with the commands that produce them


# -- a training run and its folder -----------------------------------------------------------------

def train_run(recipe: Recipe, data: PreparedData, out, *, seed: int = 0, watch_test: bool = True,
              backend_name: str | None = None, verbose: int = 1, resume: bool = False,
              diagnostics: int | None = None, callbacks=(), metadata: dict | None = None) -> dict:
    """Train ``recipe``'s network on ``data`` and write the run folder ``out``.

    Writes ``model.safetensors`` (the data's :meth:`PreparedData.metadata`, the recipe and
    ``metadata`` in its metadata), ``history.json``, ``curves.png``, ``results.json`` (returned)
    and a resumable ``checkpoint.safetensors`` (``resume`` continues from it); with
    ``diagnostics=N`` also ``gradient_flow.png``. ``watch_test`` scores the test set after every
    epoch (``test_loss``, ``test_acc`` in the history); without, it is scored once, at the end.
    ``backend_name`` moves the network to that backend (the default backend is left alone).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    net = recipe.build_model(data.input_shape, len(data.class_names), seed)
    if backend_name:
        net.to(backend_name)
    net.metadata = {**data.metadata(), "recipe": recipe.to_dict(), **(metadata or {})}
    if verbose:
        net.summary()
        print(f"{data.dataset}: {len(data.train[1]):,} training and {len(data.test[1]):,} test "
              f"images, {len(data.class_names)} classes; backend {net.backend}; output in {out}")

    start = time.perf_counter()
    history = recipe.train(net, data.train, val=data.test if watch_test else None,
                           val_name="test", dataset=data.dataset, seed=seed, verbose=verbose,
                           checkpoint=out / "checkpoint.safetensors", resume=resume,
                           diagnostics=diagnostics, callbacks=callbacks)
    wall = time.perf_counter() - start
    final = evaluate(net, SoftmaxCrossEntropy(), *data.test, shifts=recipe.test_shifts)

    net.save(out / "model.safetensors")
    history.save(out / "history.json")
    history.plot(out / "curves.png")
    results = {
        "dataset": data.dataset, "test_accuracy": final["acc"], "test_loss": final["loss"],
        "epochs": len(history), "train_images": len(data.train[1]),
        "test_images": len(data.test[1]),
        "train_seconds": sum(record["time_s"] for record in history.epochs),
        "wall_seconds": wall,
        "images_per_s": float(np.mean(history["images_per_s"])) if len(history) else None,
        "backend": net.backend, "settings": recipe.to_dict(), "seed": seed,
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
        print(f"test accuracy {final['acc']:.2%} after {len(history)} epochs; training "
              f"{results['train_seconds']:.1f} s; files in {out}")
    return results


def train_classifier(dataset: str = "mnist", *, recipe: str | None = None, data_dir=None,
                     model: str | None = None, epochs: int | None = None,
                     batch_size: int | None = None, lr: float | None = None,
                     weight_decay: float | None = None, augment: bool | None = None,
                     label_smoothing: float | None = None, seed: int = 0, out=None,
                     backend_name: str | None = None, verbose: int = 1, resume: bool = False,
                     limit: int | None = None, image_size=None, channels=None,
                     diagnostics: int | None = None, callbacks=()) -> dict:
    """Train a classifier on ``dataset`` with ``RECIPES[recipe or dataset]`` (every setting can
    be overridden) and write the run folder ``out`` (default ``runs/<dataset>-<time>``; see
    :func:`train_run`, which returns the results dict this returns). ``limit`` uses only the
    first ``limit`` training and test images (for quick smoke runs). ``diagnostics=N`` records
    gradient flow every N steps: it is kept in ``history.json``, drawn into
    ``gradient_flow.png`` and its warnings are printed and returned as
    ``results["gradient_flow_warnings"]``.
    """
    settings = RECIPES[recipe or dataset].replace(
        model=model, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
        augment=augment, label_smoothing=label_smoothing).check("train_classifier")
    if limit is not None:
        check_positive_int(limit, "limit", "train_classifier")
    out = Path(out) if out is not None else \
        Path("runs") / f"{dataset}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    data = prepare_data(dataset, data_dir, seed=seed, limit=limit, image_size=image_size,
                        channels=channels, verbose=verbose)
    return train_run(settings, data, out, seed=seed, backend_name=backend_name, verbose=verbose,
                     resume=resume, diagnostics=diagnostics, callbacks=callbacks)
