"""The training loop: ``fit`` and ``evaluate``.

One training step is the whole of backprop in four lines::

    logits = model.forward(x, training=True)
    loss = loss_fn.forward(logits, y)
    model.backward(loss_fn.backward(), input_grad=False)
    optimizer.step()

The :class:`Trainer` runs that step over batches (``minicnn.data.DataLoader``) and epochs, with
a guard that stops when the loss or a gradient stops being finite and a Ctrl-C that saves a
resumable checkpoint; everything else around it is a callback (:mod:`minicnn.callbacks`). The
checkpoints, which resume *exactly* (the same weights as an uninterrupted run, also from the
middle of an epoch), are :mod:`minicnn.checkpoints`.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from . import backend
from .atomic import CleanInterrupt, DeferredInterrupt, remove_stale_temporaries
from .callbacks import (  # noqa: F401 (the callbacks' public home is also minicnn.training)
    Callback,
    EarlyStopping,
    LRSchedule,
    ModelCheckpoint,
    ProgressBar,
    TrainingCheckpoint,
)
from .capture import Recorder
from .checkpoints import restore_checkpoint, save_checkpoint
from .cuda_graphs import RecordedLoop
from .data.transforms import shift_images
from .diagnostics import GradientFlow
from .history import EpochTotals, History  # noqa: F401 (minicnn.training.History too)
from .layers import fused
from .optim import Optimizer, check_training_lr
from .validation import check_float_array, check_labels, check_positive_int


class TrainingDivergedError(FloatingPointError):
    """The loss or a gradient became NaN/inf; the message says where it first appeared."""


#: how many steps a GPU runs between two reads of their losses (Trainer's read_every)
READ_EVERY_ON_A_GPU = 20


# -- evaluation ---------------------------------------------------------------------------------

def evaluate(model, loss_fn, x, y, batch_size: int = 512, shifts: int = 0,
             record: bool | None = None) -> dict:
    """Mean loss and accuracy over (x, y), computed in batches (inference mode).

    Batches hold at most ``batch_size`` images, fewer when a batch would need more activation
    memory than ``minicnn.backend.memory_budget()`` (see ``Sequential.predict``). Each batch's
    loss and count of right answers stay where the arrays are until the end (a GPU is not made
    to wait for the host after each batch), and on the cupy backend the pass is recorded as a
    CUDA graph and replayed (``record``, as ``Sequential.predict`` does), and each BatchNorm2D
    runs folded into the Conv2D before it, as in predict.

    ``shifts=s`` (test-time augmentation) scores the mean of the logits of each image and of
    its four copies moved by s pixels up, down, left and right (``minicnn.data.shift_images``):
    a digit a little off-centre is classified as well as one centred; five forward passes.
    """
    batch_size = check_positive_int(batch_size, "batch_size", "evaluate")
    check_float_array(x, "evaluate")
    y = check_labels(y, len(x), model.output_shape(x.shape[1:])[0], "evaluate")
    if not (isinstance(shifts, (int, np.integer)) and not isinstance(shifts, bool)
            and 0 <= shifts < min(x.shape[2:])):
        raise ValueError(f"evaluate: shifts must be an int from 0 to {min(x.shape[2:]) - 1} "
                         f"(pixels), got {shifts!r}")
    moves = [(0, 0)] + ([(shifts, 0), (-shifts, 0), (0, shifts), (0, -shifts)] if shifts else [])
    batch_size = model.inference_batch_size(x.shape[1:], x.dtype, batch_size, "evaluate")
    xp = backend.xp(model.backend)

    def scores(xb, yb):  # the batch's (loss, right answers), where the arrays are
        logits = sum(model.forward(shift_images(xb, dy, dx) if dy or dx else xb, training=False,
                                   check_finite=False) for dy, dx in moves) / len(moves)
        loss = loss_fn.forward_array(logits, yb) if hasattr(loss_fn, "forward_array") else \
            xp.asarray(loss_fn.forward(logits, yb))
        return loss, (logits.argmax(axis=1) == yb).sum()

    if not hasattr(loss_fn, "forward_array"):  # its loss is read back to the host per batch
        if record:
            raise ValueError("evaluate: record=True, but the loss has no forward_array (it "
                             "reads each batch's loss back to the host)")
        record = False
    batch_scores = RecordedLoop(model, scores, record, "evaluate")
    with fused.predicting():  # as in predict: each BatchNorm2D folded into its Conv2D
        batches = [batch_scores(xp.asarray(x[start:start + batch_size]),
                                xp.asarray(y[start:start + batch_size]))
                   for start in range(0, len(x), batch_size)]
    read = backend.read_numbers(batches, model.backend)
    total_loss, correct = 0.0, 0
    for start, (loss, right) in zip(range(0, len(x), batch_size), read):
        total_loss += float(loss) * min(batch_size, len(x) - start)
        correct += int(right)
    return {"loss": total_loss / len(x), "acc": correct / len(x)}


# -- the trainer --------------------------------------------------------------------------------

class Trainer:
    """A training job: the model, loss, optimizer, data, and the loop over epochs and batches
    around one step of backprop (the module docstring). :func:`fit` is ``Trainer(...).fit(epochs)``
    and takes the same arguments.

    The loop keeps only what must sit between two lines of the step: the guard that stops
    before ``optimizer.step()`` when the loss or a gradient is not finite, and Ctrl-C, honoured
    between steps. With ``read_every=N > 1`` (the default on a GPU) the step leaves its loss,
    its count of right answers and the guard's verdict where the arrays are, and the loop reads
    them every N steps, at the end of an epoch and before a checkpoint: the GPU is never made
    to wait for the host inside a step (the guard then stops within N steps of the first
    non-finite one, and says between which). Everything else is a callback
    (:mod:`minicnn.callbacks`), run in this order: gradient-flow watching (``diagnostics=N``,
    :class:`minicnn.diagnostics.GradientFlow`), the ``callbacks`` given (whose state a
    checkpoint keeps), the progress bar (``verbose=1``) and the checkpoints (``checkpoint=``,
    every ``checkpoint_every`` steps and after each epoch). On a GPU the whole step, update
    included, is recorded once as a CUDA graph and replayed (``record_steps``,
    :class:`minicnn.capture.Recorder`). Every argument is checked here, before the first step.
    """

    def __init__(self, model, loss_fn, optimizer, train, val=None, *, batch_size: int = 32,
                 shuffle: bool = True, transform=None, seed: int = 0, callbacks=(),
                 verbose: int = 1, checkpoint=None, checkpoint_every: int | None = None,
                 eval_batch_size: int = 512, val_name: str = "val",
                 diagnostics: int | None = None, read_every: int | None = None,
                 record_steps: bool | None = None):
        self.loader = _check_training_job(model, optimizer, train, val, callbacks, checkpoint,
                                          batch_size, shuffle, transform, seed)
        self.model, self.loss_fn, self.optimizer, self.val = model, loss_fn, optimizer, val
        self.callbacks = list(callbacks)
        self.verbose = verbose
        self.eval_batch_size = check_positive_int(eval_batch_size, "eval_batch_size", "fit")
        self.val_name = val_name
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        if checkpoint_every is not None:
            checkpoint_every = check_positive_int(checkpoint_every, "checkpoint_every", "fit")
        self.gradient_flow = GradientFlow(diagnostics) if diagnostics is not None else None
        self.history = History()
        self.stop_training = False
        self.global_step = 0
        self.epoch, self.epochs = 0, 0  # the epoch running, the epoch count fit() trains to
        self.totals = EpochTotals()
        if read_every is None:  # a GPU runs ahead of the host between reads; a CPU has no ahead
            read_every = READ_EVERY_ON_A_GPU if model.backend == "cupy" else 1
        self.read_every = check_positive_int(read_every, "read_every", "fit")
        self._unread: list[tuple] = []  # steps whose loss, accuracy and guard are not read yet
        self.last_loss = math.nan
        self.extensions = [
            *([self.gradient_flow] if self.gradient_flow else []), *self.callbacks,
            *([ProgressBar()] if verbose else []),
            *([TrainingCheckpoint(checkpoint_every)] if self.checkpoint is not None else []),
        ]
        self.recorder = Recorder(self, record_steps)  # steps replayed on a GPU (capture.py)

    def log(self, message: str) -> None:
        if self.verbose:
            from tqdm import tqdm

            tqdm.write(message)

    def _call(self, hook: str, *args) -> None:
        for extension in self.extensions:
            getattr(extension, hook)(self, *args)

    # -- checkpoints (their format: minicnn.checkpoints) ------------------------------------
    def save_checkpoint(self, path=None) -> Path:
        self.read_steps()  # the totals it keeps are read, and the weights checked, first
        return save_checkpoint(path if path is not None else self.checkpoint, self)

    def restore_checkpoint(self, path) -> None:
        restore_checkpoint(path, self)

    # -- one step -----------------------------------------------------------------------------
    def device_step(self, xb, yb) -> tuple:
        """Forward, loss and backward of one batch (the optimizer step is the loop's), as
        ``model.forward`` and ``model.backward`` run them (pairs such as BatchNorm2D + ReLU as
        one pass, ``layers.fused``), or, when a callback watches this step
        (``Callback.watches_layers``), one layer at a time (``Sequential.forward_steps`` /
        ``backward_steps``) so that it sees each layer's output and gradient: the same numbers
        up to rounding (``tests/test_fusion.py``; the same bits with
        ``minicnn.set_fusion(False)``). The batch is not scanned for NaN again (fit checked the
        data; a NaN input makes the loss NaN, which the guard sees). Returns ``(loss, correct,
        finite)`` as 0-d arrays where the arrays are (``finite``: the loss and every gradient
        are finite): nothing is read back to the host here, so that a GPU runs on while the
        host prepares the next batch; the loop reads them (``read_every``)."""
        watchers = [e for e in self.extensions if e.watches_layers(self.global_step + 1)]
        if watchers:
            for index, layer, logits in self.model.forward_steps(xb, training=True,
                                                                 check_finite=False):
                for watcher in watchers:
                    watcher.on_layer_forward(self, index, layer, logits)
        else:
            logits = self.model.forward(xb, training=True, check_finite=False)
        xp = backend.array_module(logits)
        loss = self.loss_fn.forward_array(logits, yb) if hasattr(
            self.loss_fn, "forward_array") else xp.asarray(self.loss_fn.forward(logits, yb))
        correct = (logits.argmax(axis=1) == yb).sum()
        self.optimizer.zero_grad()
        if watchers:
            for index, layer, dy, dx in self.model.backward_steps(self.loss_fn.backward(),
                                                                  input_grad=False):
                for watcher in watchers:
                    watcher.on_layer_backward(self, index, layer, dy, dx)
        else:
            self.model.backward(self.loss_fn.backward(), input_grad=False)
        finite = xp.isfinite(loss)
        for p in self.model.parameters():
            finite = finite & xp.isfinite(p.grad).all()
        return loss, correct, finite

    def train_step(self, xb, yb, batch: int = 0) -> tuple:
        """One training step on a batch already where the model is: forward, loss, backward,
        the guard (with ``read_every=1``: it stops before the update; ``batch`` names the batch
        in its message), the callbacks' ``on_before_update`` and the optimizer's step; or all of
        it replayed from the step's record (:mod:`minicnn.capture`). Returns ``(loss, correct,
        finite)`` as :meth:`device_step` does."""
        step = self.recorder.step(xb, yb)
        if step is not None:
            return step
        step = self.device_step(xb, yb)
        if self.read_every == 1:  # read now: the guard stops before the update
            if not math.isfinite(float(step[0])):
                self._diverged(batch, xb, "loss")
            if not bool(step[2]):
                self._diverged(batch, xb, "gradient")
        self._call("on_before_update")
        self.optimizer.step()
        return step

    def read_steps(self) -> None:
        """Read the steps run since the last read (one transfer for them all) into the epoch's
        totals; raise :class:`TrainingDivergedError` if one of them was not finite."""
        if not self._unread:
            return
        unread, self._unread = self._unread, []
        values = backend.read_numbers([step[1:4] for step in unread], self.model.backend)
        for (batch, _, _, _, images, seconds), (loss, correct, finite) in zip(unread, values):
            if not finite:
                first = unread[0][0]
                raise TrainingDivergedError(
                    f"training diverged at epoch {self.epoch + 1}, batch {batch + 1} (read "
                    f"after batch {unread[-1][0] + 1}: the loop reads the steps every "
                    f"{self.read_every}, here batches {first + 1}-{unread[-1][0] + 1}): the "
                    f"loss or a gradient is not finite; the steps after it have updated the "
                    f"weights. Try a lower learning rate, or read_every=1 to stop before the "
                    f"update.")
            self.last_loss = float(loss)
            self.totals.add(float(loss), int(correct), images, seconds)

    # -- the guard --------------------------------------------------------------------------
    def _diverged(self, batch, xb, what) -> None:
        # the forward pass and the loss were finite when the gradient is not: the layers still
        # hold this step's caches, and the backward pass replayed over them finds the layer
        where = self.model.first_not_finite(
            xb, self.loss_fn.backward() if what == "gradient" else None)
        kept = (f"; the last good checkpoint is {self.checkpoint}"
                if self.checkpoint is not None and self.checkpoint.exists() else "")
        raise TrainingDivergedError(
            f"training diverged at epoch {self.epoch + 1}, batch {batch + 1} (step "
            f"{self.global_step + 1}): the {what} is not finite; {where}. Try a lower learning "
            f"rate{kept}."
        )

    # -- the loop ---------------------------------------------------------------------------
    def run_epoch(self, epoch: int, interrupt: DeferredInterrupt) -> dict:
        xp = backend.xp(self.model.backend)
        self.epoch = epoch
        self._call("on_epoch_begin", epoch)
        batch = self.loader.state_dict()["start_batch"]
        start = time.perf_counter()
        for xb, yb in self.loader:
            xb, yb = xp.asarray(xb), xp.asarray(yb)
            step = self.train_step(xb, yb, batch)
            self.global_step += 1
            if self.read_every == 1:
                loss, correct = float(step[0]), int(step[1])
                self.last_loss = loss
                self.totals.add(loss, correct, len(yb), time.perf_counter() - start)
            else:
                self._unread.append((batch, *step, len(yb), time.perf_counter() - start))
                if len(self._unread) >= self.read_every:
                    self.read_steps()
            self._call("on_batch_end", self.global_step, {"loss": self.last_loss,
                                                          "lr": self.optimizer.lr})
            batch += 1
            if interrupt.requested:
                raise CleanInterrupt
            start = time.perf_counter()
        self.read_steps()
        totals, self.totals = self.totals, EpochTotals()
        return {"epoch": epoch + 1, "train_loss": totals.mean_loss, "train_acc": totals.accuracy,
                "lr": self.optimizer.lr, "time_s": totals.seconds,
                "images_per_s": totals.images_per_s}

    def fit(self, epochs: int, resume: bool = False) -> History:
        """Train until ``epochs`` epochs are done (counting a resumed run's earlier ones)."""
        self.epochs = check_positive_int(epochs, "epochs", "fit")
        if self.checkpoint is not None:
            # temporary files of checkpoint writes cut short by a SIGKILL or a power loss
            remove_stale_temporaries(self.checkpoint)
        if resume and self.checkpoint is not None and self.checkpoint.exists():
            self.restore_checkpoint(self.checkpoint)
            self.log(f"resumed from {self.checkpoint} at epoch {self.loader.epoch + 1}, "
                     f"batch {self.loader.state_dict()['start_batch']}")
        self._call("on_train_begin")
        with DeferredInterrupt() as interrupt:
            try:
                while self.loader.epoch < self.epochs and not self.stop_training:
                    epoch = self.loader.epoch
                    record = self.run_epoch(epoch, interrupt)
                    if self.val is not None:
                        scores = evaluate(self.model, self.loss_fn, *self.val, self.eval_batch_size)
                        record[f"{self.val_name}_loss"] = scores["loss"]
                        record[f"{self.val_name}_acc"] = scores["acc"]
                    self.history.append(record)
                    self._call("on_epoch_end", epoch, record)
            except KeyboardInterrupt as err:
                self._call("on_interrupt")
                if self.checkpoint is not None and isinstance(err, CleanInterrupt):
                    self.save_checkpoint()
                    self.log(f"interrupted: resumable checkpoint saved to {self.checkpoint} "
                             "(run again with resume to continue)")
                elif self.checkpoint is not None:
                    self.log(f"interrupted in the middle of a step: {self.checkpoint} keeps the "
                             "last consistent state")
                raise
        self._call("on_train_end")
        return self.history


def _check_training_job(model, optimizer, train, val, callbacks, checkpoint, batch_size,
                        shuffle, transform, seed):
    """Check a training job's arguments (TypeError / ValueError naming the one that is wrong);
    returns the DataLoader of ``train``."""
    from .data.loader import DataLoader  # minicnn.data loads on first use, not with minicnn

    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"fit: optimizer must be a minicnn.optim optimizer, got "
                        f"{type(optimizer).__name__}")
    mine = {id(p) for p in model.parameters()}
    if not any(id(p) in mine for p in optimizer.params):
        raise ValueError("fit: the optimizer holds none of this model's parameters; build it "
                         "with this model's parameters, e.g. Adam(model.parameters())")
    check_training_lr(optimizer, [c.scheduler for c in callbacks if isinstance(c, LRSchedule)],
                      "fit")
    if checkpoint is not None and not Path(checkpoint).parent.is_dir():
        raise FileNotFoundError(f"fit: the folder of checkpoint {checkpoint} does not exist")
    if not hasattr(model, "forward_steps"):
        raise TypeError(f"fit: expected a minicnn Sequential model, got {type(model).__name__}")
    if isinstance(train, DataLoader):
        loader = train
        if loader.num_samples == 0 or len(loader) == 0:
            raise ValueError(f"fit: the DataLoader yields no batch ({loader.num_samples} samples, "
                             f"batch_size {loader.batch_size}, drop_last {loader.drop_last})")
        # the transform may change the image size (e.g. RandomCrop): look at a real batch
        sample = loader.x[:1] if loader.transform is None else loader.batch(0, 0)[0][:1]
        check_float_array(np.asarray(sample), "fit (DataLoader batches)")
        check_labels(loader.y, loader.num_samples, model.output_shape(sample.shape[1:])[0],
                     "fit (DataLoader labels)")
    elif isinstance(train, (tuple, list)) and len(train) == 2:
        x, y = train
        check_float_array(x, "fit (training images)")
        model.output_shapes(x.shape[1:])
        check_labels(y, len(x), model.output_shape(x.shape[1:])[0], "fit (training labels)")
        batch_size = check_positive_int(batch_size, "batch_size", "fit")
        loader = DataLoader(x, y, batch_size=batch_size, shuffle=shuffle, transform=transform,
                            seed=seed)
    else:
        raise TypeError("fit: train must be an (x, y) pair of arrays or a DataLoader, got "
                        f"{type(train).__name__}")
    if val is not None:
        if not (isinstance(val, (tuple, list)) and len(val) == 2):
            raise TypeError("fit: val must be an (x, y) pair of arrays")
        check_float_array(val[0], "fit (validation images)")
        check_labels(val[1], len(val[0]), model.output_shape(val[0].shape[1:])[0],
                     "fit (validation labels)")
    return loader


def fit(model, loss_fn, optimizer, train, val=None, epochs: int = 1, batch_size: int = 32, *,
        callbacks=(), verbose: int = 1, seed: int = 0, transform=None, shuffle: bool = True,
        checkpoint=None, checkpoint_every: int | None = None, resume: bool = False,
        eval_batch_size: int = 512, val_name: str = "val", diagnostics: int | None = None,
        read_every: int | None = None, record_steps: bool | None = None) -> History:
    """Train ``model`` and return its :class:`History`.

    Args:
        train: ``(x, y)`` arrays or a :class:`minicnn.data.DataLoader` (which then carries the
            batch size, shuffling, augmentation and seed).
        val: optional ``(x, y)``, evaluated after every epoch (``val_loss``, ``val_acc``; the
            prefix is ``val_name``, e.g. ``"test"`` when it is the test set).
        epochs: train until this many epochs are done (counting a resumed run's earlier ones).
        callbacks: e.g. :class:`LRSchedule`, :class:`EarlyStopping`, :class:`ModelCheckpoint`.
        verbose: 1 shows a progress bar per epoch and a summary line; 0 is silent.
        checkpoint: path of a resumable checkpoint, written atomically after every epoch, every
            ``checkpoint_every`` steps if given, and on Ctrl-C (which then re-raises
            KeyboardInterrupt once the checkpoint is safely on disk).
        resume: continue from ``checkpoint`` if it exists; the result is identical to a run
            that was never interrupted.
        diagnostics: record gradient-flow diagnostics (per layer: gradient norms, update/weight
            ratio, activation statistics, dead ReLUs) on the first step and every
            ``diagnostics`` steps into ``History.diagnostics``; see :mod:`minicnn.diagnostics`.
            The weights and the losses are exactly those of a run without it.
        read_every: read the steps' losses, accuracies and the guard's verdict from the device
            every this many steps (and at each epoch's end and checkpoint) instead of after
            every step; default 1 on the CPU, :data:`READ_EVERY_ON_A_GPU` on the cupy backend,
            where each read makes the GPU wait. The weights are the same either way.
        record_steps: on the cupy backend, record a step once as a CUDA graph and replay it for
            the later batches of the same size (:mod:`minicnn.capture`: one launch a step
            instead of hundreds); by default wherever the model and callbacks allow it,
            ``False`` runs every step as written, ``True`` where it cannot be is an error.

    Raises :class:`TrainingDivergedError` when the loss or a gradient stops being finite,
    naming the step and the first layer that produced a non-finite value; the last checkpoint
    on disk is left as it was. Every argument is checked before the first step (ValueError /
    TypeError naming it, see :class:`Trainer`), including a learning rate of 0: see
    :func:`minicnn.optim.check_training_lr`.
    """
    trainer = Trainer(model, loss_fn, optimizer, train, val, batch_size=batch_size,
                      shuffle=shuffle, transform=transform, seed=seed, callbacks=callbacks,
                      verbose=verbose, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                      eval_batch_size=eval_batch_size, val_name=val_name,
                      diagnostics=diagnostics, read_every=read_every,
                      record_steps=record_steps)
    return trainer.fit(epochs, resume=resume)
