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
    for command in ("train", "evaluate", "predict", "bench"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        text = capsys.readouterr().out
        assert text.count("--") >= 2
