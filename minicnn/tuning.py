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

The module is three parts: setting a search up (the space, the data, the study), the objective
(one trial trains one recipe) and the outputs. Optuna is an optional dependency
(``pip install "minicnn[tune]"``), imported only when a search runs; ``import minicnn`` does not
even import this module until ``minicnn.tune`` is first used.
"""

from __future__ import annotations

import csv
import importlib.util
import inspect
import io
import json
import math
import os
import re
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_write_bytes
from .data import Normalize
from .data.utils import stratified_split
from .models import ACTIVATIONS, TUNABLE_CNN_RULES, tunable_cnn
from .recipes import OPTIMIZERS, RECIPE_RULES, RECIPES, Recipe, load_data, prepare_data, train_run
from .training import Callback, TrainingDivergedError
from .validation import check_positive_int

TRAINING_PARAMETERS = ("lr", "batch_size", "optimizer", "weight_decay", "augment")
NETWORK_PARAMETERS = tuple(TUNABLE_CNN_RULES)  # width, kernel_size, activation, dropout, blocks
#: every hyperparameter and its rule: a recipe's training settings, tunable_cnn's arguments
RULES = {**{name: RECIPE_RULES[name] for name in TRAINING_PARAMETERS}, **TUNABLE_CNN_RULES}
#: what each hyperparameter is (int, float or str), for parsing command-line values
PARAMETERS = {name: rule.kind for name, rule in RULES.items()}
LOG_SCALE = ("lr", "weight_decay")  # ranges given as LOW:HIGH are searched on a log scale

#: the search space used for every hyperparameter not given by a flag or a space file
DEFAULT_SPACE = {
    "lr": {"low": 3e-4, "high": 3e-2, "log": True},
    "batch_size": [16, 32, 64, 128],
    "optimizer": list(OPTIMIZERS),
    "weight_decay": {"low": 1e-6, "high": 1e-2, "log": True},
    "width": [8, 16, 32, 64],
    "kernel_size": [3, 5],
    "activation": list(ACTIVATIONS),
    "dropout": {"low": 0.0, "high": 0.5},
    "augment": {"low": 0.0, "high": 1.0},
    "blocks": [1, 2, 3],
}

INSTALL_HINT = 'pip install "minicnn[tune]"'
_COUNTED_STATES = ("COMPLETE", "PRUNED")  # finished trials; failed/interrupted ones are redone
HEARTBEAT_SECONDS = 30  # a running trial's heartbeat; stale (its worker dead) after two missed
MAX_RETRIES = 3  # how often a dead worker's trial is queued again
CONNECT_TIMEOUT_SECONDS = 5  # an unreachable database server fails the command this fast
_POLL_SECONDS = 0.5  # how often a worker waiting for others' trials looks again
#: who runs a trial (recorded with it): several machines, or processes, share one study
WORKER = f"{socket.gethostname()}:{os.getpid()}"
DRIVER_HINTS = {"postgresql": 'pip install "minicnn[tune-postgres]" (psycopg 3)',
                "mysql": "pip install pymysql, and use a mysql+pymysql:// URL"}


class StorageError(ValueError):
    """The study's storage cannot be opened: a bad URL, a missing database driver, an
    unreachable or refusing server. The message names the URL with its password masked."""


def _require_optuna():
    try:
        import optuna
    except ImportError:
        raise ImportError(
            f"minicnn tune needs Optuna, an optional dependency: {INSTALL_HINT}") from None
    return optuna


# -- the search space ---------------------------------------------------------------------------

def _check_value(name, value):
    """One value of hyperparameter ``name``, checked by its rule and converted; ValueError."""
    return RULES[name].check(value, name, "tune")


def _parse_entry(name, entry) -> dict:
    """A normalized parameter: {"fixed": v}, {"choices": [...]} or {"low", "high", "log"}."""
    if name not in PARAMETERS:
        raise ValueError(f"tune: unknown hyperparameter {name!r}; known: {', '.join(PARAMETERS)}")
    if isinstance(entry, dict):
        unknown = set(entry) - {"low", "high", "log", "choices", "value"}
        if unknown:
            raise ValueError(f"tune: {name}: unknown keys {sorted(unknown)} (use low/high/log, "
                             "choices or value)")
        if "value" in entry:
            return {"fixed": _check_value(name, entry["value"])}
        if "choices" in entry:
            entry = entry["choices"]
        else:
            if PARAMETERS[name] is str:
                raise ValueError(f"tune: {name} takes a list of choices, not a range")
            if "low" not in entry or "high" not in entry:
                raise ValueError(f"tune: {name}: a range needs both 'low' and 'high'")
            low, high = _check_value(name, entry["low"]), _check_value(name, entry["high"])
            log = bool(entry.get("log", False))
            if low > high:
                raise ValueError(f"tune: {name}: low {low} is above high {high}")
            if log and low <= 0:
                raise ValueError(f"tune: {name}: a log-scale range needs low > 0, got {low}")
            return {"fixed": low} if low == high else {"low": low, "high": high, "log": log}
    if isinstance(entry, (list, tuple)):
        if not entry:
            raise ValueError(f"tune: {name}: the list of choices is empty")
        choices = list(dict.fromkeys(_check_value(name, v) for v in entry))
        return {"fixed": choices[0]} if len(choices) == 1 else {"choices": choices}
    return {"fixed": _check_value(name, entry)}


def parse_space(space=None, overrides: dict | None = None) -> dict:
    """The search space: :data:`DEFAULT_SPACE`, updated by ``space`` (a dict or the path of a
    JSON file), then by ``overrides`` (command-line flags). Returns normalized entries.

    Each hyperparameter is a fixed value (``"activation": "relu"``), a list of choices
    (``"batch_size": [32, 64]``) or a range (``"lr": {"low": 1e-4, "high": 1e-1, "log": true}``;
    integer hyperparameters give an integer range).
    """
    merged = dict(DEFAULT_SPACE)
    if space is not None and not isinstance(space, dict):
        space = read_space_file(space)
    merged.update(space or {})
    merged.update(overrides or {})
    return {name: _parse_entry(name, entry) for name, entry in merged.items()}


def read_space_file(path) -> dict:
    """The JSON object of a search space file (see :func:`parse_space`)."""
    path = Path(path)
    try:
        space = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"tune: search space file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"tune: {path} is not valid JSON: {err}") from None
    if not isinstance(space, dict):
        raise ValueError(f"tune: {path} must hold a JSON object of hyperparameters")
    return space


def parse_flag(name: str, text: str):
    """A command-line value: ``LOW:HIGH`` (a range; log scale for lr and weight decay),
    ``A,B,C`` (choices) or ``V`` (fixed)."""
    kind = PARAMETERS[name]

    def convert(part):
        part = part.strip()
        if kind is str:
            return part
        try:
            number = float(part)
        except ValueError:
            raise ValueError(f"tune: --{name.replace('_', '-')}: {part!r} is not a number") from None
        return int(number) if kind is int and number.is_integer() else number

    if ":" in text:
        low, high = text.split(":", 1)
        return {"low": convert(low), "high": convert(high), "log": name in LOG_SCALE}
    if "," in text:
        return [convert(p) for p in text.split(",") if p.strip()]
    return convert(text)


def _suggest(trial, space: dict) -> dict:
    """Draw one configuration; fixed values are not trial parameters (they do not vary)."""
    config = {}
    for name, entry in space.items():
        if "fixed" in entry:
            config[name] = entry["fixed"]
        elif "choices" in entry:
            config[name] = trial.suggest_categorical(name, entry["choices"])
        elif PARAMETERS[name] is int:  # odd ones (kernel sizes) in steps of 2 from an odd low
            config[name] = trial.suggest_int(name, entry["low"], entry["high"], log=entry["log"],
                                             step=2 if RULES[name].odd else 1)
        else:
            config[name] = trial.suggest_float(name, entry["low"], entry["high"], log=entry["log"])
    return config


def _baseline_params(space: dict, defaults: dict) -> tuple[dict, bool]:
    """The default configuration as trial parameters, as far as the space can represent it,
    and whether it *is* the default configuration (every value inside the space)."""
    params, exact = {}, True
    for name, entry in space.items():
        value = defaults[name]
        if "fixed" in entry:
            exact &= entry["fixed"] == value
        elif ("choices" in entry and value in entry["choices"]) or \
                ("low" in entry and entry["low"] <= value <= entry["high"]):
            params[name] = value
        else:
            exact = False  # the sampler draws this one
    return params, exact


def default_config(dataset: str) -> dict:
    """The configuration trained when nothing is tuned: :func:`minicnn.models.tunable_cnn`'s
    defaults (the ``mnist_cnn`` network) with the training settings of the dataset's recipe."""
    recipe = RECIPES.get(dataset, Recipe())
    network = inspect.signature(tunable_cnn).parameters
    return {**{name: getattr(recipe, name) for name in TRAINING_PARAMETERS},
            **{name: network[name].default for name in NETWORK_PARAMETERS}}


# -- the objective: one trial trains one recipe ----------------------------------------------------

def recipe_of(config: dict, epochs: int, label_smoothing: float) -> Recipe:
    """The training recipe of a configuration: :func:`minicnn.models.tunable_cnn` with the
    configuration's network parameters, trained as the recipes are (one-cycle schedule)."""
    return Recipe(model="tunable_cnn", model_options={k: config[k] for k in NETWORK_PARAMETERS},
                  epochs=epochs, label_smoothing=label_smoothing,
                  **{k: config[k] for k in TRAINING_PARAMETERS})


def _report_callback(trial, optuna):
    """A fit callback that reports each epoch's validation accuracy and obeys the pruner."""
    class ReportToOptuna(Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            trial.report(logs["val_acc"], step=epoch + 1)
            trial.set_user_attr("val_acc_per_epoch",
                                [*trial.user_attrs.get("val_acc_per_epoch", []), logs["val_acc"]])
            if trial.should_prune():
                raise optuna.TrialPruned(f"val_acc {logs['val_acc']:.4f} after epoch {epoch + 1}")

    return ReportToOptuna()


def _objective(search: Search, optuna, total: int, storage):
    """The function Optuna calls per trial: draw a configuration, train it on the search's
    training part, return its last validation accuracy (a diverged run counts as pruned). A
    trial that other workers' trials make unneeded is not run (see :func:`_room`)."""

    def objective(trial):
        # The first heartbeat, now: Optuna's heartbeat thread writes its first a moment later,
        # and a trial without any is never found stale (its worker killed in that moment would
        # leave it RUNNING forever)
        study_id = storage.get_study_id_from_name(trial.study.study_name)
        storage.record_heartbeat(storage.get_trial_id_from_study_id_trial_number(study_id,
                                                                                  trial.number))
        trial.set_user_attr("worker", WORKER)
        while (room := _room(optuna, trial.study, total, mine=trial.number)) == "wait":
            time.sleep(_POLL_SECONDS)
        if room == "stop":
            trial.set_user_attr("note", f"not run: the study has its {total} finished trials")
            trial.study.stop()
            raise _SurplusTrial(f"the study has its {total} finished trials")
        finished_before = _count_finished(trial.study)  # what the sampler draws from
        config = _suggest(trial, search.space)
        trial.set_user_attr("config", config)
        trial.set_user_attr("finished_before", finished_before)  # and now it trains
        start = time.perf_counter()
        try:
            recipe = recipe_of(config, search.epochs, search.label_smoothing)
            model = recipe.build_model(search.train[0].shape[1:], len(search.class_names),
                                       search.seed)
            if search.backend_name:
                model.to(search.backend_name)
            history = recipe.train(model, search.train, search.val, dataset=search.dataset,
                                   seed=search.seed, callbacks=[_report_callback(trial, optuna)])
        except TrainingDivergedError as err:
            # a diverged run tells the sampler "bad region": pruned, not failed (failed trials
            # are ignored by TPE)
            trial.set_user_attr("note", f"diverged: {err}")
            raise optuna.TrialPruned(str(err)) from None
        except optuna.TrialPruned as err:
            trial.set_user_attr("note", f"pruned: {err}")
            raise
        finally:
            trial.set_user_attr("seconds", time.perf_counter() - start)
        return history.last()["val_acc"]

    return objective


# -- the study's storage ---------------------------------------------------------------------------

def masked(url: str) -> str:
    """``url`` with its password replaced by ``***``: the form minicnn prints and writes."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads: mask anything between user: and @
        return re.sub(r"(//[^/:@]*:)[^@/]*@", r"\1***@", url)


def open_storage(optuna, url: str, heartbeat: int = HEARTBEAT_SECONDS):
    """The Optuna storage behind ``url``, connected and checked, with a heartbeat on running
    trials and a retry for those whose worker died. Raises :class:`StorageError` in seconds."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import IntegrityError, NoSuchModuleError, ProgrammingError, SQLAlchemyError

    shown = masked(url)
    check_positive_int(heartbeat, "heartbeat", "tune")
    try:
        parsed = make_url(url)
        dialect = parsed.get_backend_name()
    except Exception:
        raise StorageError(f"--storage {shown!r} is not a database URL; e.g. "
                           "sqlite:///study.db or postgresql://user:password@host/db") from None
    if parsed.drivername == "postgresql" and importlib.util.find_spec("psycopg"):
        # a bare postgresql:// means SQLAlchemy's default driver, psycopg2 before SQLAlchemy
        # 2.1: the tune-postgres extra installs psycopg 3, so say it
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    engine = ({"connect_args": {"connect_timeout": CONNECT_TIMEOUT_SECONDS}}
              if dialect in ("postgresql", "mysql") else {})
    # Optuna 4.9 renamed the callback and the argument; older versions know the first names
    parameters = inspect.signature(optuna.storages.RDBStorage).parameters
    on_stale = ("heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in parameters
                else "failed_trial_callback")
    retry_callback = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback",
                             optuna.storages.RetryFailedTrialCallback)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the heartbeat is "experimental" in Optuna
            retry = retry_callback(max_retry=MAX_RETRIES)
            for attempt in range(3):
                try:
                    return optuna.storages.RDBStorage(url, engine_kwargs=engine,
                                                      heartbeat_interval=heartbeat,
                                                      **{on_stale: retry})
                except (IntegrityError, ProgrammingError):
                    # workers started together on an empty database race to create Optuna's
                    # tables ("duplicate key", "already exists"): the loser finds them made
                    if attempt == 2:
                        raise
                    time.sleep(0.5)
    except ImportError as err:  # SQLAlchemy imports the database's driver when it connects
        hint = DRIVER_HINTS.get(dialect, "install the database's Python driver")
        raise StorageError(f"cannot open the study storage {shown}: its driver is missing "
                           f"({err.__cause__ or err}); {hint}") from None
    except NoSuchModuleError:
        raise StorageError(f"--storage {shown!r} is not a database URL: SQLAlchemy knows no "
                           f"database {parsed.drivername!r}; e.g. sqlite:///study.db or "
                           "postgresql://user:password@host/db") from None
    except SQLAlchemyError as err:
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        raise StorageError(f"cannot open the study storage {shown}: {reason}") from None


def _stale_trials_failed(optuna, study) -> None:
    """Mark the running trials whose worker stopped beating FAIL (each is queued again)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)


def _room(optuna, study, total: int, mine: int | None = None) -> str:
    """Whether a worker may run another trial: ``"run"``, ``"wait"`` (running trials ahead of
    it, lower numbers when ``mine`` is its trial's number, may complete the study) or ``"stop"``
    (``total`` trials are finished)."""
    _stale_trials_failed(optuna, study)
    trials = study.get_trials(deepcopy=False)
    finished = sum(t.state.name in _COUNTED_STATES for t in trials)
    if finished >= total:
        return "stop"
    ahead = sum(t.state.name == "RUNNING" and (mine is None or t.number < mine) for t in trials)
    return "run" if finished + ahead < total else "wait"


def _share_the_total(optuna, total: int):
    """After each trial: stop once ``total`` trials are finished, and while the trials other
    workers are running could finish it, wait for them (or for their heartbeat to stop)."""
    def after_trial(study, trial):
        while (room := _room(optuna, study, total)) == "wait":
            time.sleep(_POLL_SECONDS)
        if room == "stop":
            study.stop()

    return after_trial


class _SurplusTrial(Exception):
    """A trial asked for while other workers finished the study: recorded as FAIL, not run."""


# -- setting a search up ------------------------------------------------------------------------

@dataclass
class Search:
    """Everything a search needs besides Optuna: the space, the data and where it all goes."""

    dataset: str
    data_dir: object
    space: dict
    epochs: int
    seed: int
    label_smoothing: float
    loaded: tuple  # what load_data returned (the retrain starts from it)
    train: tuple  # (x, y) the trials train on ...
    val: tuple  # ... and are scored on, both normalized by the training part
    class_names: list
    out: Path
    storage: str
    study_name: str
    val_fraction: float
    limit: int | None = None
    image_size: tuple | None = None
    channels: int | None = None
    backend_name: str | None = None

    @property
    def settings(self) -> dict:
        """What the study records, and checks when it is continued: trials run with other
        settings would not be comparable."""
        return {"dataset": self.dataset, "epochs": self.epochs, "val_fraction": self.val_fraction,
                "seed": self.seed, "limit": self.limit, "channels": self.channels,
                "image_size": list(self.image_size) if self.image_size else None,
                "label_smoothing": self.label_smoothing}


def _split(x, y, val_fraction, seed):
    """The validation split: stratified, depends only on the labels and ``seed``."""
    keep, held = stratified_split(y, val_fraction, seed)
    if len(held) == 0 or len(keep) == 0:
        raise ValueError(f"tune: {len(y)} training images are too few to hold out "
                         f"{val_fraction:.0%} for validation")
    # normalization statistics come from the part that is trained on, as they would in use
    normalize = Normalize.fit(x[keep])
    return (normalize(x[keep], None), y[keep]), (normalize(x[held], None), y[held])


def _out_folder(dataset, out) -> Path:
    return Path(out) if out is not None else Path("runs") / f"tune-{dataset}"


def _default_storage(out: Path) -> str:
    return f"sqlite:///{(out / 'study.db').resolve()}"


def set_up(dataset="digits", *, trials=20, epochs=10, space=None, out=None, storage=None,
           study_name=None, seed=0, val_fraction=0.2, data_dir=None, image_size=None,
           channels=None, limit=None, backend_name=None, verbose=1) -> Search:
    """Check a search's arguments (before any data is loaded), load the data and carve the
    validation split out of the training set; see :func:`tune` for the arguments."""
    check_positive_int(trials, "trials", "tune")
    check_positive_int(epochs, "epochs", "tune")
    if limit is not None:
        check_positive_int(limit, "limit", "tune")
    if not 0 < val_fraction < 1:
        raise ValueError(f"tune: val_fraction must be in (0, 1), got {val_fraction}")
    search_space = parse_space(space)
    out = _out_folder(dataset, out)
    out.mkdir(parents=True, exist_ok=True)
    loaded = load_data(dataset, data_dir, image_size=image_size, channels=channels, seed=seed,
                       verbose=verbose)
    (x_train, y_train), _, class_names = loaded
    if limit is not None:
        x_train, y_train = x_train[:limit], y_train[:limit]
    train, val = _split(x_train, y_train, val_fraction, seed)
    label_smoothing = RECIPES[dataset].label_smoothing if dataset in RECIPES else 0.0
    return Search(dataset, data_dir, search_space, epochs, seed, label_smoothing, loaded, train,
                  val, list(class_names), out,
                  storage or _default_storage(out), study_name or f"minicnn-{dataset}",
                  val_fraction, limit, image_size, channels, backend_name)


def tune(dataset: str = "digits", *, trials: int = 20, epochs: int = 10, space=None,
         out=None, storage: str | None = None, study_name: str | None = None, seed: int = 0,
         sampler_seed: int | None = None, val_fraction: float = 0.2, pruner: str = "median",
         baseline: bool = True, retrain_best: bool = False, plots: bool = True,
         data_dir=None, image_size=None,
         channels=None, limit: int | None = None, timeout: float | None = None,
         heartbeat: int = HEARTBEAT_SECONDS, backend_name: str | None = None,
         verbose: int = 1) -> dict:
    """Search hyperparameters of :func:`minicnn.models.tunable_cnn` on ``dataset``.

    Args:
        dataset: ``mnist``, ``fashion-mnist``, ``cifar10``, ``digits`` or ``folder`` (with
            ``data_dir`` the image folder).
        trials: the study's total number of finished (complete or pruned) trials; a study that
            already has some runs only the rest.
        epochs: training epochs per trial (the pruner may stop a trial after any of them).
        space: search space, a dict or a JSON file (see :func:`parse_space`); hyperparameters
            it does not mention keep :data:`DEFAULT_SPACE`.
        out: output folder (default ``runs/tune-<dataset>``).
        storage: Optuna storage URL (default ``sqlite:///<out>/study.db``).
        study_name: default ``minicnn-<dataset>``; the same name continues the study.
        seed: seeds the validation split, the weights, batch order and augmentation of every
            trial, and (unless ``sampler_seed``) the TPE sampler.
        val_fraction: share of each class of the training set held out for validation.
        pruner: ``"median"`` (MedianPruner), ``"halving"`` (successive halving) or ``"none"``.
        baseline: make the first trial of a new study the default configuration
            (:func:`default_config`), so the best is compared with it on the same split.
        retrain_best: afterwards train the best configuration on the whole training set and
            evaluate it once on the test set, into the run folder ``<out>/best_run``.
        plots: draw the PNG plots (a few seconds of matplotlib each time outputs are written).
        limit: use only the first ``limit`` training images (quick runs).
        timeout: stop starting new trials after this many seconds.
        heartbeat: seconds between a running trial's heartbeats in the storage; a trial whose
            worker missed two is marked FAIL and queued again.
        backend_name: train on this backend (the default backend is left alone).

    Returns a dict with the study name, storage, trial counts, the best trial (value, number,
    configuration), the baseline's value, the output files and, with ``retrain_best``, the
    test accuracy. Raises ImportError naming the extra to install when Optuna is missing, and
    :class:`StorageError` when the storage cannot be opened (before any data is loaded).
    """
    optuna = _require_optuna()
    if storage is None:
        _out_folder(dataset, out).mkdir(parents=True, exist_ok=True)
    storage_object = open_storage(optuna, storage or _default_storage(_out_folder(dataset, out)),
                                  heartbeat)
    search = set_up(dataset, trials=trials, epochs=epochs, space=space, out=out,
                    storage=storage, study_name=study_name, seed=seed,
                    val_fraction=val_fraction, data_dir=data_dir, image_size=image_size,
                    channels=channels, limit=limit, backend_name=backend_name, verbose=verbose)
    previous_verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # we print one line per trial instead
    try:
        study, created = _open_study(optuna, search, storage_object, sampler_seed, pruner)
        if baseline and created:
            # the first trial starts from the defaults; it is "the baseline" (the default
            # configuration, to compare the best with) only when the space contains all of it.
            # Only the worker that created the study queues it: others may start at once.
            params, exact = _baseline_params(search.space, default_config(dataset))
            study.enqueue_trial(params, user_attrs={"baseline": exact})
        done = _count_finished(study)
        to_run = max(0, trials - done)
        if verbose:
            print(f"study {search.study_name!r} in {masked(search.storage)}: {done} finished "
                  f"trials, running {to_run} more (target {trials}); {len(search.train[1]):,} training "
                  f"and {len(search.val[1]):,} validation images ({val_fraction:.0%} held out "
                  f"of the training set), {epochs} epoch(s) per trial")
        callbacks = [_print_trial] if verbose else []
        callbacks.append(_share_the_total(optuna, trials))  # after printing: it may wait
        interrupted = False
        if to_run:
            # Optuna logs a failed trial as a warning: a surplus trial's line comes from
            # _print_trial, and any other failure is raised
            optuna.logging.set_verbosity(optuna.logging.ERROR)
            try:
                study.optimize(_objective(search, optuna, trials, storage_object),
                               timeout=timeout,
                               callbacks=callbacks, catch=(_SurplusTrial,), gc_after_trial=False)
            except KeyboardInterrupt:
                interrupted = True  # write what is finished, then re-raise below
        summary = _write_outputs(optuna, study, search, plots)
        if interrupted:
            raise KeyboardInterrupt
        if retrain_best and summary["best"] is not None:
            result = _retrain(search, summary["best"]["config"], verbose)
            summary["test_accuracy"] = result["test_accuracy"]
            summary["test_loss"] = result["test_loss"]
            summary["files"].update(model=result["model_file"],
                                    retrain_json=str(search.out / "best_run" / "results.json"))
    finally:
        optuna.logging.set_verbosity(previous_verbosity)
    if verbose:
        _print_summary(summary)
    return summary


def _open_study(optuna, search: Search, storage_object, sampler_seed, pruner):
    """The study, created or loaded, with its sampler and its recorded settings checked;
    returns ``(study, created)``."""
    # A trial may be stopped after any epoch once the learning-rate warm-up (the first quarter
    # of the one-cycle schedule) is over: before that, a slowly rising learning rate looks like
    # a weak configuration. Steps are epochs done (1, 2, ...); the pruners ignore steps below
    # ``warmup``. The median needs 5 finished trials to mean something.
    warmup = math.ceil(search.epochs / 4)
    study_name, settings = search.study_name, search.settings
    pruners = {
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=warmup),
        "halving": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=warmup,
                                                                  reduction_factor=3),
        "none": lambda: optuna.pruners.NopPruner(),
    }
    if pruner not in pruners:
        raise ValueError(f"tune: pruner must be one of {', '.join(pruners)}, got {pruner!r}")
    shown = masked(search.storage)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage_object,
                                  pruner=pruners[pruner]())
        created = False
    except KeyError:  # no such study yet: create it, unless another worker just did
        try:
            study = optuna.create_study(study_name=study_name, storage=storage_object,
                                        direction="maximize", pruner=pruners[pruner]())
            created = True
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(study_name=study_name, storage=storage_object,
                                      pruner=pruners[pruner]())
            created = False
    # The sampler's seed includes the number of trials already there: on a resumed study the
    # bare seed would replay the first run's random start-up draws as duplicate trials.
    base = search.seed if sampler_seed is None else sampler_seed
    state = int(np.random.SeedSequence([base, len(study.trials)]).generate_state(1)[0])
    study.sampler = optuna.samplers.TPESampler(seed=state, n_startup_trials=5)
    recorded = None if created else _recorded_settings(study)
    if recorded is None:
        study.set_user_attr("settings", settings)
    elif recorded != settings:
        changed = ", ".join(f"{k}: {recorded.get(k)!r} -> {v!r}" for k, v in settings.items()
                            if recorded.get(k) != v)
        raise ValueError(
            f"tune: study {study_name!r} in {shown} was run with other settings ({changed}); "
            "its trials would not be comparable. Use another --study-name or --storage.")
    return study, created


def _recorded_settings(study, patience: float = 10.0):
    """The settings the study's creator recorded; a worker that loads a study created a moment
    ago waits for them (up to ``patience`` seconds: a study from before they were recorded has
    none)."""
    deadline = time.monotonic() + patience
    while (recorded := study.user_attrs.get("settings")) is None and not study.trials:
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return recorded


def _count_finished(study) -> int:
    return sum(t.state.name in _COUNTED_STATES for t in study.trials)


def _print_trial(study, trial):
    config = trial.user_attrs.get("config", {})
    shown = ", ".join(f"{k}={_short(v)}" for k, v in config.items())
    value = "" if trial.value is None else f"val_acc {trial.value:.4f}"
    note = trial.user_attrs.get("note", "")
    state = trial.state.name.lower()
    best = ""
    try:
        best = f" (best {study.best_value:.4f}, trial {study.best_trial.number})"
    except ValueError:  # no completed trial yet
        pass
    print(f"trial {trial.number} {state}: {value or note} [{shown}] "
          f"{trial.user_attrs.get('seconds', 0):.1f} s{best}", flush=True)


def _short(value):
    return f"{value:.3g}" if isinstance(value, float) else str(value)


# -- the outputs ------------------------------------------------------------------------------------

def _trial_rows(study) -> list[dict]:
    rows = []
    for t in study.trials:
        per_epoch = t.user_attrs.get("val_acc_per_epoch", [])
        rows.append({
            "number": t.number, "state": t.state.name, "val_acc": t.value,
            "epochs_run": len(per_epoch), "val_acc_per_epoch": per_epoch,
            "seconds": t.user_attrs.get("seconds"), "baseline": bool(t.user_attrs.get("baseline")),
            "note": t.user_attrs.get("note", ""), "worker": t.user_attrs.get("worker", ""),
            "retry_of": t.system_attrs.get("failed_trial"), **t.user_attrs.get("config", {}),
        })
    return rows


def _write_outputs(optuna, study, search: Search, plots=True) -> dict:
    out, storage, class_names = search.out, masked(search.storage), search.class_names
    rows = _trial_rows(study)
    atomic_write_bytes(out / "trials.json", json.dumps(rows, indent=2).encode())
    fields = ["number", "state", "val_acc", "epochs_run", "seconds", "baseline", *PARAMETERS,
              "val_acc_per_epoch", "worker", "retry_of", "note"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "val_acc_per_epoch": " ".join(f"{v:.4f}" for v in
                                                               row["val_acc_per_epoch"])})
    atomic_write_bytes(out / "trials.csv", buffer.getvalue().encode())

    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    best = max(complete, key=lambda t: (t.value, -t.number)) if complete else None
    # a baseline killed with its worker is run again: the one that finished counts
    baseline = next((t for t in study.trials if t.user_attrs.get("baseline")
                     and t.state.name == "COMPLETE"), None)
    summary = {
        "study_name": study.study_name, "storage": storage, "out": str(out),
        "trials": len(study.trials), "finished": _count_finished(study),
        "complete": len(complete), "pruned": sum(t.state.name == "PRUNED" for t in study.trials),
        "baseline_val_acc": baseline.value if baseline is not None else None,
        "best": None, "files": {"trials_csv": str(out / "trials.csv"),
                                "trials_json": str(out / "trials.json")},
    }
    if best is not None:
        config = best.user_attrs["config"]
        recipe = recipe_of(config, search.epochs, search.label_smoothing)
        model = recipe.build_model(search.train[0].shape[1:], len(class_names), search.seed)
        summary["best"] = {"trial": best.number, "val_acc": best.value, "config": config}
        document = {
            "study_name": study.study_name, "storage": storage, "metric": "val_acc",
            "value": best.value, "trial": best.number,
            "baseline_val_acc": summary["baseline_val_acc"],
            "hyperparameters": config,
            "model": model.config(),
            "model_builder": {"function": "minicnn.models.tunable_cnn",
                              "kwargs": {k: config[k] for k in NETWORK_PARAMETERS},
                              "num_classes": len(class_names)},
            "training": {**recipe.to_dict(), "seed": search.seed,
                         "schedule": "one-cycle (peak lr, 25% warm-up), stepped per batch"},
            "validation": {"fraction": search.val_fraction, "images": len(search.val[1]),
                           "seed": search.seed, "stratified": True},
            "dataset": search.dataset, "class_names": list(class_names),
            "search_space": search.space,
        }
        atomic_write_bytes(out / "best.json", json.dumps(document, indent=2).encode())
        summary["files"]["best_json"] = str(out / "best.json")
    if plots:
        summary["files"].update(_plots(optuna, study, out))
    return summary


def _plots(optuna, study, out) -> dict:
    """PNG plots through optuna.visualization.matplotlib; a plot that cannot be drawn yet
    (e.g. importances need two finished trials that differ) is left out, not an error."""
    from .plots import _pyplot, save_figure

    _pyplot()  # selects the Agg backend before Optuna imports pyplot
    from optuna.visualization import matplotlib as plots

    made = {}
    if not any(t.state.name == "COMPLETE" for t in study.trials):
        return made
    wanted = {
        "optimization_history": plots.plot_optimization_history,
        "param_importances": plots.plot_param_importances,
        "parallel_coordinate": plots.plot_parallel_coordinate,
        "intermediate_values": plots.plot_intermediate_values,
    }
    for name, plot in wanted.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ExperimentalWarning on every call
            try:
                axes = plot(study)
            except Exception as err:  # a missing plot must not lose a finished search
                warnings.warn(f"tune: {name}.png not drawn: {err}", stacklevel=2)
                continue
        figure = np.ravel(axes)[0].figure
        if name == "param_importances":
            figure.set_size_inches(7, 4)
        path = out / f"{name}.png"
        save_figure(figure, path)
        made[name] = str(path)
    return made


def _retrain(search: Search, config: dict, verbose) -> dict:
    """Train ``config`` on the whole training set and score it once on the test set, written
    as a run folder (``<out>/best_run``) as ``minicnn train`` writes one."""
    data = prepare_data(search.dataset, search.data_dir, seed=search.seed, limit=search.limit,
                        limit_test=False, loaded=search.loaded)
    if verbose:
        print(f"retraining the best configuration on all {len(data.train[1]):,} training images "
              f"for {search.epochs} epoch(s)")
    return train_run(recipe_of(config, search.epochs, search.label_smoothing), data,
                     search.out / "best_run", seed=search.seed, watch_test=False,
                     backend_name=search.backend_name, verbose=verbose,
                     metadata={"hyperparameters": config})


def _print_summary(summary):
    print(f"{summary['finished']} finished trials ({summary['complete']} complete, "
          f"{summary['pruned']} pruned) in study {summary['study_name']!r}")
    if summary["baseline_val_acc"] is not None:
        print(f"default configuration: val_acc {summary['baseline_val_acc']:.4f}")
    if summary["best"] is not None:
        best = summary["best"]
        print(f"best: trial {best['trial']}, val_acc {best['val_acc']:.4f}: "
              + ", ".join(f"{k}={_short(v)}" for k, v in best["config"].items()))
    if "test_accuracy" in summary:
        print(f"best configuration retrained on the whole training set: test accuracy "
              f"{summary['test_accuracy']:.2%}")
    print(f"outputs in {summary['out']}")
