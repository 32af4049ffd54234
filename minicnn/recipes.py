"""Training recipes: dataset + model + optimizer + schedule + augmentation, ready to run.

``train_classifier`` is what ``minicnn train`` and ``examples/train_*.py`` call. A recipe is a
plain dict of defaults per dataset; every value can be overridden by an argument.
"""

from __future__ import annotations

import json
import math
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from . import backend, models, optim
from .atomic import atomic_write_bytes
from .losses import SoftmaxCrossEntropy
from .training import LRSchedule, evaluate, fit
from .validation import check_learning_rate, check_positive_int

RECIPES = {
    # The default MNIST run (measured on 2 CPU cores, numba backend, see the README): the
    # 32-wide mnist_cnn, 6 epochs without augmentation: 99.44-99.46% test accuracy over seeds
    # 0-2, 135-139 s of training (the 24-wide one for 5 epochs: 99.40-99.46%, 77-84 s).
    "mnist": dict(model="mnist_cnn", model_options={"width": 32, "dropout": 0.1}, epochs=6,
                  batch_size=128, lr=1e-2, weight_decay=5e-4, augment=False,
                  label_smoothing=0.05),
    # the fastest road to 99%: a 16-wide network without dropout, one epoch of small batches
    # at a high peak learning rate
    "mnist-fast": dict(model="mnist_cnn", model_options={"width": 16, "dropout": 0.0},
                       epochs=1, batch_size=64, lr=1.5e-2, weight_decay=5e-4, augment=False,
                       label_smoothing=0.05),
    # longer: the full-width network, augmentation on, 15 epochs: 99.65% (807 s on 2 cores)
    "mnist-long": dict(model="mnist_cnn", model_options={"width": 32, "dropout": 0.1}, epochs=15,
                       batch_size=128, lr=1e-2, weight_decay=5e-4, augment=True,
                       label_smoothing=0.05),
    "fashion-mnist": dict(model="mnist_cnn", epochs=15, batch_size=128, lr=4e-3,
                          weight_decay=5e-4, augment=False, label_smoothing=0.1),
    "digits": dict(model="mnist_cnn", epochs=30, batch_size=32, lr=4e-3, weight_decay=5e-4,
                   augment=False, label_smoothing=0.0),
    # the VGG-style preset with random crops + flips: on 2 CPU cores it trains as fast as
    # cifar_resnet and was more accurate after one epoch (see the presets' docstrings)
    "cifar10": dict(model="cifar_vgg", epochs=20, batch_size=128, lr=4e-3, weight_decay=5e-4,
                    augment=True, label_smoothing=0.1),
    "folder": dict(model="mnist_cnn", epochs=20, batch_size=64, lr=3e-3, weight_decay=5e-4,
                   augment=True, label_smoothing=0.1),
}
# ``model_options`` (keyword arguments of the model preset, e.g. its width) apply only to the
# recipe's own model: choosing another model with ``model=`` builds that one with its defaults.


def augmentation_for(dataset: str, input_shape):
    """The augmentation a dataset gets with ``augment=True``."""
    from .data import Compose, RandomAffine, RandomCrop, RandomHorizontalFlip

    _, h, w = input_shape
    if dataset in ("mnist", "fashion-mnist", "digits"):
        # digits are not mirror-symmetric: small rotations, zooms and shifts only
        shift = 2 if h >= 16 else 1
        return RandomAffine(degrees=10, scale=0.1, translate=shift)
    return Compose([RandomCrop(padding=max(1, h // 8), mode="constant"),
                    RandomHorizontalFlip()])


def _timestamp() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S")


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


def _check_settings(settings: dict, limit) -> None:
    """Refuse bad settings before any data is loaded (which can take a while)."""
    where = "train_classifier"
    if settings["model"] not in models.PRESETS:
        raise ValueError(f"{where}: unknown model {settings['model']!r}; choose one of "
                         f"{', '.join(models.PRESETS)}")
    for key in ("epochs", "batch_size"):
        check_positive_int(settings[key], key, where)
    if limit is not None:
        check_positive_int(limit, "limit", where)
    # the optimizer accepts lr=0 (frozen weights); a training run with it learns nothing
    if check_learning_rate(settings["lr"], where) <= 0:
        raise ValueError(f"{where}: lr must be > 0, got {settings['lr']}")
    for key, high in (("weight_decay", math.inf), ("label_smoothing", 1.0)):
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not 0 <= value < high:
            raise ValueError(f"{where}: {key} must be a number in [0, {high}), got {value!r}")


def train_classifier(dataset: str = "mnist", *, recipe: str | None = None, data_dir=None,
                     model: str | None = None, epochs: int | None = None,
                     batch_size: int | None = None, lr: float | None = None,
                     weight_decay: float | None = None, augment: bool | None = None,
                     label_smoothing: float | None = None, seed: int = 0, out=None,
                     backend_name: str | None = None, verbose: int = 1, resume: bool = False,
                     limit: int | None = None, image_size=None, channels=None) -> dict:
    """Train a classifier on ``dataset`` and write the results into ``out``.

    Writes ``model.safetensors`` (with class names, input shape and normalization in its
    metadata), ``history.json``, ``curves.png``, ``results.json`` and a resumable
    ``checkpoint.safetensors``. Returns the results dict (test accuracy, times, paths).
    ``limit`` uses only the first ``limit`` training and test images (for quick smoke runs).
    """
    from .data import DataLoader, Normalize

    settings = dict(RECIPES[recipe or dataset])
    if model is not None and model != settings["model"]:
        settings.pop("model_options", None)
    overrides = dict(model=model, epochs=epochs, batch_size=batch_size, lr=lr,
                     weight_decay=weight_decay, augment=augment, label_smoothing=label_smoothing)
    settings.update({k: v for k, v in overrides.items() if v is not None})
    _check_settings(settings, limit)
    if backend_name:
        backend.set_backend(backend_name)
    out = Path(out) if out is not None else Path("runs") / f"{dataset}-{_timestamp()}"
    out.mkdir(parents=True, exist_ok=True)

    (x_train, y_train), (x_test, y_test), class_names = load_data(
        dataset, data_dir, image_size=image_size, channels=channels, seed=seed, verbose=verbose)
    if limit is not None:  # a quick run: at most `limit` training and `limit` test images
        x_train, y_train = x_train[:limit], y_train[:limit]
        x_test, y_test = x_test[:limit], y_test[:limit]
    normalize = Normalize.fit(x_train)
    x_train = normalize(x_train, None)
    x_test = normalize(x_test, None)

    input_shape = tuple(x_train.shape[1:])
    net = models.PRESETS[settings["model"]](input_shape, len(class_names), seed=seed,
                                            **settings.get("model_options", {}))
    net.metadata = {
        "class_names": list(class_names), "input_shape": list(input_shape), "dataset": dataset,
        "normalization": {"mean": normalize.mean.tolist(), "std": normalize.std.tolist()},
        "recipe": settings,
    }
    transform = augmentation_for(dataset, input_shape) if settings["augment"] else None
    loader = DataLoader(x_train, y_train, batch_size=settings["batch_size"], shuffle=True,
                        transform=transform, seed=seed)
    optimizer = optim.AdamW(net.parameters(), lr=settings["lr"],
                            weight_decay=settings["weight_decay"])
    schedule = optim.OneCycleLR(optimizer, max_lr=settings["lr"],
                                total_steps=max(2, settings["epochs"] * len(loader)),
                                pct_start=0.25)
    loss_fn = SoftmaxCrossEntropy(label_smoothing=settings["label_smoothing"])
    if verbose:
        net.summary()
        print(f"{dataset}: {len(x_train):,} training and {len(x_test):,} test images, "
              f"{len(class_names)} classes; backend {backend.get_backend()}; output in {out}")

    start = time.perf_counter()
    history = fit(net, loss_fn, optimizer, loader, val=(x_test, y_test), val_name="test",
                  epochs=settings["epochs"], callbacks=[LRSchedule(schedule, per="batch")],
                  verbose=verbose, checkpoint=out / "checkpoint.safetensors", resume=resume)
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
        "backend": backend.get_backend(), "settings": settings, "seed": seed,
        "model_file": str(out / "model.safetensors"),
    }
    atomic_write_bytes(out / "results.json", json.dumps(results, indent=2).encode())
    if verbose:
        print(f"test accuracy {final['acc']:.2%} after {len(history)} epochs; "
              f"training {train_seconds:.1f} s; files in {out}")
    return results
