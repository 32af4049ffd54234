"""Figures as files (matplotlib's Agg backend: no window is ever opened).

Training curves (:func:`plot_history`), gradient flow (:func:`plot_gradient_flow`), a tuning
study (:func:`plot_study`) and the figures of an evaluation report: confusion matrix, most
confident mistakes, per-class precision/recall/F1, convolution filters, feature maps and
heatmaps (CAM, Grad-CAM, saliency) over the images.

Images are passed as (N, C, H, W) arrays with values in [0, 1] (un-normalized: what a person
would see); one channel is drawn in grey, three as RGB. Every report figure takes ``figsize``
(inches) and ``dpi`` and is saved at exactly ``figsize * dpi`` pixels; by default the size
follows the content (the number of classes, of images in the grid).
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import numpy as np

from .atomic import atomic_write_bytes


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path, dpi: int = 100, tight: bool = True) -> Path:
    """Render ``fig`` to PNG and write it atomically; closes the figure.

    ``tight=True`` crops the PNG to what is drawn; ``tight=False`` keeps the figure's own size,
    ``figsize * dpi`` pixels (the report figures use a constrained layout instead of cropping).
    """
    plt = _pyplot()
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    finally:
        plt.close(fig)
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def plot_history(history, path) -> Path:
    """Training curves: loss and accuracy per epoch, training and validation."""
    plt = _pyplot()
    epochs = history["epoch"]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_loss.plot(epochs, history["train_loss"], "o-", label="training")
    ax_acc.plot(epochs, history["train_acc"], "o-", label="training")
    for name, label in (("val", "validation"), ("test", "test")):
        if any(v is not None for v in history[f"{name}_loss"]):
            ax_loss.plot(epochs, history[f"{name}_loss"], "s-", label=label)
            ax_acc.plot(epochs, history[f"{name}_acc"], "s-", label=label)
    ax_loss.set(title="Loss", xlabel="epoch", ylabel="cross-entropy")
    ax_acc.set(title="Accuracy", xlabel="epoch", ylabel="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
        if epochs:
            ax.set_xticks(epochs if len(epochs) <= 20 else epochs[:: max(1, len(epochs) // 10)])
    return save_figure(fig, path)


_ACTIVATIONS = ("ReLU", "LeakyReLU", "Sigmoid", "Tanh")


def plot_gradient_flow(diagnostics, path, title: str = "Gradient flow", dpi: int = 100) -> Path:
    """The gradient-flow records of ``fit(..., diagnostics=N)`` over the training steps, one line
    per layer coloured by depth (dark: first layers): ||dL/dW|| and the update/weight ratio of
    the layers with parameters, the spread (std) of the activation layers' outputs and their
    fraction of dead ReLUs."""
    if not diagnostics:
        raise ValueError("plot_gradient_flow: no diagnostics recorded (train with "
                         "fit(..., diagnostics=N) or minicnn train --diagnostics)")
    plt = _pyplot()
    steps = [record["step"] for record in diagnostics]
    layers = diagnostics[0]["layers"]
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.9, len(layers)))
    with_params = [s["layer"] for s in layers if s.get("grad_norm") is not None]
    activations = [s["layer"] for s in layers if s["name"] in _ACTIVATIONS] or \
        [s["layer"] for s in layers]
    relus = [s["layer"] for s in layers if s.get("dead_fraction") is not None]
    panels = [("||dL/dW|| (gradient norm)", "grad_norm", with_params, "log"),
              ("update / weight ratio per step", "update_ratio", with_params, "log"),
              ("activation std", "act_std", activations, "linear"),
              ("dead ReLU fraction", "dead_fraction", relus, "linear")]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    for ax, (panel_title, key, indices, scale) in zip(axes.ravel(), panels):
        for index in indices:
            values = [record["layers"][index].get(key) for record in diagnostics]
            values = [np.nan if v is None else v for v in values]
            ax.plot(steps, values, color=colors[index], marker=".",
                    label=f"{index} {layers[index]['name']}")
        if key == "update_ratio":
            ax.axhline(1e-3, color="grey", linestyle="--", linewidth=0.8)
        if key == "dead_fraction":
            ax.set_ylim(-0.02, 1.02)
        if indices:
            ax.set_yscale(scale)
            ax.legend(fontsize=7, ncol=2)
        else:
            ax.text(0.5, 0.5, "no such layer", ha="center", va="center", transform=ax.transAxes)
        ax.set(title=panel_title, xlabel="training step")
        ax.grid(alpha=0.3)
    fig.suptitle(_literal(title))
    fig.tight_layout()
    return save_figure(fig, path, dpi=dpi)


# -- report figures -------------------------------------------------------------------------------

def _figure(figsize):
    """A figure whose layout engine keeps titles, labels and colorbars inside its own size."""
    plt = _pyplot()
    return plt.figure(figsize=figsize, layout="constrained")


def _grid_shape(count: int, max_cols: int) -> tuple[int, int]:
    cols = max(1, min(count, max_cols))
    return max(1, math.ceil(count / cols)), cols


def _display(image) -> np.ndarray:
    """(C, H, W) in [0, 1] -> what imshow takes: (H, W) for grey, (H, W, 3) for colour."""
    image = np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0)
    if image.ndim == 2:
        return image
    if image.ndim != 3:
        raise ValueError(f"expected an image of shape (C, H, W), got {image.shape}")
    if image.shape[0] == 1:
        return image[0]
    if image.shape[0] == 3:
        return image.transpose(1, 2, 0)
    return image.mean(axis=0)  # other channel counts: their mean, in grey


def _check_images(images, where: str) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"{where}: expected images of shape (N, C, H, W), got {images.shape}")
    return images


def _literal(text) -> str:
    """``text`` as matplotlib should draw it: as is. (A ``$`` would start its math syntax, and a
    class name such as "$5 bill" would then fail to draw.)"""
    return str(text).replace("$", r"\$")


def _names(class_names, count: int) -> list[str]:
    return [str(i) for i in range(count)] if class_names is None else \
        [_literal(c) for c in class_names]


def _hide_axes(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def plot_confusion_matrix(matrix, class_names, path, *, title: str = "Confusion matrix",
                          figsize=None, dpi: int = 100) -> Path:
    """Heatmap of a confusion matrix of counts (rows: true class, columns: predicted class).

    Colours show each row normalized (the share of the true class that went to each
    prediction, so the diagonal is the recall and a bright off-diagonal cell is a frequent
    confusion, whatever the class sizes); each cell is labelled with its count.
    """
    counts = np.asarray(matrix)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"plot_confusion_matrix: expected a square matrix, got {counts.shape}")
    k = counts.shape[0]
    names = _names(class_names, k)
    rows = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, rows, out=np.zeros(counts.shape, dtype=np.float64), where=rows > 0)
    side = min(16.0, max(4.5, 0.55 * k + 2.5))
    fig = _figure(figsize or (side + 1.2, side))
    ax = fig.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class")
    if k <= 30:  # beyond that the numbers no longer fit in the cells
        size = max(5, min(10, 120 // k))
        for i in range(k):
            for j in range(k):
                if counts[i, j]:
                    ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=size,
                            color="white" if shares[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), names, rotation=45 if max(map(len, names)) > 3 else 0,
                  ha="right" if max(map(len, names)) > 3 else "center")
    ax.set_yticks(range(k), names)
    ax.set(xlabel="predicted class", ylabel="true class", title=_literal(title))
    return save_figure(fig, path, dpi=dpi, tight=False)


def plot_mistakes(images, y_true, probs, class_names, path, *, max_images: int = 16,
                  max_cols: int = 8, title: str | None = None, figsize=None,
                  dpi: int = 100) -> Path:
    """A grid of the most confident mistakes: misclassified images, sorted by the probability
    the model gave its wrong answer, each titled with the true class, the prediction and that
    probability. These are the errors to look at first (a mislabelled image, an ambiguous
    one, or a blind spot of the model)."""
    from .metrics import confident_mistakes

    images = _check_images(images, "plot_mistakes")
    probs = np.asarray(probs)
    y_true = np.asarray(y_true)
    order = confident_mistakes(y_true, probs, max_images)
    names = _names(class_names, probs.shape[1])
    n_rows, n_cols = _grid_shape(len(order), max_cols)
    fig = _figure(figsize or (1.7 * n_cols + 0.3, 1.95 * n_rows + 0.5))
    total_wrong = int((probs.argmax(axis=1) != y_true).sum())
    fig.suptitle(_literal(title) if title else
                 f"Most confident mistakes ({len(order)} of {total_wrong} errors in "
                 f"{len(y_true):,} images)")
    if not len(order):
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no mistakes", ha="center", va="center", fontsize=14)
        ax.axis("off")
    for slot, index in enumerate(order):
        ax = fig.add_subplot(n_rows, n_cols, slot + 1)
        ax.imshow(_display(images[index]), cmap="gray", vmin=0, vmax=1)
        predicted = int(probs[index].argmax())
        ax.set_title(f"true {names[int(y_true[index])]}\npred {names[predicted]} "
                     f"({probs[index, predicted]:.0%})", fontsize=9)
        _hide_axes(ax)
    return save_figure(fig, path, dpi=dpi, tight=False)


def plot_per_class_metrics(precision, recall, f1, class_names, path, *, support=None,
                           title: str = "Per-class precision, recall and F1", figsize=None,
                           dpi: int = 100) -> Path:
    """Grouped bars of precision, recall and F1 per class (support under each class name).

    The y axis starts just below the lowest value so that differences between good classes
    (0.97 vs 0.99) stay visible; the axis label says where it starts.
    """
    values = [np.asarray(v, dtype=np.float64) for v in (precision, recall, f1)]
    k = len(values[0])
    names = _names(class_names, k)
    if support is not None:
        names = [f"{name}\n(n={int(n):,})" for name, n in zip(names, support)]
    fig = _figure(figsize or (min(20.0, max(6.0, 0.75 * k + 2)), 4.2))
    ax = fig.add_subplot()
    positions = np.arange(k)
    for offset, (label, series) in zip((-0.27, 0.0, 0.27), zip(("precision", "recall", "F1"), values)):
        ax.bar(positions + offset, series, width=0.27, label=label)
    low = float(min(v.min() for v in values)) if k else 0.0
    bottom = max(0.0, math.floor((low - 0.02) * 50) / 50)
    ax.set_ylim(bottom, 1.0)
    ax.set_xticks(positions, names, fontsize=8 if support is not None else 9)
    ax.set(title=_literal(title), ylabel=f"score (axis starts at {bottom:.2f})")
    ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="outside lower center", ncols=3)
    return save_figure(fig, path, dpi=dpi, tight=False)


def plot_filters(weights, path, *, title: str = "Convolution filters", max_filters: int = 64,
                 max_cols: int = 8, figsize=None, dpi: int = 100) -> Path:
    """A grid of convolution filters, weights (F, C, kh, kw).

    Three-channel filters are drawn in colour, each scaled to [0, 1] on its own. Other filters
    show the mean over their input channels on one diverging scale shared by all of them
    (red positive, blue negative, white zero), with a colorbar: a filter's pattern and its
    strength can be compared at a glance.
    """
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 4:
        raise ValueError(f"plot_filters: expected weights (F, C, kh, kw), got {weights.shape}")
    weights = weights[:max_filters]
    n_rows, n_cols = _grid_shape(len(weights), max_cols)
    fig = _figure(figsize or (1.1 * n_cols + 1.4, 1.1 * n_rows + 0.6))
    fig.suptitle(_literal(title))
    colour = weights.shape[1] == 3
    limit = float(np.abs(weights.mean(axis=1)).max()) or 1.0
    image = None
    axes = []
    for i, w in enumerate(weights):
        ax = fig.add_subplot(n_rows, n_cols, i + 1)
        if colour:
            low, high = w.min(), w.max()
            ax.imshow(((w - low) / (high - low if high > low else 1)).transpose(1, 2, 0))
        else:
            image = ax.imshow(w.mean(axis=0), cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_title(str(i), fontsize=8)
        _hide_axes(ax)
        axes.append(ax)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="weight")
    return save_figure(fig, path, dpi=dpi, tight=False)


def plot_feature_maps(maps, path, *, image=None, title: str = "Feature maps",
                      max_maps: int = 32, max_cols: int = 8, figsize=None,
                      dpi: int = 100) -> Path:
    """The feature maps (F, h, w) of one image at one layer, on one shared colour scale (so
    channels can be compared: a dark map is a filter that found nothing), after the input
    ``image`` (C, H, W) in [0, 1] if given."""
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3:
        raise ValueError(f"plot_feature_maps: expected maps (F, h, w) of one image, got {maps.shape}")
    maps = maps[:max_maps]
    count = len(maps) + (image is not None)
    n_rows, n_cols = _grid_shape(count, max_cols)
    fig = _figure(figsize or (1.3 * n_cols + 1.4, 1.4 * n_rows + 0.6))
    fig.suptitle(_literal(title))
    slot = 1
    if image is not None:
        ax = fig.add_subplot(n_rows, n_cols, slot)
        ax.imshow(_display(image), cmap="gray", vmin=0, vmax=1)
        ax.set_title("input", fontsize=8)
        _hide_axes(ax)
        slot += 1
    low, high = float(maps.min()), float(maps.max())
    axes, drawn = [], None
    for i, fmap in enumerate(maps):
        ax = fig.add_subplot(n_rows, n_cols, slot + i)
        drawn = ax.imshow(fmap, cmap="viridis", vmin=low, vmax=high if high > low else low + 1)
        ax.set_title(f"channel {i}", fontsize=8)
        _hide_axes(ax)
        axes.append(ax)
    if drawn is not None:
        fig.colorbar(drawn, ax=axes, shrink=0.8, label="activation")
    return save_figure(fig, path, dpi=dpi, tight=False)


def plot_heatmaps(images, heatmaps, path, *, titles=None, title: str = "Grad-CAM",
                  max_cols: int = 8, alpha: float = 0.6, cmap: str = "jet",
                  colorbar_label: str = "relevance (1 = most)", figsize=None,
                  dpi: int = 100) -> Path:
    """Heatmaps (N, H, W) in [0, 1] (CAM, Grad-CAM, saliency) overlaid on their images
    (N, C, H, W) in [0, 1], in a grid; ``titles`` labels each image (e.g. true/predicted)."""
    images = _check_images(images, "plot_heatmaps")
    heatmaps = np.asarray(heatmaps, dtype=np.float64)
    if heatmaps.shape != (images.shape[0],) + images.shape[2:]:
        raise ValueError(f"plot_heatmaps: expected heatmaps of shape "
                         f"{(images.shape[0],) + images.shape[2:]} for images {images.shape}, "
                         f"got {heatmaps.shape}")
    n_rows, n_cols = _grid_shape(len(images), max_cols)
    fig = _figure(figsize or (1.7 * n_cols + 1.2, 1.9 * n_rows + 0.5))
    fig.suptitle(_literal(title))
    colours = _pyplot().get_cmap(cmap)
    axes = []
    for i, (image, heat) in enumerate(zip(images, heatmaps)):
        ax = fig.add_subplot(n_rows, n_cols, i + 1)
        ax.imshow(_display(image), cmap="gray", vmin=0, vmax=1)
        # the opacity grows with the relevance, so the image stays visible where nothing is
        # marked and the colour sits on what is
        rgba = colours(np.clip(heat, 0, 1))
        rgba[..., 3] = alpha * (0.15 + 0.85 * np.clip(heat, 0, 1))
        ax.imshow(rgba)
        if titles is not None:
            ax.set_title(_literal(titles[i]), fontsize=8)
        _hide_axes(ax)
        axes.append(ax)
    if axes:
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        fig.colorbar(ScalarMappable(Normalize(0, 1), colours), ax=axes, shrink=0.8,
                     label=colorbar_label)
    return save_figure(fig, path, dpi=dpi, tight=False)


def plot_study(study, out) -> dict:
    """An Optuna study's PNG plots in folder ``out`` (``minicnn tune``): the optimization
    history, the hyperparameters' importances, parallel coordinates and the intermediate
    values, through optuna.visualization.matplotlib; ``{name: path}`` of those drawn. A plot that
    cannot be drawn yet (importances need two finished trials that differ) is left out with a
    warning, not an error: a finished search is never lost to a figure."""
    _pyplot()  # selects the Agg backend before Optuna imports pyplot
    from optuna.visualization import matplotlib as optuna_plots

    made = {}
    if not any(t.state.name == "COMPLETE" for t in study.trials):
        return made
    wanted = {
        "optimization_history": optuna_plots.plot_optimization_history,
        "param_importances": optuna_plots.plot_param_importances,
        "parallel_coordinate": optuna_plots.plot_parallel_coordinate,
        "intermediate_values": optuna_plots.plot_intermediate_values,
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
        path = Path(out) / f"{name}.png"
        save_figure(figure, path)
        made[name] = str(path)
    return made
