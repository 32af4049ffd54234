"""Eight dot products in one pass: two rows of one array against four rows of another, the loop
body shared by the numba kernels whose output is a few hundred long sums (a first layer's
weight gradient, :mod:`~minicnn.kernels.cpu_runtime`'s skinny products and
:mod:`~minicnn.kernels.numba_direct`). Eight sums stay in registers (AVX2's sixteen hold them),
and each value loaded serves two or four multiply-adds. The sums may be added in any order
(``reassoc``), which lets LLVM split each into vector lanes. A function of its own, not
inlined into the parallel callers: numba's analysis of a ``prange`` loop rejects it inlined."""

from numba import njit
from numba import uint64 as _u


@njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def dots_2x4(a, a0, a1, b, b0, b1, b2, b3, lo, hi, zero):
    """(a[a0+p] . b[bj+p], j < 4, then a[a1+p] . b[bj+p]) summed over p in [lo, hi): eight sums,
    starting from ``zero`` (of the arrays' dtype: ``a[i] * 0`` would be a float64 in numba)."""
    s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = zero
    for p in range(lo, hi):
        x0, x1 = a[_u(a0 + p)], a[_u(a1 + p)]
        y0, y1, y2, y3 = b[_u(b0 + p)], b[_u(b1 + p)], b[_u(b2 + p)], b[_u(b3 + p)]
        s00 += x0 * y0
        s01 += x0 * y1
        s02 += x0 * y2
        s03 += x0 * y3
        s10 += x1 * y0
        s11 += x1 * y1
        s12 += x1 * y2
        s13 += x1 * y3
    return (s00, s01, s02, s03), (s10, s11, s12, s13)
