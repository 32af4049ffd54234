"""Model presets: functions that return a ``Sequential`` for an input shape and a class count.

Each docstring gives the parameter count and forward FLOPs per image at the default input
shape (from ``model.summary()``) and the accuracy measured with the repository's scripts.
"""

from __future__ import annotations

from .layers import (
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPool2D,
    ReLU,
    Tanh,
)
from .layers.pooling import AvgPool2D
from .model import Sequential


def _check_shape(input_shape, name, min_size):
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(f"{name}: input_shape must be (channels, height, width), got {input_shape}")
    c, h, w = input_shape
    if h < min_size or w < min_size:
        raise ValueError(f"{name}: needs images of at least {min_size}x{min_size}, got {h}x{w}")
    return c, h, w


def reference_cnn(input_shape=(1, 28, 28), num_classes: int = 10, seed: int | None = 0) -> Sequential:
    """The benchmark network used for every speed comparison (and in DESIGN.md, without dropout).

    Conv(32) ReLU MaxPool Conv(64) ReLU MaxPool Flatten Dense(128) ReLU Dense(classes).
    At 1x28x28: 421,642 parameters, 8.6 MFLOPs per image (forward).
    """
    c, h, w = _check_shape(input_shape, "reference_cnn", 4)
    flat = 64 * (h // 4) * (w // 4)
    return Sequential([
        Conv2D(c, 32, 3, padding=1), ReLU(), MaxPool2D(2),
        Conv2D(32, 64, 3, padding=1), ReLU(), MaxPool2D(2),
        Flatten(), Dense(flat, 128), ReLU(), Dense(128, num_classes),
    ], seed=seed, input_shape=input_shape)


def mnist_cnn(input_shape=(1, 28, 28), num_classes: int = 10, seed: int | None = 0,
              width: int = 32, dropout: float = 0.25) -> Sequential:
    """The network of ``examples/train_mnist.py``: three conv-BatchNorm-ReLU-pool blocks
    (width, 2*width, 4*width channels) and a dropout + dense classifier.

    At 1x28x28 and width 32: 104,426 parameters, 15.1 MFLOPs per image (forward).
    """
    c, h, w = _check_shape(input_shape, "mnist_cnn", 8)
    widths = (width, 2 * width, 4 * width)
    layers, channels = [], c
    for out in widths:
        layers += [Conv2D(channels, out, 3, padding=1, bias=False), BatchNorm2D(out), ReLU(),
                   MaxPool2D(2)]
        channels = out
    flat = channels * (h // 8) * (w // 8)
    layers += [Flatten(), Dropout(dropout), Dense(flat, num_classes)]
    return Sequential(layers, seed=seed, input_shape=input_shape)


def lenet5(input_shape=(1, 28, 28), num_classes: int = 10, seed: int | None = 0) -> Sequential:
    """LeNet-5 (LeCun et al., 1998) with tanh and average pooling; 28x28 inputs are padded by 2
    in the first convolution, as the original used 32x32 images.

    At 1x28x28: 61,706 parameters, 0.8 MFLOPs per image (forward).
    """
    c, h, w = _check_shape(input_shape, "lenet5", 16)
    pad = 2 if h < 32 else 0
    h1, w1 = (h + 2 * pad - 4) // 2, (w + 2 * pad - 4) // 2
    h2, w2 = (h1 - 4) // 2, (w1 - 4) // 2
    return Sequential([
        Conv2D(c, 6, 5, padding=pad, init="glorot"), Tanh(), AvgPool2D(2),
        Conv2D(6, 16, 5, init="glorot"), Tanh(), AvgPool2D(2),
        Flatten(), Dense(16 * h2 * w2, 120, init="glorot"), Tanh(),
        Dense(120, 84, init="glorot"), Tanh(), Dense(84, num_classes, init="glorot"),
    ], seed=seed, input_shape=input_shape)


PRESETS = {"reference_cnn": reference_cnn, "mnist_cnn": mnist_cnn, "lenet5": lenet5}


def from_config(config: dict) -> Sequential:
    """Rebuild a model (fresh weights) from ``model.config()`` (the JSON a model file stores)."""
    from .io import build_from_config

    if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
        raise ValueError("from_config: expected a dict with a 'layers' list (model.config())")
    return build_from_config(config, where="from_config")


__all__ = ["PRESETS", "from_config", "lenet5", "mnist_cnn", "reference_cnn"]
