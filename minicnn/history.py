"""The records of a training run: the per-epoch :class:`History` (what ``fit`` returns, what
``history.json`` holds, what the report and the curves are drawn from) and the running
:class:`EpochTotals` of the epoch in progress (which a checkpoint keeps)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .atomic import atomic_write_bytes


class History:
    """Per-epoch records: ``epoch``, ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``,
    ``lr``, ``time_s`` and ``images_per_s``. ``history["val_acc"]`` gives one column.

    ``diagnostics`` holds the gradient-flow records of ``fit(..., diagnostics=N)`` (one per
    watched step, see :mod:`minicnn.diagnostics`); empty otherwise."""

    def __init__(self, epochs: list[dict] | None = None, diagnostics: list[dict] | None = None):
        self.epochs: list[dict] = list(epochs or [])
        self.diagnostics: list[dict] = list(diagnostics or [])

    def append(self, record: dict) -> None:
        self.epochs.append(dict(record))

    def __getitem__(self, key: str) -> list:
        return [record.get(key) for record in self.epochs]

    def __len__(self) -> int:
        return len(self.epochs)

    def last(self) -> dict:
        return self.epochs[-1] if self.epochs else {}

    def to_dict(self) -> dict:
        return {"epochs": self.epochs, **({"diagnostics": self.diagnostics}
                                          if self.diagnostics else {})}

    def save(self, path) -> Path:
        """Write the history as JSON (atomically)."""
        path = Path(path)
        atomic_write_bytes(path, json.dumps(self.to_dict(), indent=2).encode())
        return path

    @classmethod
    def load(cls, path) -> History:
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict) or not isinstance(data.get("epochs"), list) or \
                not isinstance(data.get("diagnostics", []), list):
            raise ValueError(f"{path}: not a minicnn history file")
        return cls(data["epochs"], data.get("diagnostics"))

    @classmethod
    def of(cls, value) -> History | None:
        """A History from a History, its dict (:meth:`to_dict`), a history.json path or a list of
        per-epoch records; None stays None."""
        if value is None or isinstance(value, History):
            return value
        if isinstance(value, (str, Path)):
            return cls.load(value)
        if isinstance(value, dict):
            return cls(value.get("epochs", []), value.get("diagnostics"))
        return cls(list(value))

    def plot(self, path) -> Path:
        """Save the training curves (loss and accuracy per epoch) as a PNG."""
        from .plots import plot_history

        return plot_history(self, path)

    def plot_gradient_flow(self, path) -> Path:
        """Save the per-layer gradient-flow figure of ``diagnostics`` as a PNG."""
        from .plots import plot_gradient_flow

        return plot_gradient_flow(self.diagnostics, path)


@dataclass
class EpochTotals:
    """What the epoch in progress has added up so far. A checkpoint keeps it (by name), so an
    epoch resumed in its middle reports the whole epoch."""

    loss_sum: float = 0.0  # each batch's mean loss times its size
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0  # in the training steps (data loading included, callbacks not)

    def add(self, loss: float, correct: int, images: int, seconds: float) -> None:
        self.loss_sum += loss * images
        self.correct += correct
        self.seen += images
        self.seconds += seconds

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / max(self.seen, 1)

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.seen, 1)

    @property
    def images_per_s(self) -> float:
        return self.seen / max(self.seconds, 1e-9)
