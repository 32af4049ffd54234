"""Gradient-flow diagnostics: how gradients, updates and activations behave, layer by layer,
while a network trains.

Backpropagation multiplies the gradient by every layer's local derivative on its way down, so
the gradient reaching the first layers is a product of many factors. If they are mostly below
one the gradient *vanishes* (the first layers stop learning: a deep stack of sigmoids, whose
slope is at most 1/4, or weights initialized too small); above one it *explodes* (weights too
large, a learning rate too high). A ReLU whose input is negative for every image passes no
gradient at all: it is *dead*, and stays dead. All of this is visible in a few numbers per layer:

- ``grad_norm``: ||dL/dW|| over the layer's parameters (None for a layer without any);
- ``dy_norm``: ||dL/dy||, the gradient arriving at the layer's output, over the whole batch;
- ``update_ratio``: ||W_after - W_before|| / ||W_before|| for the optimizer step: around 1e-3 is
  the usual healthy pace; much larger and training is unstable, much smaller and it crawls;
- ``act_mean``, ``act_std``: the mean and standard deviation of the layer's output;
- ``dead_fraction`` (ReLU layers): the fraction of output units that are zero for every image
  of the batch.

``fit(..., diagnostics=50)`` records them every 50 steps into ``History.diagnostics``
(:class:`GradientFlow`, a callback, does the recording), ``minicnn.plots.plot_gradient_flow`` draws them and
:func:`gradient_flow_warnings` turns them into plain words.
"""

from __future__ import annotations

import math

from . import backend
from .callbacks import Callback
from .validation import check_positive_int

#: a gradient that changes by this factor (down: vanishing, up: exploding) is reported
SHRINK_OR_GROWTH = 1e3
#: a layer whose ReLUs are dead for at least this fraction of units is reported
DEAD_FRACTION = 0.5
#: an optimizer step that changes a layer's weights by more than this fraction is reported
LARGE_UPDATE = 0.1


def _norm(xp, arrays) -> float:
    return math.sqrt(sum(float(xp.vdot(a.ravel(), a.ravel()).real) for a in arrays))


class GradientFlow(Callback):
    """Records the per-layer numbers of the module docstring every ``every`` training steps.

    A callback of the training loop (:class:`minicnn.training.Trainer`, ``fit(...,
    diagnostics=N)``): it watches the first step and every ``every``-th one, seeing each
    layer's output and gradient as the step's own pass computes them
    (``Sequential.forward_steps`` / ``backward_steps``), takes a copy of the weights before the
    optimizer step and appends the step's record to ``trainer.history.diagnostics`` after it.
    Other steps run untouched.
    """

    def __init__(self, every: int = 50):
        self.every = check_positive_int(every, "every", "GradientFlow")
        self._layers: list[dict] = []
        self._weights_before: list = []

    def watches_layers(self, step: int) -> bool:
        """Whether training step ``step`` (counted from 1) is recorded: the first, then every
        ``every``-th."""
        return step == 1 or step % self.every == 0

    def on_layer_forward(self, trainer, index, layer, y):
        if index == 0:
            self._layers = []
        stats = {"layer": index, "name": layer.name, "act_mean": float(y.mean()),
                 "act_std": float(y.std()), "dead_fraction": None}
        if layer.rectifies:
            alive = (y > 0).any(axis=0)  # a unit that fires for at least one image
            stats["dead_fraction"] = 1.0 - float(alive.mean())
        self._layers.append(stats)

    def on_layer_backward(self, trainer, index, layer, dy, dx):
        xp = backend.array_module(dy)
        stats = self._layers[index]
        stats["dy_norm"] = _norm(xp, [dy])
        params = layer.parameters()
        stats["grad_norm"] = _norm(xp, [p.grad for p in params]) if params else None

    def on_before_update(self, trainer):
        if self.watches_layers(trainer.global_step + 1):
            self._weights_before = [[p.data.copy() for p in layer.parameters()]
                                    for layer in trainer.model.layers]

    def on_batch_end(self, trainer, step, logs):
        if not self.watches_layers(step):
            return
        model = trainer.model
        xp = backend.xp(model.backend)
        for layer, before, stats in zip(model.layers, self._weights_before, self._layers):
            params = layer.parameters()
            if not params:
                stats["update_ratio"] = None
                continue
            change = _norm(xp, [p.data - old for p, old in zip(params, before)])
            stats["update_ratio"] = change / max(_norm(xp, before), 1e-30)
        self._weights_before = []
        trainer.history.diagnostics.append({"step": step, "epoch": trainer.epoch + 1,
                                            "layers": self._layers})


def _label(stats: dict) -> str:
    return f"layer {stats['layer']} ({stats['name']})"


def _times(factor: float) -> str:
    return f"{factor:,.0f}x" if factor < 1e6 else f"{factor:.1e}x"


def gradient_flow_warnings(diagnostics: list[dict]) -> list[str]:
    """Plain-words warnings from ``History.diagnostics`` (an empty list: nothing alarming).

    Looks for: gradients that shrink or grow by ``SHRINK_OR_GROWTH`` during an epoch (per
    layer) or on their way down through the network (``dy_norm`` at the first layer with
    weights against the output layer's), dead ReLUs (``DEAD_FRACTION``) and optimizer steps
    larger than ``LARGE_UPDATE`` of the weights.
    """
    if not diagnostics:
        return []
    found = []
    epochs = sorted({record["epoch"] for record in diagnostics})
    for epoch in epochs:
        records = [r for r in diagnostics if r["epoch"] == epoch]
        first, last = records[0]["layers"], records[-1]["layers"]
        for start, end in zip(first, last):
            if start["grad_norm"] is None or len(records) < 2:
                continue
            change = (end["grad_norm"] or 1e-30) / max(start["grad_norm"], 1e-30)
            if change <= 1 / SHRINK_OR_GROWTH:
                found.append(f"{_label(end)}'s gradients shrank {_times(1 / change)} during epoch "
                             f"{epoch} (||dL/dW|| {start['grad_norm']:.1e} -> "
                             f"{end['grad_norm']:.1e}): vanishing gradients")
            elif change >= SHRINK_OR_GROWTH:
                found.append(f"{_label(end)}'s gradients grew {_times(change)} during epoch "
                             f"{epoch} (||dL/dW|| {start['grad_norm']:.1e} -> "
                             f"{end['grad_norm']:.1e}): exploding gradients")
    latest = diagnostics[-1]["layers"]
    # from the output down to the first layer that learns (a Flatten in front has no weights)
    top = latest[-1]
    bottom = next((s for s in latest if s["grad_norm"] is not None), latest[0])
    through = bottom["dy_norm"] / max(top["dy_norm"], 1e-30)
    amounts = (f"(||dL/dy|| {top['dy_norm']:.1e} at the output, {bottom['dy_norm']:.1e} at "
               f"layer {bottom['layer']})")
    if through <= 1 / SHRINK_OR_GROWTH:
        found.append(f"the gradient shrinks {_times(1 / max(through, 1e-300))} on its way from "
                     f"the output down to {_label(bottom)} {amounts}: vanishing gradients, the "
                     "first layers barely learn (too small an initialization, saturating "
                     "activations such as sigmoid?)")
    elif through >= SHRINK_OR_GROWTH:
        found.append(f"the gradient grows {_times(through)} on its way from the output down to "
                     f"{_label(bottom)} {amounts}: exploding gradients (too large an "
                     "initialization or learning rate?)")
    for stats in latest:
        if stats["dead_fraction"] is not None and stats["dead_fraction"] >= DEAD_FRACTION:
            found.append(f"{_label(stats)}: {stats['dead_fraction']:.0%} of its units output 0 "
                         "for every image of the batch: dead ReLUs (a lower learning rate, He "
                         "initialization or LeakyReLU can help)")
        if stats["update_ratio"] is not None and stats["update_ratio"] > LARGE_UPDATE:
            found.append(f"{_label(stats)}: one optimizer step changed its weights by "
                         f"{stats['update_ratio']:.0%}: steps this large are unstable (lower "
                         "the learning rate?)")
    return found
