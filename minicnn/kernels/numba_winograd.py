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

**Each transform is two passes of a one-dimensional transform** over runs of tiles, each pass
one long loop over the block's tiles that LLVM vectorizes. A block's tiles are taken in the
order (tile row, sample, tile column). For ``B^T d B`` they are laid out as ``d[k, l, tile]``
(value (k, l) of every tile in one run, gathered from the padded planes through a table of the
tiles' corners), so that ``B^T`` applies down each column (the runs of the a rows k mixed into
new runs) and then along each row. The output's tiles do not overlap, so ``A^T M A`` needs no
gather: its second pass writes each tile's m values of a row side by side, and the rows of the
block's planes are kept grouped by their place s < m in the tile (rows s, m + s, 2m + s, ...
together), so that row s of every tile of the block is one run, copied into y with the bias
at the end; ``A dY A^T`` reads dy's rows grouped so. ``B dV B^T``, whose tiles overlap, adds each
tile's values where it lies on the input, through the corners. The one-dimensional transforms
are written out (``_bt4`` and the others), with the sums that a matrix repeats computed once:
about half the operations of multiplying by the matrix, and tests/test_winograd.py checks each
against its matrix.

A block's transformed arrays are laid out channel by channel, ``(C, a*a, tiles)``: the passes
down the columns then read and write runs the same distance apart, the one layout in which LLVM
vectorizes them; the products see them as ``(a*a, C, tiles)``, a strided view that BLAS takes as
it is. Each thread keeps its blocks' arrays from one step to the next (``_scratch``). A kernel
runs one channel plane of the block after another; no two blocks touch the same element (the
transposed input transform adds overlapping tiles back inside its own sample).
"""

from __future__ import annotations

import functools
import math
import threading

import numpy as np
from numba import njit
from numba import uint64 as _u

from . import winograd
from .cpu_runtime import matmul_here, on_cores, recycler, residual_array

# serial kernels, each on one block of samples: the cores run blocks side by side
_jit = njit(nogil=True, cache=True, fastmath=False)


# --- the one-dimensional transforms, written out ------------------------------------------------
# Each applies one matrix of winograd.TRANSFORMS to the values src[at], src[at + step], ... and
# returns the results; the sums the matrix repeats are computed once (F(4x4)'s B^T has 22 nonzero
# entries, _bt4 takes 13 additions and multiplications). Each returns six values, so that one
# _pass serves them all; past its matrix's rows they repeat one (_pass writes only ``count``).
# tests/test_winograd.py checks each one against its matrix.


@njit(inline="always")
def _six(src, at, step):
    return (src[_u(at)], src[_u(at + step)], src[_u(at + 2 * step)], src[_u(at + 3 * step)],
            src[_u(at + 4 * step)], src[_u(at + 5 * step)])


@njit(inline="always")
def _four(src, at, step):
    return src[_u(at)], src[_u(at + step)], src[_u(at + 2 * step)], src[_u(at + 3 * step)]


@njit(inline="always")
def _bt4(src, at, step):
    """B^T d for F(4x4, 3x3): 6 values in, 6 out."""
    d0, d1, d2, d3, d4, d5 = _six(src, at, step)
    two, four, five = src.dtype.type(2), src.dtype.type(4), src.dtype.type(5)
    even, odd = d4 - four * d2, d3 - four * d1
    even2, odd2 = d4 - d2, two * (d3 - d1)
    return (four * d0 - five * d2 + d4, even + odd, even - odd, even2 + odd2, even2 - odd2,
            four * d1 - five * d3 + d5)


@njit(inline="always")
def _b4(src, at, step):
    """B w (the transpose of _bt4) for F(4x4, 3x3): 6 values in, 6 out."""
    w0, w1, w2, w3, w4, w5 = _six(src, at, step)
    two, four, five = src.dtype.type(2), src.dtype.type(4), src.dtype.type(5)
    plus, minus = w1 + w2, w1 - w2
    plus2, minus2 = w3 + w4, w3 - w4
    return (four * w0, four * (w5 - minus) - two * minus2, -(five * w0 + four * plus + plus2),
            minus + two * minus2 - five * w5, w0 + plus + plus2, w5)


@njit(inline="always")
def _at4(src, at, step):
    """A^T M for F(4x4, 3x3): 6 values in, 4 out."""
    m0, m1, m2, m3, m4, m5 = _six(src, at, step)
    two, four, eight = src.dtype.type(2), src.dtype.type(4), src.dtype.type(8)
    plus, minus = m1 + m2, m1 - m2
    plus2, minus2 = m3 + m4, m3 - m4
    y3 = minus + eight * minus2 + m5
    return m0 + plus + plus2, minus + two * minus2, plus + four * plus2, y3, y3, y3


@njit(inline="always")
def _a4(src, at, step):
    """A y (the transpose of _at4) for F(4x4, 3x3): 4 values in, 6 out."""
    y0, y1, y2, y3 = _four(src, at, step)
    two, four, eight = src.dtype.type(2), src.dtype.type(4), src.dtype.type(8)
    even, odd = y0 + y2, y1 + y3
    even4, odd8 = y0 + four * y2, two * y1 + eight * y3
    return y0, even + odd, even - odd, even4 + odd8, even4 - odd8, y3


@njit(inline="always")
def _bt2(src, at, step):
    """B^T d for F(2x2, 3x3): 4 values in, 4 out."""
    d0, d1, d2, d3 = _four(src, at, step)
    w3 = d1 - d3
    return d0 - d2, d1 + d2, d2 - d1, w3, w3, w3


@njit(inline="always")
def _b2(src, at, step):
    """B w (the transpose of _bt2) for F(2x2, 3x3): 4 values in, 4 out."""
    w0, w1, w2, w3 = _four(src, at, step)
    return w0, w1 - w2 + w3, w1 + w2 - w0, -w3, w0, w0


@njit(inline="always")
def _at2(src, at, step):
    """A^T M for F(2x2, 3x3): 4 values in, 2 out."""
    m0, m1, m2, m3 = _four(src, at, step)
    y1 = m1 - m2 - m3
    return m0 + m1 + m2, y1, y1, y1, y1, y1


@njit(inline="always")
def _a2(src, at, step):
    """A y (the transpose of _at2) for F(2x2, 3x3): 2 values in, 4 out."""
    y0, y1 = src[_u(at)], src[_u(at + step)]
    return y0, y0 + y1, y0 - y1, -y1, y0, y0


@njit(inline="always")
def _store(dst, at, step, count, values):
    """dst[at + i * step] = values[i] for i < count (a one-dimensional transform's results)."""
    w0, w1, w2, w3, w4, w5 = values
    dst[_u(at)] = w0
    dst[_u(at + step)] = w1
    if count > 2:
        dst[_u(at + 2 * step)] = w2
        dst[_u(at + 3 * step)] = w3
    if count > 4:
        dst[_u(at + 4 * step)] = w4
        dst[_u(at + 5 * step)] = w5


@njit(inline="always")
def _pass(transform, count, src, src_at, dst, dst_at, step, length):
    """For t < length: the values src[src_at + t + k * step] (k = 0, 1, ...) go through the
    one-dimensional ``transform``, and its ``count`` results are written to dst[dst_at + t + i *
    step]: a transform down the columns of a run of tiles, one loop which LLVM vectorizes (source
    and target share ``step``, so that the check that they do not overlap is one comparison)."""
    for t in range(length):
        _store(dst, dst_at + t, step, count, transform(src, src_at + t, step))


@njit(inline="always")
def _pass_along_row(transform, m, count, src, src_at, dst, dst_at, dst_step, length):
    """:func:`_pass` along a row of tiles that start m values apart: tile t's values are
    src[src_at + m * t + l] (l = 0, 1, ...), its results go to dst[dst_at + t + j * dst_step]
    (the tiles side by side: LLVM loads them as one stream and sorts the values in registers)."""
    for t in range(length):
        _store(dst, dst_at + t, dst_step, count, transform(src, src_at + m * t, 1))


@njit(inline="always")
def _pass_into_row(transform, m, src, src_at, src_step, dst, dst_at, length):
    """:func:`_pass` whose m results per tile are the tile's m values along a row of tiles:
    dst[dst_at + m * t + s] (s < m), the tiles side by side."""
    for t in range(length):
        _store(dst, dst_at + m * t, 1, m, transform(src, src_at + t, src_step))


@njit(inline="always")
def _add_to_planes(transform, count, src, src_at, step, planes, corner, shift, length):
    """:func:`_pass` adding each tile's results where the tile lies in a stack of planes:
    planes[corner[t] + shift + i] (i < count) += ... (tiles that overlap, whose gradients add
    up; the loop runs the tiles in order)."""
    for t in range(length):
        w0, w1, w2, w3, w4, w5 = transform(src, src_at + t, step)
        out = corner[_u(t)] + shift
        planes[_u(out)] += w0
        planes[_u(out + 1)] += w1
        if count > 2:
            planes[_u(out + 2)] += w2
            planes[_u(out + 3)] += w3
        if count > 4:
            planes[_u(out + 4)] += w4
            planes[_u(out + 5)] += w5


@njit(inline="always")
def _corners(n_count, th_count, tw_count, m, plane, row):
    """Where each tile of a block starts in a stack of n_count planes of ``plane`` values with
    rows of ``row``: the tiles' values (k, l) are then ``planes[corner[tile] + k * row + l]``,
    one long loop over the block's tiles per (k, l) (a vectorized gather or scatter)."""
    corner = np.empty(n_count * th_count * tw_count, dtype=np.int64)
    for th in range(th_count):
        for n in range(n_count):
            for tw in range(tw_count):
                corner[(th * n_count + n) * tw_count + tw] = n * plane + (th * row + tw) * m
    return corner


@njit(inline="always")
def _row_at(y, row, m, th_count):
    """Where row y of a plane starts: at y * row, or, where the rows are grouped by their place in
    the tile (m > 0: rows s, m + s, 2m + s, ... together), at row (y % m) * th_count + y // m."""
    return y * row if m == 0 else ((y % m) * th_count + y // m) * row


@njit(inline="always")
def _copy_planes(src, src_at, src_step, src_row, dst, dst_at, dst_step, dst_row, n_count, h, w,
                 plus, rectify=False, residual=None, src_m=0, dst_m=0, th_count=0):
    """dst's plane n = src's plane n + plus (+ ``residual``'s value where dst's is, when it has
    values; with ``rectify``, ReLU's max(., 0) of that), for n_count planes of h rows of w
    values; plane n starts at src_at + n * src_step and its rows are src_row apart (grouped by
    their place in the tile with ``src_m``: :func:`_row_at`), likewise in dst (a layer's (sample,
    channel) planes on one side, a block's planes or rows on the other)."""
    zero = dst.dtype.type(0)
    added = residual is not None and residual.shape[0] > 0
    for n in range(n_count):
        for y in range(h):
            source = src_at + n * src_step + _row_at(y, src_row, src_m, th_count)
            target = dst_at + n * dst_step + _row_at(y, dst_row, dst_m, th_count)
            for x in range(w):
                v = src[_u(source + x)] + plus
                if added:
                    v += residual[_u(target + x)]
                dst[_u(target + x)] = v if not rectify or v > zero else zero  # relu_forward's


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
def _input_transform_kernel(x_flat, n_count, c_count, h, w, ph, pw, th_count, tw_count, m, V_flat):
    """V = B^T d B of the block's tiles, written to V_flat as (channel, a*a, tile)."""
    a = m + 2
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
        out = c * a * a * tiles
        for l in range(a):  # B^T d, column l of every tile
            if m == 4:
                _pass(_bt4, 6, d, l * tiles, mixed, l * tiles, a * tiles, tiles)
            else:
                _pass(_bt2, 4, d, l * tiles, mixed, l * tiles, a * tiles, tiles)
        for i in range(a):  # (B^T d) B, row i
            if m == 4:
                _pass(_bt4, 6, mixed, i * a * tiles, V_flat, out + i * a * tiles, tiles, tiles)
            else:
                _pass(_bt2, 4, mixed, i * a * tiles, V_flat, out + i * a * tiles, tiles, tiles)


@_jit
def _input_transform_transposed_kernel(dV_flat, n_count, c_count, h, w, ph, pw, th_count,
                                       tw_count, m, dx_flat):
    """dL/dx of the block from dV (channel, a*a, tile): B dV B^T, each tile's values added back
    where the tile lies on the input."""
    a = m + 2
    rows, cols = th_count * m + 2, tw_count * m + 2
    tiles = n_count * th_count * tw_count
    corner = _corners(n_count, th_count, tw_count, m, rows * cols, cols)
    mixed = np.empty(a * a * tiles, dtype=dV_flat.dtype)
    dpadded = np.empty(n_count * rows * cols, dtype=dV_flat.dtype)
    zero = dV_flat.dtype.type(0)
    for c in range(c_count):
        at = c * a * a * tiles
        for j in range(a):  # B dV, column j
            if m == 4:
                _pass(_b4, 6, dV_flat, at + j * tiles, mixed, j * tiles, a * tiles, tiles)
            else:
                _pass(_b2, 4, dV_flat, at + j * tiles, mixed, j * tiles, a * tiles, tiles)
        for q in range(n_count * rows * cols):
            dpadded[_u(q)] = 0
        for k in range(a):  # (B dV) B^T, row k, added where the tile lies: overlapping tiles'
            if m == 4:      # gradients add up
                _add_to_planes(_b4, 6, mixed, k * a * tiles, tiles, dpadded, corner, k * cols,
                               tiles)
            else:
                _add_to_planes(_b2, 4, mixed, k * a * tiles, tiles, dpadded, corner, k * cols,
                               tiles)
        _copy_planes(dpadded, ph * cols + pw, rows * cols, cols, dx_flat, c * h * w,
                     c_count * h * w, w, n_count, h, w, zero)


@_jit
def _output_transform_kernel(M_flat, n_count, f_count, oh, ow, th_count, tw_count, m, bias,
                             rectify, residual_flat, y_flat):
    """y = A^T M A + b (+ the residual where it has values; with ``rectify``, max(y, 0)) of the
    block, M as (channel, a*a, tile): A^T down the columns of every tile, then A along the tiles'
    rows, each tile's m values side by side, for the rows of the block's planes that lie at one
    place s < m in their tile (rows kept grouped by that place: one long run per s)."""
    a = m + 2
    span = tw_count * m  # a row of one sample's tiles (may overhang the plane, as the rows do)
    tiles = th_count * n_count * tw_count
    across = np.empty(m * a * tiles, dtype=M_flat.dtype)  # A^T M: [s, l, tile]
    rows = np.empty(m * tiles * m, dtype=M_flat.dtype)  # [s, tile row, sample, column]
    for f in range(f_count):
        at = f * a * a * tiles
        for l in range(a):  # A^T M, down column l
            if m == 4:
                _pass(_at4, 4, M_flat, at + l * tiles, across, l * tiles, a * tiles, tiles)
            else:
                _pass(_at2, 2, M_flat, at + l * tiles, across, l * tiles, a * tiles, tiles)
        for s in range(m):  # (A^T M) A, along row s of every tile
            if m == 4:
                _pass_into_row(_at4, 4, across, s * a * tiles, tiles, rows, s * tiles * m, tiles)
            else:
                _pass_into_row(_at2, 2, across, s * a * tiles, tiles, rows, s * tiles * m, tiles)
        _copy_planes(rows, 0, span, n_count * span, y_flat, f * oh * ow, f_count * oh * ow, ow,
                     n_count, oh, ow, bias[f], rectify, residual_flat, src_m=m, th_count=th_count)


@_jit
def _output_transform_transposed_kernel(dy_flat, n_count, f_count, oh, ow, th_count, tw_count,
                                        m, dM_flat):
    """dM = A dY A^T of the block's tiles of dL/dy, written as (channel, a*a, tile): A along the
    tiles' rows (each tile's m values side by side, the rows grouped by their place in the tile
    as in :func:`_output_transform_kernel`), then A down the columns of every tile."""
    a = m + 2
    span = tw_count * m
    tiles = th_count * n_count * tw_count
    rows = np.zeros(m * tiles * m, dtype=dy_flat.dtype)  # [s, tile row, sample, column]; 0 past edges
    across = np.empty(m * a * tiles, dtype=dy_flat.dtype)  # dY A^T: [s, l, tile]
    zero = dy_flat.dtype.type(0)
    for f in range(f_count):
        _copy_planes(dy_flat, f * oh * ow, f_count * oh * ow, ow, rows, 0, span, n_count * span,
                     n_count, oh, ow, zero, dst_m=m, th_count=th_count)
        for s in range(m):  # dY A^T, along row s of every tile
            if m == 4:
                _pass_along_row(_a4, 4, 6, rows, s * tiles * m, across, s * a * tiles, tiles, tiles)
            else:
                _pass_along_row(_a2, 2, 4, rows, s * tiles * m, across, s * a * tiles, tiles, tiles)
        at = f * a * a * tiles
        for l in range(a):  # A (dY A^T), down column l
            if m == 4:
                _pass(_a4, 6, across, l * tiles, dM_flat, at + l * tiles, a * tiles, tiles)
            else:
                _pass(_a2, 4, across, l * tiles, dM_flat, at + l * tiles, a * tiles, tiles)


# --- the convolution, as minicnn.kernels.winograd.conv_forward / conv_backward -----------------

# The transformed arrays of one block of samples (V, M and, backward, dV and dM) are meant to stay
# in the core's L2 cache from one step of the block to the next; the cache's size is read from
# Linux's description of the CPU, where there is one.
_L2_DEFAULT = 1 << 20


@functools.cache
def _l2_bytes() -> int:
    """The size of one core's L2 cache as Linux describes it, or 1 MiB where it does not."""
    from pathlib import Path

    for cache in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            if (cache / "level").read_text().strip() == "2":
                return _cache_size((cache / "size").read_text())
        except (OSError, ValueError):
            break
    return _L2_DEFAULT


def _cache_size(text: str) -> int:
    """Bytes from /sys's way of writing a cache's size: "1024K", "2M" or a plain number."""
    text = text.strip().upper()
    scale = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
    return int(text.rstrip("KM")) * scale


# A block's a*a products cost a fixed price each (a BLAS call, and the three kernel calls of the
# block around them) whatever their size; below this many multiply-adds per position (tiles x C x
# F) that price outweighs the work, as in 16 -> 16 channels a sample at a time (benchmarks/README.md,
# "Blocks on a 512 KiB L2 cache").
_MIN_BLOCK_PRODUCT = 1 << 15
# Where not even one sample's arrays fit in the L2 cache, a block cannot stay there: it is then
# sized for its products alone, at least this many tiles.
_MIN_TILES_OUT_OF_CACHE = 256


def _samples_per_block(g, t: winograd.Transform, f: int, itemsize: int) -> int:
    """How many samples one block holds: as many as keep the backward pass's transformed arrays
    of the block (V, dV: C channels, dM: F; a*a values per tile and channel each) within the
    core's L2 cache, but at least 2 * max(C, F) tiles, or the products get too thin to run near
    the matmul peak and a wide layer's U and dU (a*a * F * C) are read once per block for little,
    and at least enough tiles that each product has ``_MIN_BLOCK_PRODUCT`` multiply-adds. Where one
    sample alone overflows the cache, at least ``_MIN_TILES_OUT_OF_CACHE`` tiles. The forward
    pass takes the same blocks: the V it keeps is laid out block by block."""
    per_tile = t.a * t.a * (2 * g.c + f) * itemsize
    tiles = g.th * g.tw  # a sample's
    fitting = _l2_bytes() // (per_tile * tiles)
    least = max(2 * max(g.c, f), -(-_MIN_BLOCK_PRODUCT // (g.c * f)))
    if fitting == 0:
        least = max(least, _MIN_TILES_OUT_OF_CACHE)
    return max(1, fitting, -(-least // tiles))


def _blocks(lo: int, hi: int, size: int):
    return [(n, min(hi, n + size)) for n in range(lo, hi, size)]


_kept = threading.local()


def _scratch(slot: str, shape: tuple, dtype) -> np.ndarray:
    """An array of ``shape`` for this thread's ``slot`` (a block's V, M, dM, dV and dM V^T),
    kept from one block and one step to the next: a block's arrays take up to megabytes, the same
    few sizes every step, and a fresh allocation that size costs a page fault per 4 KiB whenever the
    allocator maps it anew (benchmarks/README.md measures what that cost). They are sized by
    the layer, not the batch, and live as long as the thread."""
    arrays = _kept.__dict__.setdefault("arrays", {})
    key, size = (slot, np.dtype(dtype).str), math.prod(shape)
    if key not in arrays or arrays[key].size < size:
        arrays[key] = np.empty(size, dtype)
    return arrays[key][:size].reshape(shape)


def _block_of(V, n0, n1, g, t: winograd.Transform):
    """The part of a kept V that holds the samples n0..n1-1, as (C, a*a, tiles)."""
    per_sample = g.c * t.a * t.a * g.th * g.tw
    return V[n0 * per_sample:n1 * per_sample].reshape(g.c, t.a * t.a, -1)


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
    U = recycler.empty((t.a * t.a, f, c), weight.dtype)
    on_cores(f, lambda lo, hi: _filter_transform_kernel(weight.reshape(-1), lo, hi, f, c, t.G,
                                                        U.reshape(-1)))
    return U


def filter_transform_transposed(dU, t: winograd.Transform):
    """dL/dg = G^T dU G: (a*a, F, C) -> (F, C, 3, 3), in float64, rounded once to dU's dtype."""
    dU = np.ascontiguousarray(dU)
    _, f, c = dU.shape
    dW = recycler.empty((f, c, 3, 3), dU.dtype)
    on_cores(f, lambda lo, hi: _filter_transform_transposed_kernel(dU.reshape(-1), lo, hi, f, c,
                                                                   t.G, dW.reshape(-1)))
    return dW


def conv_forward(x, weight, bias, padding, t: winograd.Transform, keep=True, rectify=False,
                 residual=None):
    """(y, saved) as :func:`minicnn.kernels.winograd.conv_forward` (``residual`` and ``rectify``
    in the output transform's last copy); saved = (V or None, x, U).

    Each core takes its share of the samples and runs them a block at a time: the input
    transform of the block, its a*a products and its output transform, one after the other
    while the block's V and M are still in the core's cache. A block's arrays are laid out
    channel by channel, (C, a*a, tiles), so that both passes of a transform read and write runs
    of the same length and spacing; the products take them as (a*a, C, tiles), a strided view.
    With ``keep`` (training), V is also written out, once, block after block, for the weight
    gradient (computing it again in the backward pass measured slower); without (inference), V
    never leaves the cache, and a backward pass that comes all the same (a saliency map)
    computes it again from x."""
    x = np.ascontiguousarray(x)
    g = winograd.tile_grid(x.shape, padding, t.m)
    f = weight.shape[0]
    U = filter_transform(weight, t)                                    # (a*a, F, C)
    bias = np.zeros(f, x.dtype) if bias is None else np.ascontiguousarray(bias, x.dtype)
    y = recycler.empty((g.n, f, g.oh, g.ow), x.dtype)
    V = recycler.empty((t.a * t.a * g.c * g.tiles,), x.dtype) if keep else None
    size = _samples_per_block(g, t, f, x.itemsize)
    residual = residual_array(residual, y)
    per_sample = residual.shape[0] // g.n  # 0 without one

    def share(lo, hi):
        for n0, n1 in _blocks(lo, hi, size):
            block_V = _block_input_transform(x, V, n0, n1, g, t)      # B^T d B: (C, a*a, tiles)
            M = _scratch("M", (f, t.a * t.a, block_V.shape[2]), x.dtype)
            matmul_here(U, block_V.transpose(1, 0, 2), out=M.transpose(1, 0, 2))  # U V
            _output_transform_kernel(M.reshape(-1), n1 - n0, f, g.oh, g.ow, g.th, g.tw, t.m,
                                     bias, rectify, residual[n0 * per_sample:n1 * per_sample],
                                     y[n0:n1].reshape(-1))             # A^T M A + b

    on_cores(g.n, share)
    return y, (V, x, U)


def workspace(x_shape, weight_shape, padding, t: winograd.Transform) -> int:
    """None per sample: without ``keep``, :func:`conv_forward` holds V and M for one block of
    samples at a time, a block sized to the core's cache, not to the batch."""
    return 0


def _block_input_transform(x, V, n0, n1, g, t: winograd.Transform):
    """V of the samples n0..n1-1 as (C, a*a, tiles): written into their part of the batch's V,
    or, with V None, into an array of the block's own."""
    block = _block_of(V, n0, n1, g, t) if V is not None else \
        _scratch("V", (g.c, t.a * t.a, (n1 - n0) * g.th * g.tw), x.dtype)
    _input_transform_kernel(x[n0:n1].reshape(-1), n1 - n0, g.c, g.h, g.w, g.ph, g.pw, g.th, g.tw,
                            t.m, block.reshape(-1))
    return block


def conv_backward(dy, saved, weight, x_shape, padding, t: winograd.Transform, input_grad=True):
    """dL/dx (or None) and dL/dW from dL/dy and what :func:`conv_forward` saved (V or None, x
    and U), block by block as the forward pass: dM = A dY A^T, dU += dM V^T (V computed again
    from x where it was not kept), and for dL/dx dV = U^T dM and B dV B^T added back into the
    input's tiles. Each core sums its own dU; dM and dV stay in its cache."""
    V, x, U = saved
    dy = np.ascontiguousarray(dy)
    g = winograd.tile_grid(x_shape, padding, t.m)
    f = weight.shape[0]
    dx = recycler.empty(tuple(int(s) for s in x_shape), dy.dtype) if input_grad else None
    size = _samples_per_block(g, t, f, dy.itemsize)  # the forward pass's blocks, as V is kept

    def share(lo, hi):
        dU, shape = None, (t.a * t.a, f, g.c)  # this core's sum of its blocks' dM V^T
        for n0, n1 in _blocks(lo, hi, size):
            tiles = (n1 - n0) * g.th * g.tw
            dM = _scratch("dM", (f, t.a * t.a, tiles), dy.dtype)       # A dY A^T
            _output_transform_transposed_kernel(dy[n0:n1].reshape(-1), n1 - n0, f, g.oh, g.ow,
                                                g.th, g.tw, t.m, dM.reshape(-1))
            block_V = _block_input_transform(x, None, n0, n1, g, t) if V is None else \
                _block_of(V, n0, n1, g, t)
            dM_Vt = dM.transpose(1, 0, 2), block_V.transpose(1, 2, 0)          # (a*a, F, C)
            if dU is None:  # the first block's product is the sum so far: no zeros added to
                dU = matmul_here(*dM_Vt, out=recycler.empty(shape, dy.dtype))
            else:
                dU += matmul_here(*dM_Vt, out=_scratch("dU", shape, dy.dtype))
            if input_grad:
                dV = _scratch("dV", (g.c, t.a * t.a, tiles), dy.dtype)  # U^T dM
                matmul_here(U.transpose(0, 2, 1), dM.transpose(1, 0, 2), out=dV.transpose(1, 0, 2))
                _input_transform_transposed_kernel(dV.reshape(-1), n1 - n0, g.c, g.h, g.w, g.ph,
                                                   g.pw, g.th, g.tw, t.m, dx[n0:n1].reshape(-1))
        return dU

    dU, *others = on_cores(g.n, share)  # each core's own sum
    for other in others:
        dU += other
    dW = filter_transform_transposed(dU, t)
    return dx, dW
