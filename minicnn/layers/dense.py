"""Fully connected layer and Flatten."""

from __future__ import annotations

import numpy as np

from .. import backend
from ..init import INITIALIZERS, initialize
from ..validation import check_positive_int
from .base import Layer, Parameter
from .registry import register


@register
class Dense(Layer):
    """Affine map ``y = x @ W + b`` with x (N, in_features), W (in_features, out_features).

    (W is the transpose of PyTorch's Linear.weight, so that the formula reads left to right.)

    Backward, with dy = dL/dy of shape (N, out_features): y_nj = sum_i x_ni W_ij + b_j, so

    - ``dL/dW = x.T @ dy``  — (in, N) @ (N, out) = (in, out): sums over the batch;
    - ``dL/db = dy.sum(axis=0)`` — (out,): b is added to every sample;
    - ``dL/dx = dy @ W.T`` — (N, out) @ (out, in) = (N, in).
    """

    linear_map = True
    describe_as = "Dense({in_features}->{out_features})"
    explain = ("A fully connected layer: every output is a weighted sum of every input. Its "
               "backward pass sends dy back through the transposed weights.")

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 init: str = "he", dtype=np.float32, rng=None):
        super().__init__()
        self.in_features = check_positive_int(in_features, "in_features", "Dense")
        self.out_features = check_positive_int(out_features, "out_features", "Dense")
        if init not in INITIALIZERS:
            raise ValueError(f"Dense: init must be one of {INITIALIZERS}, got {init!r}")
        self.init = init
        self.weight = Parameter(np.zeros((in_features, out_features), dtype), "weight")
        self.bias = Parameter(np.zeros(out_features, dtype), "bias") if bias else None
        self.initialize(rng if rng is not None else np.random.default_rng())

    def initialize(self, rng):
        dtype = self.weight.data.dtype
        weight = initialize(self.init, rng, (self.in_features, self.out_features),
                            fan_in=self.in_features, fan_out=self.out_features, dtype=dtype)
        self.weight.data = backend.to_device(weight, self.backend)
        self.weight.zero_grad()
        if self.bias is not None:
            self.bias.data = backend.xp(self.backend).zeros(self.out_features, dtype=dtype)
            self.bias.zero_grad()

    def output_shape(self, input_shape):
        if len(input_shape) != 1:
            raise ValueError(
                f"Dense: expected a 2-D input of shape (N, {self.in_features}), got shape "
                f"(N, {', '.join(map(str, input_shape))}); put a Flatten() layer before Dense"
            )
        if input_shape[0] != self.in_features:
            raise ValueError(
                f"Dense: expected input of shape (N, {self.in_features}), got (N, {input_shape[0]})"
            )
        return (self.out_features,)

    def _forward(self, x, training):
        y = self.kernels.matmul(x, self.weight.data)                 # x @ W, (N, out)
        if self.bias is not None:
            y += self.bias.data
        return self._remember(y, cache=x)

    def _backward(self, dy, input_grad):
        x = self._cache
        self.weight.grad = self.kernels.matmul(x.T, dy)               # x.T @ dy, (in, out)
        if self.bias is not None:
            self.bias.grad = dy.sum(axis=0)                          # (out,)
        if not input_grad:
            return None
        return self.kernels.matmul(dy, self.weight.data.T)           # dy @ W.T, (N, in)

    # -- what the rest of minicnn asks of it: shapes, config, summary, studio, PyTorch, ONNX ---

    @classmethod
    def array_shapes(cls, config):
        n_in = check_positive_int(config.get("in_features"), "in_features", "Dense")
        n_out = check_positive_int(config.get("out_features"), "out_features", "Dense")
        return {"weight": (n_in, n_out), **({"bias": (n_out,)} if config.get("bias", True) else {})}

    def flops(self, input_shape):
        return (2 * self.in_features + (self.bias is not None)) * self.out_features

    # y = x @ W + b is x @ weight.T + bias in PyTorch's Linear: W travels transposed
    torch_name, onnx_op = "Linear", "Gemm"
    torch_arguments = ("in_features", "out_features", "bias")
    torch_arrays, onnx_inputs = {"weight": "weight", "bias": "bias"}, ("weight", "bias")
    torch_transposed = ("weight",)
    array_symbols = {"W": "weight", "b": "bias"}


@register
class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1*d2*...): ``y = x.reshape(N, -1)``. Backward reshapes dy back to
    the input's shape, ``dx = dy.reshape(x.shape)``: flattening only relabels the elements, so each
    gradient goes back to where it came from."""

    explain = "Lays the maps out as one vector; nothing is computed."

    def output_shape(self, input_shape):
        return (int(np.prod(input_shape)),)

    def _forward(self, x, training):
        return self._remember(x.reshape(x.shape[0], -1), cache=x.shape)

    def _backward(self, dy, input_grad):
        return dy.reshape(self._cache)

    # -- what the rest of minicnn asks of it: shapes, config, summary, studio, PyTorch, ONNX ---
    torch_name, onnx_op = "Flatten", "Flatten"
    torch_requires = {"start_dim": 1, "end_dim": -1}
    onnx_attributes = {"axis": 1}


__all__ = ["Dense", "Flatten"]
