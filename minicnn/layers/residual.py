"""Residual connection: ``y = f(x) + g(x)``, with g the identity or a projection (He et al., 2016)."""

from __future__ import annotations

import math

from . import fused
from .activations import ReLU
from .base import Layer
from .registry import register
from .sequential import as_sequential, field_output_shape


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

    ``minicnn.models.basic_block(C, F, stride)`` builds ResNet's usual one: the body
    Conv-BN-ReLU-Conv-BN with the stride in its first convolution, and a projection shortcut
    (1x1 Conv2D with that stride, then BatchNorm2D) where the stride or channel count changes.

    Everything else (parameters, arrays named ``body.<i>.<name>`` and ``shortcut.<i>.<name>``
    in a model file, Dropout's random state in checkpoints) comes from the two Sequentials,
    which are this layer's ``children()``.
    """

    sublayer_fields = ("body", "shortcut")
    explain = "Adds the input back: the gradient reaches x along both paths."

    def __init__(self, body, shortcut=None):
        super().__init__()
        self.body = as_sequential(body, "Residual: body")
        self.shortcut = None if shortcut is None else as_sequential(shortcut, "Residual: shortcut")

    def output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        out = field_output_shape(self.body, input_shape, "Residual: body")
        short = input_shape if self.shortcut is None else \
            field_output_shape(self.shortcut, input_shape, "Residual: shortcut")
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
        return self._remember(self.kernels.add(a, b))  # a new array: inner layers may cache theirs

    def _backward(self, dy, input_grad):
        dx_body = self.body.backward(dy, input_grad=input_grad)
        dx_short = dy if self.shortcut is None else \
            self.shortcut.backward(dy, input_grad=input_grad)
        if not input_grad:
            return None
        return self.kernels.add(dx_body, dx_short)

    # -- what the rest of minicnn asks of it: shapes, config, summary, studio, PyTorch, ONNX ---
    convolutional = property(lambda self: any(layer.convolutional for layer in self.body))
    shaped_like_x, shaped_like_y = ("dx_body", "dx_short"), ("a", "b", "dL/da", "dL/db")
    torch_name = "TorchResidual"  # minicnn.interop.torch_residual_class(): body + shortcut
    onnx_op = "Add"  # of the body's and the shortcut's outputs

    def describe(self):
        body, short = (" ".join(layer.describe() for layer in inner) if inner else "identity"
                       for _, inner in self._fields())
        return f"Residual[{body} | {short}]"

    def flops(self, input_shape):
        return super().flops(input_shape) + math.prod(self.output_shape(input_shape))  # + the sum


__all__ = ["Residual"]


# the block and the ReLU after it as one pass in Sequential (layers/fused.py)
fused.PAIRS[Residual, ReLU] = (fused.residual_relu_forward, fused.residual_relu_backward,
                               "add_relu")
