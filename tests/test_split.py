"""A model is evaluated on exactly the images held out from its training: the split is part of
the model file, and a split that cannot be drawn again is refused, never scored."""

import json

import numpy as np
from PIL import Image

import minicnn as mc
from minicnn import cli
from minicnn.data import load_dataset
from minicnn.data.splits import held_out_fingerprint, load_test_data


def rows(x):
    return {row.tobytes() for row in x.reshape(len(x), -1)}


def test_evaluate_scores_exactly_the_held_out_images_of_a_non_default_seed(tmp_path, capsys):
    out = tmp_path / "digits"
    assert cli.main(["train", "--dataset", "digits", "--seed", "1", "--epochs", "1", "--quiet",
                     "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    model = mc.load_model(out / "model.safetensors")
    split = model.metadata["split"]
    assert split["seed"] == 1 and split["drawn"] is True

    x_test, y_test, _ = load_test_data("digits", None, model.metadata, verbose=0)
    (x_train, _), (x_held_out, y_held_out), _ = load_dataset("digits", seed=1)
    np.testing.assert_array_equal(x_test, x_held_out)
    np.testing.assert_array_equal(y_test, y_held_out)
    assert not rows(x_test) & rows(x_train)  # not one training image among them
    (_, _), (x_seed0, _), _ = load_dataset("digits", seed=0)
    assert rows(x_seed0) & rows(x_train)  # what the old evaluate scored: partly training images

    capsys.readouterr()
    assert cli.main(["evaluate", str(out / "model.safetensors")]) == 0
    line = capsys.readouterr().out
    assert f"accuracy {results['test_accuracy']:.2%}" in line
    assert f"({len(y_held_out):,} images)" in line


def test_a_model_that_does_not_record_its_split_is_refused(tmp_path, capsys):
    out = tmp_path / "digits"
    assert cli.main(["train", "--dataset", "digits", "--epochs", "1", "--quiet",
                     "--out", str(out)]) == 0
    model = mc.load_model(out / "model.safetensors")
    del model.metadata["split"]
    model.save(tmp_path / "old.safetensors")
    capsys.readouterr()
    assert cli.main(["evaluate", str(tmp_path / "old.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "does not record the train/test split" in err


def make_folder(root, seed=0, per_class=12):
    rng = np.random.default_rng(seed)
    for name in ("circle", "square"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(
                root / name / f"{i}.png")


def test_a_flat_image_folder_is_evaluated_on_its_recorded_split_or_refused(tmp_path, capsys):
    folder = tmp_path / "photos"
    make_folder(folder)
    out = tmp_path / "run"
    assert cli.main(["train", "--image-folder", str(folder), "--image-size", "8", "--seed", "3",
                     "--epochs", "1", "--quiet", "--out", str(out)]) == 0
    model = mc.load_model(out / "model.safetensors")
    x_test, y_test, _ = load_test_data("folder", folder, model.metadata, verbose=0)
    assert held_out_fingerprint(x_test, y_test) == model.metadata["split"]["test_sha256"]
    assert cli.main(["evaluate", str(out / "model.safetensors"), "--image-folder", str(folder),
                     "--quiet"]) == 0

    Image.new("RGB", (8, 8)).save(folder / "circle" / "new.png")  # the folder changed
    capsys.readouterr()
    assert cli.main(["evaluate", str(out / "model.safetensors"), "--image-folder", str(folder),
                     "--quiet"]) == 2
    assert "are not the" in capsys.readouterr().err

    # a folder with its own test/ part is scored as it is, whatever the model's seed
    other = tmp_path / "split"
    make_folder(other / "train", seed=1)
    make_folder(other / "test", seed=2, per_class=3)
    assert cli.main(["evaluate", str(out / "model.safetensors"), "--image-folder", str(other)]) == 0
    assert "(6 images)" in capsys.readouterr().out
