"""Residual connection: ``y = f(x) + g(x)``, with g the identity or a projection (He et al., 2016)."""

from __future__ import annotations

import math

from . import fused
from .activations import ReLU
from .base import Layer
from .conv import Conv2D
from .normalization import BatchNorm2D
from .registry import register
from .sequential import Sequential


@register
class Residual(Layer):
    """A block that adds its input back to what its layers make of it: ``y = f(x) + g(x)``.

    ``f`` is ``body``, a Sequential (or a list of layers, made into one), typically
    Conv-BN-ReLU-Conv-BN. ``g`` is the *shortcut*: the identity when ``shortcut`` is None,
    otherwise a Sequential (a *projection*, typically a 1x1 Conv2D with the body's stride,
    optionally followed by BatchNorm2D) for when the body changes the number of channels or the
    resolution, since the sum needs two tensors of one shape. The usual ReLU after the sum is a
    separate layer placed after the block.

    Shapes, for an input x of shape (N, C, H, W) and a body ending in F channels at stride S:
    ``a = f(x)`` and ``b = g(x)`` both have shape (N, F, H', W') with H' = ceil(H / S) for
    3x3 "same" convolutions; the identity shortcut needs F = C and S = 1.

    **Backward.** The sum copies dL/dy to both of its operands: ``dL/da = dL/db = dy``, shape
    (N, F, H', W'). x reaches the loss along two paths, so its gradient is the sum of what
    each path sends back (the same rule that makes col2im add overlapping windows):

    - ``dx_body = f.backward(dy)``, shape (N, C, H, W);
    - ``dx_short = dy`` for the identity, else ``g.backward(dy)`` (a 1x1 stride-S convolution
      spreads dy back to the pixels it sampled);
    - ``dL/dx = dx_body + dx_short``, shape (N, C, H, W).

    The identity path is why deep residual networks train: whatever the body's gradients do,
    ``dy`` reaches the input unchanged.

    Everything else (parameters, arrays named ``body.<i>.<name>`` and ``shortcut.<i>.<name>``
    in a model file, Dropout's random state in checkpoints) comes from the two Sequentials,
    which are this layer's ``children()``.
    """

    sublayer_fields = ("body", "shortcut")
    explain = "Adds the input back: the gradient reaches x along both paths."

    def __init__(self, body, shortcut=None):
        super().__init__()
        self.body = _sequential(body, "body")
        self.shortcut = None if shortcut is None else _sequential(shortcut, "shortcut")

    def output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        out = _shape(self.body, input_shape, "body")
        short = input_shape if self.shortcut is None else _shape(self.shortcut, input_shape,
                                                                 "shortcut")
        if out != short:
            fix = (" (add a projection shortcut, e.g. a 1x1 Conv2D with the body's stride)"
                   if self.shortcut is None else "")
            raise ValueError(
                f"Residual: the body maps input (N, {', '.join(map(str, input_shape))}) to "
                f"(N, {', '.join(map(str, out))}) but the shortcut gives "
                f"(N, {', '.join(map(str, short))}); they must match to be added{fix}"
            )
        return out

    def _forward(self, x, training):
        a = self.body._run_forward(x, training)
        b = x if self.shortcut is None else self.shortcut._run_forward(x, training)
        return self._remember(a + b)  # a new array: inner layers may cache their outputs

    def _backward(self, dy, input_grad):
        dx_body = self.body.backward(dy, input_grad=input_grad)
        dx_short = dy if self.shortcut is None else \
            self.shortcut.backward(dy, input_grad=input_grad)
        if not input_grad:
            return None
        return dx_body + dx_short

    # -- what the rest of minicnn asks of it: shapes, config, summary, studio, PyTorch, ONNX ---
    @classmethod
    def basic_block(cls, in_channels: int, out_channels: int, stride: int = 1,
                    kernel_size: int = 3) -> Residual:
        """The ResNet "basic block": Conv-BN-ReLU-Conv-BN plus the shortcut.

        The first convolution has the stride; a projection shortcut (1x1 Conv2D with the same
        stride, then BatchNorm2D) is added when the stride or the channel count changes.
        Convolutions have no bias: the BatchNorm after each one would cancel it.
        """
        pad = kernel_size // 2
        body = [Conv2D(in_channels, out_channels, kernel_size, stride=stride, padding=pad,
                       bias=False),
                BatchNorm2D(out_channels), ReLU(),
                Conv2D(out_channels, out_channels, kernel_size, padding=pad, bias=False),
                BatchNorm2D(out_channels)]
        shortcut = None
        if stride != 1 or in_channels != out_channels:
            shortcut = [Conv2D(in_channels, out_channels, 1, stride=stride, bias=False),
                        BatchNorm2D(out_channels)]
        return cls(body, shortcut)

    @property
    def convolutional(self) -> bool:
        return any(layer.convolutional for layer in self.body)

    def describe(self):
        short = "identity" if self.shortcut is None else \
            " ".join(layer.describe() for layer in self.shortcut)
        return f"Residual[{' '.join(layer.describe() for layer in self.body)} | {short}]"

    def flops(self, input_shape):
        return super().flops(input_shape) + math.prod(self.output_shape(input_shape))  # + the sum

    shaped_like_x, shaped_like_y = ("dx_body", "dx_short"), ("a", "b", "dL/da", "dL/db")
    torch_name = "TorchResidual"  # minicnn.interop.torch_residual_class(): body + shortcut

    def to_torch(self, bridge):
        shortcut = None if self.shortcut is None else self.shortcut.to_torch(bridge)
        return bridge.residual(self.body.to_torch(bridge), shortcut)

    @classmethod
    def from_torch(cls, module, bridge, path):
        shortcut = None if isinstance(module.shortcut, bridge.nn.Identity) else \
            bridge.layers(module.shortcut, f"{path}.shortcut")
        return cls(bridge.layers(module.body, f"{path}.body"), shortcut)

    def to_onnx(self, graph, x, name):
        body = self.body.to_onnx(graph, x, f"{name}.body")
        shortcut = x if self.shortcut is None else \
            self.shortcut.to_onnx(graph, x, f"{name}.shortcut")
        return graph.node("Add", [body, shortcut], name)


def _sequential(layers, what: str) -> Sequential:
    if isinstance(layers, Sequential):
        return layers
    try:
        return Sequential([layers] if isinstance(layers, Layer) else layers)
    except (TypeError, ValueError) as err:
        raise type(err)(f"Residual: {what}: {str(err).removeprefix('Sequential: ')}") from None


def _shape(layers: Sequential, input_shape, what: str) -> tuple:
    try:
        return layers.output_shape(input_shape)
    except ValueError as err:
        raise ValueError(f"Residual: {what} {err}") from None


__all__ = ["Residual"]


# the block and the ReLU after it as one pass in Sequential (layers/fused.py)
fused.PAIRS[Residual, ReLU] = (fused.residual_relu_forward, fused.residual_relu_backward,
                               "add_relu")
