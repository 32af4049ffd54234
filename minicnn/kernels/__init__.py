"""Hot kernels, one module per backend, all with the same function names and signatures.

The layers hold the math; the kernels do the work, each backend its own way: ``numpy_kernels``
(the readable reference: read it first), ``numba_kernels`` (parallel JIT-compiled loops, run on
the cores as :mod:`minicnn.kernels.cpu_runtime` describes), ``cupy_kernels`` (CUDA). How a kernel
is fast is its own business (loop order, reused buffers, how a matrix multiply is split over the
cores); what it computes is defined by the reference, and the tests hold the others to it.

Every kernel takes NCHW arrays and (height, width) pairs for kernel size, stride and padding,
and returns new arrays (which a backend may recycle once nothing references them):

- ``im2col(x, kernel, stride, padding) -> cols`` of shape (C*KH*KW, N*OH*OW): column
  ``n*OH*OW + oh*OW + ow`` holds the receptive field of output pixel (oh, ow) of sample n,
  flattened in (c, kh, kw) order down the rows, so that ``weight.reshape(F, -1) @ cols`` is the
  convolution, laid out (F, N*OH*OW). (Row ``(c*KH + kh)*KW + kw`` is one shifted copy of input
  channel c: every kernel fills and reads it in long contiguous runs.)
- ``col2im(cols, x_shape, kernel, stride, padding) -> dx``: the adjoint of im2col: every
  column entry is added back to the input pixel it was copied from (overlaps accumulate).
- ``matmul(a, b) -> a @ b`` for 2-D arrays: every matrix multiply of the layers.
- ``cnhw_to_nchw(out, bias, n, oh, ow)`` and ``nchw_to_cnhw(dy)``: between the GEMM's
  (F, N*OH*OW) layout and NCHW, adding the bias on the way there.
- ``maxpool_forward(x, kernel, stride) -> (y, argmax)`` with argmax (int32) the flat index
  (kh*KW + kw) of the winning element inside each window; ``maxpool_backward(dy, argmax,
  x_shape, kernel, stride) -> dx``.
- ``avgpool_forward(x, kernel, stride) -> y``; ``avgpool_backward(dy, x_shape, kernel, stride)``.
- ``channel_mean_var(x)``, ``batchnorm_forward(x, mean, inv_std, gamma, beta)`` and
  ``batchnorm_backward(dy, x, mean, inv_std, gamma, batch_statistics) -> (dx, dgamma, dbeta)``:
  BatchNorm2D's per-channel sums and affine map; ``relu_forward(x)``, ``relu_backward(dy, y)``
  and ``adam_update(...)`` (in place): element-wise.

Kernel modules import nothing from the layers.
"""


from typing import NamedTuple


def array_module(array):
    """numpy, or cupy for a GPU array: the module whose functions work on ``array``."""
    if type(array).__module__.startswith("cupy"):
        import cupy

        return cupy
    import numpy

    return numpy


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution/pooling along one axis (floor mode, like PyTorch)."""
    return (size + 2 * padding - kernel) // stride + 1


class Geometry(NamedTuple):
    """Every size a window kernel needs, in the order the compiled kernels take them."""

    n: int
    c: int
    h: int
    w: int
    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    oh: int
    ow: int


def geometry(x_shape, kernel, stride, padding=(0, 0)) -> Geometry:
    """The sizes of sliding (kh, kw) windows at ``stride`` over an (N, C, H, W) input padded by
    ``padding``: the input's, the window's, and the output's (OH, OW)."""
    n, c, h, w = (int(size) for size in x_shape)
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    return Geometry(n, c, h, w, kh, kw, sh, sw, ph, pw, conv_output_size(h, kh, sh, ph),
                    conv_output_size(w, kw, sw, pw))
