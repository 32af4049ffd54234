"""Hyperparameter search on Optuna: ``minicnn tune`` and ``minicnn.tune(...)``.

Each *trial* draws a configuration (learning rate, batch size, optimizer, weight decay, the
network's width / kernel size / activation / dropout / depth, augmentation strength), trains
:func:`minicnn.models.tunable_cnn` with :func:`minicnn.fit` for a few epochs, and scores it by
its accuracy on a **validation split carved from the training set** (stratified, seeded, the
same for every trial); the test set is never looked at during the search. The TPE sampler
proposes the next configuration from the results so far, and a pruner stops a trial after any
epoch whose validation accuracy is clearly worse than earlier trials' at the same epoch.

The study lives in an Optuna storage: by default an SQLite file in the output folder
(``<out>/study.db``). Running the same command again continues the same study (``trials`` is
the study's total, so an interrupted search picks up where it stopped, and a larger number
adds trials). Any Optuna RDB URL works as storage (``postgresql://...``, ``mysql://...``):
start ``minicnn tune`` with the same ``--storage`` and ``--study-name`` on several machines and
they share one study, each running trials until the total is reached. That is the way to scale
a search out. Give each worker its own ``--sampler-seed`` so their first, random trials differ.

Several workers on one study: every trial is numbered by the database, and a worker starts a
trial only while the study's finished trials plus those running ahead of it (lower numbers) are
short of the total, so together they finish exactly ``trials``. Each running trial records a
heartbeat in the database (``heartbeat`` seconds apart); a worker that dies (SIGKILL, a lost
machine) stops beating, and the next worker to look marks its trial FAIL after two missed beats
and queues it again (Optuna's heartbeat retry callback) for any worker to run. The storage
URL's password is shown and written as ``***``; a bad URL, a missing database driver or an
unreachable server stops the command within seconds, with the reason, before any data is loaded.

With one worker and a fixed number of trials, a search is reproducible: the sampler is seeded,
every trial trains with the same seed (weights, batch order, augmentation), and the numpy and
numba backends train deterministically.

Outputs (``out``): ``trials.csv`` / ``trials.json`` (every trial: state, validation accuracy per
epoch, hyperparameters), ``best.json`` (the best trial's hyperparameters, its model config from
``model.config()`` and its training settings), plots (``optimization_history.png``,
``param_importances.png``, ``parallel_coordinate.png``, ``intermediate_values.png``) and, with
``retrain_best``, ``best_run/``: the best configuration trained on the whole training set and
scored once on the test set, written as ``minicnn train`` writes a run
(:func:`minicnn.recipes.train_run`: ``model.safetensors``, which ``minicnn evaluate`` accepts,
``results.json``, the history and curves).

The package: :mod:`.settings` (:class:`TuneSettings`, the one record of what a search is asked
to do, checked once and passed down whole), :mod:`.space` (the hyperparameters and the space),
:mod:`.study` (storage, workers, heartbeats, the objective), :mod:`.outputs`; here, the data a
search trains on and :func:`tune`, which runs them in order. Optuna is an optional dependency
(``pip install "minicnn[tune]"``), imported only when a search runs; ``import minicnn`` does not
even import this package until ``minicnn.tune`` is first used.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..data import Normalize
from ..data.utils import stratified_split
from ..recipes import load_data
from .outputs import print_summary, print_trial, retrain, write_outputs
from .settings import TuneSettings
from .space import (
    DEFAULT_SPACE,
    LOG_SCALE,
    NETWORK_PARAMETERS,
    PARAMETERS,
    RULES,
    TRAINING_PARAMETERS,
    baseline_params,
    default_config,
    parse_flag,
    parse_space,
    read_space_file,
    recipe_of,
    suggest,
)
from .study import (
    HEARTBEAT_SECONDS,
    PRUNERS,
    WORKER,
    StorageError,
    SurplusTrial,
    count_finished,
    masked,
    objective_of,
    open_storage,
    open_study,
    share_the_total,
)

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
    loaded: tuple      # what load_data returned (the retrain starts from it)
    train: tuple       # (x, y) the trials train on ...
    val: tuple         # ... and are scored on, both normalized by the training part
    class_names: list


def split(x, y, val_fraction, seed):
    """The validation split: stratified, depends only on the labels and ``seed``."""
    keep, held = stratified_split(y, val_fraction, seed)
    if len(held) == 0 or len(keep) == 0:
        raise ValueError(f"tune: {len(y)} training images are too few to hold out "
                         f"{val_fraction:.0%} for validation")
    # normalization statistics come from the part that is trained on, as they would in use
    normalize = Normalize.fit(x[keep])
    return (normalize(x[keep], None), y[keep]), (normalize(x[held], None), y[held])


def set_up(settings: TuneSettings) -> Search:
    """Parse the space, load the data and carve the validation split out of the training
    set."""
    space = parse_space(settings.space)
    settings.out_folder.mkdir(parents=True, exist_ok=True)
    loaded = load_data(settings.dataset, settings.data_dir, image_size=settings.image_size,
                       channels=settings.channels, seed=settings.seed, verbose=settings.verbose)
    (x_train, y_train), _, class_names = loaded
    if settings.limit is not None:
        x_train, y_train = x_train[:settings.limit], y_train[:settings.limit]
    train, val = split(x_train, y_train, settings.val_fraction, settings.seed)
    return Search(settings, space, loaded, train, val, list(class_names))


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
    storage_object = open_storage(optuna, settings.storage_url, settings.heartbeat)
    search = set_up(settings)
    previous_verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # we print one line per trial instead
    try:
        study, created = open_study(optuna, search, storage_object)
        if settings.baseline and created:
            # the first trial starts from the defaults; it is "the baseline" (the default
            # configuration, to compare the best with) only when the space contains all of it.
            # Only the worker that created the study queues it: others may start at once.
            params, exact = baseline_params(search.space, default_config(settings.dataset))
            study.enqueue_trial(params, user_attrs={"baseline": exact})
        done = count_finished(study)
        to_run = max(0, settings.trials - done)
        if settings.verbose:
            print(f"study {settings.name!r} in {masked(settings.storage_url)}: {done} finished "
                  f"trials, running {to_run} more (target {settings.trials}); "
                  f"{len(search.train[1]):,} training and {len(search.val[1]):,} validation "
                  f"images ({settings.val_fraction:.0%} held out of the training set), "
                  f"{settings.epochs} epoch(s) per trial")
        callbacks = [print_trial] if settings.verbose else []
        callbacks.append(share_the_total(optuna, settings.trials))  # after printing: it may wait
        interrupted = False
        if to_run:
            # Optuna logs a failed trial as a warning: a surplus trial's line comes from
            # print_trial, and any other failure is raised
            optuna.logging.set_verbosity(optuna.logging.ERROR)
            try:
                study.optimize(objective_of(search, optuna, storage_object),
                               timeout=settings.timeout, callbacks=callbacks,
                               catch=(SurplusTrial,), gc_after_trial=False)
            except KeyboardInterrupt:
                interrupted = True  # write what is finished, then re-raise below
        summary = write_outputs(study, search)
        if interrupted:
            raise KeyboardInterrupt
        if settings.retrain_best and summary["best"] is not None:
            result = retrain(search, summary["best"]["config"])
            summary["test_accuracy"] = result["test_accuracy"]
            summary["test_loss"] = result["test_loss"]
            summary["files"].update(
                model=result["model_file"],
                retrain_json=str(settings.out_folder / "best_run" / "results.json"))
    finally:
        optuna.logging.set_verbosity(previous_verbosity)
    if settings.verbose:
        print_summary(summary)
    return summary


__all__ = ["DEFAULT_SPACE", "HEARTBEAT_SECONDS", "LOG_SCALE", "NETWORK_PARAMETERS", "PARAMETERS",
           "PRUNERS", "RULES", "TRAINING_PARAMETERS", "WORKER", "Search", "StorageError",
           "TuneSettings", "default_config", "masked", "open_storage", "parse_flag",
           "parse_space", "read_space_file", "recipe_of", "set_up", "split", "suggest", "tune"]
