"""2-D convolution as im2col + one matrix multiply."""

from __future__ import annotations

import numpy as np

from .. import backend
from ..init import INITIALIZERS, initialize
from ..kernels import conv_output_size
from ..validation import check_positive_int, check_rank
from .base import Layer, Parameter, pair


class Conv2D(Layer):
    """Cross-correlation of an (N, C, H, W) input with F filters of shape (C, KH, KW).

    ``y[n, f, oh, ow] = b[f] + sum_{c, i, j} W[f, c, i, j] * xpad[n, c, oh*SH + i, ow*SW + j]``

    where ``xpad`` is x with P zeros around each image. The output has shape (N, F, OH, OW)
    with ``OH = (H + 2*PH - KH) // SH + 1`` (and likewise OW).

    **Forward as one matrix multiply.** ``im2col`` copies every receptive field into a row:
    ``cols`` has shape (N*OH*OW, K) with K = C*KH*KW. With the filters flattened to
    ``W2 = W.reshape(F, K)``, the convolution is ``out = cols @ W2.T + b``, shape (N*OH*OW, F),
    which is reshaped and transposed to (N, F, OH, OW).

    **Backward.** Given ``dy = dL/dy`` of shape (N, F, OH, OW), first lay it out like ``out``:
    ``dout = dy.transpose(0, 2, 3, 1).reshape(N*OH*OW, F)``. Then, since ``out = cols @ W2.T + b``
    is an ordinary affine map of the rows of ``cols``:

    - ``dL/dW2 = dout.T @ cols``  — (F, N*OH*OW) @ (N*OH*OW, K) = (F, K), reshaped to W's shape.
      Each filter's gradient sums, over every output pixel it produced, dy times the patch it saw.
    - ``dL/db = dout.sum(axis=0)`` — (F,): the bias is added to every output pixel of its filter.
    - ``dL/dcols = dout @ W2`` — (N*OH*OW, F) @ (F, K) = (N*OH*OW, K).
    - ``dL/dx = col2im(dL/dcols)`` — (N, C, H, W). An input pixel was copied into every window
      that covers it, so its gradient is the *sum* of the gradients of those copies: col2im adds
      each row entry back to the pixel it came from (and drops the padding).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 bias: bool = True, init: str = "he", dtype=np.float32, rng=None):
        super().__init__()
        self.in_channels = check_positive_int(in_channels, "in_channels", "Conv2D")
        self.out_channels = check_positive_int(out_channels, "out_channels", "Conv2D")
        self.kernel_size = pair(kernel_size, "kernel_size", "Conv2D", minimum=1)
        self.stride = pair(stride, "stride", "Conv2D", minimum=1)
        self.padding = pair(padding, "padding", "Conv2D", minimum=0)
        if init not in INITIALIZERS:
            raise ValueError(f"Conv2D: init must be one of {INITIALIZERS}, got {init!r}")
        self.init = init
        kh, kw = self.kernel_size
        self.weight = Parameter(np.zeros((out_channels, in_channels, kh, kw), dtype), "weight")
        self.bias = Parameter(np.zeros(out_channels, dtype), "bias") if bias else None
        self.initialize(rng if rng is not None else np.random.default_rng())

    def initialize(self, rng):
        c, (kh, kw), f = self.in_channels, self.kernel_size, self.out_channels
        shape, dtype = self.weight.data.shape, self.weight.data.dtype
        weight = initialize(self.init, rng, shape, fan_in=c * kh * kw, fan_out=f * kh * kw,
                            dtype=dtype)
        self.weight.data = backend.to_device(weight)
        self.weight.zero_grad()
        if self.bias is not None:
            self.bias.data = backend.xp().zeros(f, dtype=dtype)
            self.bias.zero_grad()

    def config(self):
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(self.padding), "bias": self.bias is not None, "init": self.init}

    def describe(self):
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        return (f"Conv2D({self.in_channels}->{self.out_channels}, {kh}x{kw}, stride {sh},{sw}, "
                f"pad {ph},{pw}{'' if self.bias is not None else ', no bias'})")

    def output_shape(self, input_shape):
        check_rank(input_shape, 3, f"(N, {self.in_channels}, H, W)", "Conv2D")
        c, h, w = input_shape
        if c != self.in_channels:
            raise ValueError(
                f"Conv2D: expected input with {self.in_channels} channels, shape "
                f"(N, {self.in_channels}, H, W), got {c} channels in shape (N, {c}, {h}, {w})"
            )
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        if h + 2 * ph < kh or w + 2 * pw < kw:
            raise ValueError(
                f"Conv2D: kernel {kh}x{kw} is larger than the padded input "
                f"{h + 2 * ph}x{w + 2 * pw} (input {h}x{w}, padding {ph},{pw})"
            )
        oh = conv_output_size(h, kh, self.stride[0], ph)
        ow = conv_output_size(w, kw, self.stride[1], pw)
        return (self.out_channels, oh, ow)

    def flops(self, input_shape):
        f, oh, ow = self.output_shape(input_shape)
        k = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        return 2 * k * f * oh * ow + (f * oh * ow if self.bias is not None else 0)

    def _forward(self, x, training):
        kernels = backend.kernels()
        n = x.shape[0]
        f, oh, ow = self.output_shape(x.shape[1:])
        cols = kernels.im2col(x, self.kernel_size, self.stride, self.padding)
        weight2d = self.weight.data.reshape(f, -1)
        out = cols @ weight2d.T  # (N*OH*OW, F)
        if self.bias is not None:
            out += self.bias.data
        y = out.reshape(n, oh, ow, f).transpose(0, 3, 1, 2)
        y = backend.array_module(y).ascontiguousarray(y)
        return self._remember(y, cache=(x.shape, cols))

    def _backward(self, dy):
        x_shape, cols = self._cache
        f = self.out_channels
        dout = dy.transpose(0, 2, 3, 1).reshape(-1, f)  # (N*OH*OW, F)
        weight2d = self.weight.data.reshape(f, -1)
        self.weight.grad = (dout.T @ cols).reshape(self.weight.data.shape)
        if self.bias is not None:
            self.bias.grad = dout.sum(axis=0)
        dcols = dout @ weight2d
        return backend.kernels().col2im(dcols, x_shape, self.kernel_size, self.stride,
                                        self.padding)
