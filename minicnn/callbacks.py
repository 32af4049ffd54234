"""What happens around the training loop: the callbacks that hook into ``fit`` (learning-rate
schedules, early stopping, weight averaging, saving the best model, the progress bar,
checkpoints; gradient-flow watching is :class:`minicnn.diagnostics.GradientFlow`). The records
the loop keeps (:class:`~minicnn.history.History`, :class:`~minicnn.history.EpochTotals`) are
:mod:`minicnn.history`."""

from __future__ import annotations

from pathlib import Path

from . import backend

# -- callbacks ----------------------------------------------------------------------------------

class Callback:
    """Hooks into ``fit``. ``trainer`` is the running :class:`minicnn.training.Trainer`; set
    ``trainer.stop_training = True`` to stop after the current epoch. Callbacks with state
    implement ``state_dict``/``load_state_dict`` so that checkpoints resume them too.

    A callback that answers True to ``watches_layers(step)`` sees that step's pass one layer at
    a time: ``on_layer_forward`` after each layer's output y, from the first layer up, and
    ``on_layer_backward`` after each layer turned dy into dx (its parameters' ``.grad``
    filled), from the last layer down; ``on_before_update`` comes just before
    ``optimizer.step()``."""

    def on_train_begin(self, trainer) -> None: ...
    def on_epoch_begin(self, trainer, epoch: int) -> None: ...
    def watches_layers(self, step: int) -> bool:
        return False
    def on_layer_forward(self, trainer, index: int, layer, y) -> None: ...
    def on_layer_backward(self, trainer, index: int, layer, dy, dx) -> None: ...
    def on_before_update(self, trainer) -> None: ...
    def on_batch_end(self, trainer, step: int, logs: dict) -> None: ...
    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None: ...
    def on_interrupt(self, trainer) -> None: ...
    def on_train_end(self, trainer) -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


class ProgressBar(Callback):
    """A tqdm bar per epoch with the running loss, accuracy and images/s, and a line per epoch
    done (``verbose=1``)."""

    def __init__(self):
        self.bar = None

    def on_epoch_begin(self, trainer, epoch):
        from tqdm import tqdm

        self.bar = tqdm(total=len(trainer.loader), initial=trainer.loader.state_dict()["start_batch"],
                        desc=f"epoch {epoch + 1}", unit="batch", leave=False, dynamic_ncols=True)

    def on_batch_end(self, trainer, step, logs):
        totals = trainer.totals
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{totals.mean_loss:.4f}", acc=f"{totals.accuracy:.4f}",
                             img_s=f"{totals.images_per_s:,.0f}", refresh=False)

    def on_epoch_end(self, trainer, epoch, logs):
        self.on_interrupt(trainer)
        line = f"epoch {logs['epoch']}/{trainer.epochs}: loss {logs['train_loss']:.4f}, " \
               f"acc {logs['train_acc']:.4f}"
        for key in logs:  # every scored set: val, test, or whatever fit's val_name says
            name = key[:-len("_loss")]
            if key.endswith("_loss") and name != "train":
                line += f", {key} {logs[key]:.4f}" + (
                    f", {name}_acc {logs[name + '_acc']:.4f}" if f"{name}_acc" in logs else "")
        trainer.log(line + f", lr {logs['lr']:.2e}, {logs['time_s']:.1f} s "
                           f"({logs['images_per_s']:,.0f} img/s)")

    def on_interrupt(self, trainer):
        if self.bar is not None:
            self.bar.close()


class TrainingCheckpoint(Callback):
    """Write ``trainer.checkpoint`` (a resumable checkpoint, atomically) after every epoch and,
    with ``every``, every ``every`` steps. Runs after the other callbacks, so that their state
    at the end of the epoch is what is saved."""

    def __init__(self, every: int | None = None):
        self.every = every

    def on_batch_end(self, trainer, step, logs):
        if self.every and step % self.every == 0:
            trainer.save_checkpoint()

    def on_epoch_end(self, trainer, epoch, logs):
        trainer.save_checkpoint()


class LRSchedule(Callback):
    """Step a learning-rate schedule (``minicnn.optim.*LR``) once per ``"epoch"`` or ``"batch"``."""

    def __init__(self, scheduler, per: str = "epoch"):
        if per not in ("epoch", "batch"):
            raise ValueError(f"LRSchedule: per must be 'epoch' or 'batch', got {per!r}")
        self.scheduler, self.per = scheduler, per

    def on_batch_end(self, trainer, step, logs):
        if self.per == "batch":
            self.scheduler.step()

    def on_epoch_end(self, trainer, epoch, logs):
        if self.per == "epoch":
            self.scheduler.step()

    def state_dict(self):
        return {"last_step": self.scheduler.last_step}

    def load_state_dict(self, state):
        self.scheduler.last_step = int(state["last_step"])
        self.scheduler.optimizer.lr = self.scheduler.lr_at(self.scheduler.last_step)


class WeightAverage(Callback):
    """Keep an exponential moving average of the network's weights and put it in the network
    when training ends (Polyak averaging, as the fast MNIST/CIFAR trainers use it).

    After every step, for every parameter and buffer w (BatchNorm's running statistics too):

        w_avg <- d * w_avg + (1 - d) * w,     d = min(decay, (1 + t) / (10 + t))

    t being the step count: the average forgets its first, random weights fast, then follows
    the last ~1 / (1 - decay) steps. The steps of the last epochs, taken at a small learning
    rate, scatter around a minimum; their average lies nearer to it than any one of them.

    The averaged network is what ``fit`` leaves behind (and what is saved); the scores of each
    epoch (``val_acc``) are those of the network as trained, not averaged.
    """

    def __init__(self, decay: float = 0.999):
        if not 0 < decay < 1:
            raise ValueError(f"WeightAverage: decay must lie between 0 and 1, got {decay!r}")
        self.decay = float(decay)
        self.steps = 0
        self.average: dict | None = None

    def on_train_begin(self, trainer):
        model = trainer.model
        if self.average is None:
            self.average = {name: array.data.copy() for name, array in model.named_arrays().items()}
        else:  # resumed from a checkpoint, which holds NumPy arrays
            self.average = {name: backend.to_device(value, model.backend)
                            for name, value in self.average.items()}

    def on_batch_end(self, trainer, step, logs):
        self.steps += 1
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        for name, array in trainer.model.named_arrays().items():
            average = self.average[name]
            average *= d
            average += (1 - d) * array.data

    def on_train_end(self, trainer):
        for name, array in trainer.model.named_arrays().items():
            array.data[...] = self.average[name]

    def state_dict(self):
        return {"steps": self.steps, "decay": self.decay, "arrays": dict(self.average or {})}

    def load_state_dict(self, state):
        self.steps, self.decay = int(state["steps"]), float(state["decay"])
        self.average = {name: value.copy() for name, value in state["arrays"].items()}


def _improved(value, best, mode, min_delta) -> bool:
    if value is None:
        return False
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


def _mode_for(monitor: str, mode: str) -> str:
    if mode == "auto":
        return "min" if "loss" in monitor else "max"
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min', 'max' or 'auto', got {mode!r}")
    return mode


class EarlyStopping(Callback):
    """Stop when ``monitor`` (e.g. ``"val_loss"``, ``"val_acc"``) has not improved by
    ``min_delta`` for ``patience`` epochs; optionally put back the best weights at the end."""

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0,
                 mode: str = "auto", restore_best: bool = True):
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.mode = _mode_for(monitor, mode)
        self.restore_best = restore_best
        self.best, self.wait, self.best_weights = None, 0, None

    def on_epoch_end(self, trainer, epoch, logs):
        value = logs.get(self.monitor)
        if value is None:
            raise ValueError(f"EarlyStopping: metric {self.monitor!r} is not logged "
                             f"(available: {', '.join(sorted(logs))}); pass val= to fit?")
        if _improved(value, self.best, self.mode, self.min_delta):
            self.best, self.wait = value, 0
            if self.restore_best:
                self.best_weights = {name: a.data.copy()
                                     for name, a in trainer.model.named_arrays().items()}
        else:
            self.wait += 1
            if self.wait >= self.patience:
                trainer.stop_training = True
                trainer.log(f"early stopping: {self.monitor} has not improved for "
                            f"{self.patience} epochs (best {self.best:.4f})")

    def on_train_end(self, trainer):
        if self.restore_best and self.best_weights is not None and trainer.stop_training:
            model = trainer.model
            for name, array in model.named_arrays().items():
                array.data = backend.to_device(self.best_weights[name], model.backend)

    def state_dict(self):
        # the best weights travel in a checkpoint too: a resumed run can still put them back
        best = {"arrays": dict(self.best_weights)} if self.best_weights is not None else {}
        return {"best": self.best, "wait": self.wait, **best}

    def load_state_dict(self, state):
        self.best, self.wait = state["best"], state["wait"]
        arrays = state.get("arrays")
        self.best_weights = None if arrays is None else {k: v.copy() for k, v in arrays.items()}


class ModelCheckpoint(Callback):
    """Save the model (a model file, atomically) whenever ``monitor`` improves
    (``save_best_only=True``) or after every epoch."""

    def __init__(self, path, monitor: str = "val_acc", mode: str = "auto",
                 save_best_only: bool = True):
        self.path, self.monitor, self.save_best_only = Path(path), monitor, save_best_only
        self.mode = _mode_for(monitor, mode)
        self.best = None

    def on_epoch_end(self, trainer, epoch, logs):
        value = logs.get(self.monitor)
        if not self.save_best_only or _improved(value, self.best, self.mode, 0.0):
            self.best = value if value is not None else self.best
            trainer.model.save(self.path)

    def state_dict(self):
        return {"best": self.best}

    def load_state_dict(self, state):
        self.best = state["best"]
