"""The hot kernels compiled with numba: plain loops, run in parallel on every CPU core.

Same functions, signatures and results as :mod:`minicnn.kernels.numpy_kernels` (the readable
reference; read it first). Each public function is a thin Python wrapper: it works out the output
shape, takes the result array from the recycler (:mod:`minicnn.kernels.cpu_runtime`), makes the
inputs C-contiguous (and, for pooling, builds a small index table), then calls an
``@njit(parallel=True)`` kernel that does the work in explicit loops. ``matmul`` is
cpu_runtime's: numpy's BLAS, one block per core.

**How the work is split.** Every kernel has one ``prange`` loop at the top, over independent
pieces of the *output*, and numba gives each core a contiguous block of its iterations:

- im2col: one row of ``cols`` (one shifted copy of one input channel) for a block of samples:
  a long contiguous run of the output;
- col2im: one input channel for a block of samples: the planes it adds into stay in the core's
  cache while the KH*KW rows of ``cols`` that copied them stream past;
- pooling forward: one window; pooling backward: one (sample, channel) plane;
- the layout changes and BatchNorm's element-wise maps: one (sample, channel) plane;
- BatchNorm's sums: one channel (its sums run over every sample).

So each core writes its own part of the output and no two cores ever write the same element;
inside an iteration the loops are ordinary and serial, and nothing needs a lock or an atomic.

**Contiguous runs, no bounds checks inside them.** In the (C*KH*KW, N*OH*OW) layout of ``cols``
(see :mod:`minicnn.kernels`), the entries of one output row ``oh`` for one window position (i, j)
are OW consecutive values of ``cols`` taken from input row ``oh*SH + i - PH``, every SW-th pixel
from ``j - PW`` on. Which ``oh`` and ``ow`` land inside the image (not in the zero padding) is
worked out once per (i, j) by ``_inside``, so the inner loop is a plain strided copy that LLVM
vectorizes; the padding is written as zeros around it.

**col2im adds back within one plane.** col2im adds every entry of ``cols`` back to the pixel it
was copied from; two windows that overlap send values to the same pixel. If two cores worked on
the windows of one plane, they could add to the same pixel at the same moment and lose one of
the updates (a write race). Here a plane, with every window over it, belongs to one core, which
first zeroes it and then adds window position (i, j) after window position (i, j) in order.

**Pooling backward also scatters, one plane per core**, for the same reason: a max-pool window
sends its gradient to a single pixel, so walking the windows is cheaper than a gather over all
pixels, and overlapping windows (stride < kernel) are added one after the other within a plane.

**Same rounding as NumPy.** Float addition is not associative, so the kernels add in the order
the reference does: window position (i, j) in row-major order (the reference loops over (i, j)
and adds whole slabs). col2im loops over (i, j) in that order, and the pooling scatters walk
their windows backwards, which is the same order seen from a pixel. ``fastmath`` stays off so
that LLVM keeps it. The two backends therefore agree to the last bit, not just to a tolerance;
the exceptions are average-pool forward, where ``np.mean`` chooses its own summation order (see
that kernel), and BatchNorm's per-channel sums, which accumulate in float64 (see there).

**Flat, unsigned indices.** Every kernel indexes flat 1-D views with computed offsets. numba
supports negative indices (``a[-1]``), so for a signed index it emits a check-and-wrap on every
access, and a multi-dimensional index multiplies that by the rank; an unsigned index cannot be
negative and the check goes away. In loops that do little besides indexing, that check costs up
to three quarters of the time (the layout changes run 4x faster flat), so every computed index
is converted with ``_u`` (``numba.uint64``) where it is used.

Nothing is compiled at import time: numba compiles each kernel on its first call, once per
dtype (float32 and float64 get their own machine code), and with ``cache=True`` stores the
result in ``__pycache__`` so that later processes load it instead of compiling again.
"""

from __future__ import annotations

from functools import lru_cache

from . import cpu_runtime

# numba starts its threading layer with the first parallel kernel; the TBB library must be
# loadable by then (see cpu_runtime: in a virtual environment numba would not find it)
cpu_runtime.load_tbb()

import numpy as np  # noqa: E402
from numba import njit, prange  # noqa: E402
from numba import uint64 as _u  # noqa: E402

from . import choose_conv, geometry  # noqa: E402
from .cpu_runtime import matmul, recycler, residual_array  # noqa: E402

__all__ = [
    "adam_update",
    "add",
    "add_relu",
    "avgpool_backward",
    "avgpool_forward",
    "batchnorm_backward",
    "batchnorm_forward",
    "batchnorm_relu_backward",
    "batchnorm_relu_forward",
    "channel_mean_var",
    "channel_sum",
    "cnhw_to_nchw",
    "col2im",
    "conv_algorithm",
    "im2col",
    "matmul",
    "maxpool_backward",
    "maxpool_forward",
    "maxpool_relu_backward",
    "nchw_to_cnhw",
    "relu_backward",
    "relu_forward",
]

# fastmath stays off: letting LLVM reorder the sums would break bit-for-bit agreement with NumPy.
_jit = njit(parallel=True, cache=True, fastmath=False)


# --- index tables (NumPy, small, cached per shape) -----------------------------------------


def _readonly(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)  # shared through the cache: nobody may change them
    return array


@lru_cache(maxsize=256)
def _window_offsets(kh: int, kw: int, width: int) -> np.ndarray:
    """offset[i*KW + j] = i*width + j: where window element (i, j) sits in a plane of the given
    width, relative to the window's top-left corner."""
    i, j = np.meshgrid(np.arange(kh), np.arange(kw), indexing="ij")
    return _readonly((i * width + j).ravel().astype(np.int64))


# --- the compiled kernels -------------------------------------------------------------------


@njit(inline="always")
def _inside(count, offset, stride, size):
    """The outputs o in [0, count) whose input coordinate o*stride + offset lies in [0, size),
    as a range [first, stop): the rest fall on the zero padding."""
    first = 0 if offset >= 0 else (stride - 1 - offset) // stride
    stop = (size - offset + stride - 1) // stride if size > offset else 0
    stop = min(stop, count)
    return min(first, stop), stop


# im2col: one task per (row of cols, block of samples). A row of cols is one shifted copy of one
# input channel, so each task writes one long contiguous run (the block's columns of that row)
# and reads a few input planes; in the (C*KH*KW, N*OH*OW) layout this streams the large output
# through memory in order, about twice as fast as one task per input plane.
_SAMPLES_PER_TASK = 8


@_jit
def _im2col_kernel(x_flat, n_count, c_count, h_count, w_count, kh, kw, sh, sw, ph, pw,
                   oh_count, ow_count, cols_flat):
    plane = oh_count * ow_count
    row_length = n_count * plane  # cols is (C*KH*KW, N*OH*OW)
    blocks = (n_count + _SAMPLES_PER_TASK - 1) // _SAMPLES_PER_TASK
    for task in prange(c_count * kh * kw * blocks):
        row = task // blocks  # (c*KH + i)*KW + j
        first_n = (task - row * blocks) * _SAMPLES_PER_TASK
        c = row // (kh * kw)
        i = (row // kw) % kh
        j = row % kw
        oh_first, oh_stop = _inside(oh_count, i - ph, sh, h_count)
        ow_first, ow_stop = _inside(ow_count, j - pw, sw, w_count)
        for n in range(first_n, min(n_count, first_n + _SAMPLES_PER_TASK)):
            x_plane = (n * c_count + c) * h_count * w_count
            out = row * row_length + n * plane
            for oh in range(oh_count):
                if oh < oh_first or oh >= oh_stop:  # the whole output row is padding
                    for ow in range(ow_count):
                        cols_flat[_u(out + ow)] = 0
                else:
                    source = x_plane + (oh * sh + i - ph) * w_count + j - pw
                    for ow in range(ow_first):
                        cols_flat[_u(out + ow)] = 0
                    for ow in range(ow_first, ow_stop):
                        cols_flat[_u(out + ow)] = x_flat[_u(source + ow * sw)]
                    for ow in range(ow_stop, ow_count):
                        cols_flat[_u(out + ow)] = 0
                out += ow_count


# col2im: one task per (input channel, block of samples). The task zeroes its planes of dx,
# then adds window position (i, j) after window position (i, j), each a contiguous run of one
# row of cols, into planes that stay in the core's cache.
@_jit
def _col2im_kernel(cols_flat, n_count, c_count, h_count, w_count, kh, kw, sh, sw, ph, pw,
                   oh_count, ow_count, zero, dx_flat):
    plane = oh_count * ow_count
    row_length = n_count * plane
    blocks = (n_count + _SAMPLES_PER_TASK - 1) // _SAMPLES_PER_TASK
    for task in prange(c_count * blocks):  # the planes (n, c) of these samples: this core's
        c = task // blocks
        first_n = (task - c * blocks) * _SAMPLES_PER_TASK
        last_n = min(n_count, first_n + _SAMPLES_PER_TASK)
        for n in range(first_n, last_n):
            x_plane = (n * c_count + c) * h_count * w_count
            for p in range(h_count * w_count):
                dx_flat[_u(x_plane + p)] = zero
        for i in range(kh):
            oh_first, oh_stop = _inside(oh_count, i - ph, sh, h_count)
            for j in range(kw):
                ow_first, ow_stop = _inside(ow_count, j - pw, sw, w_count)
                row = ((c * kh + i) * kw + j) * row_length
                for n in range(first_n, last_n):
                    x_plane = (n * c_count + c) * h_count * w_count
                    for oh in range(oh_first, oh_stop):
                        source = row + n * plane + oh * ow_count
                        target = x_plane + (oh * sh + i - ph) * w_count + j - pw
                        for ow in range(ow_first, ow_stop):
                            dx_flat[_u(target + ow * sw)] += cols_flat[_u(source + ow)]


@njit(inline="always")
def _corner(window, oh_count, ow_count, plane_size, sh, sw, x_width):
    """Where window number ``window`` (plane-major, then oh, then ow) starts in the input."""
    plane = window // (oh_count * ow_count)
    oh = (window // ow_count) % oh_count
    ow = window % ow_count
    return plane * plane_size + oh * sh * x_width + ow * sw


@njit(inline="always")
def _fill(flat, start, count, value):
    """flat[start : start + count] = value, as a loop inside a kernel's own parallel task."""
    for p in range(start, start + count):
        flat[_u(p)] = value


# Pooling forward: one task per window (numba gives each core a contiguous block of them).
@_jit
def _maxpool_forward_kernel(x_flat, offsets, oh_count, ow_count, sh, sw, x_width, y_flat,
                            argmax_flat):
    taps = offsets.shape[0]
    plane_size = x_flat.shape[0] // (y_flat.shape[0] // (oh_count * ow_count))
    for window in prange(y_flat.shape[0]):
        corner = _corner(window, oh_count, ow_count, plane_size, sh, sw, x_width)
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
        y_flat[_u(window)] = best
        argmax_flat[_u(window)] = best_at


@_jit
def _maxpool_backward_kernel(dy_flat, argmax_flat, offsets, oh_count, ow_count, sh, sw,
                             x_width, zero, dx_flat, relu_x_flat, rectified):
    windows_per_plane = oh_count * ow_count
    planes = dy_flat.shape[0] // windows_per_plane
    plane_size = dx_flat.shape[0] // planes
    for plane in prange(planes):
        start = plane * plane_size
        _fill(dx_flat, start, plane_size, zero)
        # Windows in reverse order: a pixel that wins several overlapping windows then receives
        # their gradients in increasing (i, j) order, the order the reference adds them in.
        for oh in range(oh_count - 1, -1, -1):
            for ow in range(ow_count - 1, -1, -1):
                q = _u(plane * windows_per_plane + oh * ow_count + ow)
                winner = start + oh * sh * x_width + ow * sw + offsets[argmax_flat[q]]
                dx_flat[_u(winner)] += dy_flat[q]
        if rectified:  # the ReLU before the pool: its mask, on the winners alone
            for oh in range(oh_count):
                for ow in range(ow_count):
                    q = _u(plane * windows_per_plane + oh * ow_count + ow)
                    winner = _u(start + oh * sh * x_width + ow * sw + offsets[argmax_flat[q]])
                    dx_flat[winner] = dx_flat[winner] * (relu_x_flat[winner] > zero)


# The 2x2 windows at stride 2 of almost every CNN: the four candidates of a window are two
# adjacent pairs of two rows, read directly rather than through the offset table (5x faster).
@_jit
def _maxpool2x2_forward_kernel(x_flat, planes, h, w, oh_count, ow_count, y_flat, argmax_flat):
    for plane in prange(planes):
        for oh in range(oh_count):
            top = (plane * h + 2 * oh) * w
            bottom = top + w
            out = (plane * oh_count + oh) * ow_count
            for ow in range(ow_count):
                v0, v1 = x_flat[_u(top + 2 * ow)], x_flat[_u(top + 2 * ow + 1)]
                v2, v3 = x_flat[_u(bottom + 2 * ow)], x_flat[_u(bottom + 2 * ow + 1)]
                best, best_at = v0, 0
                better = v1 > best  # strict: the first maximum wins ties
                best = v1 if better else best
                best_at = 1 if better else best_at
                better = v2 > best
                best = v2 if better else best
                best_at = 2 if better else best_at
                better = v3 > best
                best = v3 if better else best
                best_at = 3 if better else best_at
                if (v0 != v0) | (v1 != v1) | (v2 != v2) | (v3 != v3):  # the first NaN wins
                    best_at = 0 if v0 != v0 else 1 if v1 != v1 else 2 if v2 != v2 else 3
                    best = v0 if v0 != v0 else v1 if v1 != v1 else v2 if v2 != v2 else v3
                y_flat[_u(out + ow)] = best
                argmax_flat[_u(out + ow)] = best_at


@_jit
def _maxpool2x2_backward_kernel(dy_flat, argmax_flat, planes, h, w, oh_count, ow_count, zero,
                                dx_flat, relu_x_flat, rectified):
    for plane in prange(planes):
        start = plane * h * w
        if 2 * oh_count != h or 2 * ow_count != w:  # an odd last row or column no window covers
            _fill(dx_flat, start, h * w, zero)
        for oh in range(oh_count):
            top = start + 2 * oh * w
            for ow in range(ow_count):
                q = _u((plane * oh_count + oh) * ow_count + ow)
                corner = top + 2 * ow
                dx_flat[_u(corner)] = zero
                dx_flat[_u(corner + 1)] = zero
                dx_flat[_u(corner + w)] = zero
                dx_flat[_u(corner + w + 1)] = zero
                at = argmax_flat[q]  # window position (at // 2, at % 2)
                winner = _u(corner + (at >> 1) * w + (at & 1))
                if rectified:  # the ReLU before the pool: its mask, read at the winner alone
                    dx_flat[winner] = dy_flat[q] * (relu_x_flat[winner] > zero)
                else:
                    dx_flat[winner] = dy_flat[q]


@_jit
def _avgpool_forward_kernel(x_flat, kh, kw, oh_count, ow_count, sh, sw, x_width, zero, count,
                            y_flat):
    plane_size = x_flat.shape[0] // (y_flat.shape[0] // (oh_count * ow_count))
    for window in prange(y_flat.shape[0]):
        corner = _corner(window, oh_count, ow_count, plane_size, sh, sw, x_width)
        # Sum each window row, then add up the row sums: the grouping NumPy's mean uses in the
        # usual layouts, so the two backends agree to the bit there. (NumPy picks its reduction
        # order from the memory layout, e.g. differently when the output is one pixel wide; then
        # they differ in the last bit.)
        total = zero
        for i in range(kh):
            row_total = zero
            for j in range(kw):
                row_total += x_flat[_u(corner + i * x_width + j)]
            total += row_total
        y_flat[_u(window)] = total / count


@_jit
def _avgpool_backward_kernel(dy_flat, offsets, oh_count, ow_count, sh, sw, x_width, zero, count,
                             dx_flat):
    windows_per_plane = oh_count * ow_count
    taps = offsets.shape[0]
    planes = dy_flat.shape[0] // windows_per_plane
    plane_size = dx_flat.shape[0] // planes
    for plane in prange(planes):
        start = plane * plane_size
        _fill(dx_flat, start, plane_size, zero)
        for oh in range(oh_count - 1, -1, -1):  # reverse order, as in max-pool backward
            for ow in range(ow_count - 1, -1, -1):
                # Divide before spreading, like the reference: every share rounds identically.
                share = dy_flat[_u(plane * windows_per_plane + oh * ow_count + ow)] / count
                corner = start + oh * sh * x_width + ow * sw
                for t in range(taps):
                    dx_flat[_u(corner + offsets[t])] += share


def threading_layer() -> str:
    """The threading layer these kernels run on ("tbb", "omp" or "workqueue")."""
    import numba

    try:
        return numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet: run one
        relu_forward(np.zeros(1, np.float32))
        return numba.threading_layer()


# --- the public wrappers (same signatures as numpy_kernels) ---------------------------------


_WINOGRAD_MIN_CHANNELS = 8
_DIRECT_MIN_FILTERS = 4


def conv_rule(x_shape, weight_shape, padding):
    """Which algorithm this backend runs a 3x3, stride-1 convolution with when left to choose:
    Winograd F(4x4, 3x3) wherever both sides have enough channels for its a*a matrix products
    to keep the cores busy; the direct sum where the input has fewer (a first layer, whose
    im2col product has an inner dimension of 9 or 27) and there are filters enough for the
    cores to share (its weight gradient takes two filters per task); else im2col. The
    per-layer tables in benchmarks/README.md are the evidence."""
    f, c = weight_shape[:2]
    if min(c, f) >= _WINOGRAD_MIN_CHANNELS:
        return "winograd"
    if c < _WINOGRAD_MIN_CHANNELS and f >= _DIRECT_MIN_FILTERS:
        return "direct"
    return None


def conv_algorithm(x_shape, weight_shape, stride, padding):
    """The algorithm a convolution of these shapes runs with (None: Conv2D's im2col + GEMM)."""
    from . import numba_direct, numba_winograd

    return choose_conv(x_shape, weight_shape, stride, padding, conv_rule, winograd=numba_winograd,
                       direct=numba_direct)


def im2col(x, kernel, stride, padding):
    x = np.ascontiguousarray(x)
    g = geometry(x.shape, kernel, stride, padding)
    cols = recycler.empty((g.c * g.kh * g.kw, g.n * g.oh * g.ow), x.dtype)
    if cols.size:
        _im2col_kernel(x.reshape(-1), *g, cols.reshape(-1))
    return cols


def _gradient_of_input(x_shape, dtype, source):
    """dx for a backward kernel that zeroes each plane itself, or the whole answer when there is
    nothing to add (an empty input, or no windows at all, which no layer produces)."""
    dx = recycler.empty(tuple(int(size) for size in x_shape), dtype)
    if source.size == 0:
        dx.fill(0)
    return dx, dx.size > 0 and source.size > 0


def col2im(cols, x_shape, kernel, stride, padding):
    cols = np.ascontiguousarray(cols)
    g = geometry(x_shape, kernel, stride, padding)
    dx, work = _gradient_of_input(x_shape, cols.dtype, cols)
    if work:
        _col2im_kernel(cols.reshape(-1), *g, cols.dtype.type(0), dx.reshape(-1))
    return dx


def maxpool_forward(x, kernel, stride):
    x = np.ascontiguousarray(x)
    g = geometry(x.shape, kernel, stride)
    y = recycler.empty((g.n, g.c, g.oh, g.ow), x.dtype)
    argmax = recycler.empty((g.n, g.c, g.oh, g.ow), np.int32)
    if y.size and (g.kh, g.kw, g.sh, g.sw) == (2, 2, 2, 2):
        _maxpool2x2_forward_kernel(x.reshape(-1), g.n * g.c, g.h, g.w, g.oh, g.ow,
                                   y.reshape(-1), argmax.reshape(-1))
    elif y.size:
        _maxpool_forward_kernel(x.reshape(-1), _window_offsets(g.kh, g.kw, g.w), g.oh, g.ow,
                                g.sh, g.sw, g.w, y.reshape(-1), argmax.reshape(-1))
    return y, argmax


def maxpool_backward(dy, argmax, x_shape, kernel, stride):
    return _maxpool_backward(dy, argmax, x_shape, kernel, stride, relu_x=None)


def maxpool_relu_backward(dy, argmax, relu_x, kernel, stride):
    # the ReLU's mask is read at each window's winner only: every other pixel's gradient is 0
    return _maxpool_backward(dy, argmax, relu_x.shape, kernel, stride, relu_x=relu_x)


def _maxpool_backward(dy, argmax, x_shape, kernel, stride, relu_x):
    dy = np.ascontiguousarray(dy)
    argmax = np.ascontiguousarray(argmax, dtype=np.int32).reshape(-1)
    g = geometry(x_shape, kernel, stride)
    dx, work = _gradient_of_input(x_shape, dy.dtype, dy)
    mask = dy if relu_x is None else np.ascontiguousarray(relu_x, dtype=dy.dtype)
    if work and (g.kh, g.kw, g.sh, g.sw) == (2, 2, 2, 2):
        _maxpool2x2_backward_kernel(dy.reshape(-1), argmax, g.n * g.c, g.h, g.w, g.oh, g.ow,
                                    dy.dtype.type(0), dx.reshape(-1), mask.reshape(-1),
                                    relu_x is not None)
    elif work:
        _maxpool_backward_kernel(dy.reshape(-1), argmax, _window_offsets(g.kh, g.kw, g.w),
                                 g.oh, g.ow, g.sh, g.sw, g.w, dy.dtype.type(0), dx.reshape(-1),
                                 mask.reshape(-1), relu_x is not None)
    return dx


def avgpool_forward(x, kernel, stride):
    x = np.ascontiguousarray(x)
    g = geometry(x.shape, kernel, stride)
    y = recycler.empty((g.n, g.c, g.oh, g.ow), x.dtype)
    if y.size:
        scalar = x.dtype.type
        _avgpool_forward_kernel(x.reshape(-1), g.kh, g.kw, g.oh, g.ow, g.sh, g.sw, g.w,
                                scalar(0), scalar(g.kh * g.kw), y.reshape(-1))
    return y


def avgpool_backward(dy, x_shape, kernel, stride):
    dy = np.ascontiguousarray(dy)
    g = geometry(x_shape, kernel, stride)
    dx, work = _gradient_of_input(x_shape, dy.dtype, dy)
    if work:
        scalar = dy.dtype.type
        _avgpool_backward_kernel(dy.reshape(-1), _window_offsets(g.kh, g.kw, g.w), g.oh, g.ow,
                                 g.sh, g.sw, g.w, scalar(0), scalar(g.kh * g.kw), dx.reshape(-1))
    return dx


# --- layout, activation and optimizer kernels ---------------------------------------------------
# Plain element-wise loops: NumPy runs each of these in one thread; here each is one parallel
# pass over memory.


@_jit
def _cnhw_to_nchw_kernel(out_flat, bias, n_count, f_count, plane, rectify, residual_flat,
                         y_flat):
    zero = out_flat.dtype.type(0)
    for task in prange(n_count * f_count):  # one output plane (sample n, filter f)
        n = task // f_count
        f = task - n * f_count
        b = bias[f]
        source = (f * n_count + n) * plane
        target = task * plane
        for p in range(plane):
            v = out_flat[_u(source + p)] + b
            if residual_flat.shape[0]:
                v += residual_flat[_u(target + p)]
            y_flat[_u(target + p)] = v if not rectify or v > zero else zero  # relu_forward's


def cnhw_to_nchw(out, bias, n, oh, ow, rectify=False, residual=None):
    out = np.ascontiguousarray(out)
    f = out.shape[0]
    y = recycler.empty((n, f, oh, ow), out.dtype)
    bias = np.zeros(f, dtype=out.dtype) if bias is None else np.ascontiguousarray(bias, out.dtype)
    _cnhw_to_nchw_kernel(out.reshape(-1), bias, n, f, oh * ow, rectify,
                         residual_array(residual, y), y.reshape(-1))
    return y


@_jit
def _nchw_to_cnhw_kernel(dy_flat, n_count, f_count, plane, out_flat):
    for task in prange(n_count * f_count):  # one input plane (sample n, filter f)
        n = task // f_count
        f = task - n * f_count
        source = task * plane
        target = (f * n_count + n) * plane
        for p in range(plane):
            out_flat[_u(target + p)] = dy_flat[_u(source + p)]


def nchw_to_cnhw(dy):
    n, f, oh, ow = dy.shape
    out = recycler.empty((f, n * oh * ow), dy.dtype)
    _nchw_to_cnhw_kernel(np.ascontiguousarray(dy).reshape(-1), n, f, oh * ow, out.reshape(-1))
    return out


@_jit
def _relu_forward_kernel(x, zero, y):
    for i in prange(x.shape[0]):
        y[_u(i)] = x[_u(i)] if x[_u(i)] > zero else zero


def relu_forward(x):
    x = np.ascontiguousarray(x)
    y = recycler.empty(x.shape, x.dtype)
    _relu_forward_kernel(x.reshape(-1), x.dtype.type(0), y.reshape(-1))
    return y


@_jit
def _add_kernel(a, b, y):
    for i in prange(a.shape[0]):
        y[_u(i)] = a[_u(i)] + b[_u(i)]


def add(a, b):
    """a + b (of one shape) into an array the recycler keeps: a fresh one each step costs page
    faults. On both cores: the sum is bound by memory, and one core alone reaches only part of
    the bandwidth on some CPUs (benchmarks/README.md, "The Intel Xeon (AVX-512)")."""
    if a.shape != b.shape:
        raise ValueError(f"add: operands of shapes {a.shape} and {b.shape}; they must match")
    dtype = np.result_type(a, b)
    a, b = np.ascontiguousarray(a, dtype), np.ascontiguousarray(b, dtype)
    y = recycler.empty(a.shape, dtype)
    _add_kernel(a.reshape(-1), b.reshape(-1), y.reshape(-1))
    return y


@_jit
def _add_relu_kernel(a, b, zero, y):
    for i in prange(a.shape[0]):
        total = a[_u(i)] + b[_u(i)]
        y[_u(i)] = total if total > zero else zero  # relu_forward's formula on a + b


def add_relu(a, b):
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    y = recycler.empty(a.shape, a.dtype)
    _add_relu_kernel(a.reshape(-1), b.reshape(-1), a.dtype.type(0), y.reshape(-1))
    return y


@_jit
def _relu_backward_kernel(dy, y, zero, dx):
    for i in prange(dy.shape[0]):
        dx[_u(i)] = dy[_u(i)] * (y[_u(i)] > zero)  # the reference's formula, non-finite dy too


def relu_backward(dy, y):
    dy, y = np.ascontiguousarray(dy), np.ascontiguousarray(y)
    dx = recycler.empty(dy.shape, dy.dtype)
    _relu_backward_kernel(dy.reshape(-1), y.reshape(-1), dy.dtype.type(0), dx.reshape(-1))
    return dx


# Batch normalization: one channel per task for the sums (they run over N, H and W), one
# (sample, channel) plane per task for the element-wise maps. Sums accumulate in float64, so
# float32 results are *more* accurate than NumPy's float32 sums (not bit-for-bit equal), and
# LLVM may reassociate them: a strict left-to-right float sum waits ~4 cycles per element for
# the previous addition, while reassociated it runs in SIMD lanes (3x faster here).
_jit_sums = njit(parallel=True, cache=True, fastmath={"reassoc"})


@njit(inline="always")
def _channel_total(x_flat, n_count, c_count, plane, c):
    """The sum of channel c's values over every sample, in float64 (inlined: the caller's
    reassociation applies)."""
    total = 0.0
    for n in range(n_count):
        start = (n * c_count + c) * plane
        for p in range(plane):
            total += x_flat[_u(start + p)]
    return total


@_jit_sums
def _channel_sum_kernel(x_flat, n_count, c_count, plane, sums):
    for c in prange(c_count):
        sums[c] = _channel_total(x_flat, n_count, c_count, plane, c)


def channel_sum(x):
    """x summed over N, H and W (a convolution's dL/db), one channel per task: numpy's sum over
    axes (0, 2, 3) runs on one core, through strided runs (benchmarks/README.md, "The Intel Xeon
    (AVX-512)")."""
    x = np.ascontiguousarray(x)
    n, c, h, w = x.shape
    sums = np.empty(c, dtype=x.dtype)
    _channel_sum_kernel(x.reshape(-1), n, c, h * w, sums)
    return sums


@_jit_sums
def _channel_mean_var_kernel(x_flat, n_count, c_count, plane, mean, var):
    count = n_count * plane
    for c in prange(c_count):
        mu = _channel_total(x_flat, n_count, c_count, plane, c) / count
        squares = 0.0
        for n in range(n_count):
            start = (n * c_count + c) * plane
            for p in range(plane):
                d = x_flat[_u(start + p)] - mu
                squares += d * d
        mean[c] = mu
        var[c] = squares / count


def channel_mean_var(x):
    x = np.ascontiguousarray(x)
    n, c, h, w = x.shape
    mean, var = np.empty(c, dtype=x.dtype), np.empty(c, dtype=x.dtype)
    _channel_mean_var_kernel(x.reshape(-1), n, c, h * w, mean, var)
    return mean, var


@_jit
def _channel_affine_kernel(x_flat, c_count, plane, scale, shift, relu, y_flat):
    zero = x_flat.dtype.type(0)
    for task in prange(x_flat.shape[0] // plane):  # one (sample, channel) plane
        c = task % c_count
        a, b = scale[c], shift[c]
        start = task * plane
        for p in range(plane):
            v = x_flat[_u(start + p)] * a + b
            y_flat[_u(start + p)] = v if not relu or v > zero else zero


def batchnorm_forward(x, mean, inv_std, gamma, beta, relu=False):
    # gamma * (x - mean) * inv_std + beta is an affine map per channel: x * scale + shift
    x = np.ascontiguousarray(x)
    n, c, h, w = x.shape
    scale, shift = _affine(x.dtype, mean, inv_std, gamma, beta)
    y = recycler.empty(x.shape, x.dtype)
    if y.size:
        _channel_affine_kernel(x.reshape(-1), c, h * w, scale, shift, relu, y.reshape(-1))
    return y


def _affine(dtype, mean, inv_std, gamma, beta):
    """(scale, shift) of BatchNorm's map x * scale + shift, in the activations' dtype."""
    scale = (gamma * inv_std).astype(dtype)
    return scale, (beta - mean * scale).astype(dtype)


@_jit_sums
def _batchnorm_backward_kernel(dy_flat, x_flat, n_count, c_count, plane, mean, inv_std, scale,
                               shift, relu, batch_statistics, dgamma, dbeta, dx_flat):
    # One channel at a time: its sums, then its dx while its planes are still in the cache (a
    # pass over all channels, then another, would read dy and x from memory twice).
    zero = dy_flat.dtype.type(0)
    count = n_count * plane
    for c in prange(c_count):
        sum_dy = 0.0
        sum_dy_xhat = 0.0
        mu, s, a, b = mean[c], inv_std[c], scale[c], shift[c]
        for n in range(n_count):
            start = (n * c_count + c) * plane
            for p in range(plane):
                v = x_flat[_u(start + p)]
                g = dy_flat[_u(start + p)]
                if relu:  # dy through ReLU first: its mask is BatchNorm's output > 0
                    g = g * ((v * a + b) > zero)
                sum_dy += g
                sum_dy_xhat += g * ((v - mu) * s)
        dbeta[c] = sum_dy
        dgamma[c] = sum_dy_xhat
        # dgamma / M and dbeta / M, which dx subtracts when the statistics came from the batch
        # (x also reaches the loss through them); nothing when they were constants
        gm = dy_flat.dtype.type(dgamma[c] / count) if batch_statistics and count else zero
        bm = dy_flat.dtype.type(dbeta[c] / count) if batch_statistics and count else zero
        for n in range(n_count):
            start = (n * c_count + c) * plane
            for p in range(plane):
                v = x_flat[_u(start + p)]
                g = dy_flat[_u(start + p)]
                if relu:
                    g = g * ((v * a + b) > zero)
                dx_flat[_u(start + p)] = a * (g - bm - ((v - mu) * s) * gm)  # a = gamma / sigma


def batchnorm_backward(dy, x, mean, inv_std, gamma, batch_statistics, beta=None, relu=False):
    """(dx, dgamma, dbeta); with ``relu``, dy is dL/d(the ReLU's output) of a ReLU that followed
    (its mask, BatchNorm's output > 0, is computed again from x: ``beta`` is needed then)."""
    dy, x = np.ascontiguousarray(dy), np.ascontiguousarray(x, dtype=dy.dtype)
    n, c, h, w = dy.shape
    scale, shift = _affine(dy.dtype, mean, inv_std, gamma, beta if relu else np.zeros_like(gamma))
    mean, inv_std = mean.astype(dy.dtype), inv_std.astype(dy.dtype)
    dgamma, dbeta = np.empty(c, dtype=dy.dtype), np.empty(c, dtype=dy.dtype)
    dx = recycler.empty(dy.shape, dy.dtype)
    _batchnorm_backward_kernel(dy.reshape(-1), x.reshape(-1), n, c, h * w, mean, inv_std, scale,
                               shift, relu, bool(batch_statistics), dgamma, dbeta, dx.reshape(-1))
    return dx, dgamma, dbeta


# BatchNorm2D followed by ReLU, in one pass each way. Forward: max(x * scale + shift, 0), never
# writing BatchNorm's own output. Backward: ReLU's mask is that same x * scale + shift > 0,
# computed again from x (which BatchNorm's backward reads anyway) instead of read from ReLU's
# output, and dy is masked on the fly: no dL/d(BatchNorm's output) array is written or read.


def batchnorm_relu_forward(x, mean, inv_std, gamma, beta):
    return batchnorm_forward(x, mean, inv_std, gamma, beta, relu=True)


def batchnorm_relu_backward(dy, x, mean, inv_std, gamma, beta, batch_statistics):
    return batchnorm_backward(dy, x, mean, inv_std, gamma, batch_statistics, beta=beta, relu=True)


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



# --- data augmentation: minicnn.data.warp_affine's bilinear sampling ------------------------


@_jit
def _bilinear_kernel(x_flat, n_count, c_count, h, w, sx, sy, edge, fill, out_h, out_w, y_flat):
    # the arithmetic of minicnn.data.transforms._bilinear, in the same order and precision
    for n in prange(n_count):
        for r in range(out_h):
            for q in range(out_w):
                px = sx[n, r, q]
                py = sy[n, r, q]
                if not edge:  # the image framed by one pixel of `fill`: coordinates shift by 1
                    px += 1.0
                    py += 1.0
                width, height = (w, h) if edge else (w + 2, h + 2)
                x0f, y0f = np.floor(px), np.floor(py)
                wx = x_flat.dtype.type(px - x0f)
                wy = x_flat.dtype.type(py - y0f)
                x0 = int(min(max(x0f, 0), width - 1))
                x1 = int(min(max(x0f + 1, 0), width - 1))
                y0 = int(min(max(y0f, 0), height - 1))
                y1 = int(min(max(y0f + 1, 0), height - 1))
                for c in range(c_count):
                    plane = (n * c_count + c) * h * w
                    if edge:
                        v00 = x_flat[plane + y0 * w + x0]
                        v01 = x_flat[plane + y0 * w + x1]
                        v10 = x_flat[plane + y1 * w + x0]
                        v11 = x_flat[plane + y1 * w + x1]
                    else:  # framed: row/column 0 and h+1/w+1 are the fill
                        v00 = _framed(x_flat, plane, h, w, y0, x0, fill)
                        v01 = _framed(x_flat, plane, h, w, y0, x1, fill)
                        v10 = _framed(x_flat, plane, h, w, y1, x0, fill)
                        v11 = _framed(x_flat, plane, h, w, y1, x1, fill)
                    top = v00 + (v01 - v00) * wx
                    bottom = v10 + (v11 - v10) * wx
                    y_flat[((n * c_count + c) * out_h + r) * out_w + q] = top + (bottom - top) * wy


@njit(inline="always")
def _framed(x_flat, plane, h, w, y, x, fill):
    if 1 <= y <= h and 1 <= x <= w:
        return x_flat[plane + (y - 1) * w + x - 1]
    return fill


def bilinear(x, sx, sy, fill):
    """``minicnn.data.transforms._bilinear`` (the reference, in NumPy) on every core: the same
    samples, bit for bit."""
    n, c, h, w = x.shape
    out_h, out_w = sx.shape[1:]
    edge = isinstance(fill, str)
    y = np.empty((n, c, out_h, out_w), x.dtype)
    _bilinear_kernel(np.ascontiguousarray(x).reshape(-1), n, c, h, w,
                     np.ascontiguousarray(sx, np.float64), np.ascontiguousarray(sy, np.float64),
                     edge, x.dtype.type(0 if edge else fill), out_h, out_w, y.reshape(-1))
    return y
