"""Winograd F(m x m, 3x3) on every core: the algorithm of :mod:`minicnn.kernels.winograd`
(read it first: the derivation, the matrices and the NumPy reference), with its four tile
transforms as parallel numba kernels and its a*a matrix products on minicnn's threads.

**One plane per task.** Every transform kernel runs one (sample, channel) plane per ``prange``
iteration: the plane's tiles are consecutive in the tile numbering, so a task reads and writes
runs of TW consecutive tiles in each of the a*a positions, and no two tasks touch the same
element (the transposed input transform adds overlapping tiles back inside its own plane).

**Each transform is two passes of one small matrix**, first down the tile rows, then across:

- ``B^T d B``: ``B^T`` mixes the a input rows of a row of tiles, over the whole width at once
  (a long contiguous loop LLVM vectorizes); then ``. B`` mixes the a columns of each tile,
  with the tiles of that row in the inner loop;
- ``A^T M A``: across first (the a*a products of each tile are a*a separate runs), then down,
  writing whole output rows (and the bias);
- the transposes ``A dY A^T`` and ``B dV B^T`` take the same two passes in the other order.

Zero entries of the matrices are skipped (half of F(4x4)'s ``B^T`` is zeros), and every pass
multiplies whole runs by one matrix entry, so the entries need not be compiled in.

**The matrix products** ``M[p] = U[p] @ V[p]`` (and the two of the backward pass) are a*a
independent GEMMs, so :func:`~minicnn.kernels.cpu_runtime.batched_matmul` gives each core its
own share of them, one single-threaded BLAS call each.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from numba import uint64 as _u

from . import winograd
from .cpu_runtime import batched_matmul, matmul, recycler

_jit = njit(parallel=True, cache=True, fastmath=False)


@njit(inline="always")
def _left(K, src, src_at, src_step, inner, length, dst, dst_at, dst_step):
    """dst[i, l, :] = sum_k K[i, k] * src[k, l, :] for runs of ``length`` values; run (k, l) of src
    starts at src_at + (k*inner + l)*src_step, likewise for dst."""
    for i in range(K.shape[0]):
        for l in range(inner):
            out = dst_at + (i * inner + l) * dst_step
            for t in range(length):
                dst[_u(out + t)] = 0
            for k in range(K.shape[1]):
                coef = K[i, k]
                if coef != 0:  # half of F(4x4)'s B^T is zeros
                    source = src_at + (k * inner + l) * src_step
                    for t in range(length):
                        dst[_u(out + t)] += coef * src[_u(source + t)]


@njit(inline="always")
def _right(src, src_at, src_step, K, outer, length, dst, dst_at, dst_step):
    """dst[i, j, :] = sum_l src[i, l, :] * K[l, j], laid out as in :func:`_left`."""
    rows, columns = K.shape
    for i in range(outer):
        for j in range(columns):
            out = dst_at + (i * columns + j) * dst_step
            for t in range(length):
                dst[_u(out + t)] = 0
            for l in range(rows):
                coef = K[l, j]
                if coef != 0:
                    source = src_at + (i * rows + l) * src_step
                    for t in range(length):
                        dst[_u(out + t)] += coef * src[_u(source + t)]


@njit(inline="always")
def _task_tiles(task, blocks, per_task, n_count, plane_tiles):
    """Every kernel runs one task per (channel, block of ``per_task`` samples), whose tiles are
    consecutive in the tile numbering. Returns the channel, the block's first sample and the one
    past its last, and how many tiles it holds (per_task*TH*TW, fewer in the last block)."""
    channel = task // blocks
    first_n = (task - channel * blocks) * per_task
    last_n = min(n_count, first_n + per_task)
    return channel, first_n, last_n, (last_n - first_n) * plane_tiles


@_jit
def _input_transform_kernel(x_flat, n_count, c_count, h, w, ph, pw, th_count, tw_count, per_task,
                            BT, B, V_flat):
    a = BT.shape[0]
    m = a - 2
    rows, cols = th_count * m + 2, tw_count * m + 2  # the padded plane the tiles cover
    plane_tiles = th_count * tw_count
    tiles = n_count * plane_tiles
    blocks = (n_count + per_task - 1) // per_task
    for task in prange(c_count * blocks):
        c, first_n, last_n, length = _task_tiles(task, blocks, per_task, n_count, plane_tiles)
        padded = np.zeros(rows * cols, dtype=x_flat.dtype)
        d = np.empty(a * a * length, dtype=x_flat.dtype)  # d[k, l, tile]: the tiles, gathered
        mixed = np.empty(a * a * length, dtype=x_flat.dtype)
        for n in range(first_n, last_n):
            source = (n * c_count + c) * h * w
            for y in range(h):
                for x in range(w):
                    padded[_u((y + ph) * cols + x + pw)] = x_flat[_u(source + y * w + x)]
            for th in range(th_count):
                for tw in range(tw_count):
                    t = (n - first_n) * plane_tiles + th * tw_count + tw
                    corner = th * m * cols + tw * m
                    for k in range(a):
                        for l in range(a):
                            d[_u((k * a + l) * length + t)] = padded[_u(corner + k * cols + l)]
        _left(BT, d, 0, length, a, length, mixed, 0, length)  # B^T d
        _right(mixed, 0, length, B, a, length, V_flat, c * tiles + first_n * plane_tiles,
               c_count * tiles)  # (B^T d) B, into V[position, c, tiles]


@_jit
def _input_transform_transposed_kernel(dV_flat, n_count, c_count, h, w, ph, pw, th_count,
                                       tw_count, per_task, BT, B, dx_flat):
    a = BT.shape[0]
    m = a - 2
    rows, cols = th_count * m + 2, tw_count * m + 2
    plane_tiles = th_count * tw_count
    tiles = n_count * plane_tiles
    blocks = (n_count + per_task - 1) // per_task
    for task in prange(c_count * blocks):
        c, first_n, last_n, length = _task_tiles(task, blocks, per_task, n_count, plane_tiles)
        mixed = np.empty(a * a * length, dtype=dV_flat.dtype)
        dd = np.empty(a * a * length, dtype=dV_flat.dtype)
        _left(B, dV_flat, c * tiles + first_n * plane_tiles, c_count * tiles, a, length, mixed, 0,
              length)  # B dV
        _right(mixed, 0, length, BT, a, length, dd, 0, length)  # (B dV) B^T
        dpadded = np.empty(rows * cols, dtype=dV_flat.dtype)
        for n in range(first_n, last_n):
            for q in range(rows * cols):
                dpadded[_u(q)] = 0
            for th in range(th_count):
                for tw in range(tw_count):
                    t = (n - first_n) * plane_tiles + th * tw_count + tw
                    corner = th * m * cols + tw * m
                    for k in range(a):
                        for l in range(a):  # neighbouring tiles overlap: their gradients add up
                            dpadded[_u(corner + k * cols + l)] += dd[_u((k * a + l) * length + t)]
            target = (n * c_count + c) * h * w
            for y in range(h):
                for x in range(w):
                    dx_flat[_u(target + y * w + x)] = dpadded[_u((y + ph) * cols + x + pw)]


@_jit
def _output_transform_kernel(M_flat, n_count, f_count, oh, ow, th_count, tw_count, per_task, AT,
                             A, bias, y_flat):
    m, a = AT.shape
    plane_tiles = th_count * tw_count
    tiles = n_count * plane_tiles
    blocks = (n_count + per_task - 1) // per_task
    for task in prange(f_count * blocks):
        f, first_n, last_n, length = _task_tiles(task, blocks, per_task, n_count, plane_tiles)
        mixed = np.empty(m * a * length, dtype=M_flat.dtype)
        blocks_out = np.empty(m * m * length, dtype=M_flat.dtype)
        _left(AT, M_flat, f * tiles + first_n * plane_tiles, f_count * tiles, a, length, mixed, 0,
              length)  # A^T M
        _right(mixed, 0, length, A, m, length, blocks_out, 0, length)  # (A^T M) A
        b = bias[f]
        for n in range(first_n, last_n):
            target = (n * f_count + f) * oh * ow
            for th in range(th_count):
                for r in range(min(m, oh - th * m)):
                    row = target + (th * m + r) * ow
                    for tw in range(tw_count):
                        t = (n - first_n) * plane_tiles + th * tw_count + tw
                        for s in range(min(m, ow - tw * m)):  # the last blocks may overhang
                            y_flat[_u(row + tw * m + s)] = blocks_out[_u((r * m + s) * length + t)] + b


@_jit
def _output_transform_transposed_kernel(dy_flat, n_count, f_count, oh, ow, th_count, tw_count,
                                        per_task, AT, A, dM_flat):
    m, a = AT.shape
    plane_tiles = th_count * tw_count
    tiles = n_count * plane_tiles
    blocks = (n_count + per_task - 1) // per_task
    for task in prange(f_count * blocks):
        f, first_n, last_n, length = _task_tiles(task, blocks, per_task, n_count, plane_tiles)
        dY = np.zeros(m * m * length, dtype=dy_flat.dtype)  # dY[r, s, tile], zeros past the edge
        mixed = np.empty(a * m * length, dtype=dy_flat.dtype)
        for n in range(first_n, last_n):
            source = (n * f_count + f) * oh * ow
            for th in range(th_count):
                for r in range(min(m, oh - th * m)):
                    row = source + (th * m + r) * ow
                    for tw in range(tw_count):
                        t = (n - first_n) * plane_tiles + th * tw_count + tw
                        for s in range(min(m, ow - tw * m)):
                            dY[_u((r * m + s) * length + t)] = dy_flat[_u(row + tw * m + s)]
        _left(A, dY, 0, length, m, length, mixed, 0, length)  # A dY
        _right(mixed, 0, length, AT, a, length, dM_flat, f * tiles + first_n * plane_tiles,
               f_count * tiles)  # (A dY) A^T, into dM[position, f, tiles]


# --- the convolution, as minicnn.kernels.winograd.conv_forward / conv_backward -----------------

# Samples per task: enough that a task's runs of tiles are long (whole SIMD vectors), few enough
# that its scratch stays in the core's cache and that every core gets tasks.
_TILES_PER_TASK = 128


def _per_task(grid) -> int:
    return max(1, min(grid.n, _TILES_PER_TASK // (grid.th * grid.tw)))


def _matrices(t: winograd.Transform, dtype):
    # integers in both F(2x2) and F(4x4): exact in float32
    BT, AT = t.BT.astype(dtype), t.AT.astype(dtype)
    return BT, np.ascontiguousarray(BT.T), AT, np.ascontiguousarray(AT.T)


def _sandwich(L, X):
    """``L @ X[k] @ L.T`` for a stack X (K, p, p) of small matrices, as two large products
    (a stack of K tiny products would cost more in NumPy's per-matrix overhead than in work).
    Through cpu_runtime's matmul, like every product here: a plain ``@`` would wake OpenBLAS's
    own threads, which then spin against the numba kernels that follow (20% of a cifar_vgg step)."""
    k, p, _ = X.shape
    r = L.shape[0]
    Lt = np.ascontiguousarray(L.T)
    XLt = matmul(X.reshape(k * p, p), Lt).reshape(k, p, r)                   # X[k] L^T
    LXtLt = matmul(XLt.transpose(0, 2, 1).reshape(k * r, p), Lt).reshape(k, r, r)  # (L X L^T)^T
    return LXtLt.transpose(0, 2, 1)


def filter_transform(weight, t: winograd.Transform):
    """U = G g G^T as (a*a, F, C), computed in float64 and rounded once to the weight's dtype."""
    f, c = weight.shape[:2]
    U = _sandwich(t.G, weight.reshape(f * c, 3, 3).astype(np.float64))     # (F*C, a, a)
    return np.ascontiguousarray(U.reshape(f, c, t.a * t.a).transpose(2, 0, 1), dtype=weight.dtype)


def filter_transform_transposed(dU, t: winograd.Transform):
    """dL/dg = G^T dU G: (a*a, F, C) -> (F, C, 3, 3), in float64, rounded once."""
    _, f, c = dU.shape
    dU = dU.astype(np.float64).transpose(1, 2, 0).reshape(f * c, t.a, t.a)
    return _sandwich(t.G.T, dU).reshape(f, c, 3, 3)


def input_transform(x, padding, t: winograd.Transform):
    x = np.ascontiguousarray(x)
    g = winograd.tile_grid(x.shape, padding, t.m)
    BT, B, _, _ = _matrices(t, x.dtype)
    V = recycler.empty((t.a * t.a, g.c, g.tiles), x.dtype)
    _input_transform_kernel(x.reshape(-1), g.n, g.c, g.h, g.w, g.ph, g.pw, g.th, g.tw,
                            _per_task(g), BT, B, V.reshape(-1))
    return V


def conv_forward(x, weight, bias, padding, t: winograd.Transform):
    """(y, saved) as :func:`minicnn.kernels.winograd.conv_forward`; saved = (V, U)."""
    g = winograd.tile_grid(x.shape, padding, t.m)
    f = weight.shape[0]
    V = input_transform(x, padding, t)                        # (a*a, C, T)
    U = filter_transform(weight, t)                           # (a*a, F, C)
    M = batched_matmul(U, V)                                  # (a*a, F, T)
    _, _, AT, A = _matrices(t, x.dtype)
    bias = np.zeros(f, x.dtype) if bias is None else np.ascontiguousarray(bias, x.dtype)
    y = recycler.empty((g.n, f, g.oh, g.ow), x.dtype)
    _output_transform_kernel(M.reshape(-1), g.n, f, g.oh, g.ow, g.th, g.tw, _per_task(g), AT, A,
                             bias, y.reshape(-1))
    return y, (V, U)


def conv_backward(dy, saved, weight, x_shape, padding, t: winograd.Transform, input_grad=True):
    """dL/dx (or None) and dL/dW from dL/dy and what :func:`conv_forward` saved (V and U)."""
    V, U = saved
    dy = np.ascontiguousarray(dy)
    g = winograd.tile_grid(x_shape, padding, t.m)
    f = weight.shape[0]
    BT, B, AT, A = _matrices(t, dy.dtype)
    dM = recycler.empty((t.a * t.a, f, g.tiles), dy.dtype)
    _output_transform_transposed_kernel(dy.reshape(-1), g.n, f, g.oh, g.ow, g.th, g.tw,
                                        _per_task(g), AT, A, dM.reshape(-1))
    dU = batched_matmul(dM, V.transpose(0, 2, 1))             # (a*a, F, C)
    dW = filter_transform_transposed(dU, t).astype(dy.dtype)
    if not input_grad:
        return None, dW
    dV = batched_matmul(U.transpose(0, 2, 1), dM)            # (a*a, C, T)
    dx = recycler.empty(tuple(int(s) for s in x_shape), dy.dtype)
    _input_transform_transposed_kernel(dV.reshape(-1), g.n, g.c, g.h, g.w, g.ph, g.pw, g.th,
                                       g.tw, _per_task(g), BT, B, dx.reshape(-1))
    return dx, dW
