"""Model presets: functions that return a ``Sequential`` for an input shape and a class count.

Each docstring gives the parameter count and forward FLOPs per image at the default input
shape (from ``model.summary()``); what they reach and how fast they train is measured in
benchmarks/README.md (figures live there, next to the commands that produce them).
"""

from __future__ import annotations

from .layers import (
    AvgPool2D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    LeakyReLU,
    MaxPool2D,
    ReLU,
    Residual,
    Sequential,
    Tanh,
)
from .validation import Number, OneOf, check_settings


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


def cifar_vgg(input_shape=(3, 32, 32), num_classes: int = 10, seed: int | None = 0,
              width: int = 32, dropout: float = 0.3) -> Sequential:
    """A small VGG-style network: three blocks of two conv-BatchNorm-ReLU layers and a 2x2
    max pool (width, 2*width, 4*width channels), then dropout and one dense classifier.

    At 3x32x32 and width 32: 307,946 parameters, 77.8 MFLOPs per image (forward). Its speed
    and accuracy on CIFAR-10: benchmarks/README.md.
    """
    c, h, w = _check_shape(input_shape, "cifar_vgg", 8)
    layers, channels = [], c
    for out in (width, 2 * width, 4 * width):
        for _ in range(2):
            layers += [Conv2D(channels, out, 3, padding=1, bias=False), BatchNorm2D(out), ReLU()]
            channels = out
        layers.append(MaxPool2D(2))
    flat = channels * (h // 8) * (w // 8)
    layers += [Flatten(), Dropout(dropout), Dense(flat, num_classes)]
    return Sequential(layers, seed=seed, input_shape=input_shape)


def basic_block(in_channels: int, out_channels: int, stride: int = 1,
                kernel_size: int = 3) -> Residual:
    """The ResNet "basic block": a :class:`Residual` of Conv-BN-ReLU-Conv-BN plus the shortcut.

    The first convolution has the stride; a projection shortcut (1x1 Conv2D with the same
    stride, then BatchNorm2D) is added when the stride or the channel count changes.
    Convolutions have no bias: the BatchNorm after each one would cancel it.
    """
    pad = kernel_size // 2
    body = [Conv2D(in_channels, out_channels, kernel_size, stride=stride, padding=pad, bias=False),
            BatchNorm2D(out_channels), ReLU(),
            Conv2D(out_channels, out_channels, kernel_size, padding=pad, bias=False),
            BatchNorm2D(out_channels)]
    shortcut = None
    if stride != 1 or in_channels != out_channels:
        shortcut = [Conv2D(in_channels, out_channels, 1, stride=stride, bias=False),
                    BatchNorm2D(out_channels)]
    return Residual(body, shortcut)


def cifar_resnet(input_shape=(3, 32, 32), num_classes: int = 10, seed: int | None = 0,
                 width: int = 16, blocks_per_stage: int = 2) -> Sequential:
    """A small ResNet for 32x32 images (He et al., 2016, section 4.2).

    A conv-BatchNorm-ReLU stem, then three stages of ``blocks_per_stage`` residual basic
    blocks (:func:`basic_block`, each followed by a ReLU) with width, 2*width and
    4*width channels; the first block of stages 2 and 3 halves the resolution (stride 2) and
    has a 1x1 projection shortcut. Global average pooling and one dense layer classify.
    ``blocks_per_stage=3`` is the paper's ResNet-20; the default 2 is a ResNet-14.

    At 3x32x32, width 16 and 2 blocks per stage: 175,258 parameters, 53.9 MFLOPs per
    image (forward). Its speed and accuracy on CIFAR-10: benchmarks/README.md.
    """
    c, h, w = _check_shape(input_shape, "cifar_resnet", 4)
    width = int(width)
    if width < 1 or int(blocks_per_stage) < 1:
        raise ValueError(f"cifar_resnet: width and blocks_per_stage must be >= 1, got {width} "
                         f"and {blocks_per_stage}")
    layers = [Conv2D(c, width, 3, padding=1, bias=False), BatchNorm2D(width), ReLU()]
    channels = width
    for stage, out in enumerate((width, 2 * width, 4 * width)):
        for block in range(int(blocks_per_stage)):
            stride = 2 if stage > 0 and block == 0 else 1
            layers += [basic_block(channels, out, stride=stride), ReLU()]
            channels = out
    layers += [GlobalAvgPool2D(), Dense(channels, num_classes)]
    return Sequential(layers, seed=seed, input_shape=input_shape)


#: the activations :func:`tunable_cnn` offers
ACTIVATIONS = {"relu": ReLU, "leaky_relu": LeakyReLU, "tanh": Tanh}
#: the rules of :func:`tunable_cnn`'s arguments (``minicnn tune`` checks its search space by them)
TUNABLE_CNN_RULES = {
    "width": Number(int, low=1), "kernel_size": Number(int, low=1, odd=True),
    "activation": OneOf(tuple(ACTIVATIONS)), "dropout": Number(low=0, high=1, open_high=True),
    "blocks": Number(int, low=1),
}


def tunable_cnn(input_shape=(1, 28, 28), num_classes: int = 10, seed: int | None = 0, *,
                width: int = 32, kernel_size: int = 3, activation: str = "relu",
                dropout: float = 0.25, blocks: int = 3) -> Sequential:
    """The network ``minicnn tune`` searches over: ``blocks`` conv-BatchNorm-activation-pool
    blocks (width, 2*width, 4*width, ... channels; "same" padding, so the kernel size is odd),
    then dropout and a dense classifier. A block whose input is already 1 pixel wide skips the
    pool.

    ``activation`` is ``"relu"``, ``"leaky_relu"`` (slope 0.01) or ``"tanh"`` (then the
    convolutions start from Glorot instead of He initialization, which assumes ReLU). With the
    defaults it is exactly :func:`mnist_cnn`.
    """
    c, h, w = _check_shape(input_shape, "tunable_cnn", 1)
    check_settings(TUNABLE_CNN_RULES, {"width": width, "kernel_size": kernel_size,
                                       "activation": activation, "dropout": dropout,
                                       "blocks": blocks}, "tunable_cnn")
    make = ACTIVATIONS[activation]
    init = "glorot" if activation == "tanh" else "he"
    layers, channels = [], c
    for i in range(blocks):
        out = width * 2 ** i
        layers += [Conv2D(channels, out, kernel_size, padding=kernel_size // 2, bias=False,
                          init=init), BatchNorm2D(out), make()]
        if min(h, w) >= 2:
            layers.append(MaxPool2D(2))
            h, w = h // 2, w // 2
        channels = out
    layers += [Flatten(), Dropout(float(dropout)), Dense(channels * h * w, num_classes)]
    return Sequential(layers, seed=seed, input_shape=input_shape)


PRESETS = {"reference_cnn": reference_cnn, "mnist_cnn": mnist_cnn, "lenet5": lenet5,
           "cifar_vgg": cifar_vgg, "cifar_resnet": cifar_resnet}
#: every network a recipe may name: the presets and the one ``minicnn tune`` searches over
MODELS = {**PRESETS, "tunable_cnn": tunable_cnn}


def from_config(config: dict) -> Sequential:
    """Rebuild a model (fresh weights) from ``model.config()`` (the JSON a model file stores)."""
    from .layers.build import build_model

    if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
        raise ValueError("from_config: expected a dict with a 'layers' list (model.config())")
    return build_model(config, where="from_config")


__all__ = ["MODELS", "PRESETS", "basic_block", "cifar_resnet", "cifar_vgg", "from_config", "lenet5",
           "mnist_cnn", "reference_cnn", "tunable_cnn"]
