"""A 3x3, stride-1 convolution summed directly, row by row: for layers with few input channels
(a network's first layer: 1 or 3), on every core.

im2col copies each input value into nine columns, so a first layer's product is
(F x 27) @ (27 x N*OH*OW): an inner dimension of 27 keeps BLAS far under its peak, and the
columns (9x the input), the (F, N*OH*OW) output and its layout change all go through memory.
Here each output row is summed in place from three rows of the padded input per channel, the
formula of Conv2D's docstring at stride 1:

    y[n, f, oh, :] = b[f] + sum_c sum_{i,j} W[f, c, i, j] * xpad[n, c, oh + i, j : j + OW]

nine multiply-adds per output value and channel, each a contiguous run (vectorized).

**Backward.** The weight gradient sums the same runs against dy:

    dW[f, c, i, j] = sum_{n, oh} sum_ow dy[n, f, oh, ow] * xpad[n, c, oh + i, ow + j]

Each filter's nine taps of each channel are summed lane by lane (one partial sum per output
column) over every row of every sample, and the lanes are added up once at the end: no
horizontal sum per row. dL/dx of a stride-1 convolution is a full correlation of dy with the
filters turned by 180 degrees and their two channel axes swapped,

    dx[n, c, h, :] = sum_f sum_{i,j} W[f, c, 2 - i, 2 - j] * dypad[n, f, h + i, j : j + W]

with dy padded by 2 - P: the forward sum again, on other arrays.

Like Winograd, this is an execution strategy (``set_conv_algorithm("direct")`` forces it where
it applies, "im2col" switches it off): the tests hold it to im2col's numbers.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from numba import uint64 as _u

from .cpu_runtime import recycler, residual_array
from .numba_dots import dots_2x4

_jit = njit(parallel=True, cache=True, fastmath=False)

NAME = "direct 3x3"  # as summary() shows it


@_jit
def _pad_kernel(x_flat, planes, h, w, top, left, hp, wp, out_flat):
    for plane in prange(planes):  # one (sample, channel) plane, zeros around it
        first = plane * hp * wp
        for q in range(hp * wp):
            out_flat[_u(first + q)] = 0
        for r in range(h):
            source, target = (plane * h + r) * w, first + (r + top) * wp + left
            for q in range(w):
                out_flat[_u(target + q)] = x_flat[_u(source + q)]


@_jit
def _forward_kernel(xp_flat, c_count, hp, wp, W_flat, bias, f_count, planes, rectify,
                    residual_flat, y_flat):
    oh_count, ow_count = hp - 2, wp - 2
    for plane in prange(planes):  # one output plane (sample n, filter f)
        n, f = plane // f_count, plane % f_count
        for oh in range(oh_count):
            out = (plane * oh_count + oh) * ow_count
            b = bias[f]
            for ow in range(ow_count):
                y_flat[_u(out + ow)] = b
            for c in range(c_count):
                k = (f * c_count + c) * 9
                w00, w01, w02 = W_flat[k], W_flat[k + 1], W_flat[k + 2]
                w10, w11, w12 = W_flat[k + 3], W_flat[k + 4], W_flat[k + 5]
                w20, w21, w22 = W_flat[k + 6], W_flat[k + 7], W_flat[k + 8]
                r0 = ((n * c_count + c) * hp + oh) * wp  # rows oh, oh+1, oh+2 of xpad[n, c]
                r1, r2 = r0 + wp, r0 + 2 * wp
                for ow in range(ow_count):
                    y_flat[_u(out + ow)] += (
                        w00 * xp_flat[_u(r0 + ow)] + w01 * xp_flat[_u(r0 + ow + 1)]
                        + w02 * xp_flat[_u(r0 + ow + 2)] + w10 * xp_flat[_u(r1 + ow)]
                        + w11 * xp_flat[_u(r1 + ow + 1)] + w12 * xp_flat[_u(r1 + ow + 2)]
                        + w20 * xp_flat[_u(r2 + ow)] + w21 * xp_flat[_u(r2 + ow + 1)]
                        + w22 * xp_flat[_u(r2 + ow + 2)])
            if residual_flat.shape[0]:  # a Residual block's sum, which the convolution ends
                for ow in range(ow_count):
                    y_flat[_u(out + ow)] += residual_flat[_u(out + ow)]
            if rectify:  # a ReLU after the convolution: relu_forward's formula on the row
                zero = y_flat.dtype.type(0)
                for ow in range(ow_count):
                    v = y_flat[_u(out + ow)]
                    y_flat[_u(out + ow)] = v if v > zero else zero


@njit(parallel=True, cache=True, fastmath={"reassoc", "contract"})  # sums in any order
def _weight_gradient_kernel(xp_flat, dyp_flat, n_count, c_count, hp, wp, f_count, zero, dW_flat):
    # dW[f, c, i, j]: for each sample, one dot product of the plane dyp[n, f] (dy with rows as
    # long as xpad's, the two extra values zero) with the plane xpad[n, c] shifted by (i, j),
    # both read as one contiguous run; two filters by four taps at a time (eight sums).
    length = (hp - 2) * wp - 2  # the last row's two zeros dropped: the run stays in the plane
    taps = c_count * 9
    for pair in prange((f_count + 1) // 2):
        f0, f1 = 2 * pair, min(2 * pair + 1, f_count - 1)
        totals = np.zeros((2, taps + 3), dtype=np.float64)
        b = np.empty(4, dtype=np.int64)
        for n in range(n_count):
            a0 = (n * f_count + f0) * (hp - 2) * wp
            a1 = (n * f_count + f1) * (hp - 2) * wp
            for t in range(0, taps, 4):
                for e in range(4):
                    tap = min(t + e, taps - 1)
                    c, ij = tap // 9, tap % 9
                    b[e] = ((n * c_count + c) * hp + ij // 3) * wp + ij % 3
                rows = dots_2x4(dyp_flat, a0, a1, xp_flat, b[0], b[1], b[2], b[3], 0, length,
                                zero)
                for e in range(4):
                    totals[0, t + e] += rows[0][e]
                    totals[1, t + e] += rows[1][e]
        for tap in range(taps):  # (c, i, j): W's own order within a filter
            dW_flat[_u(f0 * taps + tap)] = totals[0, tap]
            dW_flat[_u(f1 * taps + tap)] = totals[1, tap]


def applies(weight_shape, stride, padding) -> bool:
    """3x3 kernels at stride 1 with padding of at most 2 (dL/dx pads dy by 2 - P)."""
    return (tuple(weight_shape[2:]) == (3, 3) and tuple(stride) == (1, 1)
            and max(padding) <= 2)


def _padded(x, top, left, hp, wp):
    """x (N, C, H, W) placed at (top, left) in planes of hp x wp zeros."""
    n, c, h, w = x.shape
    xp = recycler.empty((n, c, hp, wp), x.dtype)
    if xp.size:
        _pad_kernel(np.ascontiguousarray(x).reshape(-1), n * c, h, w, top, left, hp, wp,
                    xp.reshape(-1))
    return xp


def _correlate(xp, weight, bias, rectify=False, residual=None):
    """y = bias + the 3x3 correlation of the padded input xp (N, C, H+2, W+2) with weight (+
    ``residual`` unless None; with ``rectify``, max(y, 0))."""
    n, c, hp, wp = xp.shape
    f = weight.shape[0]
    y = recycler.empty((n, f, hp - 2, wp - 2), xp.dtype)
    if y.size:
        _forward_kernel(xp.reshape(-1), c, hp, wp, np.ascontiguousarray(weight, xp.dtype).reshape(-1),
                        bias, f, n * f, rectify, residual_array(residual, y), y.reshape(-1))
    return y


def conv_forward(x, weight, bias, padding, training=True, rectify=False, residual=None):
    """(y, saved): y = the convolution of x (N, C, H, W) with weight (F, C, 3, 3) plus bias (or
    None), + ``residual`` (or None) and with ``rectify`` max(y, 0) (the Residual block and the
    ReLU it ends, or a ReLU after it); saved = the padded input, for the backward pass."""
    (ph, pw), (h, w) = padding, x.shape[2:]
    xp = _padded(x, ph, pw, h + 2 * ph, w + 2 * pw)
    f = weight.shape[0]
    bias = np.zeros(f, x.dtype) if bias is None else np.ascontiguousarray(bias, x.dtype)
    return _correlate(xp, weight, bias, rectify, residual), xp


def workspace(x_shape, weight_shape, padding) -> int:
    """Values :func:`conv_forward` allocates per sample beyond y: the padded input."""
    c, h, w = x_shape
    return c * (h + 2 * padding[0]) * (w + 2 * padding[1])


def conv_backward(dy, saved, weight, x_shape, padding, input_grad=True):
    """(dL/dx or None, dL/dW) from dL/dy (N, F, OH, OW) and the padded input saved forward."""
    xp = saved
    dy = np.ascontiguousarray(dy, xp.dtype)
    n, f = dy.shape[:2]
    c, hp, wp = xp.shape[1:]
    oh, ow = dy.shape[2:]
    dW = np.empty((f, c, 3, 3), xp.dtype)
    dyp = _padded(dy, 0, 0, oh, wp)  # rows as long as xpad's
    _weight_gradient_kernel(xp.reshape(-1), dyp.reshape(-1), n, c, hp, wp, f, xp.dtype.type(0),
                            dW.reshape(-1))
    if not input_grad:
        return None, dW
    ph, pw = padding
    turned = np.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3), xp.dtype)
    dx = _correlate(_padded(dy, 2 - ph, 2 - pw, oh + 4 - 2 * ph, ow + 4 - 2 * pw), turned,
                    np.zeros(c, xp.dtype))
    return dx, dW
