"""Element-wise activations. Each backward is ``dx = dy * f'(x)``, same shape as x."""

from __future__ import annotations

import math

import numpy as np

from .. import backend
from ..validation import check_number
from .base import Layer
from .registry import register


@register
class ReLU(Layer):
    """``y = max(x, 0)``. Backward: ``dx = dy * (x > 0)`` — the slope is 1 where the input was
    positive and 0 elsewhere (at exactly 0 we take 0, as PyTorch does)."""

    rectifies = True
    per_channel = True
    explain = ("Negative values become 0, and so does their gradient: only units that fired pass "
               "the gradient down.")

    torch_name, onnx_op = "ReLU", "Relu"

    def _forward(self, x, training):
        y = self.kernels.relu_forward(x)
        return self._remember(y, cache=y)

    def _backward(self, dy, input_grad):
        # y > 0 exactly where x > 0, so the output doubles as the mask (no extra array kept)
        return self.kernels.relu_backward(dy, self._cache)


@register
class LeakyReLU(Layer):
    """``y = x if x > 0 else negative_slope * x``.
    Backward: ``dx = dy * (1 if x > 0 else negative_slope)``."""

    per_channel = True
    explain = "Like ReLU, but negative inputs keep a small slope."

    torch_name, torch_arguments = "LeakyReLU", ("negative_slope",)
    onnx_op, onnx_attributes = "LeakyRelu", {"alpha": "negative_slope"}
    describe_as = "LeakyReLU({negative_slope:g})"

    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        self.negative_slope = check_number(negative_slope, "negative_slope", "LeakyReLU")

    def _forward(self, x, training):
        xp = backend.array_module(x)
        slope = xp.where(x > 0, x.dtype.type(1), x.dtype.type(self.negative_slope))
        return self._remember(x * slope, cache=slope)

    def _backward(self, dy, input_grad):
        return dy * self._cache


@register
class Sigmoid(Layer):
    """``y = 1 / (1 + exp(-x))``. Backward: ``dx = dy * y * (1 - y)`` (uses the cached output).

    Computed as ``exp(min(x, 0)) / (1 + exp(-|x|))``, which never overflows."""

    per_channel = True
    explain = "Squashes into (0, 1); its slope is at most 1/4."

    torch_name, onnx_op = "Sigmoid", "Sigmoid"

    def _forward(self, x, training):
        xp = backend.array_module(x)
        e = xp.exp(-xp.abs(x))
        y = xp.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
        return self._remember(y, cache=y)

    def _backward(self, dy, input_grad):
        y = self._cache
        return dy * y * (1 - y)


@register
class Tanh(Layer):
    """``y = tanh(x)``. Backward: ``dx = dy * (1 - y**2)`` (uses the cached output)."""

    per_channel = True
    explain = "Squashes into (-1, 1)."

    torch_name, onnx_op = "Tanh", "Tanh"

    def _forward(self, x, training):
        y = backend.array_module(x).tanh(x)
        return self._remember(y, cache=y)

    def _backward(self, dy, input_grad):
        y = self._cache
        return dy * (1 - y * y)


@register
class ELU(Layer):
    """``y = x if x > 0 else alpha * (exp(x) - 1)`` (Clevert et al., 2016): smooth where ReLU has
    a kink (for alpha = 1), and its negative outputs pull the mean activation towards 0.

    Backward: ``dx = dy * (1 if x > 0 else y + alpha)``: for x <= 0 the slope is
    ``alpha * exp(x)``, which is ``y + alpha``, so the cached output gives it without another
    exp."""

    per_channel = True
    explain = ("Like ReLU for positive inputs; negative ones bend smoothly towards -{alpha:g} and "
               "keep a gradient.")

    torch_name, torch_arguments = "ELU", ("alpha",)
    onnx_op, onnx_attributes = "Elu", {"alpha": "alpha"}
    describe_as = "ELU({alpha:g})"

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


@register
class GELU(Layer):
    """``y = x * Phi(x)``, with Phi the standard normal distribution's CDF (Hendrycks & Gimpel,
    2016): the input weighted by how likely a standard normal value lies below it, a smooth
    ReLU that dips a little below 0 for negative inputs (at least -0.17, near x = -0.75).
    ``Phi(x) = (1 + erf(x / sqrt(2))) / 2``; with ``approximate="tanh"`` (GPT-2's form;
    PyTorch's ``approximate`` names both) it is approximated by ``Phi(x) = (1 + t) / 2`` with
    ``t = tanh(u)``, ``u = k * (x + 0.044715 * x**3)`` and ``k = sqrt(2 / pi)``.

    Backward, by the product rule: ``dx = dy * (Phi(x) + x * Phi'(x))``. Phi's derivative is the
    normal density, ``Phi'(x) = erf'(x / sqrt(2)) / (2 * sqrt(2)) = exp(-x**2 / 2) / sqrt(2 * pi)``;
    for the tanh form, by the chain rule through tanh (whose slope is 1 - t**2),
    ``Phi'(x) = (1 - t**2) / 2 * k * (1 + 3 * 0.044715 * x**2)``."""

    per_channel = True
    explain = ("A smooth ReLU: each input weighted by the chance that a standard normal value lies "
               "below it.")

    torch_name, torch_arguments = "GELU", ("approximate",)

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def _forward(self, x, training):
        xp = backend.array_module(x)
        if self.approximate == "tanh":
            t = xp.tanh(_K * (x + 0.044715 * x**3))
            Phi = (1 + t) / 2
        else:
            t = None
            Phi = (1 + _erf(xp)(x / math.sqrt(2))) / 2
        y = x * Phi
        return self._remember(y.astype(x.dtype, copy=False), cache=(x, Phi, t))

    def _backward(self, dy, input_grad):
        x, Phi, t = self._cache
        xp = backend.array_module(dy)
        if t is not None:
            dPhi = (1 - t * t) / 2 * _K * (1 + 3 * 0.044715 * x * x)
        else:
            dPhi = xp.exp(-x * x / 2) / math.sqrt(2 * math.pi)
        return dy * (Phi + x * dPhi)

    # -- what the rest of minicnn asks of it: shapes, config, summary, studio, PyTorch, ONNX ---

    def describe(self):
        return "GELU(tanh)" if self.approximate == "tanh" else "GELU()"

    def symbols(self, input_shape, output_shape):
        tanh = self.approximate == "tanh"  # the equations of the other form are left out
        return {**super().symbols(input_shape, output_shape), "erf": None if tanh else True,
                **{name: True if tanh else None for name in ("t", "u", "k")}}

    def to_onnx(self, graph, x, name):
        # ONNX has Gelu from opset 20 only; minicnn writes 17: the formula, node by node
        def constant(label, value):
            return graph.weight(f"{name}.{label}", np.asarray(value, np.float32))

        if self.approximate == "tanh":
            cube = graph.node("Mul", [graph.node("Mul", [x, x], f"{name}.x2"), x], f"{name}.x3")
            inner = graph.node("Add", [x, graph.node("Mul", [cube, constant("c", 0.044715)],
                                                     f"{name}.cx3")], f"{name}.sum")
            z = graph.node("Tanh", [graph.node("Mul", [inner, constant("k", _K)], f"{name}.u")],
                           f"{name}.t")
        else:
            z = graph.node("Erf", [graph.node("Div", [x, constant("sqrt2", math.sqrt(2))],
                                              f"{name}.scaled")], f"{name}.erf")
        one_plus = graph.node("Add", [z, constant("one", 1.0)], f"{name}.one_plus")  # 2 Phi
        return graph.node("Mul", [graph.node("Mul", [x, one_plus], f"{name}.x_one_plus"),
                                  constant("half", 0.5)], name)


_K = math.sqrt(2 / math.pi)


def _erf(xp):
    """The error function for arrays of ``xp`` (numpy has none: SciPy's, or CuPy's)."""
    if xp is np:
        from scipy.special import erf
    else:
        from cupyx.scipy.special import erf
    return erf

