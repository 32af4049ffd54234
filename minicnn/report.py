"""An evaluation report: metrics, figures and one self-contained HTML page.

:func:`write_report` is what ``minicnn evaluate MODEL --out DIR`` (and ``minicnn explain``,
``examples/explain_mnist.py``) call. It writes into ``out_dir``:

- ``metrics.json`` — every number (:func:`minicnn.metrics.summarize`);
- ``classification_report.txt`` — scikit-learn's per-class table;
- PNG figures: ``confusion_matrix.png``, ``per_class_metrics.png``, ``mistakes.png``,
  ``gradcam.png``, ``gradcam_mistakes.png``, ``saliency.png``, ``filters.png``,
  ``feature_maps.png``, ``cam.png`` (networks ending in GlobalAvgPool2D -> Dense only) and
  ``curves.png`` (when a training history is known);
- ``report.html`` — one file, images embedded as base64 ``data:`` URIs, no outside
  references: it can be mailed or attached to an issue as it is. It is rendered from
  ``minicnn/templates/report.html`` by Jinja2 with autoescaping: every string reaches the page
  escaped; the captions of the figures are written in the template (by the figure's name),
  and the findings computed here are marked safe on purpose (``markupsafe.Markup``, whose
  ``format`` escapes what is put into them).

Every file is written atomically. The images are un-normalized for display with the model's
``metadata["normalization"]`` (mean/std), when present.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from markupsafe import Markup

from . import interpret, metrics, plots
from .atomic import atomic_write_bytes
from .data.prepared import as_seen, class_names_of
from .diagnostics import gradient_flow_warnings
from .history import History

__all__ = ["write_report"]


# -- inputs -------------------------------------------------------------------------------------

def _load_history(history, model_path):
    """A History from an object, a dict, a path, or history.json beside the model file."""
    if history is None and model_path is not None:
        candidate = Path(model_path).parent / "history.json"
        history = candidate if candidate.is_file() else None
    return History.of(history)


# -- HTML ---------------------------------------------------------------------------------------

def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _figure(png_path: Path, words: str, **values) -> dict:
    """A figure block: the PNG embedded, its caption the template's ``words`` (by name), with
    ``values`` put into them."""
    return {"kind": "figure", "alt": png_path.name, "words": words, "values": values,
            "data": base64.b64encode(png_path.read_bytes()).decode("ascii")}


def _text(words: str, muted: bool = False) -> dict:
    """A paragraph of the template's ``words`` (by name)."""
    return {"kind": "text", "words": words, "values": {}, "muted": muted}


def _findings(summary: dict) -> list[Markup]:
    """Plain-language strengths and weaknesses, from the numbers."""
    per_class = summary["per_class"]
    by_f1 = sorted(per_class, key=lambda c: c["f1"])
    items = [Markup("Best recognized: {}.").format(Markup(", ").join(
        Markup("<b>{}</b> (F1 {:.3f})").format(c["name"], c["f1"]) for c in by_f1[::-1][:3]))]
    for c in by_f1[:3]:
        if c["support"] == 0:
            items.append(Markup("Class <b>{}</b> has no test images: its recall and F1 are "
                                "undefined and reported as 0.").format(c["name"]))
            continue
        if c["precision"] < c["recall"]:
            why = (f"its precision is the weak side ({c['precision']:.3f}): other classes are "
                   f"often predicted as {c['name']}")
        else:
            why = (f"its recall is the weak side ({c['recall']:.3f}): "
                   f"{c['support'] - round(c['recall'] * c['support']):,} of its "
                   f"{c['support']:,} images were given another class")
        items.append(Markup("Weaker: <b>{}</b> (F1 {:.3f}); {}.").format(c["name"], c["f1"], why))
    never = [c["name"] for c in per_class if c["predicted"] == 0]
    if never:
        items.append(Markup("Never predicted: {} (precision reported as 0).").format(
            Markup(", ").join(Markup("<b>{}</b>").format(name) for name in never)))
    pairs = summary["most_confused"][:5]
    if pairs:
        items.append("Most frequent confusions: " + "; ".join(
            f"{p['true']} \N{RIGHTWARDS ARROW} {p['predicted']} ({p['count']}, "
            f"{_pct(p['fraction_of_true'])} of the {p['true']} images)" for p in pairs) + ".")
    conf = summary["confidence"]
    if conf["wrong"] is not None and conf["correct"] is not None:
        note = (" It is often sure of its mistakes: look at the mistakes below for mislabelled "
                "or ambiguous images." if conf["wrong"] > 0.8 else
                " Its mistakes are mostly hesitant: a low predicted probability is a useful "
                "warning sign.")
        items.append(f"Mean probability of the predicted class: {_pct(conf['correct'])} when "
                     f"right, {_pct(conf['wrong'])} when wrong ({conf['num_wrong']:,} "
                     f"mistakes).{note}")
    return items


def _per_class_table(summary: dict) -> dict:
    weakest = {c["name"] for c in sorted(summary["per_class"], key=lambda c: c["f1"])[:3]}
    rows = [{"cells": [c["name"], f"{c['precision']:.4f}", f"{c['recall']:.4f}", f"{c['f1']:.4f}",
                       f"{c['support']:,}", f"{c['predicted']:,}"],
             "weak": c["name"] in weakest} for c in summary["per_class"]]
    for key, label in (("macro_avg", "macro average"), ("weighted_avg", "weighted average")):
        avg = summary[key]
        rows.append({"header": True, "cells": [
            label, f"{avg['precision']:.4f}", f"{avg['recall']:.4f}", f"{avg['f1']:.4f}",
            f"{summary['num_samples']:,}", ""]})
    return {"kind": "table", "names": True, "rows": rows,
            "head": ["class", "precision", "recall", "F1", "support", "predicted"]}


def _history_table(history) -> dict:
    columns = [("epoch", "epoch", "{}"), ("train_loss", "train loss", "{:.4f}"),
               ("train_acc", "train acc", "{:.2%}")]
    for prefix in ("val", "test"):
        if any(v is not None for v in history[f"{prefix}_loss"]):
            columns += [(f"{prefix}_loss", f"{prefix} loss", "{:.4f}"),
                        (f"{prefix}_acc", f"{prefix} acc", "{:.2%}")]
    columns += [("lr", "last lr", "{:.2e}"), ("time_s", "time (s)", "{:.1f}")]
    rows = [{"cells": ["" if record.get(key) is None else fmt.format(record[key])
                       for key, _, fmt in columns]} for record in history.epochs]
    return {"kind": "table", "head": [label for _, label, _ in columns], "rows": rows}


def _cards(summary: dict) -> list[tuple[str, str]]:
    cards = [("accuracy", _pct(summary["accuracy"])),
             ("macro F1", f"{summary['macro_avg']['f1']:.4f}"),
             ("weighted F1", f"{summary['weighted_avg']['f1']:.4f}")]
    cards += [(f"top-{k} accuracy", _pct(v)) for k, v in summary["top_k_accuracy"].items()
              if k != "1"][:1]
    return cards + [("errors", f"{summary['confidence']['num_wrong']:,} / "
                               f"{summary['num_samples']:,}"),
                    ("log loss", f"{summary['log_loss']:.4f}")]


def _render(**context) -> str:
    import jinja2

    environment = jinja2.Environment(loader=jinja2.PackageLoader("minicnn", "templates"),
                                     autoescape=True, undefined=jinja2.StrictUndefined)
    return environment.get_template("report.html").render(**context)


# -- the report ---------------------------------------------------------------------------------

@dataclass
class _Evaluation:
    """What every section of the report draws from: the model, the test set, its predictions,
    and the list of files written so far."""

    model: object
    x: np.ndarray
    y: np.ndarray
    probs: np.ndarray
    names: list[str]
    out: Path
    where: str
    files: list[Path] = field(default_factory=list)

    @property
    def y_pred(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    def written(self, path) -> Path:
        self.files.append(Path(path))
        return Path(path)

    def display(self, indices) -> np.ndarray:
        return as_seen(self.x[indices], self.model.metadata)

    def labels_for(self, indices) -> list[str]:
        """Titles: the true class (and the probability) where right, true -> predicted where wrong."""
        y, y_pred, names = self.y, self.y_pred, self.names
        return [f"{names[y[i]]} \N{RIGHTWARDS ARROW} {names[y_pred[i]]} "
                f"({self.probs[i, y_pred[i]]:.0%})" if y[i] != y_pred[i] else
                f"{names[y[i]]} ({self.probs[i, y_pred[i]]:.0%})" for i in indices]

    def heatmaps(self, indices, maps, file_name, title, **style) -> Path:
        return self.written(plots.plot_heatmaps(self.display(indices), maps, self.out / file_name,
                                                titles=self.labels_for(indices), title=title,
                                                **style))


def _write_metrics(ev: _Evaluation, summary: dict, model_path) -> None:
    atomic_write_bytes(ev.written(ev.out / "metrics.json"), json.dumps(summary, indent=2).encode())
    report_text = (f"{ev.where}: {len(ev.y):,} images"
                   + (f", model {model_path}" if model_path else "") + "\n\n"
                   + metrics.classification_report(ev.y, ev.y_pred, ev.names) + "\n")
    atomic_write_bytes(ev.written(ev.out / "classification_report.txt"), report_text.encode())


def _results_sections(ev: _Evaluation, summary: dict, mistakes) -> list[tuple[str, list]]:
    """Per-class results, the confusion matrix and the most confident mistakes."""
    cm_png = ev.written(plots.plot_confusion_matrix(
        np.asarray(summary["confusion_matrix"]), ev.names, ev.out / "confusion_matrix.png",
        title=f"Confusion matrix ({ev.where})"))
    pcm = metrics.per_class_metrics(ev.y, ev.y_pred, ev.names)
    bars_png = ev.written(plots.plot_per_class_metrics(
        pcm["precision"], pcm["recall"], pcm["f1"], ev.names, ev.out / "per_class_metrics.png",
        support=pcm["support"]))
    mistakes_png = ev.written(plots.plot_mistakes(
        ev.display(mistakes), ev.y[mistakes], ev.probs[mistakes], ev.names,
        ev.out / "mistakes.png",
        title=f"Most confident mistakes ({len(mistakes)} shown of "
              f"{summary['confidence']['num_wrong']:,} errors in {len(ev.y):,} images)"))
    return [
        ("Per-class results", [_per_class_table(summary), _figure(bars_png, "per_class_metrics")]),
        ("Confusion matrix", [_figure(cm_png, "confusion_matrix")]),
        ("The most confident mistakes", [_figure(mistakes_png, "mistakes")]),
    ]


def _class_activation_figures(ev: _Evaluation, examples, wrong) -> list[dict]:
    """Grad-CAM on one image per class and on the worst mistakes; CAM where the network allows."""
    layer = interpret.default_cam_layer(ev.model)
    described = f"layer {layer}, {ev.model.layers[layer].describe()}"
    png = ev.heatmaps(examples, interpret.grad_cam(ev.model, ev.x[examples]).heatmaps,
                      "gradcam.png", f"Grad-CAM of the predicted class ({described})")
    figures = [_figure(png, "gradcam", layer=described)]
    if len(wrong):
        png = ev.heatmaps(wrong, interpret.grad_cam(ev.model, ev.x[wrong]).heatmaps,
                          "gradcam_mistakes.png", "Grad-CAM of the wrong prediction")
        figures.append(_figure(png, "gradcam_mistakes"))
    try:
        cam_result = interpret.cam(ev.model, ev.x[examples])
    except ValueError:
        return figures  # CAM needs GlobalAvgPool2D -> Dense; Grad-CAM covers the rest
    png = ev.heatmaps(examples, cam_result.heatmaps, "cam.png", "CAM of the predicted class")
    figures.append(_figure(png, "cam"))
    return figures


def _where_the_model_looks(ev: _Evaluation, examples, wrong) -> list[tuple[str, list]]:
    if not len(examples):
        return []
    look = _class_activation_figures(ev, examples, wrong) \
        if interpret.has_convolution(ev.model) else []  # without one: only saliency
    png = ev.heatmaps(examples, interpret.saliency(ev.model, ev.x[examples]), "saliency.png",
                      "Saliency: |d class score / d pixel|", cmap="hot", alpha=0.8)
    look.append(_figure(png, "saliency"))
    intro = _text("where_the_model_looks")
    return [("Where the model looks", [intro, *look])]


def _first_layer_section(ev: _Evaluation, examples) -> list[tuple[str, list]]:
    """The first convolution's filters and the first block's feature maps for one image."""
    model = ev.model
    if not interpret.has_convolution(model):
        return []
    inside = []
    first = interpret.first_filters(model)
    if first is not None:
        conv = model.layers[first]
        png = ev.written(plots.plot_filters(
            np.asarray(conv.weight), ev.out / "filters.png",
            title=f"Filters of the first convolution (layer {first}, {conv.describe()})"))
        inside.append(_figure(png, "filters"))
    block = interpret.conv_block_output(model, 0)
    index = int(examples[0]) if len(examples) else 0
    maps = interpret.feature_maps(model, ev.x[index:index + 1], block)[0]
    png = ev.written(plots.plot_feature_maps(
        maps, ev.out / "feature_maps.png", image=ev.display([index])[0],
        title=f"Feature maps of layer {block} ({model.layers[block].describe()}) for one "
              f"test image"))
    inside.append(_figure(png, "feature_maps"))
    return [("What the first layer computes", inside)]


def _history_section(ev: _Evaluation, history) -> tuple[str, list]:
    if history is None or not len(history):
        return ("Training history", [_text("no_history", muted=True)])
    png = ev.written(plots.plot_history(history, ev.out / "curves.png"))
    return ("Training history", [_history_table(history), _figure(png, "curves"),
                                 *_gradient_flow_blocks(ev, history)])


def _gradient_flow_blocks(ev: _Evaluation, history) -> list[dict]:
    if not history.diagnostics:
        return []
    png = ev.written(plots.plot_gradient_flow(history.diagnostics, ev.out / "gradient_flow.png"))
    warnings = gradient_flow_warnings(history.diagnostics)
    verdict = {"kind": "list", "items": warnings} if warnings else \
        _text("gradient_flow_healthy")
    return [verdict, _figure(png, "gradient_flow", steps=len(history.diagnostics))]


def _model_text(model, input_shape) -> str:
    """The model's summary and the recorded facts about its training data."""
    try:
        text = model.summary(input_shape=tuple(input_shape), print_fn=None)
    except ValueError as err:
        text = f"(summary unavailable: {err})"
    metadata = model.metadata or {}
    details = {k: metadata[k] for k in ("dataset", "input_shape", "normalization", "recipe")
               if k in metadata}
    if details:
        text += "\n\n" + "\n".join(f"{k}: {json.dumps(v)}" for k, v in details.items())
    return text


def write_report(model, x_test, y_test, class_names, out_dir, dataset=None, model_path=None,
                 history=None, verbose: int = 1) -> dict:
    """Evaluate ``model`` on (x_test, y_test) and write metrics, figures and report.html.

    Args:
        x_test: images as the model takes them (already normalized like its training data).
        y_test: integer labels.
        class_names: the dataset's class names (None: the model's metadata, else "0", "1", ..).
        out_dir: folder for the files (created if needed).
        dataset: the dataset's name, for titles.
        model_path: the model file, for titles and to find ``history.json`` beside it.
        history: a :class:`minicnn.History`, its dict, or a history.json path; None looks
            beside ``model_path``.
        verbose: 1 prints progress and where the report is; 0 is silent.

    Returns ``{"html": path of report.html, "files": [every file written], "metrics": the
    metrics.json dict}``.
    """
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log = print if verbose else (lambda *args, **kwargs: None)
    num_classes = model.output_shape(x_test.shape[1:])[0]
    names = class_names_of(model.metadata, num_classes, class_names)
    where = f"{dataset} test set" if dataset else "test set"

    log(f"report: classifying {len(x_test):,} images ...")
    y_test = np.asarray(y_test)
    ev = _Evaluation(model, x_test, y_test, model.predict(x_test), names, out, where)
    summary = {"dataset": dataset, "model_file": str(model_path) if model_path else None,
               **metrics.summarize(y_test, ev.probs, names)}
    _write_metrics(ev, summary, model_path)

    log("report: drawing figures ...")
    mistakes = metrics.confident_mistakes(y_test, ev.probs, 16)
    examples = metrics.example_per_class(y_test, ev.y_pred, num_classes)
    sections = (_results_sections(ev, summary, mistakes)
                + _where_the_model_looks(ev, examples, mistakes[:8])
                + _first_layer_section(ev, examples)
                + [_history_section(ev, _load_history(history, model_path))])
    page = _render(
        title="Model report" + (f": {dataset}" if dataset else ""),
        model_name=Path(model_path).name if model_path else None, where=where,
        num_images=len(y_test), num_classes=num_classes,
        written=time.strftime("%Y-%m-%d %H:%M"), cards=_cards(summary),
        findings=_findings(summary), sections=sections,
        files=[p.name for p in ev.files], model_text=_model_text(model, x_test.shape[1:]))
    html_path = ev.written(out / "report.html")
    atomic_write_bytes(html_path, page.encode("utf-8"))
    log(f"report: accuracy {_pct(summary['accuracy'])}, macro F1 "
        f"{summary['macro_avg']['f1']:.4f}; {len(ev.files)} files in {out} "
        f"({time.perf_counter() - start:.1f} s); open {html_path}")
    return {"html": html_path, "files": ev.files, "metrics": summary}
