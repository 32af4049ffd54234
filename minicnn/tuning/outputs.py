"""The outputs of ``minicnn tune``: a line per trial, ``trials.csv`` / ``trials.json``,
``best.json``, the plots, the best configuration retrained into a run folder, the summary."""

from __future__ import annotations

import csv
import io
import json

from ..atomic import atomic_write_bytes
from ..data import prepare_data
from ..plots import plot_study
from ..recipes import train_run
from .space import NETWORK_PARAMETERS, PARAMETERS, recipe_of
from .study import count_finished, masked


def print_trial(study, trial):
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


def write_outputs(study, search) -> dict:
    settings, class_names = search.settings, search.class_names
    out, storage = settings.out_folder, masked(settings.storage_url)
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
        "trials": len(study.trials), "finished": count_finished(study),
        "complete": len(complete), "pruned": sum(t.state.name == "PRUNED" for t in study.trials),
        "baseline_val_acc": baseline.value if baseline is not None else None,
        "best": None, "files": {"trials_csv": str(out / "trials.csv"),
                                "trials_json": str(out / "trials.json")},
    }
    if best is not None:
        config = best.user_attrs["config"]
        recipe = recipe_of(config, settings.epochs, settings.label_smoothing)
        model = recipe.build_model(search.train[0].shape[1:], len(class_names), settings.seed)
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
            "training": {**recipe.to_dict(), "seed": settings.seed,
                         "schedule": "one-cycle (peak lr, 25% warm-up), stepped per batch"},
            "validation": {"fraction": settings.val_fraction, "images": len(search.val[1]),
                           "seed": settings.seed, "stratified": True},
            "dataset": settings.dataset, "class_names": list(class_names),
            "search_space": search.space,
        }
        atomic_write_bytes(out / "best.json", json.dumps(document, indent=2).encode())
        summary["files"]["best_json"] = str(out / "best.json")
    if settings.plots:
        summary["files"].update(plot_study(study, out))
    return summary


def retrain(search, config: dict) -> dict:
    """Train ``config`` on the whole training set and score it once on the test set, written
    as a run folder (``<out>/best_run``) as ``minicnn train`` writes one."""
    settings = search.settings
    data = prepare_data(settings.dataset, settings.data_dir, seed=settings.seed,
                        limit=settings.limit, limit_test=False, loaded=search.loaded)
    if settings.verbose:
        print(f"retraining the best configuration on all {len(data.train[1]):,} training images "
              f"for {settings.epochs} epoch(s)")
    return train_run(recipe_of(config, settings.epochs, settings.label_smoothing), data,
                     settings.out_folder / "best_run", seed=settings.seed, watch_test=False,
                     backend_name=settings.backend_name, verbose=settings.verbose,
                     metadata={"hyperparameters": config})


def print_summary(summary):
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
