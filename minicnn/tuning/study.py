"""The study of ``minicnn tune``: its storage (an SQLite file or a database server several
workers share), the workers' shares of the total (each running trial has a heartbeat; a dead
worker's trial is run again), the study opened with its sampler and pruner and its recorded
settings checked, and the objective: one trial trains one recipe."""

from __future__ import annotations

import importlib.util
import math
import os
import re
import socket
import time
import warnings

import numpy as np

from ..training import Callback, TrainingDivergedError
from ..validation import check_positive_int
from .space import recipe_of, suggest

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
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the heartbeat is "experimental" in Optuna
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)
            for attempt in range(3):
                try:
                    return optuna.storages.RDBStorage(
                        url, engine_kwargs=engine, heartbeat_interval=heartbeat,
                        heartbeat_stale_trial_callback=retry)
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


def share_the_total(optuna, total: int):
    """After each trial: stop once ``total`` trials are finished, and while the trials other
    workers are running could finish it, wait for them (or for their heartbeat to stop)."""
    def after_trial(study, trial):
        while (room := _room(optuna, study, total)) == "wait":
            time.sleep(_POLL_SECONDS)
        if room == "stop":
            study.stop()

    return after_trial


class SurplusTrial(Exception):
    """A trial asked for while other workers finished the study: recorded as FAIL, not run."""


#: the pruners --pruner names; each stops a trial after any epoch once the learning-rate warm-up
#: is over (steps below ``warmup`` are ignored)
PRUNERS = {
    "median": lambda optuna, warmup: optuna.pruners.MedianPruner(n_startup_trials=5,
                                                                 n_warmup_steps=warmup),
    "halving": lambda optuna, warmup: optuna.pruners.SuccessiveHalvingPruner(
        min_resource=warmup, reduction_factor=3),
    "none": lambda optuna, warmup: optuna.pruners.NopPruner(),
}


def open_study(optuna, search, storage_object):
    """The study, created or loaded, with its sampler and its recorded settings checked;
    returns ``(study, created)``."""
    # A trial may be stopped after any epoch once the learning-rate warm-up (the first quarter
    # of the one-cycle schedule) is over: before that, a slowly rising learning rate looks like
    # a weak configuration. Steps are epochs done (1, 2, ...). The median needs 5 finished
    # trials to mean something.
    settings = search.settings
    warmup = math.ceil(settings.epochs / 4)
    study_name, recorded_now = settings.name, settings.recorded

    def pruner():
        return PRUNERS[settings.pruner](optuna, warmup)

    shown = masked(settings.storage_url)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage_object,
                                  pruner=pruner())
        created = False
    except KeyError:  # no such study yet: create it, unless another worker just did
        try:
            study = optuna.create_study(study_name=study_name, storage=storage_object,
                                        direction="maximize", pruner=pruner())
            created = True
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(study_name=study_name, storage=storage_object,
                                      pruner=pruner())
            created = False
    # The sampler's seed includes the number of trials already there: on a resumed study the
    # bare seed would replay the first run's random start-up draws as duplicate trials.
    base = settings.seed if settings.sampler_seed is None else settings.sampler_seed
    state = int(np.random.SeedSequence([base, len(study.trials)]).generate_state(1)[0])
    study.sampler = optuna.samplers.TPESampler(seed=state, n_startup_trials=5)
    recorded = None if created else _recorded_settings(study)
    if recorded is None:
        study.set_user_attr("settings", recorded_now)
    elif recorded != recorded_now:
        changed = ", ".join(f"{k}: {recorded.get(k)!r} -> {v!r}" for k, v in recorded_now.items()
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


def count_finished(study) -> int:
    return sum(t.state.name in _COUNTED_STATES for t in study.trials)


# -- the objective: one trial trains one recipe ----------------------------------------------------

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


def objective_of(search, optuna, storage):
    """The function Optuna calls per trial: draw a configuration, train it on the search's
    training part, return its last validation accuracy (a diverged run counts as pruned). A
    trial that other workers' trials make unneeded is not run (see :func:`_room`)."""
    settings, total = search.settings, search.settings.trials

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
            raise SurplusTrial(f"the study has its {total} finished trials")
        finished_before = count_finished(trial.study)  # what the sampler draws from
        config = suggest(trial, search.space)
        trial.set_user_attr("config", config)
        trial.set_user_attr("finished_before", finished_before)  # and now it trains
        start = time.perf_counter()
        try:
            recipe = recipe_of(config, settings.epochs, settings.label_smoothing)
            model = recipe.build_model(search.train[0].shape[1:], len(search.class_names),
                                       settings.seed)
            if settings.backend_name:
                model.to(settings.backend_name)
            history = recipe.train(model, search.train, search.val, dataset=settings.dataset,
                                   seed=settings.seed, callbacks=[_report_callback(trial, optuna)])
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
