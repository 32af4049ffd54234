"""Input checks shared by the layers, the loss and the model.

Every public entry point validates what it is given, so that a user sees a message naming the
layer and the expected vs actual shape or dtype instead of a traceback from inside a kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import backend


def check_float_array(x, where: str, finite: bool = True) -> None:
    """x must be a finite float32/float64 numpy or cupy array (``finite=False``: any values;
    the scan for NaN and infinities is skipped)."""
    if not backend.is_array(x):
        raise TypeError(
            f"{where}: expected a float32 or float64 array, got {type(x).__name__}"
        )
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(
            f"{where}: expected a float32 or float64 array, got dtype {x.dtype} "
            "(convert images with x.astype(np.float32), scaled to a small range such as [0, 1])"
        )
    if x.ndim < 2:
        raise ValueError(
            f"{where}: expected a batch of shape (N, ...) with N samples, got shape {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{where}: expected at least one sample, got an empty batch of shape "
                         f"{tuple(x.shape)}")
    # min and max propagate NaN and show +-inf, without the input-sized boolean temporary of
    # isfinite(x).all() (which would be 184 MB for 60,000 CIFAR images)
    xp = backend.array_module(x)
    if finite and x.size and not (bool(xp.isfinite(x.min())) and bool(xp.isfinite(x.max()))):
        raise ValueError(f"{where}: input contains NaN or infinite values")


def check_rank(shape: tuple, rank: int, layout: str, where: str) -> None:
    """Check a per-sample shape (without N) against its expected rank."""
    if len(shape) != rank:
        full = ("N",) + tuple(shape)
        raise ValueError(
            f"{where}: expected input of shape {layout}, got a {len(shape) + 1}-D input "
            f"of shape ({', '.join(map(str, full))})"
        )


def check_labels(labels, n_samples: int, n_classes: int, where: str):
    """Labels must be n_samples integers in [0, n_classes); returns them as an int64 array."""
    if not backend.is_array(labels):
        if isinstance(labels, (list, tuple)):
            labels = np.asarray(labels)
        else:
            raise TypeError(f"{where}: labels must be an integer array, got {type(labels).__name__}")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"{where}: labels must be integers, got dtype {labels.dtype}")
    if labels.ndim != 1 or labels.shape[0] != n_samples:
        raise ValueError(
            f"{where}: expected {n_samples} labels of shape ({n_samples},), one per sample, "
            f"got shape {tuple(labels.shape)}"
        )
    if n_samples and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise ValueError(
            f"{where}: labels must be in [0, {n_classes - 1}] for {n_classes} classes, "
            f"got values from {int(labels.min())} to {int(labels.max())}"
        )
    return labels


def check_learning_rate(lr, where: str) -> float:
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating, np.integer)):
        raise TypeError(f"{where}: learning rate must be a number, got {lr!r}")
    if not math.isfinite(lr) or lr < 0:
        raise ValueError(f"{where}: learning rate must be finite and >= 0, got {lr}")
    return float(lr)


def is_int(value) -> bool:
    """An integer (Python or NumPy), and not a bool (which Python counts as one)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A finite real number (Python or NumPy), and not a bool."""
    return isinstance(value, (int, float, np.integer, np.floating)) \
        and not isinstance(value, bool) and math.isfinite(value)


def check_positive_int(value, what: str, where: str, minimum: int = 1) -> int:
    if not is_int(value):
        raise TypeError(f"{where}: {what} must be a positive int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{where}: {what} must be >= {minimum}, got {value}")
    return int(value)


def check_number(value, what: str, where: str, low=None, high=None,
                 high_open: bool = False) -> float:
    """A finite real number (not a bool) in [low, high] (or [low, high) with ``high_open``)."""
    return Number(low=low, high=high, open_high=high_open).check(value, what, where)


# -- rules for settings, declared once where the setting is defined -------------------------------
#
# A table of rules, ``{name: rule}``, sits next to what it describes (tunable_cnn's arguments in
# minicnn.models, a recipe's settings in minicnn.recipes), and every place that takes those
# settings (the function itself, a recipe, minicnn tune's search space) checks them with it.

@dataclass(frozen=True)
class Number:
    """A finite number (not a bool) of ``kind`` (int or float) with optional bounds; ``open_low``
    / ``open_high`` exclude the bound itself; ``odd`` asks for an odd integer."""

    kind: type = float
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    odd: bool = False

    def check(self, value, name: str, where: str):
        """``value`` converted to ``kind``; a ValueError naming ``name`` and the rule otherwise."""
        if not is_number(value):
            raise ValueError(f"{where}: {name} must be a finite number, got {value!r}")
        if self.kind is int:
            if int(value) != value:
                raise ValueError(f"{where}: {name} must be an integer, got {value!r}")
            value = int(value)
        else:
            value = float(value)
        if self.low is not None and (value < self.low or (self.open_low and value == self.low)):
            raise ValueError(f"{where}: {name} must be {'>' if self.open_low else '>='} "
                             f"{self.low:g}, got {value!r}")
        if self.high is not None and (value > self.high or (self.open_high and value == self.high)):
            raise ValueError(f"{where}: {name} must be {'<' if self.open_high else '<='} "
                             f"{self.high:g}, got {value!r}")
        if self.odd and value % 2 == 0:
            raise ValueError(f"{where}: {name} must be odd, got {value}")
        return value

    def describe(self) -> str:
        """What the rule accepts, in words: "a whole number >= 1", "a number > 0", "a fraction
        between 0 and 1 (exclusive)" (the command line's messages)."""
        if (self.low, self.high, self.open_low, self.open_high) == (0, 1, True, True):
            return "a fraction between 0 and 1 (exclusive)"
        bounds = [f"{'>' if self.open_low else '>='} {self.low:g}" if self.low is not None
                  else "", f"{'<' if self.open_high else '<='} {self.high:g}"
                  if self.high is not None else ""]
        what = ("an odd whole number" if self.odd else "a whole number") if self.kind is int \
            else "a number"
        return " ".join([what, " and ".join(b for b in bounds if b)]).strip()

    def parse(self, text: str):
        """``text`` from the command line, checked by this rule: an argparse ``type``, so that
        ``--epochs 0`` is a usage error (message and exit code 2) before anything is loaded,
        by the rule the API checks the same setting by."""
        import argparse

        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {text!r}") from None
        try:
            return self.check(value, "value", "minicnn")
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {text}") from None


POSITIVE_INT = Number(int, low=1)      # counts and sizes
NON_NEGATIVE_INT = Number(int, low=0)  # seeds and ports


class UsageError(ValueError):
    """A combination of command-line options that does not apply (exit code 2, like
    argparse's own)."""


@dataclass(frozen=True)
class OneOf:
    """One of a few names."""

    choices: tuple[str, ...]
    kind: type = str

    def check(self, value, name: str, where: str):
        if value not in self.choices:
            raise ValueError(f"{where}: {name} must be one of {', '.join(self.choices)}, got "
                             f"{value!r}")
        return value


def check_settings(rules: dict, values: dict, where: str) -> dict:
    """Every value of ``values`` checked (and converted) by its rule in ``rules``."""
    return {name: rules[name].check(value, name, where) for name, value in values.items()}
