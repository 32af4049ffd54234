"""Winograd's minimal filtering: a 3x3, stride-1 convolution with fewer multiplications.

This module is the readable reference (plain NumPy, written against the array module of its
inputs); :mod:`minicnn.kernels.numba_winograd` runs the same algorithm on every core, and the
tests hold it to this one, to im2col and to :mod:`minicnn.naive`. Which algorithm a layer runs is
decided in one place, :func:`minicnn.kernels.conv_algorithm`.

**One dimension first: F(m, r).** A correlation of a length-``r`` filter ``g`` with a signal
makes ``m`` outputs from ``a = m + r - 1`` inputs ``d``: ``y[i] = sum_k d[i + k] * g[k]``.
Written out, that is m*r multiplications. Winograd (1980) showed that ``a`` suffice:

    y = A^T [ (G g) * (B^T d) ]          (* multiplies element-wise: a products)

with three small constant matrices: ``B^T`` (a x a) mixes the inputs, ``G`` (a x r) mixes the
filter, ``A^T`` (m x a) mixes the ``a`` products back into the outputs. Where they come from:
the correlation is the middle part of a polynomial product. Take the filter as a polynomial
g(t) of degree r-1 and the inputs as another; evaluate both at ``a - 1`` chosen points p and at
infinity (``G`` and ``B^T`` are those evaluations), multiply the values (``a`` products), and
interpolate the product back from its values (``A^T``). Small points keep the entries small.

F(2, 3), with points 0, 1, -1 (and infinity), for d = (d0, d1, d2, d3), g = (g0, g1, g2)::

    B^T = [[1,  0, -1,  0],     G = [[1,    0,   0],     A^T = [[1, 1,  1,  0],
           [0,  1,  1,  0],          [1/2, 1/2, 1/2],           [0, 1, -1, -1]]
           [0, -1,  1,  0],          [1/2,-1/2, 1/2],
           [0,  1,  0, -1]]          [0,    0,   1]]

so y0 = m0 + m1 + m2 and y1 = m1 - m2 - m3 with m0 = (d0 - d2) g0,
m1 = (d1 + d2)(g0 + g1 + g2)/2, m2 = (d2 - d1)(g0 - g1 + g2)/2, m3 = (d1 - d3) g2: four
products where the direct formula needs six. F(4, 3) uses the points 0, +-1, +-2, +-1/2 and
makes 4 outputs from 6 products instead of 12 (the matrices are below, :data:`TRANSFORMS`).

**Two dimensions: F(m x m, 3 x 3).** Nesting the 1-D algorithm in both directions gives, for one
``a x a`` tile ``d`` of one input channel and one 3x3 filter ``g``:

    Y = A^T [ (G g G^T) * (B^T d B) ] A        (an m x m block of the output)

``a*a`` products replace ``m*m*9``: 16 instead of 36 for F(2x2, 3x3) (2.25x fewer), 36 instead
of 144 for F(4x4, 3x3) (4x fewer). Adjacent output blocks need input tiles that overlap by 2.

**A layer of them is a batch of matrix products.** The sum over input channels c happens
before ``A^T . A`` (it is linear), so with ``U = G g G^T`` for every filter pair (f, c) and
``V = B^T d B`` for every tile t of every channel c, each of the ``a*a`` positions (xi, nu)
inside a tile is one ordinary matrix product::

    M[xi, nu] = U[xi, nu] @ V[xi, nu]        (F, C) @ (C, T) -> (F, T),   T = tiles in the batch

and the output blocks are ``A^T M A`` per (filter, tile). That is the whole forward pass:
input transform, ``a*a`` GEMMs, output transform.

**Backward is the same algorithm, transposed.** Every step above is linear, so the gradient
of each one is its transpose, in the reverse order. With ``dY`` an m x m block of dL/dy:

    dM = A dY A^T                             (a x a per filter and tile)
    dU[xi, nu] = dM[xi, nu] @ V[xi, nu].T     (F, T) @ (T, C)   -> dL/dW = G^T dU G
    dV[xi, nu] = U[xi, nu].T @ dM[xi, nu]     (C, F) @ (F, T)   -> dL/dd = B dV B^T

and each tile's dL/dd is added back where the tile came from; overlapping tiles add up, as in
col2im. This computes exactly the gradient of the convolution (it is the transpose of a map that
equals the convolution), with the same GEMM shapes as the forward pass; the input transform V
saved by the forward pass is reused.

**Where the rounding comes from.** In exact arithmetic the result is the convolution. In floating
point, ``B^T d B`` and ``G g G^T`` scale and mix values of different sizes (F(4x4)'s B^T has
entries up to 5, G entries down to 1/24, A^T up to 8), and ``A^T . A`` adds up products of
opposite signs that cancel, so the rounding error grows with the tile: F(2x2) is about as
accurate as im2col, F(4x4) loses roughly one more decimal digit in float32
(``benchmarks/README.md`` has the measured errors; the tests bound them). float64 is accurate to
~1e-13 either way, so gradient checks are unaffected.
"""

from __future__ import annotations

from fractions import Fraction
from typing import NamedTuple

import numpy as np

from . import array_module


class Transform(NamedTuple):
    """The constant matrices of F(m x m, 3 x 3); ``a = m + 2`` is the tile size."""

    m: int
    BT: np.ndarray  # (a, a): input tile -> transformed tile, B^T d B
    G: np.ndarray  # (a, 3): filter -> transformed filter, G g G^T
    AT: np.ndarray  # (m, a): products -> output block, A^T M A

    @property
    def a(self) -> int:
        return self.m + 2

    @property
    def name(self) -> str:
        return f"winograd F({self.m}x{self.m},3x3)"


def _matrix(rows) -> np.ndarray:
    return np.array([[float(Fraction(v)) for v in row] for row in rows], dtype=np.float64)


TRANSFORMS = {
    # Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (2016), section 4.1-4.2.
    2: Transform(
        2,
        BT=_matrix([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]),
        G=_matrix([[1, 0, 0], ["1/2", "1/2", "1/2"], ["1/2", "-1/2", "1/2"], [0, 0, 1]]),
        AT=_matrix([[1, 1, 1, 0], [0, 1, -1, -1]]),
    ),
    4: Transform(
        4,
        BT=_matrix([[4, 0, -5, 0, 1, 0],
                    [0, -4, -4, 1, 1, 0],
                    [0, 4, -4, -1, 1, 0],
                    [0, -2, -1, 2, 1, 0],
                    [0, 2, -1, -2, 1, 0],
                    [0, 4, 0, -5, 0, 1]]),
        G=_matrix([["1/4", 0, 0],
                   ["-1/6", "-1/6", "-1/6"],
                   ["-1/6", "1/6", "-1/6"],
                   ["1/24", "1/12", "1/6"],
                   ["1/24", "-1/12", "1/6"],
                   [0, 0, 1]]),
        AT=_matrix([[1, 1, 1, 1, 1, 0],
                    [0, 1, -1, 2, -2, 0],
                    [0, 1, 1, 4, 4, 0],
                    [0, 1, -1, 8, -8, 1]]),
    ),
}


class TileGrid(NamedTuple):
    """How an (N, C, H, W) input padded by (PH, PW) is cut into a x a tiles for F(m x m, 3x3)."""

    n: int
    c: int
    h: int
    w: int
    ph: int
    pw: int
    oh: int  # output size: H + 2*PH - 2
    ow: int
    th: int  # tiles down and across: ceil(OH / m), ceil(OW / m)
    tw: int

    @property
    def tiles(self) -> int:
        return self.n * self.th * self.tw


def tile_grid(x_shape, padding, m: int) -> TileGrid:
    n, c, h, w = (int(s) for s in x_shape)
    ph, pw = padding
    oh, ow = h + 2 * ph - 2, w + 2 * pw - 2
    return TileGrid(n, c, h, w, ph, pw, oh, ow, -(-oh // m), -(-ow // m))


def _as(matrix, like):
    return array_module(like).asarray(matrix, dtype=like.dtype)


# --- the three transforms and their transposes ---------------------------------------------


def filter_transform(weight, t: Transform):
    """U = G g G^T for every filter pair: (F, C, 3, 3) -> (a*a, F, C)."""
    f, c = weight.shape[:2]
    G = _as(t.G, weight)
    U = G @ weight @ G.T                                       # (F, C, a, a)
    return U.transpose(2, 3, 0, 1).reshape(t.a * t.a, f, c)


def filter_transform_transposed(dU, t: Transform):
    """dL/dg = G^T dU G: (a*a, F, C) -> (F, C, 3, 3)."""
    _, f, c = dU.shape
    G = _as(t.G, dU)
    dU = dU.reshape(t.a, t.a, f, c).transpose(2, 3, 0, 1)     # (F, C, a, a)
    return G.T @ dU @ G


def input_transform(x, padding, t: Transform):
    """V = B^T d B for every a x a tile d of every channel: (N, C, H, W) -> (a*a, C, T).

    Tile (th, tw) starts at row th*m, column tw*m of the padded input; zeros beyond its edge
    fill the last tiles. Tiles are numbered n*TH*TW + th*TW + tw."""
    xp = array_module(x)
    g = tile_grid(x.shape, padding, t.m)
    rows, cols = g.th * t.m + 2, g.tw * t.m + 2     # what the tiles cover: >= H + 2*PH, W + 2*PW
    padded = xp.zeros((g.n, g.c, rows, cols), dtype=x.dtype)
    padded[:, :, g.ph : g.ph + g.h, g.pw : g.pw + g.w] = x
    tiles = xp.lib.stride_tricks.sliding_window_view(padded, (t.a, t.a), axis=(2, 3))
    tiles = tiles[:, :, :: t.m, :: t.m]                        # (N, C, TH, TW, a, a), a view
    BT = _as(t.BT, x)
    V = BT @ tiles @ BT.T                                      # (N, C, TH, TW, a, a)
    return V.transpose(4, 5, 1, 0, 2, 3).reshape(t.a * t.a, g.c, g.tiles)


def input_transform_transposed(dV, x_shape, padding, t: Transform):
    """dL/dx from dV: each tile's B dV B^T added back where it came from (overlaps add up)."""
    xp = array_module(dV)
    g = tile_grid(x_shape, padding, t.m)
    dV = dV.reshape(t.a, t.a, g.c, g.n, g.th, g.tw).transpose(3, 2, 4, 5, 0, 1)
    BT = _as(t.BT, dV)
    dd = BT.T @ dV @ BT                                        # (N, C, TH, TW, a, a)
    dpadded = xp.zeros((g.n, g.c, g.th * t.m + 2, g.tw * t.m + 2), dtype=dV.dtype)
    for i in range(t.a):
        for j in range(t.a):  # position (i, j) of every tile, one strided slab at a time
            dpadded[:, :, i : i + g.th * t.m : t.m, j : j + g.tw * t.m : t.m] += dd[..., i, j]
    return dpadded[:, :, g.ph : g.ph + g.h, g.pw : g.pw + g.w]


def output_transform(M, grid: TileGrid, t: Transform):
    """Y = A^T M A for every (filter, tile), cropped to the output: (a*a, F, T) -> (N, F, OH, OW)."""
    f = M.shape[1]
    M = M.reshape(t.a, t.a, f, grid.n, grid.th, grid.tw).transpose(3, 2, 4, 5, 0, 1)
    AT = _as(t.AT, M)
    Y = AT @ M @ AT.T                                          # (N, F, TH, TW, m, m)
    Y = Y.transpose(0, 1, 2, 4, 3, 5).reshape(grid.n, f, grid.th * t.m, grid.tw * t.m)
    return Y[:, :, : grid.oh, : grid.ow]


def output_transform_transposed(dy, grid: TileGrid, t: Transform):
    """dM = A dY A^T for every m x m block dY of dL/dy (zeros past its edge): -> (a*a, F, T)."""
    xp = array_module(dy)
    n, f = dy.shape[:2]
    blocks = xp.zeros((n, f, grid.th * t.m, grid.tw * t.m), dtype=dy.dtype)
    blocks[:, :, : grid.oh, : grid.ow] = dy
    blocks = blocks.reshape(n, f, grid.th, t.m, grid.tw, t.m).transpose(0, 1, 2, 4, 3, 5)
    AT = _as(t.AT, dy)
    dM = AT.T @ blocks @ AT                                    # (N, F, TH, TW, a, a)
    return dM.transpose(4, 5, 1, 0, 2, 3).reshape(t.a * t.a, f, grid.tiles)


# --- the convolution -------------------------------------------------------------------------


def conv_forward(x, weight, bias, padding, t: Transform, keep=True, rectify=False,
                 residual=None):
    """y = conv(x, weight) + bias for a 3x3, stride-1 convolution (+ ``residual`` unless it is
    None, and with ``rectify`` max(y, 0) as the ReLU after it computes it); returns (y, V), V for
    backward (``keep``: the reference keeps V whether training or not)."""
    grid = tile_grid(x.shape, padding, t.m)
    U = filter_transform(weight, t)                            # (a*a, F, C)
    V = input_transform(x, padding, t)                         # (a*a, C, T)
    M = U @ V                                                  # a*a GEMMs: (a*a, F, T)
    y = output_transform(M, grid, t)
    if bias is not None:
        y = y + bias.reshape(1, -1, 1, 1)
    if residual is not None:
        y = y + residual
    if rectify:
        y = array_module(y).maximum(y, y.dtype.type(0))  # numpy_kernels.relu_forward's formula
    return y, V


def workspace(x_shape, weight_shape, padding, t: Transform) -> int:
    """Values :func:`conv_forward` allocates per sample beyond y (x_shape: one sample's (C, H,
    W)): the padded input, V and the two products that make it, M, and the output transform's
    first product."""
    g = tile_grid((1, *x_shape), padding, t.m)
    f = weight_shape[0]
    padded = g.c * (g.th * t.m + 2) * (g.tw * t.m + 2)
    return padded + t.a * t.a * g.tiles * (3 * g.c + f) + t.m * t.a * f * g.tiles


def conv_backward(dy, V, weight, x_shape, padding, t: Transform, input_grad=True):
    """(dL/dx or None, dL/dW) of :func:`conv_forward`, from dL/dy and its saved V."""
    grid = tile_grid(x_shape, padding, t.m)
    dM = output_transform_transposed(dy, grid, t)             # (a*a, F, T)
    dW = filter_transform_transposed(dM @ V.transpose(0, 2, 1), t)
    if not input_grad:
        return None, dW
    U = filter_transform(weight, t)
    dV = U.transpose(0, 2, 1) @ dM                             # (a*a, C, T)
    return input_transform_transposed(dV, x_shape, padding, t), dW
