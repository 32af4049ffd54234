"""Element-wise activations. Each backward is ``dx = dy * f'(x)``, same shape as x."""

from __future__ import annotations

from .. import backend
from ..validation import check_number
from .base import Layer


class ReLU(Layer):
    """``y = max(x, 0)``. Backward: ``dx = dy * (x > 0)`` — the slope is 1 where the input was
    positive and 0 elsewhere (at exactly 0 we take 0, as PyTorch does)."""

    def _forward(self, x, training):
        y = self.kernels.relu_forward(x)
        return self._remember(y, cache=y)

    def _backward(self, dy):
        # y > 0 exactly where x > 0, so the output doubles as the mask (no extra array kept)
        return self.kernels.relu_backward(dy, self._cache)


class LeakyReLU(Layer):
    """``y = x`` for x > 0 and ``negative_slope * x`` otherwise.
    Backward: ``dx = dy * (1 if x > 0 else negative_slope)``."""

    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        self.negative_slope = check_number(negative_slope, "negative_slope", "LeakyReLU")

    def config(self):
        return {"negative_slope": self.negative_slope}

    def describe(self):
        return f"LeakyReLU({self.negative_slope:g})"

    def _forward(self, x, training):
        xp = backend.array_module(x)
        slope = xp.where(x > 0, x.dtype.type(1), x.dtype.type(self.negative_slope))
        return self._remember(x * slope, cache=slope)

    def _backward(self, dy):
        return dy * self._cache


class Sigmoid(Layer):
    """``y = 1 / (1 + exp(-x))``. Backward: ``dx = dy * y * (1 - y)`` (uses the cached output).

    Computed as ``exp(min(x, 0)) / (1 + exp(-|x|))``, which never overflows."""

    def _forward(self, x, training):
        xp = backend.array_module(x)
        e = xp.exp(-xp.abs(x))
        y = xp.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
        return self._remember(y, cache=y)

    def _backward(self, dy):
        y = self._cache
        return dy * y * (1 - y)


class Tanh(Layer):
    """``y = tanh(x)``. Backward: ``dx = dy * (1 - y**2)`` (uses the cached output)."""

    def _forward(self, x, training):
        y = backend.array_module(x).tanh(x)
        return self._remember(y, cache=y)

    def _backward(self, dy):
        y = self._cache
        return dy * (1 - y * y)
