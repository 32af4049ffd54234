"""The layers. Each has a hand-written forward and backward pass; see ``base.Layer``.

``Sequential`` and ``Residual`` are layers made of layers (containers); ``build`` turns configs,
such as a model file's architecture, back into layers.
"""

from .activations import ELU, GELU, LeakyReLU, ReLU, Sigmoid, Tanh
from .base import Buffer, Layer, Parameter
from .conv import Conv2D
from .dense import Dense, Flatten
from .dropout import Dropout
from .normalization import BatchNorm2D
from .pooling import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from .registry import LAYER_TYPES  # every layer above, by name (each module registers its own)
from .residual import Residual
from .sequential import Sequential

__all__ = ["LAYER_TYPES", "AvgPool2D", "BatchNorm2D", "Buffer", "Conv2D", "Dense", "Dropout", "ELU",
           "Flatten", "GELU", "GlobalAvgPool2D", "Layer", "LeakyReLU", "MaxPool2D", "Parameter", "ReLU",
           "Residual", "Sequential", "Sigmoid", "Tanh"]
