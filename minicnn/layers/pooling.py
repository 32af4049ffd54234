"""Max, average and global-average pooling."""

from __future__ import annotations

from .. import backend
from ..kernels import conv_output_size
from ..validation import check_rank
from .base import Layer, pair
from .registry import register


class _Pool2D(Layer):
    """What MaxPool2D and AvgPool2D share: a KH x KW window moved by ``stride`` (SH, SW; default:
    the kernel size) over each channel of each image, no padding. Input (N, C, H, W), output
    (N, C, OH, OW) with ``OH = (H - KH) // SH + 1`` (and likewise OW): the windows that fit."""

    def __init__(self, kernel_size, stride=None):
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size", self.name, minimum=1)
        self.stride = self.kernel_size if stride is None else pair(stride, "stride", self.name, 1)

    def output_shape(self, input_shape):
        check_rank(input_shape, 3, "(N, C, H, W)", self.name)
        c, h, w = input_shape
        kh, kw = self.kernel_size
        if h < kh or w < kw:
            raise ValueError(
                f"{self.name}: pooling window {kh}x{kw} is larger than the input {h}x{w} "
                f"(input shape (N, {c}, {h}, {w}))"
            )
        return (c, conv_output_size(h, kh, self.stride[0], 0),
                conv_output_size(w, kw, self.stride[1], 0))

    # -- what the rest of minicnn asks of it: shapes, config, summary, studio, PyTorch, ONNX ---

    def flops(self, input_shape):
        c, oh, ow = self.output_shape(input_shape)
        return c * oh * ow * self.kernel_size[0] * self.kernel_size[1]

    def symbols(self, input_shape, output_shape):
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        return {**super().symbols(input_shape, output_shape), "KH": kh, "KW": kw, "SH": sh, "SW": sw}

    describe_as = "{name}({kernel_size[0]}x{kernel_size[1]}, stride {stride[0]},{stride[1]})"
    torch_arguments = ("kernel_size", "stride")
    torch_requires = {"padding": (0, 0), "dilation": (1, 1), "ceil_mode": False, "divisor_override": None}
    onnx_attributes = {"kernel_shape": "kernel_size", "strides": "stride"}


@register
class MaxPool2D(_Pool2D):
    """Maximum over each KH x KW window, moved by ``stride`` (default: the kernel size).

    Forward: ``y[n, c, oh, ow] = max_{i, j} x[n, c, oh*SH + i, ow*SW + j]``, shape (N, C, OH, OW);
    the kernel also records *which* element of each window won (``argmax``).

    Backward: the max is locally the identity on the winning element and constant in the
    others, so dL/dx is zero except at each window's winner, which receives that window's
    gradient: ``dx[n, c, winner] += dy[n, c, oh, ow]``. When windows overlap (stride < kernel)
    one input can win several windows and its gradients add up. Ties go to the first maximum
    in the window, as in PyTorch.
    """

    explain = "Keeps the strongest response of each window; the gradient flows only to the winners."

    torch_name, onnx_op = "MaxPool2d", "MaxPool"

    def _forward(self, x, training):
        y, argmax = self.kernels.maxpool_forward(x, self.kernel_size, self.stride)
        return self._remember(y, cache=(x.shape, argmax))

    def _backward(self, dy, input_grad):
        x_shape, argmax = self._cache
        return self.kernels.maxpool_backward(dy, argmax, x_shape, self.kernel_size,
                                                  self.stride)


@register
class AvgPool2D(_Pool2D):
    """Mean over each KH x KW window, moved by ``stride`` (default: the kernel size).

    Forward: ``y[n, c, oh, ow] = 1/(KH*KW) * sum_{i, j} x[n, c, oh*SH + i, ow*SW + j]``.

    Backward: every input in a window contributed 1/(KH*KW) of its output, so it receives a
    share from every window that covers it (summed where windows overlap):
    ``dx[n, c, oh*SH + i, ow*SW + j] += dy[n, c, oh, ow] / (KH*KW)``. Shape of dx: (N, C, H, W);
    pixels no window covers get zero.
    """

    explain = "Averages each window; the gradient is shared evenly."

    torch_name, onnx_op = "AvgPool2d", "AveragePool"

    def _forward(self, x, training):
        y = self.kernels.avgpool_forward(x, self.kernel_size, self.stride)
        return self._remember(y, cache=x.shape)

    def _backward(self, dy, input_grad):
        return self.kernels.avgpool_backward(dy, self._cache, self.kernel_size, self.stride)


@register
class GlobalAvgPool2D(Layer):
    """Average of each channel over all pixels: (N, C, H, W) -> (N, C).

    Forward: ``y[n, c] = 1/(H*W) * sum_{h, w} x[n, c, h, w]``. The output is 2-D, so a Dense
    layer can follow directly (PyTorch's AdaptiveAvgPool2d(1) would keep (N, C, 1, 1)).

    Backward: every pixel contributed 1/(H*W) of the mean, so
    ``dx[n, c, h, w] = dy[n, c] / (H*W)`` — dy broadcast over the H*W pixels, shape (N, C, H, W).
    """

    pools_globally = True
    explain = "One number per channel: its average over the image."

    def output_shape(self, input_shape):
        check_rank(input_shape, 3, "(N, C, H, W)", self.name)
        return (input_shape[0],)

    def _forward(self, x, training):
        return self._remember(x.mean(axis=(2, 3), dtype=x.dtype), cache=x.shape)

    def _backward(self, dy, input_grad):
        n, c, h, w = self._cache
        xp = backend.array_module(dy)
        share = dy / dy.dtype.type(h * w)
        return xp.broadcast_to(share[:, :, None, None], (n, c, h, w)).copy()

    # -- what the rest of minicnn asks of it: shapes, config, summary, studio, PyTorch, ONNX ---
    def flops(self, input_shape):
        c, h, w = input_shape
        return c * h * w

    def symbols(self, input_shape, output_shape):
        return {**super().symbols(input_shape, output_shape), "H": input_shape[2], "W": input_shape[3]}

    def to_torch(self, bridge):  # PyTorch keeps (N, C, 1, 1): flatten it as here
        return bridge.nn.Sequential(bridge.nn.AdaptiveAvgPool2d(1), bridge.nn.Flatten())

    def to_onnx(self, graph, x, name):
        pooled = graph.node("GlobalAveragePool", [x], f"{name}.pool")
        return graph.node("Flatten", [pooled], name, axis=1)
