"""The search space of ``minicnn tune``: which hyperparameters there are (a recipe's training
settings and :func:`minicnn.models.tunable_cnn`'s arguments, each with the rule the recipes and
the models check it by), the default space, how a space is written (a file, flags) and how a
trial draws a configuration from it; and the recipe a configuration trains."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

from ..models import ACTIVATIONS, TUNABLE_CNN_RULES, tunable_cnn
from ..recipes import OPTIMIZERS, RECIPE_RULES, RECIPES, Recipe

TRAINING_PARAMETERS = ("lr", "batch_size", "optimizer", "weight_decay", "augment")
NETWORK_PARAMETERS = tuple(TUNABLE_CNN_RULES)  # width, kernel_size, activation, dropout, blocks
#: every hyperparameter and its rule: a recipe's training settings, tunable_cnn's arguments
RULES = {**{name: RECIPE_RULES[name] for name in TRAINING_PARAMETERS}, **TUNABLE_CNN_RULES}
#: what each hyperparameter is (int, float or str), for parsing command-line values
PARAMETERS = {name: rule.kind for name, rule in RULES.items()}
LOG_SCALE = ("lr", "weight_decay")  # ranges given as LOW:HIGH are searched on a log scale

#: the search space used for every hyperparameter not given by a flag or a space file
DEFAULT_SPACE = {
    "lr": {"low": 3e-4, "high": 3e-2, "log": True},
    "batch_size": [16, 32, 64, 128],
    "optimizer": list(OPTIMIZERS),
    "weight_decay": {"low": 1e-6, "high": 1e-2, "log": True},
    "width": [8, 16, 32, 64],
    "kernel_size": [3, 5],
    "activation": list(ACTIVATIONS),
    "dropout": {"low": 0.0, "high": 0.5},
    "augment": {"low": 0.0, "high": 1.0},
    "blocks": [1, 2, 3],
}


def _check_value(name, value):
    """One value of hyperparameter ``name``, checked by its rule and converted; ValueError."""
    return RULES[name].check(value, name, "tune")


def _parse_entry(name, entry) -> dict:
    """A normalized parameter: {"fixed": v}, {"choices": [...]} or {"low", "high", "log"}."""
    if name not in PARAMETERS:
        raise ValueError(f"tune: unknown hyperparameter {name!r}; known: {', '.join(PARAMETERS)}")
    if isinstance(entry, dict):
        unknown = set(entry) - {"low", "high", "log", "choices", "value"}
        if unknown:
            raise ValueError(f"tune: {name}: unknown keys {sorted(unknown)} (use low/high/log, "
                             "choices or value)")
        if "value" in entry:
            return {"fixed": _check_value(name, entry["value"])}
        if "choices" in entry:
            entry = entry["choices"]
        else:
            if PARAMETERS[name] is str:
                raise ValueError(f"tune: {name} takes a list of choices, not a range")
            if "low" not in entry or "high" not in entry:
                raise ValueError(f"tune: {name}: a range needs both 'low' and 'high'")
            low, high = _check_value(name, entry["low"]), _check_value(name, entry["high"])
            log = bool(entry.get("log", False))
            if low > high:
                raise ValueError(f"tune: {name}: low {low} is above high {high}")
            if log and low <= 0:
                raise ValueError(f"tune: {name}: a log-scale range needs low > 0, got {low}")
            return {"fixed": low} if low == high else {"low": low, "high": high, "log": log}
    if isinstance(entry, (list, tuple)):
        if not entry:
            raise ValueError(f"tune: {name}: the list of choices is empty")
        choices = list(dict.fromkeys(_check_value(name, v) for v in entry))
        return {"fixed": choices[0]} if len(choices) == 1 else {"choices": choices}
    return {"fixed": _check_value(name, entry)}


def parse_space(space=None, overrides: dict | None = None) -> dict:
    """The search space: :data:`DEFAULT_SPACE`, updated by ``space`` (a dict or the path of a
    JSON file), then by ``overrides`` (command-line flags). Returns normalized entries.

    Each hyperparameter is a fixed value (``"activation": "relu"``), a list of choices
    (``"batch_size": [32, 64]``) or a range (``"lr": {"low": 1e-4, "high": 1e-1, "log": true}``;
    integer hyperparameters give an integer range).
    """
    merged = dict(DEFAULT_SPACE)
    if space is not None and not isinstance(space, dict):
        space = read_space_file(space)
    merged.update(space or {})
    merged.update(overrides or {})
    return {name: _parse_entry(name, entry) for name, entry in merged.items()}


def read_space_file(path) -> dict:
    """The JSON object of a search space file (see :func:`parse_space`)."""
    path = Path(path)
    try:
        space = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"tune: search space file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"tune: {path} is not valid JSON: {err}") from None
    if not isinstance(space, dict):
        raise ValueError(f"tune: {path} must hold a JSON object of hyperparameters")
    return space


def parse_flag(name: str, text: str):
    """A command-line value: ``LOW:HIGH`` (a range; log scale for lr and weight decay),
    ``A,B,C`` (choices) or ``V`` (fixed)."""
    kind = PARAMETERS[name]

    def convert(part):
        part = part.strip()
        if kind is str:
            return part
        try:
            number = float(part)
        except ValueError:
            raise ValueError(f"tune: --{name.replace('_', '-')}: {part!r} is not a number") from None
        return int(number) if kind is int and number.is_integer() else number

    if ":" in text:
        low, high = text.split(":", 1)
        return {"low": convert(low), "high": convert(high), "log": name in LOG_SCALE}
    if "," in text:
        return [convert(p) for p in text.split(",") if p.strip()]
    return convert(text)


def suggest(trial, space: dict) -> dict:
    """Draw one configuration; fixed values are not trial parameters (they do not vary)."""
    config = {}
    for name, entry in space.items():
        if "fixed" in entry:
            config[name] = entry["fixed"]
        elif "choices" in entry:
            config[name] = trial.suggest_categorical(name, entry["choices"])
        elif PARAMETERS[name] is int:  # odd ones (kernel sizes) in steps of 2 from an odd low
            config[name] = trial.suggest_int(name, entry["low"], entry["high"], log=entry["log"],
                                             step=2 if RULES[name].odd else 1)
        else:
            config[name] = trial.suggest_float(name, entry["low"], entry["high"], log=entry["log"])
    return config


def baseline_params(space: dict, defaults: dict) -> tuple[dict, bool]:
    """The default configuration as trial parameters, as far as the space can represent it,
    and whether it *is* the default configuration (every value inside the space)."""
    params, exact = {}, True
    for name, entry in space.items():
        value = defaults[name]
        if "fixed" in entry:
            exact &= entry["fixed"] == value
        elif ("choices" in entry and value in entry["choices"]) or \
                ("low" in entry and entry["low"] <= value <= entry["high"]):
            params[name] = value
        else:
            exact = False  # the sampler draws this one
    return params, exact


def default_config(dataset: str) -> dict:
    """The configuration trained when nothing is tuned: :func:`minicnn.models.tunable_cnn`'s
    defaults (the ``mnist_cnn`` network) with the training settings of the dataset's recipe."""
    recipe = RECIPES.get(dataset, Recipe())
    network = inspect.signature(tunable_cnn).parameters
    return {**{name: getattr(recipe, name) for name in TRAINING_PARAMETERS},
            **{name: network[name].default for name in NETWORK_PARAMETERS}}


def recipe_of(config: dict, epochs: int, label_smoothing: float) -> Recipe:
    """The training recipe of a configuration: :func:`minicnn.models.tunable_cnn` with the
    configuration's network parameters, trained as the recipes are (one-cycle schedule)."""
    return Recipe(model="tunable_cnn", model_options={k: config[k] for k in NETWORK_PARAMETERS},
                  epochs=epochs, label_smoothing=label_smoothing,
                  **{k: config[k] for k in TRAINING_PARAMETERS})
