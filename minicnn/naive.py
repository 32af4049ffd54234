"""Convolution and pooling as plain loops: the version you would write first.

Every function here loops over every sample, channel and output pixel in Python, exactly as the
formulas in the layers' docstrings read. They are thousands of times slower than the layers
(``minicnn.layers``), which compute the same numbers with im2col and one matrix multiply, and
they exist to be read next to them: the tests check the layers against these loops on drawn
shapes, forward and backward, as a reference that shares no code with the kernels.

Shapes: ``x`` (N, C, H, Wd), where ``Wd`` is the width (``W`` names the weights); a
convolution's weights ``W`` (F, C, KH, KW) and bias ``b`` (F,); ``dy = dL/dy`` shaped like the
output. ``stride`` and ``padding`` are (height, width) pairs.
"""

from __future__ import annotations

import numpy as np


def _output_size(size: int, kernel: int, stride: int, padding: int = 0) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _pad(x, padding):
    """``xpad``: x with PH zero rows above and below and PW zero columns left and right."""
    ph, pw = padding
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def conv2d_forward(x, W, b=None, stride=(1, 1), padding=(0, 0)):
    """``y[n, f, oh, ow] = b[f] + sum_{c, i, j} W[f, c, i, j] * xpad[n, c, oh*SH + i, ow*SW + j]``"""
    N, C, H, Wd = x.shape
    F, _, KH, KW = W.shape
    (SH, SW), (PH, PW) = stride, padding
    OH, OW = _output_size(H, KH, SH, PH), _output_size(Wd, KW, SW, PW)
    xpad = _pad(x, padding)
    y = np.zeros((N, F, OH, OW), dtype=x.dtype)
    for n in range(N):
        for f in range(F):
            for oh in range(OH):
                for ow in range(OW):
                    total = 0.0 if b is None else b[f]
                    for c in range(C):
                        for i in range(KH):
                            for j in range(KW):
                                total += W[f, c, i, j] * xpad[n, c, oh * SH + i, ow * SW + j]
                    y[n, f, oh, ow] = total
    return y


def conv2d_backward(dy, x, W, stride=(1, 1), padding=(0, 0)):
    """``(dx, dW, db)`` for :func:`conv2d_forward`.

    Walk the forward loops again. The term ``W[f, c, i, j] * xpad[n, c, oh*SH + i, ow*SW + j]``
    contributed to ``y[n, f, oh, ow]``, so by the chain rule it sends
    ``dy[n, f, oh, ow] * xpad[...]`` to ``dW[f, c, i, j]`` and ``dy[n, f, oh, ow] * W[f, c, i, j]``
    to ``dxpad[...]``; every use of a value adds to its gradient (``+=``), which is why a pixel
    seen by several windows collects several contributions. The bias was added to every output
    pixel of its filter: ``db[f]`` sums ``dy[:, f]``. Finally the padding is cut off ``dxpad``.
    """
    N, C, H, Wd = x.shape
    F, _, KH, KW = W.shape
    _, _, OH, OW = dy.shape
    (SH, SW), (PH, PW) = stride, padding
    xpad = _pad(x, padding)
    dxpad = np.zeros_like(xpad)
    dW = np.zeros_like(W)
    db = np.zeros(F, dtype=dy.dtype)
    for n in range(N):
        for f in range(F):
            for oh in range(OH):
                for ow in range(OW):
                    g = dy[n, f, oh, ow]
                    db[f] += g
                    for c in range(C):
                        for i in range(KH):
                            for j in range(KW):
                                dW[f, c, i, j] += g * xpad[n, c, oh * SH + i, ow * SW + j]
                                dxpad[n, c, oh * SH + i, ow * SW + j] += g * W[f, c, i, j]
    dx = dxpad[:, :, PH:PH + H, PW:PW + Wd]
    return dx, dW, db


def _windows(x_shape, kernel_size, stride):
    """Every pooling window: ``(n, c, oh, ow, rows, columns)`` with the slices it covers."""
    N, C, H, Wd = x_shape
    (KH, KW), (SH, SW) = kernel_size, stride
    for n in range(N):
        for c in range(C):
            for oh in range(_output_size(H, KH, SH)):
                for ow in range(_output_size(Wd, KW, SW)):
                    yield (n, c, oh, ow, slice(oh * SH, oh * SH + KH),
                           slice(ow * SW, ow * SW + KW))


def _pool_output(x, kernel_size, stride):
    N, C, H, Wd = x.shape
    (KH, KW), (SH, SW) = kernel_size, stride
    return np.zeros((N, C, _output_size(H, KH, SH), _output_size(Wd, KW, SW)), dtype=x.dtype)


def maxpool2d_forward(x, kernel_size, stride=None):
    """``y[n, c, oh, ow] = max_{i, j} x[n, c, oh*SH + i, ow*SW + j]``"""
    stride = stride or kernel_size
    y = _pool_output(x, kernel_size, stride)
    for n, c, oh, ow, rows, columns in _windows(x.shape, kernel_size, stride):
        y[n, c, oh, ow] = x[n, c, rows, columns].max()
    return y


def maxpool2d_backward(dy, x, kernel_size, stride=None):
    """dL/dx for :func:`maxpool2d_forward`: each window's gradient goes to its winner alone
    (the first maximum, row by row, when several elements tie), added up where windows overlap."""
    stride = stride or kernel_size
    dx = np.zeros_like(x)
    for n, c, oh, ow, rows, columns in _windows(x.shape, kernel_size, stride):
        window = x[n, c, rows, columns]
        i, j = np.unravel_index(np.argmax(window), window.shape)
        dx[n, c, rows.start + i, columns.start + j] += dy[n, c, oh, ow]
    return dx


def avgpool2d_forward(x, kernel_size, stride=None):
    """``y[n, c, oh, ow] = 1/(KH*KW) * sum_{i, j} x[n, c, oh*SH + i, ow*SW + j]``"""
    stride = stride or kernel_size
    y = _pool_output(x, kernel_size, stride)
    for n, c, oh, ow, rows, columns in _windows(x.shape, kernel_size, stride):
        y[n, c, oh, ow] = x[n, c, rows, columns].mean()
    return y


def avgpool2d_backward(dy, x, kernel_size, stride=None):
    """dL/dx for :func:`avgpool2d_forward`: every element of a window receives 1/(KH*KW) of the
    window's gradient, added up where windows overlap."""
    stride = stride or kernel_size
    KH, KW = kernel_size
    dx = np.zeros_like(x)
    for n, c, oh, ow, rows, columns in _windows(x.shape, kernel_size, stride):
        dx[n, c, rows, columns] += dy[n, c, oh, ow] / (KH * KW)
    return dx
