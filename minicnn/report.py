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
  references: it can be mailed or attached to an issue as it is.

Every file is written atomically. The images are un-normalized for display with the model's
``metadata["normalization"]`` (mean/std), when present.
"""

from __future__ import annotations

import base64
import html
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import interpret, metrics, plots
from .atomic import atomic_write_bytes
from .callbacks import History
from .diagnostics import gradient_flow_warnings
from .layers import Conv2D

__all__ = ["write_report"]


# -- inputs -------------------------------------------------------------------------------------

def _display_images(model, x) -> np.ndarray:
    """Images as a person sees them: the model's normalization undone, clipped to [0, 1]."""
    x = np.asarray(x, dtype=np.float64)
    norm = (model.metadata or {}).get("normalization")
    if norm:
        mean = np.asarray(norm["mean"], dtype=np.float64).reshape(1, -1, 1, 1)
        std = np.asarray(norm["std"], dtype=np.float64).reshape(1, -1, 1, 1)
        x = x * std + mean
    elif x.size and (x.min() < 0 or x.max() > 1):  # unknown scaling: stretch each image
        low = x.min(axis=(1, 2, 3), keepdims=True)
        span = x.max(axis=(1, 2, 3), keepdims=True) - low
        x = (x - low) / np.where(span > 0, span, 1)
    return np.clip(x, 0.0, 1.0)


def _load_history(history, model_path):
    """A History from an object, a dict, a path, or history.json beside the model file."""
    if history is None and model_path is not None:
        candidate = Path(model_path).parent / "history.json"
        history = candidate if candidate.is_file() else None
    if history is None or isinstance(history, History):
        return history
    if isinstance(history, (str, Path)):
        return History.load(history)
    if isinstance(history, dict):
        return History(history.get("epochs", []), history.get("diagnostics"))
    return History(list(history))


def _example_per_class(y_true, y_pred, num_classes: int, limit: int = 16) -> np.ndarray:
    """One test image per class (up to ``limit`` classes): the first correctly classified one,
    else (a class the model always gets wrong) the first one of the class."""
    picks = []
    for c in range(num_classes):
        members = np.flatnonzero(y_true == c)
        hits = members[y_pred[members] == c]
        if members.size:
            picks.append(int(hits[0] if hits.size else members[0]))
        if len(picks) == limit:
            break
    return np.asarray(picks, dtype=np.int64)


# -- HTML ---------------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
.muted { color: #666; }
.cards { display: flex; flex-wrap: wrap; gap: 0.8em; margin: 1em 0; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 0.6em 1em; min-width: 9em; }
.card .value { font-size: 1.5em; font-weight: 600; }
.card .label { color: #666; font-size: 0.85em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th { background: #f4f4f4; }
td.name, th.name { text-align: left; }
tr.weak td { background: #fff1f0; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
"""


def _esc(value) -> str:
    return html.escape(str(value))


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _figure_html(png_path: Path, caption: str) -> str:
    data = base64.b64encode(png_path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{_esc(png_path.name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{caption}</figcaption></figure>")


def _findings(summary: dict) -> list[str]:
    """Plain-language strengths and weaknesses, from the numbers."""
    per_class = summary["per_class"]
    by_f1 = sorted(per_class, key=lambda c: c["f1"])
    items = []
    best = by_f1[::-1][:3]
    items.append("Best recognized: " + ", ".join(
        f"<b>{_esc(c['name'])}</b> (F1 {c['f1']:.3f})" for c in best) + ".")
    for c in by_f1[:3]:
        if c["support"] == 0:
            items.append(f"Class <b>{_esc(c['name'])}</b> has no test images: its recall and F1 "
                         "are undefined and reported as 0.")
            continue
        if c["precision"] < c["recall"]:
            why = (f"its precision is the weak side ({c['precision']:.3f}): other classes are "
                   f"often predicted as {_esc(c['name'])}")
        else:
            why = (f"its recall is the weak side ({c['recall']:.3f}): "
                   f"{c['support'] - round(c['recall'] * c['support']):,} of its "
                   f"{c['support']:,} images were given another class")
        items.append(f"Weaker: <b>{_esc(c['name'])}</b> (F1 {c['f1']:.3f}); {why}.")
    never = [c["name"] for c in per_class if c["predicted"] == 0]
    if never:
        items.append("Never predicted: " + ", ".join(f"<b>{_esc(n)}</b>" for n in never) +
                     " (precision reported as 0).")
    pairs = summary["most_confused"][:5]
    if pairs:
        items.append("Most frequent confusions: " + "; ".join(
            f"{_esc(p['true'])} &rarr; {_esc(p['predicted'])} ({p['count']}, "
            f"{_pct(p['fraction_of_true'])} of the {_esc(p['true'])} images)" for p in pairs) + ".")
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


def _per_class_table(summary: dict) -> str:
    weakest = {c["name"] for c in sorted(summary["per_class"], key=lambda c: c["f1"])[:3]}
    rows = ["<tr><th class='name'>class</th><th>precision</th><th>recall</th><th>F1</th>"
            "<th>support</th><th>predicted</th></tr>"]
    for c in summary["per_class"]:
        css = " class='weak'" if c["name"] in weakest else ""
        rows.append(f"<tr{css}><td class='name'>{_esc(c['name'])}</td><td>{c['precision']:.4f}"
                    f"</td><td>{c['recall']:.4f}</td><td>{c['f1']:.4f}</td>"
                    f"<td>{c['support']:,}</td><td>{c['predicted']:,}</td></tr>")
    for key, label in (("macro_avg", "macro average"), ("weighted_avg", "weighted average")):
        avg = summary[key]
        rows.append(f"<tr><th class='name'>{label}</th><th>{avg['precision']:.4f}</th>"
                    f"<th>{avg['recall']:.4f}</th><th>{avg['f1']:.4f}</th>"
                    f"<th>{summary['num_samples']:,}</th><th></th></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _history_table(history) -> str:
    columns = [("epoch", "epoch", "{}"), ("train_loss", "train loss", "{:.4f}"),
               ("train_acc", "train acc", "{:.2%}")]
    for prefix in ("val", "test"):
        if any(v is not None for v in history[f"{prefix}_loss"]):
            columns += [(f"{prefix}_loss", f"{prefix} loss", "{:.4f}"),
                        (f"{prefix}_acc", f"{prefix} acc", "{:.2%}")]
    columns += [("lr", "last lr", "{:.2e}"), ("time_s", "time (s)", "{:.1f}")]
    head = "".join(f"<th>{label}</th>" for _, label, _ in columns)
    body = []
    for record in history.epochs:
        cells = []
        for key, _, fmt in columns:
            value = record.get(key)
            cells.append(f"<td>{'' if value is None else _esc(fmt.format(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _html(title: str, summary: dict, sections: list[tuple[str, str]], model_text: str,
          subtitle: str) -> str:
    cards = [("accuracy", _pct(summary["accuracy"])),
             ("macro F1", f"{summary['macro_avg']['f1']:.4f}"),
             ("weighted F1", f"{summary['weighted_avg']['f1']:.4f}")]
    cards += [(f"top-{k} accuracy", _pct(v)) for k, v in summary["top_k_accuracy"].items()
              if k != "1"][:1]
    cards += [("errors", f"{summary['confidence']['num_wrong']:,} / {summary['num_samples']:,}"),
              ("log loss", f"{summary['log_loss']:.4f}")]
    card_html = "".join(f"<div class='card'><div class='value'>{_esc(v)}</div>"
                        f"<div class='label'>{_esc(k)}</div></div>" for k, v in cards)
    findings = "".join(f"<li>{item}</li>" for item in _findings(summary))
    body = "".join(f"<h2>{_esc(heading)}</h2>{content}" for heading, content in sections)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_esc(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{_esc(title)}</h1>
<p class="muted">{subtitle}</p>
<div class="cards">{card_html}</div>
<h2>Strengths and weaknesses</h2>
<ul>{findings}</ul>
{body}
<h2>The model</h2>
<pre>{_esc(model_text)}</pre>
</body>
</html>
"""


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
        return _display_images(self.model, self.x[indices])

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


def _class_names(class_names, model, num_classes: int) -> list[str]:
    if class_names is None:
        class_names = (model.metadata or {}).get("class_names")
    if class_names is None:
        return [str(i) for i in range(num_classes)]
    return [str(c) for c in class_names]


def _write_metrics(ev: _Evaluation, summary: dict, model_path) -> None:
    atomic_write_bytes(ev.written(ev.out / "metrics.json"), json.dumps(summary, indent=2).encode())
    report_text = (f"{ev.where}: {len(ev.y):,} images"
                   + (f", model {model_path}" if model_path else "") + "\n\n"
                   + metrics.classification_report(ev.y, ev.y_pred, ev.names) + "\n")
    atomic_write_bytes(ev.written(ev.out / "classification_report.txt"), report_text.encode())


def _results_sections(ev: _Evaluation, summary: dict, mistakes) -> list[tuple[str, str]]:
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
        ("Per-class results", _per_class_table(summary) + _figure_html(
            bars_png, "<b>Precision</b>: of the images predicted as the class, the share that "
            "belong to it. <b>Recall</b>: of the images of the class, the share found. "
            "<b>F1</b>: their harmonic mean. Macro averages weigh each class equally; weighted "
            "averages weigh them by support (their number of test images). The three weakest "
            "classes are shaded.")),
        ("Confusion matrix", _figure_html(
            cm_png, "Rows are the true classes, columns the predictions; each cell shows a "
            "count. The colour is the share of the row, so the diagonal is each class's recall "
            "and a dark cell off the diagonal is a frequent confusion.")),
        ("The most confident mistakes", _figure_html(
            mistakes_png, "The misclassified images to which the model gave the highest "
            "probability, with the true class, the prediction and that probability. Confident "
            "mistakes are often mislabelled or genuinely ambiguous images; a recurring pattern "
            "points at a blind spot of the model.")),
    ]


def _has_conv(model) -> bool:
    try:
        interpret.default_cam_layer(model)
        return True
    except ValueError:  # no convolution: no feature maps, filters or Grad-CAM, only saliency
        return False


def _class_activation_figures(ev: _Evaluation, examples, wrong) -> list[str]:
    """Grad-CAM on one image per class and on the worst mistakes; CAM where the network allows."""
    layer = interpret.default_cam_layer(ev.model)
    described = f"layer {layer}, {ev.model.layers[layer].describe()}"
    png = ev.heatmaps(examples, interpret.grad_cam(ev.model, ev.x[examples]).heatmaps,
                      "gradcam.png", f"Grad-CAM of the predicted class ({described})")
    figures = [_figure_html(
        png, "<b>Grad-CAM</b> on one test image per class (correctly classified where there "
        "is one): red marks the regions whose features raised the score of the predicted class "
        f"the most (the gradient-weighted feature maps of {_esc(described)}, upsampled to the "
        "image).")]
    if len(wrong):
        png = ev.heatmaps(wrong, interpret.grad_cam(ev.model, ev.x[wrong]).heatmaps,
                          "gradcam_mistakes.png", "Grad-CAM of the wrong prediction")
        figures.append(_figure_html(png, "Grad-CAM of the (wrong) predicted class on the most "
                                    "confident mistakes (true &rarr; predicted): the part of "
                                    "the image that misled the model."))
    try:
        cam_result = interpret.cam(ev.model, ev.x[examples])
    except ValueError:
        return figures  # CAM needs GlobalAvgPool2D -> Dense; Grad-CAM covers the rest
    png = ev.heatmaps(examples, cam_result.heatmaps, "cam.png", "CAM of the predicted class")
    figures.append(_figure_html(png, "<b>CAM</b>: the last feature maps weighted by the "
                                "classifier's weights of the predicted class (exact for a "
                                "network ending in global average pooling and one dense "
                                "layer)."))
    return figures


def _where_the_model_looks(ev: _Evaluation, examples, wrong) -> list[tuple[str, str]]:
    if not len(examples):
        return []
    look = _class_activation_figures(ev, examples, wrong) if _has_conv(ev.model) else []
    png = ev.heatmaps(examples, interpret.saliency(ev.model, ev.x[examples]), "saliency.png",
                      "Saliency: |d class score / d pixel|", cmap="hot", alpha=0.8)
    look.append(_figure_html(png, "<b>Saliency</b>: the pixels whose change would move the "
                             "class score most (the gradient of the score with respect to the "
                             "input, largest over the colour channels). Sharper but noisier "
                             "than Grad-CAM."))
    intro = ("<p>Heatmaps over test images, for the class the model predicted. Heat on the "
             "object itself means the model uses the right evidence; heat on empty background "
             "means it relies on what is <i>not</i> there (which can be legitimate: a 1 is a 1 "
             "partly because its sides are empty) or on artefacts.</p>")
    return [("Where the model looks", intro + "".join(look))]


def _first_layer_section(ev: _Evaluation, examples) -> list[tuple[str, str]]:
    """The first convolution's filters and the first block's feature maps for one image."""
    model = ev.model
    if not _has_conv(model):
        return []
    inside = []
    first = next((i for i, layer in enumerate(model.layers) if isinstance(layer, Conv2D)), None)
    if first is not None:
        conv = model.layers[first]
        png = ev.written(plots.plot_filters(
            np.asarray(conv.weight), ev.out / "filters.png",
            title=f"Filters of the first convolution (layer {first}, {conv.describe()})"))
        inside.append(_figure_html(png, "The first layer's filters: each is a small pattern "
                                   "(edges, strokes, blobs) matched at every position of the "
                                   "image."))
    block = interpret.conv_block_output(model, 0)
    index = int(examples[0]) if len(examples) else 0
    maps = interpret.feature_maps(model, ev.x[index:index + 1], block)[0]
    png = ev.written(plots.plot_feature_maps(
        maps, ev.out / "feature_maps.png", image=ev.display([index])[0],
        title=f"Feature maps of layer {block} ({model.layers[block].describe()}) for one "
              f"test image"))
    inside.append(_figure_html(png, "The output of the first convolutional block for one test "
                               "image: each channel is the image filtered by one filter (after "
                               "normalization and ReLU); bright where its pattern is found."))
    return [("What the first layer computes", "".join(inside))]


def _history_section(ev: _Evaluation, history) -> tuple[str, str]:
    if history is None or not len(history):
        return ("Training history", "<p class='muted'>No training history found (history.json "
                "beside the model file).</p>")
    png = ev.written(plots.plot_history(history, ev.out / "curves.png"))
    return ("Training history", _history_table(history) + _figure_html(
        png, "Loss and accuracy per epoch. A training accuracy well above the validation/test "
        "accuracy (a training loss well below) means over-fitting; curves still improving at "
        "the end mean the model would gain from more epochs. (Dropout, augmentation and label "
        "smoothing act in training only, so there the training numbers can be the worse "
        "ones.)") + _gradient_flow_html(ev, history))


def _gradient_flow_html(ev: _Evaluation, history) -> str:
    if not history.diagnostics:
        return ""
    png = ev.written(plots.plot_gradient_flow(history.diagnostics, ev.out / "gradient_flow.png"))
    warnings = gradient_flow_warnings(history.diagnostics)
    verdict = ("<ul>" + "".join(f"<li>{_esc(w)}</li>" for w in warnings) + "</ul>" if warnings
               else "<p>Gradient flow: nothing alarming (no vanishing or exploding gradients, "
                    "no dead ReLUs, no oversized steps).</p>")
    return verdict + _figure_html(
        png, f"Gradient flow, per layer, over {len(history.diagnostics)} recorded training steps "
        "(darker lines: layers nearer the input). Healthy: gradient norms of similar size "
        "across layers, update/weight ratios near 1e-3 (dashed), activation spreads that "
        "neither collapse to 0 nor blow up, few dead ReLUs.")


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
    names = _class_names(class_names, model, num_classes)
    where = f"{dataset} test set" if dataset else "test set"

    log(f"report: classifying {len(x_test):,} images ...")
    y_test = np.asarray(y_test)
    ev = _Evaluation(model, x_test, y_test, model.predict(x_test), names, out, where)
    summary = {"dataset": dataset, "model_file": str(model_path) if model_path else None,
               **metrics.summarize(y_test, ev.probs, names)}
    _write_metrics(ev, summary, model_path)

    log("report: drawing figures ...")
    mistakes = metrics.confident_mistakes(y_test, ev.probs, 16)
    examples = _example_per_class(y_test, ev.y_pred, num_classes)
    sections = (_results_sections(ev, summary, mistakes)
                + _where_the_model_looks(ev, examples, mistakes[:8])
                + _first_layer_section(ev, examples)
                + [_history_section(ev, _load_history(history, model_path))])
    written_names = ", ".join(f"<code>{_esc(p.name)}</code>" for p in ev.files)
    sections.append(("Files", f"<p>Beside this page: {written_names} and <code>report.html"
                     "</code> (this page, self-contained).</p>"))
    source = f"model <code>{_esc(Path(model_path).name)}</code>, " if model_path else ""
    subtitle = (f"{source}{_esc(where)}: {len(y_test):,} images, {num_classes} classes; "
                f"written {time.strftime('%Y-%m-%d %H:%M')} by minicnn")
    title = "Model report" + (f": {dataset}" if dataset else "")
    page = _html(title, summary, sections, _model_text(model, x_test.shape[1:]), subtitle)
    html_path = ev.written(out / "report.html")
    atomic_write_bytes(html_path, page.encode("utf-8"))
    log(f"report: accuracy {_pct(summary['accuracy'])}, macro F1 "
        f"{summary['macro_avg']['f1']:.4f}; {len(ev.files)} files in {out} "
        f"({time.perf_counter() - start:.1f} s); open {html_path}")
    return {"html": html_path, "files": ev.files, "metrics": summary}
