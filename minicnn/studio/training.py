"""The live training view: a callback that publishes a run's progress to the studio page.

:class:`TrainingMonitor` is a ``fit`` callback. Every ``every`` steps it keeps the mean loss and
the running accuracy since its last record and a copy of the first layer's filters; the
per-layer gradient norms come from ``fit``'s own gradient-flow records
(``fit(..., diagnostics=N)``), so the monitor adds a few float copies per record to training and
nothing else. The page polls :meth:`TrainingMonitor.state`.

:class:`DemoTraining` is the run the page's Train button starts: a small network on a part of
MNIST, in a background thread.
"""

from __future__ import annotations

import threading

import numpy as np

from .. import backend
from ..callbacks import Callback
from ..data import prepare_data
from ..recipes import RECIPES
from .compute import StudioInputError, encode_maps


class _Stopped(Exception):
    """Raised between two steps of a demo run that :meth:`DemoTraining.stop` ends."""


class TrainingMonitor(Callback):
    def __init__(self, every: int = 10):
        self.every = every
        self.lock = threading.Lock()
        self.records: list[dict] = []
        self.filters = None
        self.flow: list[dict] = []
        self.steps_per_epoch = None
        self.finished = False
        self._losses: list[float] = []
        self.stop = threading.Event()  # set: the run ends after its current step

    def on_train_begin(self, trainer):
        self.steps_per_epoch = len(trainer.loader)

    def on_batch_end(self, trainer, step, logs):
        if self.stop.is_set():
            raise _Stopped
        self._losses.append(float(logs["loss"]))
        if step % self.every:
            return
        totals = trainer.totals
        record = {"step": step, "loss": float(np.mean(self._losses)),
                  "accuracy": totals.accuracy if totals.seen else None, "lr": float(logs["lr"])}
        self._losses = []
        first = next((layer for layer in trainer.model.layers if layer.parameters()), None)
        filters = None
        if first is not None and first.parameters()[0].data.ndim == 4:
            weight = backend.to_numpy(first.parameters()[0].data)
            filters = weight.reshape(-1, *weight.shape[2:]).copy()
        flow = trainer.history.diagnostics[-1] if trainer.history.diagnostics else None
        with self.lock:
            self.records.append(record)
            if filters is not None:
                self.filters = filters
            if flow is not None and (not self.flow or self.flow[-1]["step"] != flow["step"]):
                self.flow.append({"step": flow["step"], "grad_norm": {
                    f"{s['layer']} {s['name']}": s["grad_norm"] for s in flow["layers"]
                    if s["grad_norm"] is not None}})

    def on_epoch_end(self, trainer, epoch, logs):
        with self.lock:
            if self.records:
                self.records[-1] = {**self.records[-1], **{
                    k: logs[k] for k in ("val_acc", "test_acc") if k in logs}}

    def on_train_end(self, trainer):
        with self.lock:
            self.finished = True

    def state(self) -> dict:
        with self.lock:
            return {"records": list(self.records), "gradient_norms": list(self.flow),
                    "filters": None if self.filters is None else encode_maps(self.filters,
                                                                             signed=True),
                    "finished": self.finished, "steps_per_epoch": self.steps_per_epoch}


class DemoTraining:
    """The short run the page can start: the ``studio-demo`` recipe (``mnist_cnn`` 8 channels
    wide, one epoch) on the first ``steps`` batches of MNIST, gradient flow every 20 steps.
    ``prepare`` gives its data (default: :func:`minicnn.data.prepare_data` on MNIST)."""

    available = True

    def __init__(self, prepare=None):
        self.prepare = prepare or (lambda limit: prepare_data("mnist", limit=limit, verbose=0))
        self.monitor = None
        self.thread = None
        self.error = None

    def start(self, request: dict) -> dict:
        steps = request.get("steps", 200)
        if not isinstance(steps, int) or isinstance(steps, bool) or not 10 <= steps <= 2000:
            raise StudioInputError(f"steps must be an int in [10, 2000], got {steps!r}")
        if self.thread is not None and self.thread.is_alive():
            raise StudioInputError("a training run is already going")
        self.monitor, self.error = TrainingMonitor(every=10), None
        self.thread = threading.Thread(target=self._run, args=(steps,), daemon=True,
                                       name="minicnn-studio-training")
        self.thread.start()
        return {"started": True, "steps": steps}

    def _run(self, steps: int) -> None:
        try:
            recipe = RECIPES["studio-demo"]
            data = self.prepare(steps * recipe.batch_size)
            model = recipe.build_model(data.input_shape, len(data.class_names), seed=0)
            recipe.train(model, data.train, dataset=data.dataset, seed=0,
                         callbacks=[self.monitor], diagnostics=20)
        except Exception as err:  # shown on the page; the server keeps serving
            if not isinstance(err, _Stopped):
                self.error = f"{type(err).__name__}: {err}"
            with self.monitor.lock:
                self.monitor.finished = True

    def stop(self, timeout: float = 60.0) -> None:
        """End a run that is going after its step and wait for it (the server is closing)."""
        if self.thread is not None and self.thread.is_alive():
            self.monitor.stop.set()
            self.thread.join(timeout)

    def state(self) -> dict:
        if self.monitor is None:  # nothing started yet
            return {"records": [], "gradient_norms": [], "filters": None, "finished": False,
                    "started": False}
        return {**self.monitor.state(), "started": True, "error": self.error}


class AttachedTraining:
    """The live view of a run the studio did not start (``minicnn train --studio``)."""

    available = False

    def __init__(self, monitor: TrainingMonitor):
        self.monitor = monitor

    def stop(self) -> None:
        """The run is the caller's: it goes on when the studio closes."""

    def state(self) -> dict:
        return {**self.monitor.state(), "started": True, "error": None}
