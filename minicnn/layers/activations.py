"""Element-wise activations. Each backward is ``dx = dy * f'(x)``, same shape as x."""

from __future__ import annotations

from .. import backend
from ..validation import check_number
from .base import Layer, shape_text
from .registry import register


@register
class ReLU(Layer):
    """``y = max(x, 0)``. Backward: ``dx = dy * (x > 0)`` — the slope is 1 where the input was
    positive and 0 elsewhere (at exactly 0 we take 0, as PyTorch does)."""

    rectifies = True
    per_channel = True

    torch_name, onnx_op = "ReLU", "Relu"

    def _forward(self, x, training):
        y = self.kernels.relu_forward(x)
        return self._remember(y, cache=y)

    def _backward(self, dy, input_grad):
        # y > 0 exactly where x > 0, so the output doubles as the mask (no extra array kept)
        return self.kernels.relu_backward(dy, self._cache)

    # -- what the rest of minicnn asks of it: shapes, config, summary, studio, PyTorch, ONNX ---
    def formula(self, input_shape, output_shape):
        return {"forward": [f"y = max(x, 0)   {shape_text(output_shape)}"],
                "backward": ["dx = dy * (x > 0)"],
                "explain": "Negative values become 0, and so does their gradient: only units "
                           "that fired pass the gradient down."}


@register
class LeakyReLU(Layer):
    """``y = x`` for x > 0 and ``negative_slope * x`` otherwise.
    Backward: ``dx = dy * (1 if x > 0 else negative_slope)``."""

    per_channel = True

    torch_name, torch_arguments = "LeakyReLU", ("negative_slope",)
    onnx_op, onnx_attributes = "LeakyRelu", {"alpha": "negative_slope"}

    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        self.negative_slope = check_number(negative_slope, "negative_slope", "LeakyReLU")

    def _forward(self, x, training):
        xp = backend.array_module(x)
        slope = xp.where(x > 0, x.dtype.type(1), x.dtype.type(self.negative_slope))
        return self._remember(x * slope, cache=slope)

    def _backward(self, dy, input_grad):
        return dy * self._cache

    # -- what the rest of minicnn asks of it: shapes, config, summary, studio, PyTorch, ONNX ---

    def describe(self):
        return f"LeakyReLU({self.negative_slope:g})"

    def formula(self, input_shape, output_shape):
        return {"forward": [f"y = x if x > 0 else {self.negative_slope:g} * x"],
                "backward": [f"dx = dy * (1 if x > 0 else {self.negative_slope:g})"],
                "explain": "Like ReLU, but negative inputs keep a small slope."}


@register
class Sigmoid(Layer):
    """``y = 1 / (1 + exp(-x))``. Backward: ``dx = dy * y * (1 - y)`` (uses the cached output).

    Computed as ``exp(min(x, 0)) / (1 + exp(-|x|))``, which never overflows."""

    per_channel = True

    torch_name, onnx_op = "Sigmoid", "Sigmoid"

    def _forward(self, x, training):
        xp = backend.array_module(x)
        e = xp.exp(-xp.abs(x))
        y = xp.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
        return self._remember(y, cache=y)

    def _backward(self, dy, input_grad):
        y = self._cache
        return dy * y * (1 - y)

    # -- what the rest of minicnn asks of it: shapes, config, summary, studio, PyTorch, ONNX ---
    def formula(self, input_shape, output_shape):
        return {"forward": ["y = 1 / (1 + exp(-x))"], "backward": ["dx = dy * y * (1 - y)"],
                "explain": "Squashes into (0, 1); its slope is at most 1/4."}


@register
class Tanh(Layer):
    """``y = tanh(x)``. Backward: ``dx = dy * (1 - y**2)`` (uses the cached output)."""

    per_channel = True

    torch_name, onnx_op = "Tanh", "Tanh"

    def _forward(self, x, training):
        y = backend.array_module(x).tanh(x)
        return self._remember(y, cache=y)

    def _backward(self, dy, input_grad):
        y = self._cache
        return dy * (1 - y * y)

    # -- what the rest of minicnn asks of it: shapes, config, summary, studio, PyTorch, ONNX ---
    def formula(self, input_shape, output_shape):
        return {"forward": ["y = tanh(x)"], "backward": ["dx = dy * (1 - y**2)"],
                "explain": "Squashes into (-1, 1)."}


@register
class ELU(Layer):
    """``y = x`` for x > 0 and ``alpha * (exp(x) - 1)`` otherwise (Clevert et al., 2016): smooth
    where ReLU has a kink (for alpha = 1), and its negative outputs pull the mean activation
    towards 0.

    Backward: ``dx = dy * (1 if x > 0 else y + alpha)``: for x <= 0 the slope is
    ``alpha * exp(x)``, which is ``y + alpha``, so the cached output gives it without another
    exp."""

    per_channel = True

    torch_name, torch_arguments = "ELU", ("alpha",)
    onnx_op, onnx_attributes = "Elu", {"alpha": "alpha"}

    def __init__(self, alpha: float = 1.0):
        super().__init__()
        self.alpha = check_number(alpha, "alpha", "ELU")

    def _forward(self, x, training):
        xp = backend.array_module(x)
        positive = x > 0
        y = xp.where(positive, x, self.alpha * xp.expm1(xp.minimum(x, 0)))
        return self._remember(y.astype(x.dtype, copy=False), cache=(positive, y))

    def _backward(self, dy, input_grad):
        positive, y = self._cache
        return dy * backend.array_module(dy).where(positive, 1, y + self.alpha)

    # -- what the rest of minicnn asks of it: shapes, config, summary, studio, PyTorch, ONNX ---

    def describe(self):
        return f"ELU({self.alpha:g})"

    def formula(self, input_shape, output_shape):
        return {"forward": [f"y = x if x > 0 else {self.alpha:g} * (exp(x) - 1)"],
                "backward": [f"dx = dy * (1 if x > 0 else y + {self.alpha:g})"],
                "explain": "Like ReLU for positive inputs; negative ones bend smoothly towards "
                           f"-{self.alpha:g} and keep a gradient."}
