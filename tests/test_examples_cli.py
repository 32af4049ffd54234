"""Smoke runs of the examples and the minicnn command on small subsets."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minicnn import cli

ROOT = Path(__file__).resolve().parents[1]


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MINICNN_DATA", raising=False)


def test_train_mnist_example_one_epoch_on_a_subset(tmp_path, capsys):
    out = tmp_path / "run"
    code = load_example("train_mnist").main(["--epochs", "1", "--limit", "600", "--batch-size", "64",
                                              "--quiet", "--out", str(out)])
    assert code == 0
    assert "test accuracy:" in capsys.readouterr().out
    for name in ("model.safetensors", "history.json", "curves.png", "results.json",
                 "checkpoint.safetensors"):
        assert (out / name).stat().st_size > 0, name
    results = json.loads((out / "results.json").read_text())
    assert results["epochs"] == 1 and 0.25 < results["test_accuracy"] <= 1.0  # chance: 0.1
    assert results["settings"]["test_shifts"] == 1
    # `minicnn evaluate` gives the one-view score and the one training reported, with shifts
    assert cli.main(["evaluate", str(out / "model.safetensors")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("mnist test set: accuracy") and "(10,000 images)" in lines[0]
    assert lines[1].startswith("  with the test-time shifts of its recipe (1 pixel, 5 views): ")


def make_image_folder(root: Path, per_class=12):
    rng = np.random.default_rng(0)
    for label, colour in enumerate([(250, 20, 20), (20, 20, 250)]):
        folder = root / f"class{label}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(colour, 30, (20, 20, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def test_image_folder_example_and_predict(tmp_path, capsys):
    folder = make_image_folder(tmp_path / "photos")
    out = tmp_path / "run"
    code = load_example("train_image_folder").main([str(folder), "--size", "16", "--epochs", "3",
                                                    "--quiet", "--out", str(out)])
    assert code == 0
    capsys.readouterr()
    image = folder / "class1" / "1.png"
    assert cli.main(["predict", str(out / "model.safetensors"), str(image), "--top", "2"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{image}: class1 ")


def test_cli_train_evaluate_and_errors(tmp_path, capsys):
    out = tmp_path / "digits"
    assert cli.main(["train", "--dataset", "digits", "--epochs", "2", "--quiet", "--out", str(out)]) == 0
    assert cli.main(["evaluate", str(out / "model.safetensors")]) == 0
    assert "digits test set: accuracy" in capsys.readouterr().out
    assert cli.main(["evaluate", str(tmp_path / "missing.safetensors")]) == 2
    assert "model file not found" in capsys.readouterr().err
    (tmp_path / "bad.safetensors").write_bytes(b"not a model")
    assert cli.main(["predict", str(tmp_path / "bad.safetensors"), "x.png"]) == 2
    assert "not a safetensors model file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--dataset", "imagenet"])
    assert exit_info.value.code == 2


def test_cli_help_explains_every_flag(capsys):
    """Every option of every command has a help text, and ``--help`` shows each with it."""
    import argparse

    commands = next(action for action in cli.build_parser()._actions
                    if isinstance(action, argparse._SubParsersAction))
    assert set(commands.choices) >= {"train", "evaluate", "explain", "predict", "bench", "tune"}
    for command, parser in commands.choices.items():
        with pytest.raises(SystemExit) as exit_info:
            cli.main([command, "--help"])
        assert exit_info.value.code == 0
        text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
        for action in parser._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS:
                continue
            assert action.help, f"{command} {action.option_strings[0]} has no help text"
            assert action.option_strings[-1] in text, f"{command} --help omits {action.option_strings}"
            first_words = " ".join(action.help.split()[:3]).replace("%%", "%")
            if "%(" not in first_words:
                assert first_words in text, f"{command} --help omits the help of {action.option_strings}"


def test_every_recipe_builds_its_model_with_its_options():
    from minicnn import models
    from minicnn.recipes import RECIPES

    shapes = {"cifar10": (3, 32, 32), "digits": (1, 8, 8), "folder": (3, 32, 32)}
    datasets = {"mnist-fast": "mnist", "mnist-long": "mnist", "studio-demo": "mnist"}
    for name, recipe in RECIPES.items():
        shape = shapes.get(name, (1, 28, 28))
        net = recipe.check(name).build_model(shape, 10, seed=0)
        assert net.predict(np.zeros((2, *shape), np.float32)).shape == (2, 10)
        assert recipe.build_optimizer(net.parameters()).lr == recipe.lr
        transform = recipe.augmentation(datasets.get(name, name), shape)
        assert (transform is None) == (recipe.augment == 0 and recipe.shift == 0)
    # the fast recipe is shorter than the default, which is shorter and narrower than --long
    names = ("mnist-fast", "mnist", "mnist-long")
    widths = [RECIPES[r].model_options["width"] for r in names]
    epochs = [RECIPES[r].epochs for r in names]
    assert widths[0] <= widths[1] < widths[2] and epochs[0] < epochs[1] < epochs[2]
    assert models.MODELS[RECIPES["cifar10"].model] is models.cifar_vgg


def test_fast_mnist_recipe_and_model_override(tmp_path):
    example = load_example("train_mnist")
    out = tmp_path / "fast"
    assert example.main(["--fast", "--limit", "300", "--quiet", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["model_options"] == {"width": 16, "dropout": 0.0}
    assert results["settings"]["batch_size"] == 64 and results["epochs"] == 1
    from minicnn import load_model

    layers = load_model(out / "model.safetensors").config()["layers"]
    assert [layer["out_channels"] for layer in layers if "out_channels" in layer] == [16, 32, 64]
    with pytest.raises(SystemExit) as exit_info:  # --fast and --long are alternatives
        example.main(["--fast", "--long"])
    assert exit_info.value.code == 2

    # another model than the recipe's is built with its own defaults (no width option)
    from minicnn.recipes import train_classifier

    results = train_classifier("mnist", recipe="mnist-fast", model="reference_cnn", limit=200,
                               verbose=0, out=tmp_path / "reference")
    assert results["settings"]["model_options"] == {}


def test_beautiful_mnist_runs_its_loop_and_learns():
    """The plain-code example (docs/usage.md, quick start): 2 epochs of 20 steps beat chance
    by far; the full run's accuracy is measured, not tested (docs/usage.md)."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "examples" / "beautiful_mnist.py"
    done = subprocess.run([sys.executable, str(script), "--steps", "20"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("epoch")]
    assert [line.split(":")[0] for line in lines] == ["epoch 1", "epoch 2"]
    accuracy = float(lines[-1].split("test accuracy ")[1].split("%")[0])
    assert accuracy > 50.0, done.stdout


def test_train_mnist_promises_what_its_recipes_and_measurements_say():
    """The docstring's lines (epochs, width, accuracy, time) against the recipes the presets run
    and the seeds measured in docs/usage.md: a recipe changed without its figures fails here."""
    import re

    from minicnn.recipes import RECIPES

    doc = load_example("train_mnist").__doc__
    promises = re.findall(r"python examples/train_mnist\.py( --fast| --long)?\s+# (\d+) epochs?, "
                          r"(\d+) wide: >= ([\d.]+)% in ~(\d+) (s|min)", doc)
    assert [p[0] for p in promises] == ["", " --fast", " --long"]
    usage = (ROOT / "docs" / "usage.md").read_text()
    for flag, epochs, width, accuracy, time, unit in promises:
        recipe = RECIPES["mnist" + flag.replace(" --", "-")]
        assert (recipe.epochs, recipe.model_options["width"]) == (int(epochs), int(width)), flag
        row = re.search(r"^\| `python examples/train_mnist\.py" + re.escape(flag) + r"` \| (\d+) \| "
                        r"\*?\*?([\d.%, ]+?)\*?\*?(?: \(seed 0\))? \| ([\d.]+)(?:-([\d.]+))? (s|min) \|",
                        usage, re.M)
        assert row, f"docs/usage.md has no measured row for train_mnist.py{flag}"
        assert int(row[1]) == recipe.epochs, flag
        measured = [float(a.rstrip("%")) for a in row[2].split(", ")]
        assert min(measured) >= float(accuracy), (flag, measured, accuracy)
        scale = 60 if unit == "min" else 1
        slowest = float(row[4] or row[3]) * (60 if row[5] == "min" else 1)
        assert 0.75 * int(time) * scale <= slowest <= 1.15 * int(time) * scale, (flag, slowest)
    default = RECIPES["mnist"]
    assert default.test_shifts == 1 and default.augment  # what the docstring says
