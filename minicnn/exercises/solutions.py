"""Reference solutions of the exercises: what ``minicnn exercises check NAME --reveal`` shows.

Each is written the way the exercise's derivation reads, in plain NumPy; the tests check every
one against minicnn's layers, ``minicnn.naive`` and central differences on drawn shapes.
"""

from __future__ import annotations

import numpy as np


def dense_backward(x, W, dy):
    """z = x @ W + b, x (N, D), W (D, K), b (K,), dy = dL/dz (N, K) -> (dx, dW, db)."""
    dx = dy @ W.T                      # (N, K) @ (K, D) = (N, D)
    dW = x.T @ dy                      # (D, N) @ (N, K) = (D, K): summed over the batch
    db = dy.sum(axis=0)                # (K,): b was added to every row
    return dx, dW, db


def relu_backward(x, dy):
    """y = max(x, 0) -> dx = dy where x > 0, 0 elsewhere (at exactly 0: 0, as PyTorch)."""
    return dy * (x > 0)


def softmax_cross_entropy_backward(logits, labels):
    """L = -mean_n log softmax(logits)[n, labels[n]] -> dL/dlogits = (softmax - onehot) / N."""
    n = logits.shape[0]
    shifted = logits - logits.max(axis=1, keepdims=True)   # exp never overflows
    p = np.exp(shifted)
    p /= p.sum(axis=1, keepdims=True)
    onehot = np.zeros_like(p)
    onehot[np.arange(n), labels] = 1.0
    return (p - onehot) / n


def maxpool_backward(x, dy, kernel, stride):
    """Each window's dy goes to the window's first maximum; overlapping windows add up.

    Vectorized over the windows: for each position (i, j) inside a window, the strided slice
    x[:, :, i::SH, j::SW] holds that element of every window at once."""
    (kh, kw), (sh, sw) = kernel, stride
    out_h, out_w = dy.shape[2:]

    def element(i, j):  # (N, C, OH, OW): element (i, j) of every window
        return (slice(None), slice(None), slice(i, i + sh * out_h, sh), slice(j, j + sw * out_w, sw))

    positions = [(i, j) for i in range(kh) for j in range(kw)]
    y = np.max([x[element(i, j)] for i, j in positions], axis=0)   # the forward output
    dx = np.zeros_like(x)
    taken = np.zeros(dy.shape, dtype=bool)   # windows whose winner was found already
    for i, j in positions:                   # in order: the first maximum wins a tie
        wins = (x[element(i, j)] == y) & ~taken
        dx[element(i, j)] += dy * wins
        taken |= wins
    return dx


def im2col(x, kernel, stride, padding):
    """x (N, C, H, W) -> cols (C*KH*KW, N*OH*OW): row c*KH*KW + i*KW + j, column
    n*OH*OW + oh*OW + ow holds xpad[n, c, oh*SH + i, ow*SW + j]."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n_images, channels, height, width = x.shape
    xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    out_h = (height + 2 * ph - kh) // sh + 1
    out_w = (width + 2 * pw - kw) // sw + 1
    cols = np.empty((channels * kh * kw, n_images * out_h * out_w), dtype=x.dtype)
    for c in range(channels):
        for i in range(kh):
            for j in range(kw):
                # every window's (i, j) element at once: a strided slice of xpad
                patch = xpad[:, c, i:i + sh * out_h:sh, j:j + sw * out_w:sw]  # (N, OH, OW)
                cols[c * kh * kw + i * kw + j] = patch.reshape(-1)
    return cols


def conv_backward_cols(cols, W2, dout):
    """out = W2 @ cols, W2 (F, C*KH*KW), cols (C*KH*KW, N*OH*OW), dout (F, N*OH*OW)
    -> (dW2, dcols)."""
    dW2 = dout @ cols.T                # (F, P) @ (P, CKK) = (F, CKK)
    dcols = W2.T @ dout                # (CKK, F) @ (F, P) = (CKK, P)
    return dW2, dcols


def col2im(dcols, x_shape, kernel, stride, padding):
    """The adjoint of im2col: every entry of dcols goes back to the pixel it was copied from,
    added up where windows overlap; then the padding is cut off."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n_images, channels, height, width = x_shape
    out_h = (height + 2 * ph - kh) // sh + 1
    out_w = (width + 2 * pw - kw) // sw + 1
    dxpad = np.zeros((n_images, channels, height + 2 * ph, width + 2 * pw), dtype=dcols.dtype)
    for c in range(channels):
        for i in range(kh):
            for j in range(kw):
                row = dcols[c * kh * kw + i * kw + j].reshape(n_images, out_h, out_w)
                dxpad[:, c, i:i + sh * out_h:sh, j:j + sw * out_w:sw] += row
    return dxpad[:, :, ph:ph + height, pw:pw + width]


def batchnorm_backward_staged(x, gamma, dy, eps):
    """BatchNorm (training) over (N, H, W) per channel, its gradient through the three paths
    by which x reaches the loss -> (dx, dgamma, dbeta)."""
    axes = (0, 2, 3)
    m = x.shape[0] * x.shape[2] * x.shape[3]
    mu = x.mean(axis=axes, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
    sigma = np.sqrt(var + eps)
    xhat = (x - mu) / sigma
    dgamma = (dy * xhat).sum(axis=axes)
    dbeta = dy.sum(axis=axes)
    dxhat = dy * gamma.reshape(1, -1, 1, 1)
    direct = dxhat / sigma                                             # path 1
    dmu = -(dxhat / sigma).sum(axis=axes, keepdims=True)               # path 2
    dvar = (dxhat * (x - mu)).sum(axis=axes, keepdims=True) * -0.5 * sigma ** -3   # path 3
    dx = direct + dmu / m + dvar * 2 * (x - mu) / m
    return dx, dgamma, dbeta


def batchnorm_backward_compact(x, gamma, dy, eps):
    """The same gradient in the compact form the layer uses -> (dx, dgamma, dbeta)."""
    axes = (0, 2, 3)
    m = x.shape[0] * x.shape[2] * x.shape[3]
    mu = x.mean(axis=axes, keepdims=True)
    sigma = np.sqrt(((x - mu) ** 2).mean(axis=axes, keepdims=True) + eps)
    xhat = (x - mu) / sigma
    dgamma = (dy * xhat).sum(axis=axes)
    dbeta = dy.sum(axis=axes)
    dx = gamma.reshape(1, -1, 1, 1) / (m * sigma) * (
        m * dy - dbeta.reshape(1, -1, 1, 1) - xhat * dgamma.reshape(1, -1, 1, 1))
    return dx, dgamma, dbeta


def conv_forward(x, W, b, stride, padding):
    """The convolution of x (N, C, H, W) with W (F, C, KH, KW), plus b (F,), as one matrix
    product: out = W2 @ cols + b, W2 = W.reshape(F, C*KH*KW), laid out as (N, F, OH, OW)."""
    n_images, n_filters = x.shape[0], W.shape[0]
    kernel = W.shape[2:]
    out_h = (x.shape[2] + 2 * padding[0] - kernel[0]) // stride[0] + 1
    out_w = (x.shape[3] + 2 * padding[1] - kernel[1]) // stride[1] + 1
    cols = im2col(x, kernel, stride, padding)                    # (C*KH*KW, N*OH*OW)
    out = W.reshape(n_filters, -1) @ cols + b[:, None]           # (F, N*OH*OW)
    # the columns run over (n, oh, ow): (F, N, OH, OW), then N first
    return out.reshape(n_filters, n_images, out_h, out_w).transpose(1, 0, 2, 3)


def avgpool_backward(dy, x_shape, kernel, stride):
    """Each window's dy, divided by KH*KW, goes to every element of the window; overlapping
    windows add up; pixels no window covers get zero."""
    (kh, kw), (sh, sw) = kernel, stride
    out_h, out_w = dy.shape[2:]
    dx = np.zeros(x_shape, dtype=dy.dtype)
    share = dy / (kh * kw)                                       # (N, C, OH, OW)
    for i in range(kh):
        for j in range(kw):  # element (i, j) of every window at once
            dx[:, :, i:i + sh * out_h:sh, j:j + sw * out_w:sw] += share
    return dx


def sgd_momentum_step(w, grad, velocity, lr, momentum):
    """One step of SGD with momentum, as minicnn and PyTorch take it -> (w, velocity):
    the velocity adds up the gradients, older ones weighed down by momentum; w moves against
    it."""
    velocity = momentum * velocity + grad
    w = w - lr * velocity
    return w, velocity


def adam_step(w, grad, m, v, t, lr, beta1, beta2, eps):
    """One Adam step (t = 1 on the first) -> (w, m, v): running means of the gradient (m) and
    of its square (v), each divided by 1 - beta**t, the part of the weights that the zeros
    they started from still hold."""
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad ** 2
    m_hat = m / (1 - beta1 ** t)
    v_hat = v / (1 - beta2 ** t)
    w = w - lr * m_hat / (np.sqrt(v_hat) + eps)
    return w, m, v
