"""The reference kernels in plain, vectorized NumPy.

No Python loop runs over samples or pixels: windows are strided *views* of the input
(``sliding_window_view``), and the adjoint operations (col2im, pooling backward) loop only over
the KH*KW positions inside a window, each iteration adding a whole strided slab at once.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from . import conv_output_size


def _pad(x: np.ndarray, padding: tuple[int, int]) -> np.ndarray:
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def windows(x: np.ndarray, kernel, stride) -> np.ndarray:
    """A read-only view of shape (N, C, OH, OW, KH, KW): every window of x, no copy."""
    kh, kw = kernel
    sh, sw = stride
    oh = conv_output_size(x.shape[2], kh, sh, 0)
    ow = conv_output_size(x.shape[3], kw, sw, 0)
    view = sliding_window_view(x, (kh, kw), axis=(2, 3))
    return view[:, :, : (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw]


def _window_slab(kh_index: int, kw_index: int, out_hw, stride):
    """Index of the input pixels that window position (kh_index, kw_index) touches."""
    oh, ow = out_hw
    sh, sw = stride
    return (
        slice(None),
        slice(None),
        slice(kh_index, kh_index + (oh - 1) * sh + 1, sh),
        slice(kw_index, kw_index + (ow - 1) * sw + 1, sw),
    )


def im2col(x, kernel, stride, padding, out=None):
    n, c = x.shape[:2]
    kh, kw = kernel
    win = windows(_pad(x, padding), kernel, stride)  # (N, C, OH, OW, KH, KW)
    oh, ow = win.shape[2:4]
    columns = win.transpose(1, 4, 5, 0, 2, 3)  # (C, KH, KW, N, OH, OW), still a view
    if out is None:
        return columns.reshape(c * kh * kw, n * oh * ow)  # the one copy
    np.copyto(out.reshape(c, kh, kw, n, oh, ow), columns)
    return out


def col2im(cols, x_shape, kernel, stride, padding):
    n, c, h, w = x_shape
    kh, kw = kernel
    ph, pw = padding
    oh = conv_output_size(h, kh, stride[0], ph)
    ow = conv_output_size(w, kw, stride[1], pw)
    columns = cols.reshape(c, kh, kw, n, oh, ow)
    dx_padded = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            # window position (i, j) of every window, as an (N, C, OH, OW) slab
            dx_padded[_window_slab(i, j, (oh, ow), stride)] += columns[:, i, j].transpose(1, 0, 2, 3)
    return dx_padded[:, :, ph : ph + h, pw : pw + w]


def maxpool_forward(x, kernel, stride):
    kh, kw = kernel
    win = windows(x, kernel, stride)
    flat = win.reshape(*win.shape[:4], kh * kw)
    argmax = flat.argmax(axis=-1)  # the first maximum wins ties, as in PyTorch
    y = np.take_along_axis(flat, argmax[..., None], axis=-1)[..., 0]
    return y, argmax.astype(np.int32)


def maxpool_backward(dy, argmax, x_shape, kernel, stride):
    kh, kw = kernel
    dx = np.zeros(x_shape, dtype=dy.dtype)
    zero = dy.dtype.type(0)
    for i in range(kh):
        for j in range(kw):
            won = argmax == i * kw + j
            dx[_window_slab(i, j, dy.shape[2:], stride)] += np.where(won, dy, zero)
    return dx


def avgpool_forward(x, kernel, stride):
    return windows(x, kernel, stride).mean(axis=(-2, -1), dtype=x.dtype)


def avgpool_backward(dy, x_shape, kernel, stride):
    kh, kw = kernel
    dx = np.zeros(x_shape, dtype=dy.dtype)
    share = dy / dy.dtype.type(kh * kw)
    for i in range(kh):
        for j in range(kw):
            dx[_window_slab(i, j, dy.shape[2:], stride)] += share
    return dx


# --- layout, activation and optimizer kernels ---------------------------------------------------
# The convolution's GEMM produces (F, N*OH*OW): one row per filter, the output pixels of every
# sample side by side ("CNHW"); the layers around it want NCHW. These two kernels move between
# the layouts (adding the bias on the way). Both copy whole OH*OW planes, so they are cheap.


def cnhw_to_nchw(out, bias, n, oh, ow):
    """(F, N*OH*OW) -> (N, F, OH, OW), adding ``bias`` (F,) unless it is None."""
    f = out.shape[0]
    y = np.empty((n, f, oh, ow), dtype=out.dtype)
    by_sample = out.reshape(f, n, oh * ow).transpose(1, 0, 2)
    if bias is None:
        y.reshape(n, f, oh * ow)[...] = by_sample
    else:
        np.add(by_sample, bias[:, None], out=y.reshape(n, f, oh * ow))
    return y


def nchw_to_cnhw(dy, out=None):
    """(N, F, OH, OW) -> (F, N*OH*OW) (the inverse layout change), into ``out`` if given."""
    n, f, oh, ow = dy.shape
    if out is None:
        out = np.empty((f, n * oh * ow), dtype=dy.dtype)
    out.reshape(f, n, oh * ow)[...] = dy.reshape(n, f, oh * ow).transpose(1, 0, 2)
    return out


def relu_forward(x):
    return np.maximum(x, x.dtype.type(0))


def relu_backward(dy, y):
    """dL/dx = dy where the output was positive (the input was), 0 elsewhere."""
    return np.where(y > 0, dy, dy.dtype.type(0))


def adam_update(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, step, weight_decay,
                decoupled):
    """One Adam/AdamW step on ``param`` in place (PyTorch's formulation; see optim.Adam)."""
    if weight_decay:
        if decoupled:
            param *= 1 - lr * weight_decay
        else:
            grad = grad + weight_decay * param
    exp_avg += (1 - beta1) * (grad - exp_avg)
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * grad * grad
    step_size = lr / (1 - beta1**step)
    denom = np.sqrt(exp_avg_sq) / np.sqrt(1 - beta2**step) + eps
    param -= step_size * (exp_avg / denom)
