"""Hyperparameter search (``minicnn tune`` / ``minicnn.tune``): a tiny study on scikit-learn's
digits that writes its outputs and resumes, the search space, pruning, and the error without
Optuna. Everything but the last test needs Optuna and is skipped without it."""

import builtins
import json
import subprocess
import sys

import numpy as np
import pytest
from helpers import require

import minicnn
from minicnn import models
from minicnn.cli import main

# a small, fast corner of the space: trials of about a second each on 2 CPU cores
TINY_SPACE = {"width": [4, 8], "blocks": [1, 2], "batch_size": [64, 128], "kernel_size": 3}
TINY = ["--dataset", "digits", "--epochs", "1", "--limit", "500", "--width", "4,8",
        "--blocks", "1,2", "--batch-size", "64,128", "--kernel-size", "3"]


def _needs_optuna():
    return require("optuna")


def _csv_rows(path):
    return path.read_text().strip().splitlines()[1:]


def test_tiny_study_writes_its_outputs_resumes_and_retrains(tmp_path, capsys):
    optuna = _needs_optuna()
    from minicnn.tuning.space import PARAMETERS

    out = tmp_path / "tune"
    # first run through the command line: 3 trials of 1 epoch
    assert main(["tune", *TINY, "--trials", "3", "--out", str(out), "--backend", "numpy"]) == 0
    printed = capsys.readouterr().out
    assert "trial 0 complete" in printed and "best: trial" in printed
    for name in ("study.db", "trials.csv", "trials.json", "best.json",
                 "optimization_history.png"):
        assert (out / name).is_file(), name
    assert (out / "optimization_history.png").read_bytes().startswith(b"\x89PNG")
    assert len(_csv_rows(out / "trials.csv")) == 3
    first = json.loads((out / "trials.json").read_text())
    # trial 0 starts from the defaults (the digits recipe's learning rate, ...); the tiny space
    # has no width 32 or 3 blocks, so it is not the full default configuration (the baseline)
    assert first[0]["lr"] == 4e-3 and first[0]["optimizer"] == "adamw"
    assert not first[0]["baseline"]

    # the best configuration: hyperparameters plus a model config that rebuilds the network
    best = json.loads((out / "best.json").read_text())
    assert best["value"] == max(t["val_acc"] for t in first if t["state"] == "COMPLETE")
    assert set(best["hyperparameters"]) == set(PARAMETERS)
    rebuilt = models.from_config(best["model"])
    assert rebuilt.config() == best["model"]
    assert rebuilt.output_shape((1, 8, 8)) == (10,)
    assert best["training"]["epochs"] == 1 and best["validation"]["images"] == 100

    # second run through the API: the same study continues to 5 trials, then retrains the best
    summary = minicnn.tune("digits", trials=5, epochs=1, limit=500, space=TINY_SPACE, out=out,
                           retrain_best=True, verbose=0, backend_name="numpy", plots=False)
    study = optuna.load_study(study_name="minicnn-digits", storage=f"sqlite:///{out / 'study.db'}")
    assert len(study.trials) == 5 and summary["finished"] == 5
    rows = json.loads((out / "trials.json").read_text())
    assert rows[:3] == first  # earlier trials are kept as they were
    assert len(_csv_rows(out / "trials.csv")) == 5
    assert 0 <= summary["test_accuracy"] <= 1
    retrain = json.loads((out / "best_run" / "results.json").read_text())
    assert retrain["train_images"] == 500
    assert retrain["test_images"] == len(minicnn.data.load_digits()[1][1])
    model = minicnn.load_model(out / "best_run" / "model.safetensors")
    assert model.config()["layers"] == json.loads((out / "best.json").read_text())["model"]["layers"]
    assert model.metadata["normalization"] and model.metadata["class_names"][0] == "0"
    # the best model is evaluated on exactly the test images it was scored on
    capsys.readouterr()
    assert main(["evaluate", str(out / "best_run" / "model.safetensors"), "--quiet"]) == 0
    assert f"accuracy {summary['test_accuracy']:.2%}" in capsys.readouterr().out

    # a finished study runs nothing more, and other settings are refused instead of mixed in
    assert minicnn.tune("digits", trials=5, epochs=1, limit=500, space=TINY_SPACE, out=out,
                        verbose=0, plots=False)["finished"] == 5
    with pytest.raises(ValueError, match="other settings.*epochs"):
        minicnn.tune("digits", trials=6, epochs=2, limit=500, space=TINY_SPACE, out=out, verbose=0)


def test_a_search_is_reproducible(tmp_path):
    _needs_optuna()

    def run(folder):
        minicnn.tune("digits", trials=2, epochs=1, limit=300, space=TINY_SPACE,
                     out=tmp_path / folder, verbose=0, baseline=False, pruner="none", plots=False)
        return [(t["val_acc"], {k: t[k] for k in TINY_SPACE})
                for t in json.loads((tmp_path / folder / "trials.json").read_text())]

    assert run("a") == run("b")


def test_the_first_trial_is_the_default_configuration_when_the_space_holds_it():
    from minicnn.tuning.space import baseline_params, default_config, parse_space

    DEFAULT_CONFIG = {"lr": 4e-3, "batch_size": 32, "optimizer": "adamw", "weight_decay": 5e-4,
                      "width": 32, "kernel_size": 3, "activation": "relu", "dropout": 0.25,
                      "augment": 0.0, "blocks": 3}  # mnist_cnn, trained as the digits recipe

    params, exact = baseline_params(parse_space(), default_config("digits"))
    assert exact and params == DEFAULT_CONFIG  # the digits recipe uses the defaults
    params, exact = baseline_params(parse_space({"width": [8, 16], "activation": "relu"}),
                                     DEFAULT_CONFIG)
    assert not exact and "width" not in params and "activation" not in params  # fixed: no param
    assert not baseline_params(parse_space({"activation": "tanh"}), DEFAULT_CONFIG)[1]
    assert default_config("cifar10")["augment"] == 1.0 and default_config("cifar10")["batch_size"] == 128


def test_the_validation_split_is_stratified_seeded_and_from_the_training_set(tmp_path):
    from minicnn.data import validation_split as split
    from minicnn.tuning import TuneSettings

    rng = np.random.default_rng(0)
    x = rng.random((300, 1, 4, 4)).astype(np.float32)
    y = np.repeat(np.arange(3), 100)
    (xt, yt), (xv, yv) = split(x, y, 0.2, seed=1)
    assert np.bincount(yv).tolist() == [20, 20, 20] and len(yt) == 240
    (_, _), (xv2, _) = split(x, y, 0.2, seed=1)
    np.testing.assert_array_equal(xv, xv2)
    # normalized with the statistics of the part that is trained on
    assert abs(float(xt.mean())) < 1e-5 and abs(float(xv.mean())) < 0.1
    with pytest.raises(ValueError, match="val_fraction must be > 0"):  # before any data is read
        TuneSettings("mnist", val_fraction=0.0, data_dir=tmp_path / "nothing", out=tmp_path / "out")


def test_search_space_from_flags_files_and_defaults(tmp_path):
    from minicnn.tuning.space import DEFAULT_SPACE, parse_flag, parse_space

    assert parse_flag("lr", "1e-4:1e-1") == {"low": 1e-4, "high": 1e-1, "log": True}
    assert parse_flag("dropout", "0:0.5") == {"low": 0, "high": 0.5, "log": False}
    assert parse_flag("batch_size", "32,64") == [32, 64]
    assert parse_flag("activation", "relu") == "relu"
    space_file = tmp_path / "space.json"
    space_file.write_text(json.dumps({"lr": {"low": 1e-3, "high": 1e-2, "log": True},
                                      "optimizer": ["adam", "sgd"], "blocks": {"low": 1, "high": 3},
                                      "activation": "tanh"}))
    space = parse_space(space_file, {"optimizer": "adamw"})
    assert space["lr"] == {"low": 1e-3, "high": 1e-2, "log": True}
    assert space["optimizer"] == {"fixed": "adamw"}  # flags override the file
    assert space["blocks"] == {"low": 1, "high": 3, "log": False}
    assert space["activation"] == {"fixed": "tanh"}
    assert space["width"] == {"choices": DEFAULT_SPACE["width"]}
    for bad, message in [({"depth": 3}, "unknown hyperparameter 'depth'"),
                         ({"activation": ["relu", "gelu"]}, "activation must be one of"),
                         ({"kernel_size": [3, 4]}, "kernel_size must be odd"),
                         ({"lr": {"low": 0.1, "high": 0.01}}, "low 0.1 is above high"),
                         ({"dropout": 1.5}, "dropout must be < 1"),
                         ({"lr": {"low": 0.0, "high": 0.1, "log": True}}, "lr must be > 0"),
                         ({"batch_size": 2.5}, "batch_size must be an integer")]:
        with pytest.raises(ValueError, match=message):
            parse_space(bad)
    space_file.write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        parse_space(space_file)


def test_a_range_of_kernel_sizes_draws_odd_sizes_only():
    optuna = _needs_optuna()
    from minicnn.tuning.space import parse_space, suggest

    space = parse_space({"kernel_size": {"low": 3, "high": 7}})
    assert space["kernel_size"] == {"low": 3, "high": 7, "log": False}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = {suggest(study.ask(), space)["kernel_size"] for _ in range(40)}
    assert drawn == {3, 5, 7}


def test_command_line_reports_a_bad_space_before_loading_data(tmp_path, capsys):
    assert main(["tune", "--dataset", "digits", "--activation", "gelu",
                 "--out", str(tmp_path)]) == 2
    assert "activation must be one of" in capsys.readouterr().err


def test_pruned_trials_stop_after_the_epoch_that_reports(tmp_path):
    optuna = _needs_optuna()
    from minicnn.tuning.study import _report_callback

    class Trial:  # the two calls the callback makes, recorded
        def __init__(self):
            self.reports, self.user_attrs = [], {}

        def report(self, value, step):
            self.reports.append((step, value))

        def set_user_attr(self, key, value):
            self.user_attrs[key] = value

        def should_prune(self):
            return len(self.reports) >= 2

    trial = Trial()
    callback = _report_callback(trial, optuna)
    callback.on_epoch_end(None, 0, {"val_acc": 0.5})
    with pytest.raises(optuna.TrialPruned, match="after epoch 2"):
        callback.on_epoch_end(None, 1, {"val_acc": 0.6})
    assert trial.reports == [(1, 0.5), (2, 0.6)]
    assert trial.user_attrs["val_acc_per_epoch"] == [0.5, 0.6]


def test_a_diverged_trial_is_pruned_not_failed(tmp_path, monkeypatch):
    """A run whose loss blew up tells the sampler "bad region" (failed trials it ignores)."""
    _needs_optuna()
    from minicnn.recipes import Recipe
    from minicnn.training import TrainingDivergedError

    def diverge(*args, **kwargs):
        raise TrainingDivergedError("training diverged at epoch 1, batch 3: the loss is not finite")

    monkeypatch.setattr(Recipe, "train", diverge)  # every trial trains through its recipe
    summary = minicnn.tune("digits", trials=2, epochs=1, limit=200, space=TINY_SPACE,
                           out=tmp_path, verbose=0, plots=False)
    assert summary["pruned"] == 2 and summary["best"] is None
    rows = json.loads((tmp_path / "trials.json").read_text())
    assert all(r["state"] == "PRUNED" and r["note"].startswith("diverged") for r in rows)
    assert not (tmp_path / "best.json").exists()


def test_importing_minicnn_does_not_import_optuna():
    code = ("import sys, minicnn, minicnn.cli; minicnn.cli.build_parser(); "
            "assert 'optuna' not in sys.modules; assert callable(minicnn.tune); "
            "assert 'optuna' not in sys.modules; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def test_without_optuna_the_error_names_the_extra_to_install(monkeypatch, tmp_path, capsys):
    # simulate a machine without Optuna, whether or not this one has it: both the module table
    # entry (None makes `import optuna` fail) and the import function itself
    monkeypatch.setitem(sys.modules, "optuna", None)
    real_import = builtins.__import__

    def no_optuna(name, *args, **kwargs):
        if name == "optuna" or name.startswith("optuna."):
            raise ModuleNotFoundError("No module named 'optuna'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_optuna)
    with pytest.raises(ImportError, match=r'pip install "minicnn\[tune\]"'):
        minicnn.tune("digits", trials=1, out=tmp_path)
    assert main(["tune", "--dataset", "digits", "--trials", "1", "--out", str(tmp_path)]) == 2
    assert 'pip install "minicnn[tune]"' in capsys.readouterr().err


def test_the_best_model_of_a_search_on_a_flat_image_folder_can_be_evaluated(tmp_path, capsys):
    """A flat folder's test images are drawn with the seed: the retrained model records which,
    so ``minicnn evaluate`` scores exactly those (and refuses once the folder changed)."""
    _needs_optuna()
    from PIL import Image

    folder = tmp_path / "shapes"
    rng = np.random.default_rng(0)
    for name in ("circle", "square"):
        (folder / name).mkdir(parents=True)
        for i in range(15):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(
                folder / name / f"{i}.png")
    out = tmp_path / "tune"
    assert main(["tune", "--image-folder", str(folder), "--image-size", "8", "--trials", "2",
                 "--epochs", "1", "--width", "4", "--blocks", "1", "--kernel-size", "3",
                 "--seed", "2", "--retrain-best", "--no-plots", "--quiet", "--out",
                 str(out)]) == 0
    results = json.loads((out / "best_run" / "results.json").read_text())
    assert main(["evaluate", str(out / "best_run" / "model.safetensors"), "--image-folder",
                 str(folder), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"accuracy {results['test_accuracy']:.2%}" in printed
    assert f"({results['test_images']:,} images)" in printed


def test_the_settings_are_one_record_checked_once(tmp_path, monkeypatch):
    """TuneSettings holds every setting with its rules; the command line builds it whole from
    its arguments and tune() takes it as it is (or builds it from keywords, not both)."""
    from minicnn import tuning
    from minicnn.tuning import TuneSettings

    for bad, message in [({"trials": 0}, "trials must be"), ({"pruner": "best"},
                         "pruner must be one of median, halving, none"),
                         ({"timeout": -1.0}, "timeout must be > 0"), ({"limit": 0}, "limit")]:
        with pytest.raises(ValueError, match=message):
            TuneSettings("digits", **bad)
    settings = TuneSettings("mnist", out=tmp_path / "o")
    assert settings.name == "minicnn-mnist" and settings.label_smoothing == 0.05
    assert settings.storage_url == f"sqlite:///{(tmp_path / 'o' / 'study.db').resolve()}"
    with pytest.raises(TypeError, match="settings given twice"):
        tuning.tune(settings, trials=3)
    seen = []
    monkeypatch.setattr(tuning, "tune", seen.append)
    assert main(["tune", "--trials", "7", "--pruner", "halving",
                 "--lr", "1e-3:1e-2", "--image-folder", str(tmp_path), "--image-size", "12",
                 "--out", str(tmp_path / "o"), "--quiet", "--no-plots"]) == 0
    (given,) = seen
    assert given == TuneSettings(
        "folder", trials=7, pruner="halving", data_dir=str(tmp_path), image_size=(12, 12),
        out=str(tmp_path / "o"), plots=False, verbose=0,
        space={"lr": {"low": 1e-3, "high": 1e-2, "log": True}})
