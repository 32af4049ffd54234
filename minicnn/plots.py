"""Figures as files (matplotlib's Agg backend: no window is ever opened)."""

from __future__ import annotations

import io
from pathlib import Path

from .atomic import atomic_write_bytes


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path, dpi: int = 100) -> Path:
    """Render ``fig`` to PNG and write it atomically; closes the figure."""
    plt = _pyplot()
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
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
