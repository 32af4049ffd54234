"""Report figures and the evaluation report (files, metrics, one self-contained HTML page)."""

import base64
import json
import re

import numpy as np
import pytest
from PIL import Image

import minicnn as mc
from minicnn import metrics, plots
from minicnn.cli import main as cli_main
from minicnn.data import Normalize, load_dataset
from minicnn.data.prepared import as_seen
from minicnn.data.splits import split_record
from minicnn.layers import Conv2D, Dense, Flatten, GlobalAvgPool2D, MaxPool2D, ReLU
from minicnn.report import write_report


def png_size(path):
    assert path.stat().st_size > 1000, f"{path.name} is (nearly) empty"
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


# -- every figure: a real PNG of the requested pixel size -------------------------------------------

RNG = np.random.default_rng(0)
IMAGES = RNG.random((6, 1, 8, 8))
PROBS = RNG.dirichlet(np.ones(3), size=6)
LABELS = np.array([0, 1, 2, 0, 1, 2])
NAMES = ["zero", "one", "two"]

FIGURES = {
    "confusion": lambda path, **kw: plots.plot_confusion_matrix(
        np.array([[5, 1, 0], [2, 7, 1], [0, 0, 9]]), NAMES, path, **kw),
    "mistakes": lambda path, **kw: plots.plot_mistakes(IMAGES, LABELS, PROBS, NAMES, path, **kw),
    "per_class": lambda path, **kw: plots.plot_per_class_metrics(
        [0.9, 0.5, 0.0], [0.8, 0.6, 0.0], [0.85, 0.55, 0.0], NAMES, path, support=[10, 9, 0], **kw),
    "filters_grey": lambda path, **kw: plots.plot_filters(RNG.normal(size=(10, 1, 3, 3)), path,
                                                          **kw),
    "filters_rgb": lambda path, **kw: plots.plot_filters(RNG.normal(size=(5, 3, 5, 5)), path, **kw),
    "feature_maps": lambda path, **kw: plots.plot_feature_maps(RNG.random((12, 4, 4)), path,
                                                               image=IMAGES[0], **kw),
    "heatmaps": lambda path, **kw: plots.plot_heatmaps(
        RNG.random((5, 3, 8, 8)), RNG.random((5, 8, 8)), path, titles=list("abcde"), **kw),
}


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_every_figure_writes_a_png_of_the_requested_size(tmp_path, name):
    path = FIGURES[name](tmp_path / f"{name}.png", figsize=(6, 4), dpi=50)
    assert png_size(path) == (300, 200)


def test_figures_handle_edge_cases(tmp_path):
    # no mistakes at all, and a model that never predicts one class
    perfect = np.eye(3)[LABELS]
    assert png_size(plots.plot_mistakes(IMAGES, LABELS, perfect, NAMES, tmp_path / "m.png",
                                        figsize=(4, 3), dpi=50)) == (200, 150)
    empty = np.zeros((3, 3), dtype=np.int64)
    assert png_size(plots.plot_confusion_matrix(empty, None, tmp_path / "c.png", figsize=(4, 3),
                                                dpi=50)) == (200, 150)
    with pytest.raises(ValueError, match="heatmaps of shape"):
        plots.plot_heatmaps(IMAGES, np.zeros((6, 4, 4)), tmp_path / "h.png")
    history = mc.History([{"epoch": 1, "train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.2,
                           "val_acc": 0.4}, {"epoch": 2, "train_loss": 0.5, "train_acc": 0.8,
                                             "val_loss": 0.7, "val_acc": 0.7}])
    png_size(plots.plot_history(history, tmp_path / "curves.png"))


# -- the report on a real (small) model ------------------------------------------------------------

EXPECTED_FILES = {
    "metrics.json", "classification_report.txt", "confusion_matrix.png", "per_class_metrics.png",
    "mistakes.png", "gradcam.png", "gradcam_mistakes.png", "cam.png", "saliency.png",
    "filters.png", "feature_maps.png", "curves.png", "report.html",
}


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A small GlobalAvgPool2D network trained on the 8x8 digits, saved like `minicnn train`
    does (normalization in the metadata, history.json beside the model file), then explained
    with `minicnn explain`."""
    folder = tmp_path_factory.mktemp("run")
    (x_train, y_train), (x_test, y_test), names = load_dataset("digits")
    normalize = Normalize.fit(x_train)
    model = mc.Sequential([Conv2D(1, 8, 3, padding=1), ReLU(), Conv2D(8, 16, 3, padding=1),
                           ReLU(), GlobalAvgPool2D(), Dense(16, 10)], seed=0,
                          input_shape=(1, 8, 8))
    model.metadata = {"class_names": names, "dataset": "digits", "input_shape": [1, 8, 8],
                      "normalization": {"mean": normalize.mean.tolist(),
                                        "std": normalize.std.tolist()},
                      "split": split_record("digits", None, 0, x_test, y_test)}
    history = mc.fit(model, mc.losses.SoftmaxCrossEntropy(),
                     mc.optim.Adam(model.parameters(), lr=1e-2),
                     (normalize(x_train, None), y_train), val=(normalize(x_test, None), y_test),
                     epochs=3, batch_size=32, verbose=0)
    model.save(folder / "model.safetensors")
    history.save(folder / "history.json")
    out = folder / "report"
    assert cli_main(["explain", str(folder / "model.safetensors"), "--dataset", "digits",
                     "--out", str(out), "--quiet"]) == 0
    return {"model": model, "x_test": normalize(x_test, None), "raw_test": x_test,
            "y_test": y_test, "names": names, "out": out, "folder": folder}


def test_report_writes_every_file(digits_run):
    out = digits_run["out"]
    assert {p.name for p in out.iterdir()} == EXPECTED_FILES
    for png in out.glob("*.png"):
        png_size(png)


def test_report_metrics_match_the_model(digits_run):
    out, model = digits_run["out"], digits_run["model"]
    summary = json.loads((out / "metrics.json").read_text())
    probs = model.predict(digits_run["x_test"])
    expected = metrics.summarize(digits_run["y_test"], probs, digits_run["names"])
    assert summary["dataset"] == "digits" and summary["model_file"].endswith("model.safetensors")
    for key in ("accuracy", "num_samples", "confusion_matrix", "per_class", "macro_avg",
                "top_k_accuracy", "most_confused"):
        assert summary[key] == expected[key]
    scores = mc.evaluate(model, mc.losses.SoftmaxCrossEntropy(), digits_run["x_test"],
                         digits_run["y_test"])
    assert summary["accuracy"] == pytest.approx(scores["acc"]) and summary["accuracy"] > 0.5
    text = (out / "classification_report.txt").read_text()
    assert metrics.classification_report(digits_run["y_test"], probs.argmax(axis=1),
                                         digits_run["names"]) in text


def test_report_html_is_self_contained_and_shows_every_image(digits_run):
    out = digits_run["out"]
    page = (out / "report.html").read_text()
    for png in out.glob("*.png"):
        assert base64.b64encode(png.read_bytes()).decode() in page, f"{png.name} not embedded"
    references = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", page, flags=re.I)
    assert len(references) == len(list(out.glob("*.png")))
    assert all(ref.startswith("data:image/png;base64,") for ref in references)
    assert not re.search(r"url\(|@import|https?://|file:|<link|<script", page, flags=re.I)
    assert str(digits_run["folder"]) not in page  # no file paths
    # the content a newcomer needs
    for text in ("Strengths and weaknesses", "Confusion matrix", "Grad-CAM", "CAM",
                 "Training history", "GlobalAvgPool2D", "macro F1", "parameters"):
        assert text in page
    assert page.count("<tr>") >= 10 + 3  # per-class table rows and the history table
    # every figure has its caption (the template's words, found by the figure's name)
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", page, flags=re.S)
    assert len(captions) == len(list(out.glob("*.png"))) and all(len(c) > 60 for c in captions)


def test_display_images_undo_the_normalization(digits_run):
    shown = as_seen(digits_run["x_test"][:5], digits_run["model"].metadata)
    np.testing.assert_allclose(shown, digits_run["raw_test"][:5], atol=1e-5)


@pytest.mark.filterwarnings("error")
def test_report_of_other_models_and_without_history(tmp_path):
    """No GlobalAvgPool2D -> Dense: no cam.png; no conv at all: saliency only; untrained
    models that never predict some classes must not warn."""
    (_, _), (x, y), names = load_dataset("digits")
    x, y = x[:40], y[:40]
    flat = mc.Sequential([Conv2D(1, 4, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(),
                          Dense(4 * 4 * 4, 10)], seed=0)
    dense = mc.Sequential([Flatten(), Dense(64, 10)], seed=0)
    for model, missing in ((flat, {"cam.png"}),
                           (dense, {"cam.png", "gradcam.png", "gradcam_mistakes.png",
                                    "filters.png", "feature_maps.png"})):
        out = tmp_path / type(model.layers[0]).__name__
        result = write_report(model, x, y, names, out, verbose=0)
        written = {p.name for p in out.iterdir()}
        assert written == EXPECTED_FILES - missing - {"curves.png"}
        assert {p.name for p in result["files"]} == written
        assert "No training history found" in result["html"].read_text()


def test_strings_from_the_data_are_escaped_in_the_page_and_drawn_literally(tmp_path):
    """Class names come from folder names: markup in them is shown, never run, and matplotlib's
    $...$ math syntax in them is drawn as text, not parsed."""
    (_, _), (x, y), _ = load_dataset("digits")
    x, y = x[:60], y[:60] % 3
    hostile = ["<script>alert('x')</script>", 'a & b "quoted"', "$\\frac{1}{$ price"]
    model = mc.Sequential([Conv2D(1, 4, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(),
                           Dense(4 * 4 * 4, 3)], seed=0)
    result = write_report(model, x, y, hostile, tmp_path, dataset="<b>folder</b>", verbose=0)
    page = result["html"].read_text()
    assert "<script>" not in page and "<b>folder</b>" not in page
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page
    assert "a &amp; b &#34;quoted&#34;" in page
    assert "&lt;b&gt;folder&lt;/b&gt;" in page
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["class_names"] == hostile
