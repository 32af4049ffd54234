"""Winograd F(m x m, 3x3) on every core: the algorithm of :mod:`minicnn.kernels.winograd`
(read it first: the derivation, the matrices and the NumPy reference, which computes each step
for the whole batch before the next), run here a block of samples at a time.

**Blocks that stay in the cache.** The transformed arrays are large (V is 2.25x the layer's
input for F(4x4, 3x3)), and the transforms do little arithmetic per value: written whole to
memory and read back by the next step, they ran at half the machine's copy bandwidth and took
more time than the products. So each core takes its share of the samples and, for one block of
a few samples after another, runs the input transform, the a*a products (one single-threaded
BLAS call per position, :func:`~minicnn.kernels.cpu_runtime.matmul_here`) and the output
transform while the block's arrays are still in its L2 cache; V alone is written out, for the
weight gradient. The backward pass runs its blocks the same way, in reverse.

**Each transform is two passes of one small matrix** over runs of tiles: a block's tiles are
laid out as ``d[k, l, tile]`` (value (k, l) of every tile in one run, gathered from the padded
plane a tile row at a time), so ``B^T d B`` is ``B^T`` mixing the runs of the a rows k, then
``B`` mixing the runs of the a columns l, each a long contiguous loop that LLVM vectorizes.
``A^T M A`` takes the same two passes before its m x m values per tile are written into output
rows (with the bias); the transposes ``A dY A^T`` and ``B dV B^T`` take them in the other order.

Zero entries of the matrices are skipped (half of F(4x4)'s ``B^T`` is zeros), and every pass
multiplies whole runs by one matrix entry, so the entries need not be compiled in. A kernel
runs one channel plane of the block after another; no two blocks touch the same element (the
transposed input transform adds overlapping tiles back inside its own sample).
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba import uint64 as _u

from . import winograd
from .cpu_runtime import matmul_here, on_cores, recycler

# serial kernels, each on one block of samples: the cores run blocks side by side
_jit = njit(nogil=True, cache=True, fastmath=False)


@njit(inline="always")
def _nonzero(entries):
    """The positions and values of the nonzero entries of a row or column of a transform matrix
    (half of F(4x4)'s B^T is zeros) and their count (at least 1: a zero row is one zero term)."""
    size = entries.shape[0]
    where = np.zeros(size + 4, dtype=np.int64)
    value = np.zeros(size + 4, dtype=entries.dtype)
    count = 0
    for k in range(size):
        if entries[k] != 0:
            where[count] = k
            value[count] = entries[k]
            count += 1
    return where, value, max(1, count)


@njit(inline="always")
def _terms(dst, out, src, at, step, where, value, g, terms, length, first):
    """dst[out:out+length] = (or +=, after the first group) terms g..g+terms-1 of the sum (up to
    four), each a run of src times one coefficient: one pass over dst per four terms."""
    s0, s1 = at + where[g] * step, at + where[g + 1] * step
    s2, s3 = at + where[g + 2] * step, at + where[g + 3] * step
    c0, c1, c2, c3 = value[g], value[g + 1], value[g + 2], value[g + 3]
    if not first:
        for t in range(length):
            dst[_u(out + t)] += (c0 * src[_u(s0 + t)] + c1 * src[_u(s1 + t)]
                                 + c2 * src[_u(s2 + t)] + c3 * src[_u(s3 + t)])
    elif terms == 1:
        for t in range(length):
            dst[_u(out + t)] = c0 * src[_u(s0 + t)]
    elif terms == 2:
        for t in range(length):
            dst[_u(out + t)] = c0 * src[_u(s0 + t)] + c1 * src[_u(s1 + t)]
    elif terms == 3:
        for t in range(length):
            dst[_u(out + t)] = (c0 * src[_u(s0 + t)] + c1 * src[_u(s1 + t)]
                                + c2 * src[_u(s2 + t)])
    else:
        for t in range(length):
            dst[_u(out + t)] = (c0 * src[_u(s0 + t)] + c1 * src[_u(s1 + t)]
                                + c2 * src[_u(s2 + t)] + c3 * src[_u(s3 + t)])


@njit(inline="always")
def _left(K, src, src_at, src_step, inner, length, dst, dst_at, dst_step):
    """dst[i, l, :] = sum_k K[i, k] * src[k, l, :] for runs of ``length`` values; run (k, l) of src
    starts at src_at + (k*inner + l)*src_step, likewise for dst."""
    for i in range(K.shape[0]):
        where, value, count = _nonzero(K[i, :])
        for g in range(0, count, 4):
            for l in range(inner):
                _terms(dst, dst_at + (i * inner + l) * dst_step, src, src_at + l * src_step,
                       inner * src_step, where, value, g, min(4, count - g), length, g == 0)


@njit(inline="always")
def _right(src, src_at, src_step, K, outer, length, dst, dst_at, dst_step):
    """dst[i, j, :] = sum_l src[i, l, :] * K[l, j], laid out as in :func:`_left`."""
    rows, columns = K.shape
    for j in range(columns):
        where, value, count = _nonzero(K[:, j])
        for g in range(0, count, 4):
            for i in range(outer):
                _terms(dst, dst_at + (i * columns + j) * dst_step, src, src_at + i * rows * src_step,
                       src_step, where, value, g, min(4, count - g), length, g == 0)


@njit(inline="always")
def _corners(n_count, th_count, tw_count, m, plane, row):
    """Where each tile of a block starts in a stack of n_count planes of ``plane`` values with
    rows of ``row``: the tiles' values (k, l) are then ``planes[corner[tile] + k * row + l]``,
    one long loop over the block's tiles per (k, l) (a vectorized gather or scatter)."""
    corner = np.empty(n_count * th_count * tw_count, dtype=np.int64)
    for n in range(n_count):
        for th in range(th_count):
            for tw in range(tw_count):
                corner[(n * th_count + th) * tw_count + tw] = n * plane + (th * row + tw) * m
    return corner


@njit(inline="always")
def _copy_planes(src, src_at, src_step, src_row, dst, dst_at, dst_step, dst_row, n_count, h, w,
                 plus):
    """dst's plane n = src's plane n + plus, for n_count planes of h rows of w values; plane n
    starts at src_at + n * src_step and its rows are src_row apart, likewise in dst (a layer's
    (sample, channel) planes on one side, a block's padded planes on the other)."""
    for n in range(n_count):
        for y in range(h):
            source, target = src_at + n * src_step + y * src_row, dst_at + n * dst_step + y * dst_row
            for x in range(w):
                dst[_u(target + x)] = src[_u(source + x)] + plus


@njit(inline="always")
def _gather_tiles(planes, corner, side, row, out):
    """out[k, l, tile] = planes[corner[tile] + k * row + l] for k, l < side: each tile's side x
    side values, one run of the block's tiles per (k, l)."""
    tiles = corner.shape[0]
    for k in range(side):
        for l in range(side):
            out_at, shift = (k * side + l) * tiles, k * row + l
            for t in range(tiles):
                out[_u(out_at + t)] = planes[_u(corner[t] + shift)]


@_jit
def _input_transform_kernel(x_flat, n_count, c_count, h, w, ph, pw, th_count, tw_count, BT, B,
                            V_flat, V_first, V_tiles):
    # writes V[:, :, V_first:V_first + the block's tiles] of a V of V_tiles tiles
    a = BT.shape[0]
    m = a - 2
    rows, cols = th_count * m + 2, tw_count * m + 2  # the padded plane the tiles cover
    tiles = n_count * th_count * tw_count
    corner = _corners(n_count, th_count, tw_count, m, rows * cols, cols)
    padded = np.zeros(n_count * rows * cols, dtype=x_flat.dtype)  # the borders stay zero
    d = np.empty(a * a * tiles, dtype=x_flat.dtype)  # d[k, l, tile]: one channel's tiles
    mixed = np.empty(a * a * tiles, dtype=x_flat.dtype)
    zero = x_flat.dtype.type(0)
    for c in range(c_count):
        _copy_planes(x_flat, c * h * w, c_count * h * w, w, padded, ph * cols + pw, rows * cols,
                     cols, n_count, h, w, zero)
        _gather_tiles(padded, corner, a, cols, d)
        _left(BT, d, 0, tiles, a, tiles, mixed, 0, tiles)  # B^T d
        _right(mixed, 0, tiles, B, a, tiles, V_flat, c * V_tiles + V_first,
               c_count * V_tiles)  # (B^T d) B


@_jit
def _input_transform_transposed_kernel(dV_flat, n_count, c_count, h, w, ph, pw, th_count,
                                       tw_count, BT, B, dx_flat):
    a = BT.shape[0]
    m = a - 2
    rows, cols = th_count * m + 2, tw_count * m + 2
    tiles = n_count * th_count * tw_count
    corner = _corners(n_count, th_count, tw_count, m, rows * cols, cols)
    mixed = np.empty(a * a * tiles, dtype=dV_flat.dtype)
    dd = np.empty(a * a * tiles, dtype=dV_flat.dtype)
    dpadded = np.empty(n_count * rows * cols, dtype=dV_flat.dtype)
    zero = dV_flat.dtype.type(0)
    for c in range(c_count):
        _left(B, dV_flat, c * tiles, c_count * tiles, a, tiles, mixed, 0, tiles)  # B dV
        _right(mixed, 0, tiles, BT, a, tiles, dd, 0, tiles)  # (B dV) B^T
        for q in range(n_count * rows * cols):
            dpadded[_u(q)] = 0
        for k in range(a):
            for l in range(a):
                source = (k * a + l) * tiles
                for t in range(tiles):  # overlapping tiles: their gradients add up
                    dpadded[_u(corner[t] + k * cols + l)] += dd[_u(source + t)]
        _copy_planes(dpadded, ph * cols + pw, rows * cols, cols, dx_flat, c * h * w,
                     c_count * h * w, w, n_count, h, w, zero)


@_jit
def _output_transform_kernel(M_flat, n_count, f_count, oh, ow, th_count, tw_count, AT, A, bias,
                             y_flat):
    m, a = AT.shape
    rows, cols = th_count * m, tw_count * m  # the output planes the blocks cover (may overhang)
    tiles = n_count * th_count * tw_count
    corner = _corners(n_count, th_count, tw_count, m, rows * cols, cols)
    mixed = np.empty(m * a * tiles, dtype=M_flat.dtype)
    blocks_out = np.empty(m * m * tiles, dtype=M_flat.dtype)
    planes = np.empty(n_count * rows * cols, dtype=M_flat.dtype)
    for f in range(f_count):
        _left(AT, M_flat, f * tiles, f_count * tiles, a, tiles, mixed, 0, tiles)  # A^T M
        _right(mixed, 0, tiles, A, m, tiles, blocks_out, 0, tiles)  # (A^T M) A
        for r in range(m):
            for s in range(m):
                source = (r * m + s) * tiles
                for t in range(tiles):
                    planes[_u(corner[t] + r * cols + s)] = blocks_out[_u(source + t)]
        _copy_planes(planes, 0, rows * cols, cols, y_flat, f * oh * ow, f_count * oh * ow, ow,
                     n_count, oh, ow, bias[f])


@_jit
def _output_transform_transposed_kernel(dy_flat, n_count, f_count, oh, ow, th_count, tw_count,
                                        AT, A, dM_flat):
    m, a = AT.shape
    rows, cols = th_count * m, tw_count * m
    tiles = n_count * th_count * tw_count
    corner = _corners(n_count, th_count, tw_count, m, rows * cols, cols)
    planes = np.zeros(n_count * rows * cols, dtype=dy_flat.dtype)  # zeros past the edge
    dY = np.empty(m * m * tiles, dtype=dy_flat.dtype)  # dY[r, s, tile]
    mixed = np.empty(a * m * tiles, dtype=dy_flat.dtype)
    zero = dy_flat.dtype.type(0)
    for f in range(f_count):
        _copy_planes(dy_flat, f * oh * ow, f_count * oh * ow, ow, planes, 0, rows * cols, cols,
                     n_count, oh, ow, zero)
        _gather_tiles(planes, corner, m, cols, dY)
        _left(A, dY, 0, tiles, m, tiles, mixed, 0, tiles)  # A dY
        _right(mixed, 0, tiles, AT, a, tiles, dM_flat, f * tiles, f_count * tiles)  # (A dY) A^T


# --- the convolution, as minicnn.kernels.winograd.conv_forward / conv_backward -----------------

# The transformed arrays of one block of samples (V, M and, backward, dV) are meant to stay in a
# core's L2 cache (1-2 MiB on the CPUs measured) from one step of the block to the next.
_BLOCK_BYTES = 2_400_000


def _samples_per_block(g, t: winograd.Transform, channels: int, itemsize: int, widest: int) -> int:
    """How many samples one block holds: as many as keep the block's transformed arrays within
    _BLOCK_BYTES (``channels``: the sum of their channel counts, a*a values per tile and channel
    each), but at least 2 * ``widest`` tiles, or the products get too thin to run near the
    matmul peak and a wide layer's U and dU (a*a * F * C) are read once per block for little."""
    per_sample = t.a * t.a * g.th * g.tw * channels * itemsize
    return max(1, _BLOCK_BYTES // per_sample, -(-2 * widest // (g.th * g.tw)))


def _blocks(lo: int, hi: int, size: int):
    return [(n, min(hi, n + size)) for n in range(lo, hi, size)]


def _matrices(t: winograd.Transform, dtype):
    # integers in both F(2x2) and F(4x4): exact in float32
    BT, AT = t.BT.astype(dtype), t.AT.astype(dtype)
    return BT, np.ascontiguousarray(BT.T), AT, np.ascontiguousarray(AT.T)


@_jit
def _filter_transform_kernel(g_flat, first_f, last_f, f_count, c_count, G, U_flat):
    """U[:, f, :] = G g G^T for the filters first_f..last_f-1, every input channel c in the inner
    loop; in float64 (G is), rounded once where U is stored."""
    a = G.shape[0]
    Gg = np.empty(a * 3 * c_count, dtype=np.float64)  # (G g)[i, l] of each c
    for f in range(first_f, last_f):
        for i in range(a):
            for l in range(3):
                out = (i * 3 + l) * c_count
                for c in range(c_count):
                    at = (f * c_count + c) * 9 + l  # g[f, c, k, l] at at + 3k
                    Gg[_u(out + c)] = (G[i, 0] * g_flat[_u(at)] + G[i, 1] * g_flat[_u(at + 3)]
                                       + G[i, 2] * g_flat[_u(at + 6)])
        for i in range(a):
            row = i * 3 * c_count
            for j in range(a):
                out = ((i * a + j) * f_count + f) * c_count
                for c in range(c_count):
                    U_flat[_u(out + c)] = (Gg[_u(row + c)] * G[j, 0]
                                           + Gg[_u(row + c_count + c)] * G[j, 1]
                                           + Gg[_u(row + 2 * c_count + c)] * G[j, 2])


@_jit
def _filter_transform_transposed_kernel(dU_flat, first_f, last_f, f_count, c_count, G, dW_flat):
    """dW[f] = G^T dU[:, f, :] G for the filters first_f..last_f-1, in float64, rounded once."""
    a = G.shape[0]
    dUG = np.empty(a * 3 * c_count, dtype=np.float64)  # (dU G)[i, l] of each c
    for f in range(first_f, last_f):
        for i in range(a):
            for l in range(3):
                out = (i * 3 + l) * c_count
                for c in range(c_count):
                    dUG[_u(out + c)] = 0
                for j in range(a):
                    coef = G[j, l]
                    at = ((i * a + j) * f_count + f) * c_count
                    for c in range(c_count):
                        dUG[_u(out + c)] += dU_flat[_u(at + c)] * coef
        for k in range(3):
            for l in range(3):
                for c in range(c_count):
                    total = 0.0
                    for i in range(a):
                        total += G[i, k] * dUG[_u((i * 3 + l) * c_count + c)]
                    dW_flat[_u((f * c_count + c) * 9 + k * 3 + l)] = total


def filter_transform(weight, t: winograd.Transform):
    """U = G g G^T as (a*a, F, C), computed in float64 and rounded once to the weight's dtype."""
    weight = np.ascontiguousarray(weight)
    f, c = weight.shape[:2]
    U = np.empty((t.a * t.a, f, c), weight.dtype)
    on_cores(f, lambda lo, hi: _filter_transform_kernel(weight.reshape(-1), lo, hi, f, c, t.G,
                                                        U.reshape(-1)))
    return U


def filter_transform_transposed(dU, t: winograd.Transform):
    """dL/dg = G^T dU G: (a*a, F, C) -> (F, C, 3, 3), in float64, rounded once to dU's dtype."""
    dU = np.ascontiguousarray(dU)
    _, f, c = dU.shape
    dW = np.empty((f, c, 3, 3), dU.dtype)
    on_cores(f, lambda lo, hi: _filter_transform_transposed_kernel(dU.reshape(-1), lo, hi, f, c,
                                                                   t.G, dW.reshape(-1)))
    return dW


def conv_forward(x, weight, bias, padding, t: winograd.Transform, keep=True):
    """(y, saved) as :func:`minicnn.kernels.winograd.conv_forward`; saved = (V or None, x, U).

    Each core takes its share of the samples and runs them a block at a time: the input
    transform of the block, its a*a products and its output transform, one after the other
    while the block's V and M are still in the core's cache. With ``keep`` (training), V is also
    written out whole, once, for the weight gradient (computing it again in the backward pass
    measured slower); without (inference), V never leaves the cache, and a backward pass that
    comes all the same (a saliency map) computes it again from x."""
    x = np.ascontiguousarray(x)
    g = winograd.tile_grid(x.shape, padding, t.m)
    f = weight.shape[0]
    U = filter_transform(weight, t)                                    # (a*a, F, C)
    BT, B, AT, A = _matrices(t, x.dtype)
    bias = np.zeros(f, x.dtype) if bias is None else np.ascontiguousarray(bias, x.dtype)
    y = recycler.empty((g.n, f, g.oh, g.ow), x.dtype)
    V = recycler.empty((t.a * t.a, g.c, g.tiles), x.dtype) if keep else None
    size = _samples_per_block(g, t, g.c + f, x.itemsize, max(g.c, f))

    def share(lo, hi):
        for n0, n1 in _blocks(lo, hi, size):
            block_V = _block_input_transform(x, V, n0, n1, g, BT, B)   # B^T d B
            M = matmul_here(U, block_V)                                # (a*a, F, tiles)
            _output_transform_kernel(M.reshape(-1), n1 - n0, f, g.oh, g.ow, g.th, g.tw, AT, A,
                                     bias, y[n0:n1].reshape(-1))       # A^T M A + b

    on_cores(g.n, share)
    return y, (V, x, U)


def _block_input_transform(x, V, n0, n1, g, BT, B):
    """V of the samples n0..n1-1: written into their tiles' columns of V (the whole batch's),
    or, with V None, into an array of the block's own."""
    tiles, first = (n1 - n0) * g.th * g.tw, n0 * g.th * g.tw
    target, at, of = (V, first, g.tiles) if V is not None else \
        (np.empty((BT.shape[0] ** 2, g.c, tiles), x.dtype), 0, tiles)
    _input_transform_kernel(x[n0:n1].reshape(-1), n1 - n0, g.c, g.h, g.w, g.ph, g.pw, g.th, g.tw,
                            BT, B, target.reshape(-1), at, of)
    return target[:, :, at:at + tiles]


def conv_backward(dy, saved, weight, x_shape, padding, t: winograd.Transform, input_grad=True):
    """dL/dx (or None) and dL/dW from dL/dy and what :func:`conv_forward` saved (V or None, x
    and U), block by block as the forward pass: dM = A dY A^T, dU += dM V^T (V computed again
    from x where it was not kept), and for dL/dx dV = U^T dM and B dV B^T added back into the
    input's tiles. Each core sums its own dU; dM and dV stay in its cache."""
    V, x, U = saved
    dy = np.ascontiguousarray(dy)
    g = winograd.tile_grid(x_shape, padding, t.m)
    f = weight.shape[0]
    BT, B, AT, A = _matrices(t, dy.dtype)
    dx = recycler.empty(tuple(int(s) for s in x_shape), dy.dtype) if input_grad else None
    # the same blocks with or without dL/dx, so that dL/dW is the same to the last bit
    size = _samples_per_block(g, t, 2 * g.c + f, dy.itemsize, max(g.c, f))

    def share(lo, hi):
        dU = np.zeros((t.a * t.a, f, g.c), dy.dtype)
        for n0, n1 in _blocks(lo, hi, size):
            tiles = (n1 - n0) * g.th * g.tw
            dM = np.empty((t.a * t.a, f, tiles), dy.dtype)             # A dY A^T
            _output_transform_transposed_kernel(dy[n0:n1].reshape(-1), n1 - n0, f, g.oh, g.ow,
                                                g.th, g.tw, AT, A, dM.reshape(-1))
            block_V = _block_input_transform(x, None, n0, n1, g, BT, B) if V is None else \
                V[:, :, n0 * g.th * g.tw:n0 * g.th * g.tw + tiles]
            dU += matmul_here(dM, block_V.transpose(0, 2, 1))          # (a*a, F, C)
            if input_grad:
                dV = matmul_here(U.transpose(0, 2, 1), dM)             # (a*a, C, tiles)
                _input_transform_transposed_kernel(dV.reshape(-1), n1 - n0, g.c, g.h, g.w, g.ph,
                                                   g.pw, g.th, g.tw, BT, B, dx[n0:n1].reshape(-1))
        return dU

    dU = sum(on_cores(g.n, share))
    dW = filter_transform_transposed(dU, t)
    return dx, dW
