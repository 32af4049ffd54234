"""The layers. Each has a hand-written forward and backward pass; see ``base.Layer``.

``Sequential`` and ``Residual`` are layers made of layers (containers); ``build`` turns configs,
such as a model file's architecture, back into layers.
"""

from .activations import LeakyReLU, ReLU, Sigmoid, Tanh
from .base import Buffer, Layer, Parameter
from .conv import Conv2D
from .dense import Dense, Flatten
from .dropout import Dropout
from .normalization import BatchNorm2D
from .pooling import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from .residual import Residual
from .sequential import Sequential

#: every layer type a config (a model file) may name
LAYER_TYPES = {
    cls.__name__: cls
    for cls in (Conv2D, MaxPool2D, AvgPool2D, GlobalAvgPool2D, Dense, Flatten, ReLU, LeakyReLU,
                Sigmoid, Tanh, Dropout, BatchNorm2D, Residual, Sequential)
}

__all__ = ["Layer", "Parameter", "Buffer", "LAYER_TYPES", *LAYER_TYPES]
