"""2-D convolution as im2col + one matrix multiply."""

from __future__ import annotations

import math

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

    **Forward as one matrix multiply.** ``im2col`` copies every receptive field into a column:
    ``cols`` has shape (K, N*OH*OW) with K = C*KH*KW, one column per output pixel. With the
    filters flattened to ``W2 = W.reshape(F, K)``, the convolution is ``out = W2 @ cols + b``,
    shape (F, N*OH*OW): row f holds filter f's response at every output pixel of every sample.
    A layout change (adding b on the way) turns it into (N, F, OH, OW).

    **Backward.** Given ``dy = dL/dy`` of shape (N, F, OH, OW), first lay it out like ``out``:
    ``dout`` of shape (F, N*OH*OW). Then, since ``out = W2 @ cols + b`` is an ordinary affine
    map of the columns of ``cols``:

    - ``dL/dW2 = dout @ cols.T`` — (F, N*OH*OW) @ (N*OH*OW, K) = (F, K), reshaped to W's shape.
      Each filter's gradient sums, over every output pixel it produced, dy times the patch it saw.
    - ``dL/db = dout.sum(axis=1)`` — (F,): the bias is added to every output pixel of its filter.
    - ``dL/dcols = W2.T @ dout`` — (K, F) @ (F, N*OH*OW) = (K, N*OH*OW).
    - ``dL/dx = col2im(dL/dcols)`` — (N, C, H, W). An input pixel was copied into every window
      that covers it, so its gradient is the *sum* of the gradients of those copies: col2im adds
      each column entry back to the pixel it came from (and drops the padding).

    Why columns, not rows (``cols.T``, the other common layout)? Both give the same numbers;
    in this one a row of ``cols`` is a shifted copy of one input channel, and ``out``'s rows are
    whole output planes, so im2col, col2im and the layout changes all move long contiguous runs
    of memory — about twice as fast on a CPU as the row layout, where a 3x3 window is 9
    scattered values.
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
        self._buffers = {}  # reusable im2col / gradient workspaces
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

    def workspace_bytes(self, input_shape, itemsize):
        # the im2col columns of one sample: OH*OW receptive fields of C*KH*KW values each, and
        # the (F, OH*OW) GEMM output before the layout change
        f, oh, ow = self.output_shape(input_shape)
        k = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        return oh * ow * (k + f) * itemsize

    def _workspace(self, name, shape, dtype):
        """A scratch array reused across calls (regrown only when a bigger one is needed), so
        the largest buffers are not allocated afresh for every batch."""
        size = math.prod(shape)
        buffer = self._buffers.get(name)
        xp = backend.xp()
        if buffer is None or buffer.size < size or buffer.dtype != dtype \
                or not isinstance(buffer, xp.ndarray):
            buffer = xp.empty(size, dtype=dtype)
            self._buffers[name] = buffer
        return buffer[:size].reshape(shape)

    def _samples_per_chunk(self, n, itemsize):
        """How many samples fit in the im2col budget (at least one)."""
        f, oh, ow = self._output_shape[1:]
        k = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        return max(1, min(n, backend.im2col_budget() // max(1, oh * ow * k * itemsize)))

    def _im2col(self, x):
        k = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        _, _, oh, ow = self._output_shape
        cols = self._workspace("cols", (k, x.shape[0] * oh * ow), x.dtype)
        return backend.kernels().im2col(x, self.kernel_size, self.stride, self.padding, out=cols)

    def _convolve(self, x, weight2d, bias):
        """y for a batch (or chunk) x: im2col, one GEMM, then back to NCHW (adding the bias)."""
        xp = backend.array_module(x)
        n, f, oh, ow = (len(x),) + self._output_shape[1:]
        cols = self._im2col(x)
        dtype = xp.result_type(weight2d.dtype, x.dtype)
        out = xp.matmul(weight2d, cols, out=self._workspace("out", (f, n * oh * ow), dtype))
        return cols, backend.kernels().cnhw_to_nchw(out, bias, n, oh, ow)

    def _forward(self, x, training):
        xp = backend.array_module(x)
        n = x.shape[0]
        f, oh, ow = self.output_shape(x.shape[1:])
        self._output_shape = (n, f, oh, ow)
        weight2d = self.weight.data.reshape(f, -1)
        bias = self.bias.data if self.bias is not None else None
        chunk = self._samples_per_chunk(n, x.dtype.itemsize)
        if chunk >= n:
            cols, y = self._convolve(x, weight2d, bias)
        else:  # a batch too large for one im2col buffer: one chunk of samples at a time
            y = xp.concatenate([self._convolve(x[s:s + chunk], weight2d, bias)[1]
                                for s in range(0, n, chunk)])
            cols = None  # backward rebuilds the columns chunk by chunk from x
        return self._remember(y, cache=(x, cols))

    def _backward(self, dy):
        # the derivation is in the class docstring; chunk by chunk when the forward pass
        # could not keep the columns of the whole batch
        x, cols = self._cache
        xp = backend.array_module(dy)
        kernels = backend.kernels()
        n, f, oh, ow = dy.shape
        weight2d = self.weight.data.reshape(f, -1)
        chunk = n if cols is not None else self._samples_per_chunk(n, x.dtype.itemsize)
        dtype = xp.result_type(dy.dtype, x.dtype, weight2d.dtype)
        dweight = xp.zeros_like(weight2d, dtype=dtype)
        dbias = xp.zeros(f, dtype=dtype)
        dx = xp.empty(x.shape, dtype=dtype) if self._input_grad else None
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            pixels = (stop - start) * oh * ow
            dout = kernels.nchw_to_cnhw(dy[start:stop],
                                        out=self._workspace("dout", (f, pixels), dy.dtype))
            chunk_cols = cols if cols is not None else self._im2col(x[start:stop])
            # dL/dW2 = dout @ cols.T, computed as its transpose (cols @ dout.T).T: the same
            # numbers, but when another process shares the cores OpenBLAS ran the first
            # orientation of this long-K product 8-40x slower (conv2: 632 ms vs 17 ms)
            dweight += (chunk_cols @ dout.T).T
            dbias += dout.sum(axis=1)
            if dx is not None:
                dcols = self._workspace("dcols", (weight2d.shape[1], pixels), dtype)
                xp.matmul(weight2d.T, dout, out=dcols)
                dx[start:stop] = kernels.col2im(dcols, (stop - start,) + tuple(x.shape[1:]),
                                                self.kernel_size, self.stride, self.padding)
        self.weight.grad = dweight.reshape(self.weight.data.shape)
        if self.bias is not None:
            self.bias.grad = dbias
        return dx
