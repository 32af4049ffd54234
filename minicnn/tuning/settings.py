"""The one record of what a search is asked to do: :class:`TuneSettings`, built once from
``minicnn tune``'s arguments or :func:`minicnn.tune`'s, checked here, and passed down whole."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..recipes import RECIPES
from ..validation import Number
from .study import HEARTBEAT_SECONDS, PRUNERS

#: the rules of a search's numbers, checked here and by ``minicnn tune``'s argument types
SETTINGS_RULES = {
    "trials": Number(int, low=1), "epochs": Number(int, low=1), "heartbeat": Number(int, low=1),
    "limit": Number(int, low=1), "seed": Number(int, low=0), "sampler_seed": Number(int, low=0),
    "val_fraction": Number(low=0, high=1, open_low=True, open_high=True),
    "timeout": Number(low=0, open_low=True),
}


@dataclass(frozen=True)
class TuneSettings:
    """A search of :func:`minicnn.models.tunable_cnn`'s hyperparameters.

    Args:
        dataset: ``mnist``, ``fashion-mnist``, ``cifar10``, ``digits`` or ``folder`` (with
            ``data_dir`` the image folder).
        trials: the study's total number of finished (complete or pruned) trials; a study that
            already has some runs only the rest.
        epochs: training epochs per trial (the pruner may stop a trial after any of them).
        space: search space, a dict or a JSON file (see :func:`minicnn.tuning.space.parse_space`);
            hyperparameters it does not mention keep :data:`minicnn.tuning.space.DEFAULT_SPACE`.
        out: output folder (default ``runs/tune-<dataset>``).
        storage: Optuna storage URL (default ``sqlite:///<out>/study.db``).
        study_name: default ``minicnn-<dataset>``; the same name continues the study.
        seed: seeds the validation split, the weights, batch order and augmentation of every
            trial, and (unless ``sampler_seed``) the TPE sampler.
        sampler_seed: seeds the TPE sampler only (give each parallel worker its own).
        val_fraction: share of each class of the training set held out for validation.
        pruner: ``"median"`` (MedianPruner), ``"halving"`` (successive halving) or ``"none"``.
        baseline: make the first trial of a new study the default configuration
            (:func:`minicnn.tuning.space.default_config`), so the best is compared with it on the same
            split.
        retrain_best: afterwards train the best configuration on the whole training set and
            evaluate it once on the test set, into the run folder ``<out>/best_run``.
        plots: draw the PNG plots (a few seconds of matplotlib each time outputs are written).
        data_dir, image_size, channels: where the images are, and for an image folder their
            size and channels.
        limit: use only the first ``limit`` training images (quick runs).
        timeout: stop starting new trials after this many seconds.
        heartbeat: seconds between a running trial's heartbeats in the storage; a trial whose
            worker missed two is marked FAIL and queued again.
        backend_name: train on this backend (the default backend is left alone).
        verbose: 0 prints nothing; 1 a line per trial and a summary.
    """

    dataset: str = "digits"
    trials: int = 20
    epochs: int = 10
    space: object = None
    out: object = None
    storage: str | None = None
    study_name: str | None = None
    seed: int = 0
    sampler_seed: int | None = None
    val_fraction: float = 0.2
    pruner: str = "median"
    baseline: bool = True
    retrain_best: bool = False
    plots: bool = True
    data_dir: object = None
    image_size: tuple | None = None
    channels: int | None = None
    limit: int | None = None
    timeout: float | None = None
    heartbeat: int = HEARTBEAT_SECONDS
    backend_name: str | None = None
    verbose: int = 1

    def __post_init__(self):
        """The rules, in one place: a wrong setting is refused before anything is loaded."""
        for name, rule in SETTINGS_RULES.items():
            if getattr(self, name) is not None:
                object.__setattr__(self, name, rule.check(getattr(self, name), name, "tune"))
        if self.pruner not in PRUNERS:
            raise ValueError(f"tune: pruner must be one of {', '.join(PRUNERS)}, got "
                             f"{self.pruner!r}")

    @property
    def out_folder(self) -> Path:
        return Path(self.out) if self.out is not None else Path("runs") / f"tune-{self.dataset}"

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{(self.out_folder / 'study.db').resolve()}"

    @property
    def name(self) -> str:
        """The study's name."""
        return self.study_name or f"minicnn-{self.dataset}"

    @property
    def label_smoothing(self) -> float:
        """The dataset's recipe's, as ``minicnn train`` would train it."""
        return RECIPES[self.dataset].label_smoothing if self.dataset in RECIPES else 0.0

    @property
    def recorded(self) -> dict:
        """What the study records, and checks when it is continued: trials run with other
        settings would not be comparable."""
        return {"dataset": self.dataset, "epochs": self.epochs, "val_fraction": self.val_fraction,
                "seed": self.seed, "limit": self.limit, "channels": self.channels,
                "image_size": list(self.image_size) if self.image_size else None,
                "label_smoothing": self.label_smoothing}
