"""Hyperparameter search on Optuna: ``minicnn tune`` and ``minicnn.tune(...)`` (docs/tuning.md
tells the whole story: the space, pruning, resuming, several machines on one database, outputs).

Each trial draws a configuration, trains :func:`minicnn.models.tunable_cnn` with its recipe for
a few epochs and is scored on a validation split carved from the training set
(:func:`minicnn.data.validation_split`: stratified, seeded, the same for every trial); the test
set is never looked at during the search. The modules: :mod:`.settings` (:class:`TuneSettings`,
the one record of what a search is asked to do, checked once and passed down whole),
:mod:`.space` (the hyperparameters and the space), :mod:`.study` (storage, workers' shares of the
total, heartbeats, the objective), :mod:`.outputs` (the files, the retrained best); here,
:func:`tune`, which runs them in order. Optuna is an optional dependency (``pip install
"minicnn[tune]"``), imported only when a search runs; ``import minicnn`` does not even import
this package until ``minicnn.tune`` is first used.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..data import dataset as dataset_record
from ..data import validation_split
from . import outputs, space, study
from .settings import TuneSettings

INSTALL_HINT = 'pip install "minicnn[tune]"'


def _require_optuna():
    try:
        import optuna
    except ImportError:
        raise ImportError(
            f"minicnn tune needs Optuna, an optional dependency: {INSTALL_HINT}") from None
    return optuna


@dataclass
class Search:
    """A search's settings with what it loaded: the space parsed, the data split."""

    settings: TuneSettings
    space: dict        # parsed (parse_space)
    loaded: tuple      # what the dataset's loader returned (the retrain starts from it)
    train: tuple       # (x, y) the trials train on ...
    val: tuple         # ... and are scored on, both normalized by the training part
    class_names: list


def set_up(settings: TuneSettings) -> Search:
    """Parse the space, load the data and carve the validation split out of the training
    set."""
    parsed = space.parse_space(settings.space)
    settings.out_folder.mkdir(parents=True, exist_ok=True)
    loaded = dataset_record(settings.dataset).load(
        settings.data_dir, size=settings.image_size, channels=settings.channels,
        seed=settings.seed, verbose=settings.verbose)
    (x_train, y_train), _, class_names = loaded
    if settings.limit is not None:
        x_train, y_train = x_train[:settings.limit], y_train[:settings.limit]
    train, val = validation_split(x_train, y_train, settings.val_fraction, settings.seed)
    return Search(settings, parsed, loaded, train, val, list(class_names))


def tune(dataset: str | TuneSettings = "digits", **options) -> dict:
    """Search hyperparameters of :func:`minicnn.models.tunable_cnn` on a dataset:
    ``tune(TuneSettings(...))``, or ``tune("mnist", trials=40, ...)`` with the fields of
    :class:`TuneSettings` (each documented there) as keywords.

    Returns a dict with the study name, storage, trial counts, the best trial (value, number,
    configuration), the baseline's value, the output files and, with ``retrain_best``, the
    test accuracy. Raises ImportError naming the extra to install when Optuna is missing, and
    :class:`StorageError` when the storage cannot be opened (before any data is loaded).
    """
    if isinstance(dataset, TuneSettings):
        if options:
            raise TypeError(f"tune: settings given twice: TuneSettings and {sorted(options)}")
        settings = dataset
    else:
        settings = TuneSettings(dataset, **options)
    optuna = _require_optuna()
    if settings.storage is None:
        settings.out_folder.mkdir(parents=True, exist_ok=True)
    storage_object = study.open_storage(optuna, settings.storage_url, settings.heartbeat)
    search = set_up(settings)
    previous_verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # we print one line per trial instead
    try:
        trials, created = study.open_study(optuna, search, storage_object)
        if settings.baseline and created:
            # the first trial starts from the defaults; it is "the baseline" (the default
            # configuration, to compare the best with) only when the space contains all of it.
            # Only the worker that created the study queues it: others may start at once.
            params, exact = space.baseline_params(search.space, space.default_config(settings.dataset))
            trials.enqueue_trial(params, user_attrs={"baseline": exact})
        done = study.count_finished(trials)
        to_run = max(0, settings.trials - done)
        if settings.verbose:
            print(f"study {settings.name!r} in {study.masked(settings.storage_url)}: {done} finished "
                  f"trials, running {to_run} more (target {settings.trials}); "
                  f"{len(search.train[1]):,} training and {len(search.val[1]):,} validation "
                  f"images ({settings.val_fraction:.0%} held out of the training set), "
                  f"{settings.epochs} epoch(s) per trial")
        callbacks = [outputs.print_trial] if settings.verbose else []
        callbacks.append(study.share_the_total(optuna, settings.trials))  # after printing: it may wait
        interrupted = False
        if to_run:
            # Optuna logs a failed trial as a warning: a surplus trial's line comes from
            # print_trial, and any other failure is raised
            optuna.logging.set_verbosity(optuna.logging.ERROR)
            try:
                trials.optimize(study.objective_of(search, optuna, storage_object),
                               timeout=settings.timeout, callbacks=callbacks,
                               catch=(study.SurplusTrial,), gc_after_trial=False)
            except KeyboardInterrupt:
                interrupted = True  # write what is finished, then re-raise below
        summary = outputs.write_outputs(trials, search)
        if interrupted:
            raise KeyboardInterrupt
        if settings.retrain_best and summary["best"] is not None:
            result = outputs.retrain(search, summary["best"]["config"])
            summary["test_accuracy"] = result["test_accuracy"]
            summary["test_loss"] = result["test_loss"]
            summary["files"].update(
                model=result["model_file"],
                retrain_json=str(settings.out_folder / "best_run" / "results.json"))
    finally:
        optuna.logging.set_verbosity(previous_verbosity)
    if settings.verbose:
        outputs.print_summary(summary)
    return summary


__all__ = ["Search", "TuneSettings", "set_up", "tune"]
