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
- ``cnhw_to_nchw(out, bias, n, oh, ow, rectify=False, residual=None)`` and ``nchw_to_cnhw(dy)``:
  between the GEMM's (F, N*OH*OW) layout and NCHW, adding the bias on the way there (then
  ``residual``, and with ``rectify`` taking ``relu_forward``'s max(., 0): a Residual block's sum
  and ReLU, or a ReLU, after the convolution, layers/fused.py).
- ``maxpool_forward(x, kernel, stride) -> (y, argmax)`` with argmax (int32) the flat index
  (kh*KW + kw) of the winning element inside each window; ``maxpool_backward(dy, argmax,
  x_shape, kernel, stride) -> dx``; ``maxpool_relu_backward(dy, argmax, relu_x, kernel, stride)``
  the same followed by ``relu_backward`` with ``relu_x`` (a ReLU + MaxPool2D pair, layers.fused).
- ``avgpool_forward(x, kernel, stride) -> y``; ``avgpool_backward(dy, x_shape, kernel, stride)``.
- ``conv_algorithm(x_shape, weight_shape, stride, padding) -> ConvAlgorithm | None``: which
  faster algorithm (Winograd or a direct sum, for a 3x3 stride-1 convolution) this backend runs
  a convolution with, or None for the im2col + GEMM that Conv2D's own code spells out (see "Choosing the
  convolution algorithm" below); ``channel_sum(dy)``: dy (N, F, OH, OW) summed over N, OH and OW,
  dL/db of a convolution that ran another algorithm.
- ``channel_mean_var(x)``, ``batchnorm_forward(x, mean, inv_std, gamma, beta)`` and
  ``batchnorm_backward(dy, x, mean, inv_std, gamma, batch_statistics) -> (dx, dgamma, dbeta)``:
  BatchNorm2D's per-channel sums and affine map; ``relu_forward(x)``, ``relu_backward(dy, y)``
  and ``adam_update(...)`` (in place): element-wise.

Kernel modules import nothing from the layers.

**Choosing the convolution algorithm.** As cuDNN does, the kernels decide, per convolution
shape, which algorithm computes it; the decision is made in one place, :func:`choose_conv`,
from a rule each backend states (``numba_kernels.conv_rule``: Winograd where both sides have
enough channels, a direct sum where the input has few, benchmarks/README.md has the
measurements). ``$MINICNN_CONV_ALGO`` or :func:`set_conv_algorithm` overrides it for every
layer: ``"auto"`` (the default: the backend's rule), ``"im2col"`` (exactly the code of Conv2D,
what a learner reads), ``"winograd"`` (F(4x4, 3x3) wherever it applies), ``"winograd2"``
(F(2x2, 3x3)) or ``"direct"`` (the sum of Conv2D's formula, row by row: numba only). Both
apply to 3x3 kernels at stride 1 only; any other convolution runs im2col whatever is asked,
and so does a backend without the algorithm asked for.
"""


import os
from collections.abc import Callable
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


# --- which algorithm computes a convolution -----------------------------------------------------

CONV_ALGORITHMS = ("auto", "im2col", "winograd", "winograd2", "direct")

_conv_algorithm: str | None = None  # read from $MINICNN_CONV_ALGO on first use


def _check_conv_algorithm(name, where: str) -> str:
    if not isinstance(name, str) or name.strip().lower() not in CONV_ALGORITHMS:
        raise ValueError(f"{where} must be one of {', '.join(map(repr, CONV_ALGORITHMS))}, "
                         f"got {name!r}")
    return name.strip().lower()


def get_conv_algorithm() -> str:
    """The convolution algorithm setting: ``$MINICNN_CONV_ALGO``, else "auto"."""
    global _conv_algorithm
    if _conv_algorithm is None:
        _conv_algorithm = _check_conv_algorithm(os.environ.get("MINICNN_CONV_ALGO") or "auto",
                                                "MINICNN_CONV_ALGO")
    return _conv_algorithm


def set_conv_algorithm(name: str) -> str:
    """Run every convolution with ``name`` ("auto", "im2col", "winograd", "winograd2", "direct")
    from now on, in every model; returns the previous setting. "im2col" runs exactly the code of
    ``Conv2D._forward`` / ``_backward``."""
    global _conv_algorithm
    name = _check_conv_algorithm(name, "the convolution algorithm")
    previous = get_conv_algorithm()
    _conv_algorithm = name
    return previous


# --- whether neighbouring layers run as one pass --------------------------------------------

_fusion: bool | None = None  # read from $MINICNN_FUSION on first use


def get_fusion() -> bool:
    """Whether a BatchNorm2D followed by a ReLU runs as one pass (``$MINICNN_FUSION``: "0"
    switches it off; default on)."""
    global _fusion
    if _fusion is None:
        value = (os.environ.get("MINICNN_FUSION") or "1").strip().lower()
        if value not in ("0", "1", "off", "on"):
            raise ValueError(f"MINICNN_FUSION must be 0 or 1, got {value!r}")
        _fusion = value in ("1", "on")
    return _fusion


def set_fusion(enabled: bool) -> bool:
    """Run neighbouring layers as one pass (True: BatchNorm2D or Residual + ReLU, ReLU +
    MaxPool2D, see :mod:`minicnn.layers.fused`) or exactly as each layer's code reads (False),
    from now on, in every model; returns the previous setting. The fused passes compute the same
    numbers (tested equal) without writing and reading the arrays between the two layers."""
    global _fusion
    if not isinstance(enabled, bool):
        raise TypeError(f"set_fusion: expected True or False, got {enabled!r}")
    previous = get_fusion()
    _fusion = enabled
    return previous


class ConvAlgorithm(NamedTuple):
    """A way to compute a convolution other than Conv2D's own im2col + GEMM.

    ``forward(x, weight, bias, padding, training, rectify=False, residual=None) -> (y, saved)``,
    ``backward(dy, saved, weight, x_shape, padding, input_grad) -> (dx or None, dweight)``:
    the layer keeps ``saved`` between the two, and adds up dL/dbias itself; and
    ``workspace(x_shape, weight_shape, padding)``: how many values ``forward`` allocates per
    sample of the batch beyond y, without ``training`` (x_shape is one sample's (C, H, W); what
    sizes predict's batches, :meth:`minicnn.layers.Sequential.inference_bytes_per_sample`). Without
    ``training`` an implementation may keep less (a backward pass is then unlikely: it computes
    again what it needs). ``residual`` (y's shape) is added to y, and with ``rectify`` y is
    max(y, 0) as the backend's ``relu_forward`` computes it: a Residual block's sum and the ReLU
    after it, or a ReLU after the convolution, when predict runs them as one (layers/fused.py)."""

    name: str
    forward: Callable
    backward: Callable
    workspace: Callable


def winograd_applies(weight_shape, stride) -> bool:
    """Winograd F(m x m, 3x3), and the direct sum, compute 3x3 convolutions at stride 1."""
    return tuple(weight_shape[2:]) == (3, 3) and tuple(stride) == (1, 1)


def choose_conv(x_shape, weight_shape, stride, padding, rule, winograd=None,
                direct=None) -> ConvAlgorithm | None:
    """The algorithm for one convolution: the setting (:func:`get_conv_algorithm`) where it
    forces one, else ``rule(x_shape, weight_shape, padding)`` -> "winograd", "winograd2",
    "direct" or None. ``winograd`` and ``direct`` are the backend's modules of those algorithms
    (``conv_forward``, ``conv_backward``; None where it has none); None means im2col."""
    setting = get_conv_algorithm()
    if setting == "im2col" or not winograd_applies(weight_shape, stride):
        return None
    name = rule(tuple(x_shape), tuple(weight_shape), tuple(padding)) if setting == "auto" \
        else setting
    if name in ("winograd", "winograd2") and winograd is not None:
        return _winograd(winograd, 2 if name == "winograd2" else 4)
    if name == "direct" and direct is not None and direct.applies(weight_shape, stride, padding):
        return ConvAlgorithm(direct.NAME, direct.conv_forward, direct.conv_backward,
                             direct.workspace)
    return None


_chosen: dict = {}


def _winograd(implementation, m: int) -> ConvAlgorithm:
    key = (implementation.__name__, m)
    if key not in _chosen:
        from . import winograd

        t = winograd.TRANSFORMS[m]

        def forward(x, weight, bias, padding, training=True, rectify=False, residual=None):
            return implementation.conv_forward(x, weight, bias, padding, t, keep=training,
                                               rectify=rectify, residual=residual)

        def backward(dy, saved, weight, x_shape, padding, input_grad):
            return implementation.conv_backward(dy, saved, weight, x_shape, padding, t, input_grad)

        def workspace(x_shape, weight_shape, padding):
            return implementation.workspace(x_shape, weight_shape, padding, t)

        _chosen[key] = ConvAlgorithm(t.name, forward, backward, workspace)
    return _chosen[key]
