"""The reference kernels in plain, vectorized NumPy.

No Python loop runs over samples or pixels: windows are strided *views* of the input
(``sliding_window_view``), and the adjoint operations (col2im, pooling backward) loop only over
the KH*KW positions inside a window, each iteration adding a whole strided slab at once.

The element-wise kernels (the layout changes, ReLU, BatchNorm's maps, the matrix multiply) are
written against the array module of their inputs, so the cupy backend uses them as they are.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from . import array_module, choose_conv, geometry, winograd

__all__ = ["adam_update", "add", "add_relu", "avgpool_backward", "avgpool_forward", "batchnorm_backward",
           "batchnorm_forward", "batchnorm_relu_backward", "batchnorm_relu_forward",
           "channel_mean_var", "channel_sum", "cnhw_to_nchw", "col2im", "conv_algorithm",
           "im2col", "matmul", "maxpool_backward", "maxpool_forward", "maxpool_relu_backward",
           "nchw_to_cnhw", "relu_backward", "relu_forward"]


def _pad(x: np.ndarray, padding: tuple[int, int]) -> np.ndarray:
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def windows(x: np.ndarray, kernel, stride) -> np.ndarray:
    """A read-only view of shape (N, C, OH, OW, KH, KW): every window of x, no copy."""
    g = geometry(x.shape, kernel, stride)
    view = sliding_window_view(x, (g.kh, g.kw), axis=(2, 3))
    return view[:, :, : (g.oh - 1) * g.sh + 1 : g.sh, : (g.ow - 1) * g.sw + 1 : g.sw]


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


def im2col(x, kernel, stride, padding):
    n, c = x.shape[:2]
    kh, kw = kernel
    win = windows(_pad(x, padding), kernel, stride)  # (N, C, OH, OW, KH, KW)
    oh, ow = win.shape[2:4]
    columns = win.transpose(1, 4, 5, 0, 2, 3)  # (C, KH, KW, N, OH, OW), still a view
    return columns.reshape(c * kh * kw, n * oh * ow)  # the one copy


def conv_algorithm(x_shape, weight_shape, stride, padding):
    """Always im2col (None), the reference, unless the setting asks for Winograd: then
    :mod:`minicnn.kernels.winograd`'s NumPy version of it (see :func:`minicnn.kernels.choose_conv`)."""
    return choose_conv(x_shape, weight_shape, stride, padding, lambda *shapes: None, winograd=winograd)


def col2im(cols, x_shape, kernel, stride, padding):
    n, c, h, w, kh, kw, _, _, ph, pw, oh, ow = geometry(x_shape, kernel, stride, padding)
    columns = cols.reshape(c, kh, kw, n, oh, ow)
    # Accumulate channel-major, (C, N, H, W), the layout of cols: the adds then read cols in
    # order; one transposed view at the end gives (N, C, H, W).
    dx_padded = np.zeros((c, n, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            # window position (i, j) of every window, as a (C, N, OH, OW) slab
            dx_padded[_window_slab(i, j, (oh, ow), stride)] += columns[:, i, j]
    return dx_padded[:, :, ph : ph + h, pw : pw + w].transpose(1, 0, 2, 3)


# Max pooling loops over the KH*KW positions of a window, like col2im, so that every step is one
# whole-array operation. Choices made with np.where or boolean masks run ~10x slower than
# arithmetic on random data (they branch per element), hence the multiplications by 0/1 below.


def maxpool_forward(x, kernel, stride):
    kh, kw = kernel
    oh, ow = windows(x, kernel, stride).shape[2:4]
    slabs = [x[_window_slab(i, j, (oh, ow), stride)] for i in range(kh) for j in range(kw)]
    y = slabs[0].copy()
    for slab in slabs[1:]:
        np.maximum(y, slab, out=y)  # propagates NaN, as max does
    # argmax: the first position holding the maximum (a NaN if the window has one), found by
    # walking the positions backwards and letting every match overwrite the answer
    argmax = np.zeros(y.shape, dtype=np.int32)
    has_nan = bool(np.isnan(y).any())
    for t in range(len(slabs) - 1, -1, -1):
        matches = slabs[t] == y
        if has_nan:
            matches |= slabs[t] != slabs[t]
        argmax += (t - argmax) * matches
    return y, argmax


def maxpool_backward(dy, argmax, x_shape, kernel, stride):
    """Each window's dy goes to its winner: ``dx[slab of position t] += dy * (argmax == t)``.

    (The product also passes on a NaN or inf in dy to the window's other pixels, as 0 * inf is
    NaN; by then training has diverged anyway.)"""
    kh, kw = kernel
    dx = np.zeros(x_shape, dtype=dy.dtype)
    for i in range(kh):
        for j in range(kw):
            dx[_window_slab(i, j, dy.shape[2:], stride)] += dy * (argmax == i * kw + j)
    return dx


def maxpool_relu_backward(dy, argmax, relu_x, kernel, stride):
    """dL/dx through a ReLU and the MaxPool2D after it (layers.fused), dy being dL/d(the pool's
    output) and ``relu_x`` the ReLU's input or output (positive at the same places): the pool's
    backward, then the ReLU's."""
    return relu_backward(maxpool_backward(dy, argmax, relu_x.shape, kernel, stride), relu_x)


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


def matmul(a, b):
    """``a @ b``: the matrix multiply of the layers (Conv2D's GEMMs, Dense)."""
    return a @ b


# --- layout, activation and optimizer kernels ---------------------------------------------------
# The convolution's GEMM produces (F, N*OH*OW): one row per filter, the output pixels of every
# sample side by side ("CNHW"); the layers around it want NCHW. These two kernels move between
# the layouts (adding the bias on the way). Both copy whole OH*OW planes, so they are cheap.


def cnhw_to_nchw(out, bias, n, oh, ow, rectify=False, residual=None):
    """(F, N*OH*OW) -> (N, F, OH, OW), adding ``bias`` (F,) unless it is None, then ``residual``
    (N, F, OH, OW) unless it is None; with ``rectify``, ReLU's max(., 0) of that (a ReLU after
    the convolution, or after the Residual block it ends: layers/fused.py)."""
    xp = array_module(out)
    f = out.shape[0]
    y = xp.empty((n, f, oh, ow), dtype=out.dtype)
    by_sample = out.reshape(f, n, oh * ow).transpose(1, 0, 2)
    if bias is None:
        y.reshape(n, f, oh * ow)[...] = by_sample
    else:
        xp.add(by_sample, bias[:, None], out=y.reshape(n, f, oh * ow))
    if residual is not None:
        xp.add(y, residual, out=y)
    if rectify:
        xp.maximum(y, y.dtype.type(0), out=y)  # relu_forward's formula
    return y


def nchw_to_cnhw(dy):
    """(N, F, OH, OW) -> (F, N*OH*OW), the inverse layout change."""
    n, f, oh, ow = dy.shape
    return dy.reshape(n, f, oh * ow).transpose(1, 0, 2).reshape(f, n * oh * ow)


def relu_forward(x):
    return array_module(x).maximum(x, x.dtype.type(0))


def add(a, b):
    """a + b: the sum of a residual block's two paths, and of their gradients."""
    return a + b


def add_relu(a, b):
    """max(a + b, 0): a residual block's sum and the ReLU after it (layers.fused)."""
    return relu_forward(a + b)


def relu_backward(dy, y):
    """dL/dx = dy * (y > 0): dy where the output was positive (the input was), 0 elsewhere."""
    return dy * (y > 0)


# --- batch normalization: per-channel statistics and the affine map -------------------------
# Channel c's values are x[:, c, :, :]: the sums run over (N, H, W). The derivation of the
# backward formula is in BatchNorm2D's docstring.

_CHANNEL = (None, slice(None), None, None)  # a (C,) vector broadcast against (N, C, H, W)


def channel_sum(x):
    """x (N, C, H, W) summed over N, H and W, shape (C,): a convolution's dL/db from dL/dy."""
    return x.sum(axis=(0, 2, 3))


def channel_mean_var(x):
    """Per-channel mean and biased variance of x (N, C, H, W), each of shape (C,)."""
    mean = x.mean(axis=(0, 2, 3))
    centered = x - mean[_CHANNEL]
    return mean, (centered * centered).mean(axis=(0, 2, 3))


def batchnorm_forward(x, mean, inv_std, gamma, beta):
    """y = gamma * (x - mean) * inv_std + beta, per channel."""
    return ((x - mean[_CHANNEL]) * inv_std[_CHANNEL]) * gamma[_CHANNEL] + beta[_CHANNEL]


def batchnorm_backward(dy, x, mean, inv_std, gamma, batch_statistics):
    """(dx, dgamma, dbeta). With ``batch_statistics`` mean and inv_std were computed from this
    very batch, so x also reaches the loss through them; otherwise they are constants."""
    xhat = (x - mean[_CHANNEL]) * inv_std[_CHANNEL]
    dbeta = dy.sum(axis=(0, 2, 3))
    dgamma = (dy * xhat).sum(axis=(0, 2, 3))
    scale = (gamma * inv_std)[_CHANNEL]
    if not batch_statistics:
        return dy * scale, dgamma, dbeta
    count = dy.shape[0] * dy.shape[2] * dy.shape[3]
    dx = scale * (dy - (dbeta / count)[_CHANNEL] - xhat * (dgamma / count)[_CHANNEL])
    return dx, dgamma, dbeta


def batchnorm_relu_forward(x, mean, inv_std, gamma, beta):
    """ReLU of BatchNorm2D's output: what the two layers compute one after the other."""
    return relu_forward(batchnorm_forward(x, mean, inv_std, gamma, beta))


def batchnorm_relu_backward(dy, x, mean, inv_std, gamma, beta, batch_statistics):
    """(dx, dgamma, dbeta) through ReLU and then BatchNorm2D, dy being dL/d(ReLU's output).
    ReLU passes dy where its input, BatchNorm's output, was positive: that output is computed
    again from x (the same formula as forward, so the same numbers), not read from memory."""
    mask_source = batchnorm_forward(x, mean, inv_std, gamma, beta)
    return batchnorm_backward(relu_backward(dy, mask_source), x, mean, inv_std, gamma,
                              batch_statistics)


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
