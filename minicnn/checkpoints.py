"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is a model file (``minicnn.io``) with two additions: the optimizer's arrays as
tensors ``optimizer.<parameter index>.<name>``, and a JSON ``training_state`` in the metadata:

- ``version`` (``CHECKPOINT_VERSION``), ``global_step``, ``epoch_totals`` (the running epoch's
  ``loss_sum``, ``correct``, ``seen`` and ``seconds`` so far; version 1 kept them as a list,
  ``epoch_sums``, in that order, and is still read);
- ``loader``: the DataLoader's position (epoch, next batch, seed);
- ``optimizer``: its type, learning rate, step count and state keys;
- ``rng``: the random state of every stochastic layer, by its path in the network (``"6"``,
  ``"3.body.1"``: a Dropout inside a Residual keeps its state too);
- ``callbacks``: the ``state_dict()`` of each callback that keeps a state (``callback_types``:
  their classes, which a resumed run must have in the same order), whose ``"arrays"`` (a dict of arrays, e.g.
  WeightAverage's averaged weights) are tensors ``callback.<callback index>.<name>`` and are
  listed by name in the JSON; ``history``: the epochs done (and the gradient-flow records so
  far, when diagnostics are on).

This module is the only one that knows these key names. Loading checks everything against the
model, optimizer and loader being trained *before* changing any of them: a damaged, foreign or
mismatched checkpoint raises ModelFileError and leaves the run as it was.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path

from . import backend, io
from .callbacks import Callback
from .history import EpochTotals
from .io import ModelFileError
from .layers.build import build_from_file
from .validation import check_learning_rate, is_int, is_number

CHECKPOINT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: the epoch totals as a list, "epoch_sums"


def save_checkpoint(path, trainer) -> Path:
    """Write ``trainer``'s whole state (``minicnn.training.Trainer``) to ``path``, atomically."""
    path = Path(path)
    opt, model = trainer.optimizer, trainer.model
    state = {
        "version": CHECKPOINT_VERSION,
        "loader": trainer.loader.state_dict(),
        "global_step": trainer.global_step,
        "epoch_totals": asdict(trainer.totals),
        "optimizer": {"type": type(opt).__name__, "lr": opt.lr, "step_count": opt.step_count,
                      "state_keys": sorted(opt.state_arrays())},
        "rng": {name: rng.bit_generator.state for name, rng in model.named_generators().items()},
        "callbacks": [],
        "callback_types": [type(callback).__name__ for callback in _stateful(trainer.callbacks)],
        "history": trainer.history.to_dict(),
    }
    tensors = {f"optimizer.{k}": v for k, v in opt.state_arrays().items()}
    for index, callback in enumerate(_stateful(trainer.callbacks)):
        callback_state = dict(callback.state_dict())
        arrays = callback_state.pop("arrays", None)
        if arrays is not None:
            callback_state["arrays"] = sorted(arrays)
            tensors.update({f"callback.{index}.{name}": backend.to_numpy(value)
                            for name, value in arrays.items()})
        state["callbacks"].append(callback_state)
    io.write_model_file(path, model.config(), model.named_arrays(), model.metadata,
                        extra_tensors=tensors, training_state=state)
    return path


def _stateful(callbacks) -> list:
    """The callbacks that keep a state (their class defines ``state_dict``): a checkpoint holds
    theirs, in order; others (a progress bar, a logger) may differ between a run and its resume."""
    return [callback for callback in callbacks if type(callback).state_dict is not Callback.state_dict]


def load_checkpoint(path):
    """``(model, optimizer_tensors, training_state)`` of a checkpoint (``training_state`` is None
    for a plain model file; a callback's ``"arrays"`` in it are read back as arrays). The model
    is checked as ``minicnn.load_model`` checks it."""
    file = io.read_model_file(path)
    model = build_from_file(file)
    names = [name for name in file.shapes if name.startswith("optimizer.")]
    optimizer_tensors = {name[len("optimizer."):]: value
                         for name, value in file.tensors(names).items()}
    state = file.training_state
    for index, callback_state in enumerate((state or {}).get("callbacks") or []):
        if isinstance(callback_state, dict) and "arrays" in callback_state:
            wanted = [f"callback.{index}.{name}" for name in callback_state["arrays"]]
            missing = [name for name in wanted if name not in file.shapes]
            if missing:
                raise ModelFileError(f"{path}: the callback tensors {', '.join(missing)} are "
                                     "missing")
            loaded = file.tensors(wanted)
            callback_state["arrays"] = {name: loaded[f"callback.{index}.{name}"]
                                        for name in callback_state["arrays"]}
    return model, optimizer_tensors, state


def restore_checkpoint(path, trainer) -> None:
    """Put a checkpoint's state into ``trainer``'s model, optimizer, loader and callbacks."""
    saved, optimizer_tensors, state = load_checkpoint(path)
    if state is None:
        raise ModelFileError(f"{path}: a model file, not a training checkpoint")
    model = trainer.model
    if saved.config()["layers"] != model.config()["layers"]:
        raise ModelFileError(f"{path}: the checkpoint's architecture differs from the model "
                             "being trained")
    try:
        checked = _check_training_state(state, optimizer_tensors, trainer)
    except ModelFileError as err:
        raise ModelFileError(f"{path}: {err}") from None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
        raise ModelFileError(f"{path}: malformed training state "
                             f"({type(err).__name__}: {err})") from None
    try:
        trainer.loader.load_state_dict(state["loader"])  # checks the seed and batching first
    except (KeyError, TypeError) as err:
        raise ModelFileError(f"{path}: malformed data loader state "
                             f"({type(err).__name__}: {err})") from None
    theirs = saved.named_arrays()
    for name, array in model.named_arrays().items():
        array.data = backend.to_device(theirs[name].data, model.backend)
    trainer.optimizer.load_state_arrays(optimizer_tensors, checked["step_count"])
    trainer.optimizer.lr = checked["lr"]
    generators = model.named_generators()
    for name, rng_state in state["rng"].items():
        generators[name].bit_generator.state = rng_state
    if "callback_types" in state:
        pairs = zip(_stateful(trainer.callbacks), state["callbacks"], strict=True)
    else:  # written before the types were recorded: a state per callback, stateless ones too
        pairs = zip(trainer.callbacks, state["callbacks"], strict=False)
    try:
        for callback, callback_state in pairs:
            callback.load_state_dict(callback_state)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
        raise ModelFileError(f"{path}: a callback cannot use its saved state "
                             f"({type(err).__name__}: {err})") from None
    trainer.global_step = checked["global_step"]
    trainer.totals = checked["epoch_totals"]
    trainer.history = type(trainer.history)(state["history"]["epochs"],
                                            state["history"].get("diagnostics"))


def _check_training_state(state: dict, optimizer_tensors: dict, trainer) -> dict:
    """Validate a checkpoint's training state against ``trainer``; returns the numbers.

    Raises ModelFileError naming what is wrong (or KeyError/TypeError/... for a structure that
    is not a training state at all, which the caller reports the same way).
    """

    def is_count(value):
        return is_int(value) and value >= 0

    if state.get("version") not in READABLE_VERSIONS:
        raise ModelFileError(f"training state version {state.get('version')!r} is not "
                             f"supported (this minicnn writes {CHECKPOINT_VERSION} and reads "
                             f"{', '.join(map(str, READABLE_VERSIONS))})")
    opt, optimizer = state["optimizer"], trainer.optimizer
    if opt["type"] != type(optimizer).__name__:
        raise ModelFileError(f"the checkpoint was trained with {opt['type']}, not "
                             f"{type(optimizer).__name__}")
    lr = check_learning_rate(opt["lr"], "checkpoint")
    if not is_count(opt["step_count"]) or not is_count(state["global_step"]):
        raise ModelFileError("step counts must be non-negative integers")
    if sorted(opt["state_keys"]) != sorted(optimizer_tensors):
        raise ModelFileError("the optimizer tensors do not match the optimizer state's keys")
    try:
        optimizer.check_state_arrays(optimizer_tensors)
    except ValueError as err:
        raise ModelFileError(str(err)) from None
    generators = trainer.model.named_generators()
    if not isinstance(state["rng"], dict):
        raise ModelFileError("the random states must be an object")
    for name, rng_state in state["rng"].items():
        if name not in generators:
            raise ModelFileError(f"random state for layer {name}, which has no generator")
        # try the state on a scratch generator of the same kind (it validates the dict)
        type(generators[name].bit_generator)().state = rng_state
    names = [f.name for f in fields(EpochTotals)]
    if state["version"] == 1:  # the totals as a list, in the order of EpochTotals' fields
        sums = state["epoch_sums"]
        totals = dict(zip(names, sums)) if isinstance(sums, list) and len(sums) == 4 else sums
    else:
        totals = state["epoch_totals"]
    if not (isinstance(totals, dict) and sorted(totals) == sorted(names)
            and all(is_number(totals[n]) and totals[n] >= 0 for n in names)):
        raise ModelFileError(f"the epoch totals must be {', '.join(names)}: numbers >= 0, got "
                             f"{totals!r}")
    epochs = state["history"]["epochs"]
    if not isinstance(epochs, list) or not all(isinstance(r, dict) for r in epochs):
        raise ModelFileError("history must be a list of per-epoch records")
    diagnostics = state["history"].get("diagnostics", [])
    if not isinstance(diagnostics, list) or not all(isinstance(r, dict) for r in diagnostics):
        raise ModelFileError("history's diagnostics must be a list of per-step records")
    if not isinstance(state["callbacks"], list) or not isinstance(state["loader"], dict):
        raise ModelFileError("callbacks and loader states have the wrong types")
    theirs = state.get("callback_types")
    ours = [type(callback).__name__ for callback in _stateful(trainer.callbacks)]
    if theirs is not None and (theirs != ours or len(state["callbacks"]) != len(theirs)):
        raise ModelFileError(f"the checkpoint holds the state of {', '.join(theirs) or 'no callback'}"
                             f"; this run has {', '.join(ours) or 'none'}: resume with the same "
                             "callbacks that keep a state, in the same order")
    return {"lr": lr, "step_count": opt["step_count"], "global_step": state["global_step"],
            "epoch_totals": EpochTotals(float(totals["loss_sum"]), int(totals["correct"]),
                                        int(totals["seen"]), float(totals["seconds"]))}


__all__ = ["CHECKPOINT_VERSION", "load_checkpoint", "restore_checkpoint", "save_checkpoint"]
