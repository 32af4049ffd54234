"""Batch normalization over the channels of NCHW activations."""

from __future__ import annotations

import math

import numpy as np

from .. import backend
from ..validation import check_number, check_positive_int, check_rank
from .base import Buffer, Layer, Parameter
from .registry import register


@register
class BatchNorm2D(Layer):
    """Normalize each channel over (N, H, W), then scale by gamma and shift by beta.

    Training, per channel c over its M = N*H*W values:
    ``mu = mean(x)``, ``var = mean((x - mu)**2)`` (biased), ``xhat = (x - mu) / sqrt(var + eps)``,
    ``y = gamma * xhat + beta``. The running statistics follow PyTorch:
    ``running = (1 - momentum) * running + momentum * batch_stat``, using the *unbiased*
    variance ``var * M / (M - 1)`` for ``running_var``. At inference, ``running_mean`` and
    ``running_var`` replace mu and var, and y is a fixed affine map of x.

    Backward (training), with dy of shape (N, C, H, W) and sums over (N, H, W) per channel:

    - ``dL/dbeta = sum(dy)`` and ``dL/dgamma = sum(dy * xhat)`` — both shape (C,);
    - ``dL/dxhat = dy * gamma``. Because mu and var depend on every x of the channel, x reaches
      the loss through three paths, whose gradients add up (with ``sigma = sqrt(var + eps)``):

      1. directly, mu and sigma held fixed: ``dxhat / sigma``;
      2. through the mean: ``dmu = -sum(dxhat) / sigma`` (var's own dependence on mu adds
         ``dvar * -2/M * sum(x - mu)``, which is 0), and ``dmu/dx = 1/M``: ``dmu / M``;
      3. through the variance: ``dvar = sum(dxhat * (x - mu)) * -1/2 * sigma**-3`` and
         ``dvar/dx = 2 (x - mu) / M``: ``dvar * 2 (x - mu) / M``.

      With ``x - mu = sigma * xhat`` the three add up to the compact form
      ``dx = gamma / (M * sigma) * (M*dy - sum(dy) - xhat * sum(dy * xhat))``
      (each step checked by numbers in docs/notebooks/derivations.ipynb).

    Backward (inference): mu and var are constants, so ``dx = dy * gamma / sqrt(running_var + eps)``.
    """

    per_channel = True
    describe_as = "BatchNorm2D({num_features})"
    explain = ("Normalizes each channel by the batch's mean and variance in training (at inference "
               "by the running ones), then scales and shifts it with learned gamma and beta.")

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5,
                 dtype=np.float32):
        super().__init__()
        self.num_features = check_positive_int(num_features, "num_features", "BatchNorm2D")
        self.momentum = check_number(momentum, "momentum", "BatchNorm2D", low=0, high=1)
        self.eps = check_number(eps, "eps", "BatchNorm2D")
        if eps <= 0:
            raise ValueError(f"BatchNorm2D: eps must be > 0, got {eps}")
        xp = backend.xp(self.backend)
        self.gamma = Parameter(xp.ones(num_features, dtype=dtype), "gamma")
        self.beta = Parameter(xp.zeros(num_features, dtype=dtype), "beta")
        self.running_mean = Buffer(xp.zeros(num_features, dtype=dtype), "running_mean")
        self.running_var = Buffer(xp.ones(num_features, dtype=dtype), "running_var")

    def initialize(self, rng):
        xp = backend.xp(self.backend)
        dtype = self.gamma.data.dtype
        self.gamma.data = xp.ones(self.num_features, dtype=dtype)
        self.beta.data = xp.zeros(self.num_features, dtype=dtype)
        self.running_mean.data = xp.zeros(self.num_features, dtype=dtype)
        self.running_var.data = xp.ones(self.num_features, dtype=dtype)
        self.gamma.zero_grad()
        self.beta.zero_grad()

    def output_shape(self, input_shape):
        check_rank(input_shape, 3, f"(N, {self.num_features}, H, W)", "BatchNorm2D")
        if input_shape[0] != self.num_features:
            c, h, w = input_shape
            raise ValueError(
                f"BatchNorm2D: expected input with {self.num_features} channels, shape "
                f"(N, {self.num_features}, H, W), got shape (N, {c}, {h}, {w})"
            )
        return tuple(input_shape)

    def _forward(self, x, training):
        mean, inv_std = self._statistics(x, training)
        y = self.kernels.batchnorm_forward(x, mean, inv_std, self.gamma.data, self.beta.data)
        # x, not xhat, is kept: backward recomputes xhat = (x - mean) * inv_std on the fly,
        # which saves writing (and holding) a second array as large as the input
        return self._remember(y, cache=(x, mean, inv_std, training))

    def _statistics(self, x, training):
        """(mu, 1 / sigma) per channel: the batch's (updating the running statistics) when
        training, else the running ones."""
        kernels = self.kernels
        if training:
            count = x.shape[0] * x.shape[2] * x.shape[3]
            if count < 2:
                raise ValueError(
                    "BatchNorm2D: training needs more than one value per channel to estimate "
                    f"a variance, got input of shape {tuple(x.shape)}"
                )
            mean, var = kernels.channel_mean_var(x)
            m = self.momentum
            # in place, so that a step recorded once and replayed (minicnn.capture) keeps them
            self.running_mean.data *= 1 - m
            self.running_mean.data += m * mean
            self.running_var.data *= 1 - m
            self.running_var.data += m * var * (count / (count - 1))
        else:
            mean, var = self.running_mean.data, self.running_var.data
        return mean, 1 / backend.array_module(x).sqrt(var + self.eps)

    def _backward(self, dy, input_grad):
        x, mean, inv_std, training = self._cache
        dx, self.gamma.grad, self.beta.grad = self.kernels.batchnorm_backward(
            dy, x, mean, inv_std, self.gamma.data, batch_statistics=training)
        return dx

    # -- what the rest of minicnn asks of it: shapes, config, summary, studio, PyTorch, ONNX ---

    @classmethod
    def array_shapes(cls, config):
        c = check_positive_int(config.get("num_features"), "num_features", "BatchNorm2D")
        return {name: (c,) for name in ("gamma", "beta", "running_mean", "running_var")}

    def flops(self, input_shape):
        return 4 * math.prod(input_shape)

    shaped_like_x = ("xhat", "dxhat", "dL/dxhat")

    def symbols(self, input_shape, output_shape):
        n, c, h, w = input_shape
        per_channel = {name: (c,) for name in ("mu", "var", "sigma", "dmu", "dvar", "dL/dgamma",
                                                "dL/dbeta")}
        return {**super().symbols(input_shape, output_shape), **per_channel, "M": n * h * w}

    torch_name, onnx_op = "BatchNorm2d", "BatchNormalization"
    torch_arguments = ("num_features", "eps", "momentum")
    torch_arrays = {"gamma": "weight", "beta": "bias", "running_mean": "running_mean",
                    "running_var": "running_var"}
    onnx_inputs = ("gamma", "beta", "running_mean", "running_var")
    torch_requires = {"track_running_stats": True}
    onnx_attributes = {"epsilon": "eps"}
