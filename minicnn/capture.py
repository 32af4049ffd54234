"""A training step recorded once as a CUDA graph and replayed (the cupy backend).

On a GPU a step of a small network is short (a few milliseconds for cifar_vgg at batch 128)
and made of hundreds of small kernels; Python launching them one by one paces the step, not the
GPU. But a step of minicnn is the same kernels on the same arrays every time: forward, loss,
backward, optimizer update. So the step is recorded once (CuPy's ``Stream.begin_capture`` /
``end_capture``: the kernels are recorded, not run) and each later batch of the same shape
replays the record with one launch (``Graph.launch``).

What makes a step replayable, and where minicnn provides it:

- The batch is copied into arrays made before the recording, which the recorded kernels read,
  and every array the step makes comes from a memory pool of the record's own
  (:class:`minicnn.cuda_graphs.RecordedCall`, which ``predict`` and ``evaluate`` record their
  passes with too).
- What changes from step to step lives on the GPU: the learning rate and Adam's step count
  (``Optimizer.rate`` and ``.count``: a rate a schedule sets after the recording is read by
  the next replay), the weights, the optimizer's moments and BatchNorm's running statistics
  (all updated in place).
- Nothing inside the step reads a value back to the host (``Trainer.device_step``): the loss,
  the count of right answers and the finite flag are the record's outputs, copied out after
  each replay (the next replay overwrites them) and read by the loop every ``read_every`` steps.

The first step of a batch shape runs as it is written (it makes the optimizer's state, compiles
the kernels); the second is recorded, then launched; the later ones are replays. A batch of
another size (the last, smaller one) runs as written. A record whose arrays were replaced (new
weights loaded into the model, the optimizer's state taken from a checkpoint) is recorded again.
A layer that draws random numbers draws on the host before each replay what its step as
written would draw (``Layer.draw_for_replay``: Dropout's seed, which its mask kernel reads on
the GPU), so a recorded run draws the same masks as the run as written, and a checkpoint (which
keeps the host generators) resumes them. What a record cannot replay trains as written, every
step (:func:`why_not_recorded` says why): a layer that draws without ``draw_for_replay``, a
callback that watches the layers or acts between backward and update, a loss without
``forward_array``, an optimizer that is not minicnn's, ``read_every=1`` (the guard must stop
before the update, which is inside the record). ``fit(..., record_steps=False)`` turns
recording off; the step as written is what a learner reads, and what the recorded one is tested
equal to (``-m gpu``).
"""

from __future__ import annotations

from . import backend
from .cuda_graphs import RecordedCall, recorded_or_warned
from .layers.base import Layer


def why_not_recorded(trainer) -> str | None:
    """Why ``trainer``'s steps cannot be recorded and replayed (None: they can)."""
    from .callbacks import Callback
    from .optim import Optimizer

    if trainer.model.backend != "cupy":
        return "recording a step is a CUDA feature (the cupy backend)"
    for layer in trainer.model.random_layers():
        if type(layer).draw_for_replay is Layer.draw_for_replay:
            return (f"{layer.name} draws random numbers in training and has no draw_for_replay: "
                    f"a replay would repeat them")
    if not hasattr(trainer.loss_fn, "forward_array"):
        return "the loss has no forward_array (it would read the loss back to the host)"
    if type(trainer.optimizer).__module__ != Optimizer.__module__:
        return "the optimizer is not one of minicnn.optim's (their update reads rate and count)"
    if trainer.read_every == 1:
        return "read_every=1: the guard stops before the update, which a record holds"
    for extension in trainer.extensions:
        kind = type(extension)
        if kind.on_before_update is not Callback.on_before_update or \
                kind.watches_layers is not Callback.watches_layers:
            return f"{kind.__name__} watches the step between its layers"
    return None


class RecordedStep:
    """One training step of ``trainer`` for batches shaped like ``(xb, yb)``, recorded as a CUDA
    graph (:class:`minicnn.cuda_graphs.RecordedCall`). Recording it does not run it: :meth:`run`
    copies a batch in and launches it."""

    def __init__(self, trainer, xb, yb):
        self.trainer = trainer
        self.drawing = trainer.model.random_layers()  # Dropout: a seed drawn for each replay
        self.arrays = self._held_arrays()
        steps_before = trainer.optimizer.step_count
        try:
            self.call = RecordedCall(self._step, (xb, yb))
        finally:
            # recording ran nothing: the host's count of steps moves with each run() instead
            trainer.optimizer.step_count = steps_before

    def _step(self, xb, yb) -> tuple:
        xp = backend.array_module(xb)
        loss, correct, finite = self.trainer.device_step(xb, yb)
        self.trainer.optimizer.step()
        return (xp.stack([loss.astype(xp.float64), correct.astype(xp.float64),
                          finite.astype(xp.float64)]),)

    def _held_arrays(self) -> list:
        """The arrays the record reads and updates in place, as they are now."""
        optimizer = self.trainer.optimizer
        arrays = [p.data for p in optimizer.params]
        arrays += [a for state in optimizer.state for a in state.values()]
        arrays += [array.data for array in self.trainer.model.named_arrays().values()]
        return arrays + [optimizer.rate, optimizer.count]

    def still_valid(self) -> bool:
        """Whether the model and optimizer still hold the arrays the step was recorded on."""
        now = self._held_arrays()
        return len(now) == len(self.arrays) and all(a is b for a, b in zip(now, self.arrays))

    def run(self, xb, yb) -> tuple:
        """The step on this batch: ``(loss, correct, finite)`` as 0-d arrays on the GPU, as
        ``Trainer.device_step`` returns them (the optimizer's step is taken too)."""
        with self.call.stream:  # ahead of the launch, in its stream
            for layer in self.drawing:
                layer.draw_for_replay()
        (results,) = self.call.run(xb, yb)
        self.trainer.optimizer.step_count += 1  # the host's record of the steps (checkpoints)
        return results[0], results[1], results[2]


class Recorder:
    """A trainer's records, one per batch shape, and when to use them (``Trainer.recorder``).

    ``record_steps``: None records wherever :func:`why_not_recorded` finds nothing against it
    (on the cupy backend); True where something is against it is a ValueError naming it, and a
    recording CUDA refuses is an error too (with None: a warning, then every step as written);
    False never records."""

    def __init__(self, trainer, record_steps: bool | None = None):
        self.trainer, self.asked = trainer, bool(record_steps)
        self.records: dict = {}  # batch shape -> RecordedStep (None: seen once, not recorded)
        self.replaced: list = []  # records made again: their memory may still be referenced
        self.active = False
        if record_steps is False or (record_steps is None and trainer.model.backend != "cupy"):
            return
        reason = why_not_recorded(trainer)
        if reason is not None and record_steps:
            raise ValueError(f"fit: record_steps=True, but {reason}")
        self.active = reason is None

    def step(self, xb, yb):
        """This batch's step replayed from its record: ``(loss, correct, finite)``, the
        optimizer's step taken. None where the step runs as written instead: recording off, a
        batch of another size than the loader's (the last one), and the step before each
        recording: the first of a shape, and the first after the arrays a record was made on
        were replaced (it makes what the recording needs: the optimizer's state and its copies
        of the rate and count on the GPU, the compiled kernels)."""
        if not self.active or len(yb) != self.trainer.loader.batch_size:
            return None
        shape = (tuple(xb.shape), xb.dtype, tuple(yb.shape), yb.dtype)
        record = self.records.get(shape)
        if record is not None:
            if record.still_valid():
                return record.run(xb, yb)
            self.replaced.append(record)  # new arrays: weights loaded, a checkpoint's state
        if record is not None or shape not in self.records:
            self.records[shape] = None  # this step as written, the next one recorded
            return None
        record = self.records[shape] = recorded_or_warned(
            lambda: RecordedStep(self.trainer, xb, yb), self.asked, "fit: the training step")
        if record is None:  # CUDA refused to record (nothing ran): train as written
            self.active = False
            return None
        return record.run(xb, yb)


__all__ = ["RecordedStep", "Recorder", "why_not_recorded"]
