"""The hot kernels compiled with numba: plain loops, run in parallel on every CPU core.

Same functions, signatures and results as :mod:`minicnn.kernels.numpy_kernels` (the readable
reference; read it first). Each public function is a thin Python wrapper: it works out the output
shape, allocates the result, makes the inputs C-contiguous and builds a small index table, then
calls an ``@njit(parallel=True)`` kernel that does the work in explicit loops.

**How the work is split.** Every kernel has one ``prange`` loop at the top, over independent
pieces of the *output*, and numba gives each core a contiguous block of its iterations:

- im2col: one (sample, output row) pair per iteration, i.e. OW consecutive rows of ``cols``;
- col2im: one (sample, input pixel) pair, that pixel's value in every channel;
- pooling, forward and backward: one (sample, channel) plane.

So each core writes its own part of the output and no two cores ever write the same element;
inside an iteration the loops are ordinary and serial, and nothing needs a lock or an atomic.

**Index tables instead of index arithmetic.** A window always has the same shape, so where its
elements lie relative to its top-left corner is one small table, made once in NumPy
(``_window_offsets``). im2col fills a row of ``cols`` by reading ``x[corner + offset[col]]`` for
every column: one long, simple loop instead of four nested short ones (with 3x3 kernels the
bookkeeping of a 3-long inner loop costs more than the copy). Padding is done beforehand by
copying x into a zero-filled array, so that loop needs no bounds checks.

**col2im is a gather.** col2im adds every entry of ``cols`` back to the pixel it was copied
from; written as a *scatter* over windows, two cores working on overlapping windows could add to
the same pixel at the same moment and lose one of the updates (a write race). Instead every
pixel *gathers*: it sums the entries that came from it. Which entries those are depends only on
the pixel's position in the plane, so ``_covering_windows`` lists them once per shape, for every
pixel: the windows that cover it and where in each window it sits. The pixel's value is computed
in a register and written once, by the one core that owns it.

**Pooling backward scatters, one plane per core.** There the windows are few (a quarter of the
pixels for 2x2 pooling) and a max-pool window sends its gradient to a single pixel, so walking
the windows is several times cheaper than a gather over all pixels. It stays race-free because a
plane, with every window in it, belongs to one core, and overlapping windows (stride < kernel)
are added one after the other within it.

**Same rounding as NumPy.** Float addition is not associative, so the kernels add in the order
the reference does: window position (i, j) in row-major order (the reference loops over (i, j)
and adds whole slabs). The gather lists are in that order, and the scatters walk their windows
backwards, which is the same order seen from a pixel. ``fastmath`` stays off so that LLVM keeps
it. The two backends therefore agree to the last bit, not just to a tolerance; the exception is
average-pool forward, where ``np.mean`` chooses its own summation order (see that kernel).

**Unsigned indices.** numba supports negative indices (``a[-1]``), so for a signed index it
emits a check-and-wrap on every access; an unsigned index cannot be negative and the check goes
away. In loops that do little besides indexing, that check costs up to half the time, so every
computed flat index is converted with ``_u`` (``numba.uint64``) where it is used.

Nothing is compiled at import time: numba compiles each kernel on its first call, once per
dtype (float32 and float64 get their own machine code), and with ``cache=True`` stores the
result in ``__pycache__`` so that later processes load it instead of compiling again.
"""

from __future__ import annotations

import os
from functools import lru_cache

# Threads: numba picks its TBB threading layer when the tbb package is installed (a minicnn
# dependency on x86-64). Where it falls back to OpenMP, the OpenMP workers would spin for a
# while after every parallel kernel and steal the cores from OpenBLAS's threads during the
# matrix multiplies that follow; passive workers sleep at once. This must be set before the
# OpenMP runtime starts (before the first kernel runs); a value the user set is respected.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
from numba import njit, prange  # noqa: E402
from numba import uint64 as _u

from . import conv_output_size
from .numpy_kernels import windows  # a zero-copy view of every window; nothing to compile

__all__ = [
    "avgpool_backward",
    "avgpool_forward",
    "col2im",
    "conv_output_size",
    "im2col",
    "maxpool_backward",
    "maxpool_forward",
    "windows",
]

# fastmath stays off: letting LLVM reorder the sums would break bit-for-bit agreement with NumPy.
_jit = njit(parallel=True, cache=True, fastmath=False)


# --- index tables (NumPy, small, cached per shape) -----------------------------------------


def _readonly(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)  # shared through the cache: nobody may change them
    return array


@lru_cache(maxsize=256)
def _window_offsets(channels: int, kh: int, kw: int, height: int, width: int) -> np.ndarray:
    """offset[(c*KH + i)*KW + j] = c*height*width + i*width + j: where window element (c, i, j)
    sits in a (channels, height, width) sample, relative to the window's top-left corner."""
    c, i, j = np.meshgrid(np.arange(channels), np.arange(kh), np.arange(kw), indexing="ij")
    return _readonly((c * height * width + i * width + j).ravel().astype(np.int64))


@lru_cache(maxsize=256)
def _covering_windows(height, width, kernel, stride, padding):
    """For every pixel of a height x width plane, the windows that cover it.

    Returns ``(starts, window, tap)``: pixel ``p = h*width + w`` is covered by the windows
    ``window[starts[p]:starts[p+1]]`` (flat index ``oh*OW + ow``), at position ``tap`` (flat
    ``i*KW + j``) in each, listed by increasing tap. Window (oh, ow) puts its element (i, j) on
    padded pixel (oh*SH + i, ow*SW + j), so pixel (h, w) is element (i, j) of window
    ``((h + PH - i) / SH, (w + PW - j) / SW)`` wherever both divisions are exact and in range.
    """
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    oh_count = conv_output_size(height, kh, sh, ph)
    ow_count = conv_output_size(width, kw, sw, pw)
    h, w, i, j = np.meshgrid(np.arange(height), np.arange(width), np.arange(kh), np.arange(kw),
                             indexing="ij")
    top, left = h + ph - i, w + pw - j  # the corner of the candidate window, padded coordinates
    oh, ow = top // sh, left // sw
    covers = ((top >= 0) & (top % sh == 0) & (oh < oh_count)
              & (left >= 0) & (left % sw == 0) & (ow < ow_count))
    starts = np.zeros(height * width + 1, dtype=np.int64)
    np.cumsum(covers.reshape(height * width, kh * kw).sum(axis=1), out=starts[1:])
    # Boolean indexing walks (h, w, i, j) in C order: pixel by pixel, taps in order within each.
    window = (oh * ow_count + ow)[covers].astype(np.int64)
    tap = (i * kw + j)[covers].astype(np.int64)
    return _readonly(starts), _readonly(window), _readonly(tap)


# --- the compiled kernels -------------------------------------------------------------------


@_jit
def _im2col_kernel(x_flat, offsets, n_count, oh_count, ow_count, sh, sw, x_width, cols):
    k = offsets.shape[0]
    sample_size = x_flat.shape[0] // n_count
    for task in prange(n_count * oh_count):  # one (sample, output row): OW consecutive rows
        n = task // oh_count
        oh = task - n * oh_count
        row_corner = n * sample_size + oh * sh * x_width  # x is padded: no bounds to check
        for ow in range(ow_count):
            row = task * ow_count + ow
            corner = row_corner + ow * sw
            for col in range(k):
                cols[row, col] = x_flat[_u(corner + offsets[col])]


@_jit
def _col2im_kernel(cols_flat, starts, sources, zero, sample_size, kernel_size, channels,
                   dx_flat):
    plane_size = starts.shape[0] - 1
    for task in prange(dx_flat.shape[0] // channels):  # one (sample, pixel): all its channels
        n = task // plane_size
        pixel = task - n * plane_size
        first, stop = starts[pixel], starts[pixel + 1]
        out = n * channels * plane_size + pixel
        # Channel c's entries sit c*KH*KW columns to the right of channel 0's, in the same
        # rows of cols, so looping over channels here re-reads cache lines already loaded.
        for c in range(channels):
            base = n * sample_size + c * kernel_size
            total = zero  # typed like the data, so float32 sums stay float32
            for e in range(first, stop):
                total += cols_flat[_u(base + sources[e])]
            dx_flat[_u(out + c * plane_size)] = total


@_jit
def _maxpool_forward_kernel(x_flat, offsets, oh_count, ow_count, sh, sw, x_width, y_flat,
                            argmax_flat):
    taps = offsets.shape[0]
    planes = y_flat.shape[0] // (oh_count * ow_count)
    plane_size = x_flat.shape[0] // planes
    for plane in prange(planes):
        out = plane * oh_count * ow_count
        for oh in range(oh_count):
            for ow in range(ow_count):
                corner = plane * plane_size + oh * sh * x_width + ow * sw
                best = x_flat[_u(corner)]
                best_at = 0
                nan_seen = best != best
                for t in range(1, taps):
                    v = x_flat[_u(corner + offsets[t])]
                    # Strict > keeps the first maximum on ties. Written as selects, not an if,
                    # because with random data the branch would be mispredicted half the time.
                    better = v > best
                    best = v if better else best
                    best_at = t if better else best_at
                    nan_seen |= v != v
                if nan_seen:  # np.argmax picks the first NaN; rare, so a slow exact pass is fine
                    for t in range(taps):
                        v = x_flat[_u(corner + offsets[t])]
                        if v != v:
                            best = v
                            best_at = t
                            break
                y_flat[_u(out)] = best
                argmax_flat[_u(out)] = best_at
                out += 1


@_jit
def _maxpool_backward_kernel(dy_flat, argmax_flat, offsets, oh_count, ow_count, sh, sw,
                             x_width, zero, dx_flat):
    windows_per_plane = oh_count * ow_count
    planes = dy_flat.shape[0] // windows_per_plane
    plane_size = dx_flat.shape[0] // planes
    for plane in prange(planes):
        start = plane * plane_size
        for p in range(start, start + plane_size):
            dx_flat[_u(p)] = zero
        # Windows in reverse order: a pixel that wins several overlapping windows then receives
        # their gradients in increasing (i, j) order, the order the reference adds them in.
        for oh in range(oh_count - 1, -1, -1):
            for ow in range(ow_count - 1, -1, -1):
                q = _u(plane * windows_per_plane + oh * ow_count + ow)
                winner = start + oh * sh * x_width + ow * sw + offsets[argmax_flat[q]]
                dx_flat[_u(winner)] += dy_flat[q]


@_jit
def _avgpool_forward_kernel(x_flat, kh, kw, oh_count, ow_count, sh, sw, x_width, zero, count,
                            y_flat):
    planes = y_flat.shape[0] // (oh_count * ow_count)
    plane_size = x_flat.shape[0] // planes
    for plane in prange(planes):
        out = plane * oh_count * ow_count
        for oh in range(oh_count):
            for ow in range(ow_count):
                corner = plane * plane_size + oh * sh * x_width + ow * sw
                # Sum each window row, then add up the row sums: the grouping NumPy's mean
                # uses in the usual layouts, so the two backends agree to the bit there. (NumPy
                # picks its reduction order from the memory layout, e.g. differently when the
                # output is one pixel wide; then they differ in the last bit.)
                total = zero
                for i in range(kh):
                    row_total = zero
                    for j in range(kw):
                        row_total += x_flat[_u(corner + i * x_width + j)]
                    total += row_total
                y_flat[_u(out)] = total / count
                out += 1


@_jit
def _avgpool_backward_kernel(dy_flat, offsets, oh_count, ow_count, sh, sw, x_width, zero, count,
                             dx_flat):
    windows_per_plane = oh_count * ow_count
    taps = offsets.shape[0]
    planes = dy_flat.shape[0] // windows_per_plane
    plane_size = dx_flat.shape[0] // planes
    for plane in prange(planes):
        start = plane * plane_size
        for p in range(start, start + plane_size):
            dx_flat[_u(p)] = zero
        for oh in range(oh_count - 1, -1, -1):  # reverse order, as in max-pool backward
            for ow in range(ow_count - 1, -1, -1):
                # Divide before spreading, like the reference: every share rounds identically.
                share = dy_flat[_u(plane * windows_per_plane + oh * ow_count + ow)] / count
                corner = start + oh * sh * x_width + ow * sw
                for t in range(taps):
                    dx_flat[_u(corner + offsets[t])] += share


# --- the public wrappers (same signatures as numpy_kernels) ---------------------------------


def _pad(x: np.ndarray, padding) -> np.ndarray:
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    n, c, h, w = x.shape
    padded = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=x.dtype)
    padded[:, :, ph : ph + h, pw : pw + w] = x  # cheaper than np.pad, which is general
    return padded


def im2col(x, kernel, stride, padding, out=None):
    x = np.ascontiguousarray(x)
    n, c, h, w = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    oh = conv_output_size(h, kh, sh, padding[0])
    ow = conv_output_size(w, kw, sw, padding[1])
    shape = (n * oh * ow, c * kh * kw)
    if out is None:
        target = np.empty(shape, dtype=x.dtype)
    elif out.dtype == x.dtype and out.shape == shape and out.flags.c_contiguous:
        target = out  # the kernel writes straight into the caller's buffer
    else:  # any other buffer: let NumPy cast or complain, as the reference would
        np.copyto(out, im2col(x, kernel, stride, padding))
        return out
    if target.size == 0:
        return target
    padded = _pad(x, padding)
    hp, wp = padded.shape[2:]
    offsets = _window_offsets(c, kh, kw, hp, wp)
    _im2col_kernel(padded.reshape(-1), offsets, n, oh, ow, sh, sw, wp, target)
    return target


def col2im(cols, x_shape, kernel, stride, padding):
    cols = np.ascontiguousarray(cols)
    n, c, h, w = (int(size) for size in x_shape)
    kh, kw = kernel
    dx = np.empty((n, c, h, w), dtype=cols.dtype)  # every element is written by the gather
    if dx.size == 0:
        return dx
    starts, window, tap = _covering_windows(h, w, tuple(kernel), tuple(stride), tuple(padding))
    # Entry (window q, tap t) of channel c of sample n is cols[n*Q + q, c*KH*KW + t], so
    # relative to where sample n, channel c starts it lies q*K + t further on.
    k = cols.shape[1]
    sources = window * k + tap
    windows_per_sample = cols.shape[0] // n
    _col2im_kernel(cols.reshape(-1), starts, sources, cols.dtype.type(0),
                   windows_per_sample * k, kh * kw, c, dx.reshape(-1))
    return dx


def maxpool_forward(x, kernel, stride):
    x = np.ascontiguousarray(x)
    n, c, h, w = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    oh, ow = conv_output_size(h, kh, sh, 0), conv_output_size(w, kw, sw, 0)
    y = np.empty((n, c, oh, ow), dtype=x.dtype)
    argmax = np.empty((n, c, oh, ow), dtype=np.int32)
    if y.size == 0:
        return y, argmax
    offsets = _window_offsets(1, kh, kw, h, w)
    _maxpool_forward_kernel(x.reshape(-1), offsets, oh, ow, sh, sw, w, y.reshape(-1),
                            argmax.reshape(-1))
    return y, argmax


def maxpool_backward(dy, argmax, x_shape, kernel, stride):
    dy = np.ascontiguousarray(dy)
    argmax = np.ascontiguousarray(argmax, dtype=np.int32)
    n, c, h, w = (int(size) for size in x_shape)
    (kh, kw), (sh, sw) = kernel, stride
    oh, ow = dy.shape[2:]
    dx = np.empty((n, c, h, w), dtype=dy.dtype)  # zeroed plane by plane by the kernel
    if dx.size == 0:
        return dx
    if dy.size == 0:  # no windows at all (cannot happen through the layers)
        dx.fill(0)
        return dx
    offsets = _window_offsets(1, kh, kw, h, w)
    _maxpool_backward_kernel(dy.reshape(-1), argmax.reshape(-1), offsets, oh, ow, sh, sw, w,
                             dy.dtype.type(0), dx.reshape(-1))
    return dx


def avgpool_forward(x, kernel, stride):
    x = np.ascontiguousarray(x)
    n, c, h, w = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    oh, ow = conv_output_size(h, kh, sh, 0), conv_output_size(w, kw, sw, 0)
    y = np.empty((n, c, oh, ow), dtype=x.dtype)
    if y.size == 0:
        return y
    scalar = x.dtype.type
    _avgpool_forward_kernel(x.reshape(-1), kh, kw, oh, ow, sh, sw, w, scalar(0),
                            scalar(kh * kw), y.reshape(-1))
    return y


def avgpool_backward(dy, x_shape, kernel, stride):
    dy = np.ascontiguousarray(dy)
    n, c, h, w = (int(size) for size in x_shape)
    (kh, kw), (sh, sw) = kernel, stride
    oh, ow = dy.shape[2:]
    dx = np.empty((n, c, h, w), dtype=dy.dtype)
    if dx.size == 0:
        return dx
    if dy.size == 0:
        dx.fill(0)
        return dx
    offsets = _window_offsets(1, kh, kw, h, w)
    scalar = dy.dtype.type
    _avgpool_backward_kernel(dy.reshape(-1), offsets, oh, ow, sh, sw, w, scalar(0),
                             scalar(kh * kw), dx.reshape(-1))
    return dx


# --- layout, activation and optimizer kernels ---------------------------------------------------
# Plain element-wise loops: NumPy runs each of these in one thread and, for the layout changes,
# with strided reads; here each is one parallel pass over memory.


@_jit
def _rows_to_nchw_kernel(rows, bias, plane, y):
    n_count, f_count = y.shape[0], y.shape[1]
    for task in prange(n_count * f_count):  # one output plane (sample n, filter f)
        n = task // f_count
        f = task - n * f_count
        b = bias[f]
        for p in range(plane):
            y[n, f, p] = rows[n * plane + p, f] + b


def rows_to_nchw(rows, bias, n, oh, ow):
    rows = np.ascontiguousarray(rows)
    f = rows.shape[1]
    y = np.empty((n, f, oh * ow), dtype=rows.dtype)
    bias = np.zeros(f, dtype=rows.dtype) if bias is None else np.ascontiguousarray(bias, rows.dtype)
    _rows_to_nchw_kernel(rows, bias, oh * ow, y)
    return y.reshape(n, f, oh, ow)


@_jit
def _nchw_to_rows_kernel(dy, out):
    n_count, f_count, plane = dy.shape
    for task in prange(n_count * plane):  # one output row (sample n, pixel p)
        n = task // plane
        p = task - n * plane
        for f in range(f_count):
            out[task, f] = dy[n, f, p]


def nchw_to_rows(dy, out=None):
    n, f, oh, ow = dy.shape
    if out is None:
        out = np.empty((n * oh * ow, f), dtype=dy.dtype)
    _nchw_to_rows_kernel(np.ascontiguousarray(dy).reshape(n, f, oh * ow), out)
    return out


@_jit
def _relu_forward_kernel(x, zero, y):
    for i in prange(x.shape[0]):
        y[i] = x[i] if x[i] > zero else zero


def relu_forward(x):
    x = np.ascontiguousarray(x)
    y = np.empty_like(x)
    _relu_forward_kernel(x.reshape(-1), x.dtype.type(0), y.reshape(-1))
    return y


@_jit
def _relu_backward_kernel(dy, y, zero, dx):
    for i in prange(dy.shape[0]):
        dx[i] = dy[i] if y[i] > zero else zero


def relu_backward(dy, y):
    dy, y = np.ascontiguousarray(dy), np.ascontiguousarray(y)
    dx = np.empty_like(dy)
    _relu_backward_kernel(dy.reshape(-1), y.reshape(-1), dy.dtype.type(0), dx.reshape(-1))
    return dx


@_jit
def _adam_kernel(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, bias_correction1,
                 bias_correction2_sqrt, weight_decay, decoupled):
    step_size = lr / bias_correction1
    for i in prange(param.shape[0]):
        g = grad[i]
        if weight_decay != 0.0:
            if decoupled:
                param[i] *= 1 - lr * weight_decay
            else:
                g = g + weight_decay * param[i]
        m = exp_avg[i] + (1 - beta1) * (g - exp_avg[i])
        v = exp_avg_sq[i] * beta2 + (1 - beta2) * g * g
        exp_avg[i] = m
        exp_avg_sq[i] = v
        param[i] -= step_size * (m / (np.sqrt(v) / bias_correction2_sqrt + eps))


def adam_update(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, step, weight_decay,
                decoupled):
    if not (param.flags.c_contiguous and exp_avg.flags.c_contiguous
            and exp_avg_sq.flags.c_contiguous and param.dtype == grad.dtype):
        from . import numpy_kernels

        return numpy_kernels.adam_update(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2,
                                         eps, step, weight_decay, decoupled)
    _adam_kernel(param.reshape(-1), np.ascontiguousarray(grad).reshape(-1),
                 exp_avg.reshape(-1), exp_avg_sq.reshape(-1), float(lr), float(beta1),
                 float(beta2), float(eps), 1 - beta1**step, float(np.sqrt(1 - beta2**step)),
                 float(weight_decay), bool(decoupled))
    return None

