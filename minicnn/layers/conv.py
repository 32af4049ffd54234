"""2-D convolution as im2col + one matrix multiply."""

from __future__ import annotations

import numpy as np

from .. import backend
from ..init import INITIALIZERS, initialize
from ..kernels import conv_output_size
from ..validation import check_positive_int, check_rank
from .base import Layer, Parameter, pair
from .registry import register


@register
class Conv2D(Layer):
    """Cross-correlation of an (N, C, H, W) input with F filters of shape (C, KH, KW).

    ``y[n, f, oh, ow] = b[f] + sum_{c, i, j} W[f, c, i, j] * xpad[n, c, oh*SH + i, ow*SW + j]``

    where ``xpad`` is x with P zeros around each image. The output has shape (N, F, OH, OW)
    with ``OH = (H + 2*PH - KH) // SH + 1`` (and likewise OW).

    **Forward as one matrix multiply.** ``cols = im2col(x)`` copies every receptive field into a
    column: ``cols`` has shape (K, N*OH*OW) with K = C*KH*KW, one column per output pixel. With the
    filters flattened to ``W2 = W.reshape(F, K)``, the convolution is ``out = W2 @ cols + b``,
    shape (F, N*OH*OW): row f holds filter f's response at every output pixel of every sample.
    A layout change (adding b on the way) turns it into y of shape (N, F, OH, OW):
    ``y = out.reshape(F, N, OH, OW).transpose(1, 0, 2, 3)``.

    **Backward.** Given dy = dL/dy of shape (N, F, OH, OW), first lay it out like ``out``:
    ``dout = dy.transpose(1, 0, 2, 3).reshape(F, -1)``, shape (F, N*OH*OW). Then, since
    ``out = W2 @ cols + b`` is an ordinary affine map of the columns of ``cols``:

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
    of memory, where in the row layout a 3x3 window is 9 scattered values.

    **The same numbers by fewer multiplies.** For a 3x3 kernel at stride 1 the kernels may
    compute y and the gradients with Winograd's algorithm instead (up to 4x fewer multiplies,
    :mod:`minicnn.kernels.winograd`): ``self.kernels.conv_algorithm`` decides, per shape, and
    :meth:`algorithms` / ``summary()`` say which runs. ``MINICNN_CONV_ALGO=im2col`` (or
    ``minicnn.set_conv_algorithm("im2col")``) runs exactly the code below everywhere.
    """

    filters = True
    convolutional = True
    explain = ("Each of the {out_channels} filters slides over the input; bright where its pattern "
               "is. The gradient of a map says how the chosen score would change if that map's "
               "value moved.")

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
        self.weight.data = backend.to_device(weight, self.backend)
        self.weight.zero_grad()
        if self.bias is not None:
            self.bias.data = backend.xp(self.backend).zeros(f, dtype=dtype)
            self.bias.zero_grad()

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

    def _forward(self, x, training):
        b = self.bias.data if self.bias is not None else None                 # (F,)
        y, cache = self._convolve(x, self.weight.data, b, training)
        return self._remember(y, cache=cache)

    def _convolve(self, x, W, b, training=False, rectify=False, residual=None):
        """y for x with filters W (F, C, KH, KW) and bias b (F,) or None, and what backward
        needs: this layer's convolution with any weights (predict runs it with the BatchNorm2D
        that follows folded into W and b, and ``rectify``, max(y, 0), for a ReLU after them,
        ``residual`` added first for the Residual block they end: layers/fused.py)."""
        ops = self.kernels  # im2col, matmul, ... of this layer's backend (minicnn.kernels)
        fast = ops.conv_algorithm(x.shape, W.shape, self.stride, self.padding)
        if fast is not None:  # the same y by another algorithm (Winograd), see the docstring
            y, saved = fast.forward(x, W, b, self.padding, training, rectify, residual)
            return y, (x, saved, fast)
        n = x.shape[0]
        f, oh, ow = self.output_shape(x.shape[1:])
        W2 = W.reshape(f, -1)                                                 # (F, K)
        cols = ops.im2col(x, self.kernel_size, self.stride, self.padding)     # (K, N*OH*OW)
        out = ops.matmul(W2, cols)                                            # (F, N*OH*OW)
        y = ops.cnhw_to_nchw(out, b, n, oh, ow, rectify, residual)  # + b, as (N, F, OH, OW)
        return y, (x, cols, None)

    def _backward(self, dy, input_grad):
        # the derivation, with these names, is in the class docstring
        ops = self.kernels
        x, cols, fast = self._cache  # fast: None, or the algorithm that ran (cols: what it saved)
        if fast is not None:  # the forward pass ran another algorithm: its own backward
            dx, self.weight.grad = fast.backward(dy, cols, self.weight.data, x.shape,
                                                 self.padding, input_grad)
            if self.bias is not None:
                self.bias.grad = ops.channel_sum(dy)          # (F,): dy summed over N, OH, OW
            return dx
        f = dy.shape[1]
        W2 = self.weight.data.reshape(f, -1)                                  # (F, K)
        dout = ops.nchw_to_cnhw(dy)                                           # (F, N*OH*OW)
        dW2 = ops.matmul(dout, cols.T)                                        # (F, K)
        self.weight.grad = dW2.reshape(self.weight.data.shape)
        if self.bias is not None:
            self.bias.grad = dout.sum(axis=1)                                 # (F,)
        if not input_grad:
            return None
        dcols = ops.matmul(W2.T, dout)                                        # (K, N*OH*OW)
        return ops.col2im(dcols, x.shape, self.kernel_size, self.stride, self.padding)

    # -- what the rest of minicnn asks of it: shapes, config, summary, studio, PyTorch, ONNX ---

    @classmethod
    def array_shapes(cls, config):
        cin = check_positive_int(config.get("in_channels"), "in_channels", "Conv2D")
        cout = check_positive_int(config.get("out_channels"), "out_channels", "Conv2D")
        kh, kw = pair(config.get("kernel_size"), "kernel_size", "Conv2D", minimum=1)
        return {"weight": (cout, cin, kh, kw), **({"bias": (cout,)} if config.get("bias", True) else {})}

    def describe(self):
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        return (f"Conv2D({self.in_channels}->{self.out_channels}, {kh}x{kw}, stride {sh},{sw}, "
                f"pad {ph},{pw}{'' if self.bias is not None else ', no bias'})")

    def flops(self, input_shape):
        f, oh, ow = self.output_shape(input_shape)
        k = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        return 2 * k * f * oh * ow + (f * oh * ow if self.bias is not None else 0)

    def workspace_bytes(self, input_shape, itemsize):
        # what the algorithm that runs allocates per sample; im2col: the padded input (numpy's),
        # the columns (C*KH*KW values per output pixel) and the product (F per pixel)
        W = self.weight.data
        fast = self.kernels.conv_algorithm((1, *input_shape), W.shape, self.stride, self.padding)
        if fast is not None:
            return fast.workspace(tuple(input_shape), W.shape, self.padding) * itemsize
        (c, h, w), (ph, pw) = input_shape, self.padding
        f, oh, ow = self.output_shape(input_shape)
        return (c * (h + 2 * ph) * (w + 2 * pw) + oh * ow * (W[0].size + f)) * itemsize

    def algorithms(self, input_shape):
        fast = self.kernels.conv_algorithm((1, *input_shape), self.weight.data.shape, self.stride,
                                           self.padding)
        return ["im2col" if fast is None else fast.name]

    def symbols(self, input_shape, output_shape):
        n, f, oh, ow = output_shape
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        k = self.in_channels * kh * kw
        pixels = n * oh * ow
        return {**super().symbols(input_shape, output_shape), "W2": (f, k), "dL/dW2": (f, k),
                "cols": (k, pixels), "dL/dcols": (k, pixels), "out": (f, pixels),
                "dout": (f, pixels), "K": k, "F": f, "N": n, "OH": oh, "OW": ow,
                "xpad": (n, self.in_channels, input_shape[2] + 2 * ph, input_shape[3] + 2 * pw)}

    torch_name, onnx_op = "Conv2d", "Conv"
    torch_arguments = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "bias")
    torch_arrays, onnx_inputs = {"weight": "weight", "bias": "bias"}, ("weight", "bias")
    torch_requires = {"dilation": (1, 1), "groups": 1, "padding_mode": "zeros"}
    onnx_attributes = {"kernel_shape": "kernel_size", "strides": "stride", "pads": "padding"}
    array_symbols = {"W": "weight", "b": "bias"}
