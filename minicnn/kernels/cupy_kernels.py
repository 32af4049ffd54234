"""The GPU kernels: CUDA C++ in ``cupy_kernels.cu``, compiled by CuPy on first use.

Same functions, signatures and results as :mod:`minicnn.kernels.numpy_kernels`. The window
kernels (im2col, col2im, pooling) are CUDA C++, one thread per output element (im2col: per
channel of a window; col2im and pooling backward: per input pixel, as gathers, so no atomics);
Adam, the element-wise parts of BatchNorm and a residual sum's ReLU are element-wise kernels;
everything else is the reference's own array code, which CuPy runs on the GPU (the matrix
multiplies through cuBLAS).
Nothing here copies data to or from the host.

The CUDA source is compiled lazily (the first call of each kernel), never at import, and CuPy
caches the compiled module on disk. The same source is compiled for the CPU by the tests
(tests/test_cuda_sources.py), so the index arithmetic is checked in CI without a GPU.
"""

from __future__ import annotations

import functools
import types
from pathlib import Path

import numpy as np

from . import geometry

__all__ = ["adam_update", "add", "add_relu", "avgpool_backward", "avgpool_forward", "batchnorm_backward",
           "batchnorm_forward", "batchnorm_relu_backward", "batchnorm_relu_forward",
           "channel_mean_var", "channel_sum", "cnhw_to_nchw", "col2im", "conv_algorithm",
           "dropout_mask", "im2col", "matmul", "maxpool_backward", "maxpool_forward",
           "maxpool_relu_backward", "nchw_to_cnhw", "relu_backward", "relu_forward"]

SOURCE_PATH = Path(__file__).with_name("cupy_kernels.cu")
KERNEL_NAMES = ("im2col", "col2im", "maxpool_forward", "maxpool_backward", "maxpool_relu_backward",
                "avgpool_forward", "avgpool_backward", "batchnorm_stats", "batchnorm_grad_sums")
_C_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
_THREADS_PER_BLOCK = 256


@functools.cache
def _module():
    import cupy

    names = [f"{kernel}<{ctype}>" for kernel in KERNEL_NAMES for ctype in _C_TYPES.values()]
    return cupy.RawModule(code=SOURCE_PATH.read_text(), options=("-std=c++14",),
                          name_expressions=names)


def _launch(kernel: str, dtype, total: int, *args) -> None:
    if total == 0:
        return
    ctype = _C_TYPES.get(np.dtype(dtype))
    if ctype is None:
        raise TypeError(f"cupy kernels support float32 and float64, got {dtype}")
    function = _module().get_function(f"{kernel}<{ctype}>")
    blocks = (total + _THREADS_PER_BLOCK - 1) // _THREADS_PER_BLOCK
    ints = [np.int64(total)] + [np.int32(a) for a in args[-1]]
    function((blocks,), (_THREADS_PER_BLOCK,), (*args[:-1], *ints))


def _cupy():
    import cupy

    return cupy


def im2col(x, kernel, stride, padding):
    x = _cupy().ascontiguousarray(x)
    g = geometry(x.shape, kernel, stride, padding)
    cols = _cupy().empty((g.c * g.kh * g.kw, g.n * g.oh * g.ow), dtype=x.dtype)
    _launch("im2col", x.dtype, g.c * g.n * g.oh * g.ow, x, cols, g)  # a thread per window channel
    return cols


def conv_algorithm(x_shape, weight_shape, stride, padding):
    """im2col for every convolution: no Winograd kernels on the GPU yet (whatever the setting)."""
    return None


def col2im(cols, x_shape, kernel, stride, padding):
    cols = _cupy().ascontiguousarray(cols)
    dx = _cupy().empty(x_shape, dtype=cols.dtype)
    _launch("col2im", cols.dtype, dx.size, cols, dx, geometry(x_shape, kernel, stride, padding))
    return dx


def _pool_sizes(g):
    """The sizes the pooling kernels take (they index one (sample, channel) plane at a time)."""
    return g.h, g.w, g.kh, g.kw, g.sh, g.sw, g.oh, g.ow


def maxpool_forward(x, kernel, stride):
    cp = _cupy()
    x = cp.ascontiguousarray(x)
    g = geometry(x.shape, kernel, stride)
    y = cp.empty((g.n, g.c, g.oh, g.ow), dtype=x.dtype)
    argmax = cp.empty((g.n, g.c, g.oh, g.ow), dtype=cp.int32)
    _launch("maxpool_forward", x.dtype, y.size, x, y, argmax, _pool_sizes(g))
    return y, argmax


def maxpool_backward(dy, argmax, x_shape, kernel, stride):
    cp = _cupy()
    dy = cp.ascontiguousarray(dy)
    dx = cp.empty(x_shape, dtype=dy.dtype)
    _launch("maxpool_backward", dy.dtype, dx.size, dy, cp.ascontiguousarray(argmax), dx,
            _pool_sizes(geometry(x_shape, kernel, stride)))
    return dx


def maxpool_relu_backward(dy, argmax, relu_x, kernel, stride):
    cp = _cupy()
    dy = cp.ascontiguousarray(dy)
    dx = cp.empty(relu_x.shape, dtype=dy.dtype)
    _launch("maxpool_relu_backward", dy.dtype, dx.size, dy, cp.ascontiguousarray(argmax),
            cp.ascontiguousarray(relu_x, dtype=dy.dtype), dx,
            _pool_sizes(geometry(relu_x.shape, kernel, stride)))
    return dx


def avgpool_forward(x, kernel, stride):
    cp = _cupy()
    x = cp.ascontiguousarray(x)
    g = geometry(x.shape, kernel, stride)
    y = cp.empty((g.n, g.c, g.oh, g.ow), dtype=x.dtype)
    _launch("avgpool_forward", x.dtype, y.size, x, y, _pool_sizes(g))
    return y


def avgpool_backward(dy, x_shape, kernel, stride):
    dy = _cupy().ascontiguousarray(dy)
    dx = _cupy().empty(x_shape, dtype=dy.dtype)
    _launch("avgpool_backward", dy.dtype, dx.size, dy, dx,
            _pool_sizes(geometry(x_shape, kernel, stride)))
    return dx


# The layout changes, ReLU and the matrix multiply are the reference's formulas: on CuPy
# arrays they run as CuPy's own GPU kernels (and cuBLAS for the multiply).
from .numpy_kernels import (  # noqa: E402
    channel_sum,
    cnhw_to_nchw,
    matmul,
    nchw_to_cnhw,
    relu_backward,
    relu_forward,
)

# --- batch normalization: the reference's formulas, fewer passes over the batch --------------
# Written as array expressions, each formula is a chain of GPU kernels with a temporary array
# between every two. Here the per-channel sums of a pass (mean and variance forward; dbeta and
# dgamma backward, through the ReLU's mask when one follows) are one kernel reading the batch
# once (batchnorm_stats, batchnorm_grad_sums in cupy_kernels.cu) and one small sum of its
# partials; each element-wise part is one kernel. Forward: 2 passes over the batch (the sums,
# then the normalization, with the ReLU after it when one follows); backward: 2 (the sums, then
# dx). As array expressions the same took 5 and 4, and the ReLU 1 and 1 more.

_SUM_THREADS_PER_CHANNEL = 256  # partial sums per channel (fewer where H*W is smaller)


def _per_channel(vector, dtype):
    """A (C,) vector as (1, C, 1, 1), broadcast against (N, C, H, W), in the batch's dtype (the
    kernels take one element type)."""
    return vector.astype(dtype, copy=False)[None, :, None, None]


def _channel_sums(kernel: str, x, *arrays, relu=None):
    """The two per-channel sums ``kernel`` computes, as float64 arrays (2, C)."""
    cp = _cupy()
    n, c, h, w = x.shape
    threads = min(_SUM_THREADS_PER_CHANNEL, h * w)
    sums = cp.empty((2, c, threads), dtype=np.float64)
    flags = () if relu is None else (int(relu),)
    _launch(kernel, x.dtype, c * threads, *arrays, sums, (n, c, h * w, threads, *flags))
    return sums.sum(axis=2)


@functools.cache
def _batchnorm_elementwise():
    kernel = _cupy().ElementwiseKernel
    xhat = "((x - mean) * inv_std)"
    return types.SimpleNamespace(
        forward=kernel("T x, T mean, T inv_std, T gamma, T beta", "T y",
                       f"y = {xhat} * gamma + beta", "minicnn_bn_forward"),
        relu_forward=kernel("T x, T mean, T inv_std, T gamma, T beta", "T y",
                            f"T v = {xhat} * gamma + beta; y = v > T(0) ? v : T(0)",
                            "minicnn_bn_relu_forward"),
        dx=kernel("T dy, T x, T mean, T inv_std, T scale, T dbeta_mean, T dgamma_mean", "T dx",
                  f"dx = scale * (dy - dbeta_mean - {xhat} * dgamma_mean)", "minicnn_bn_dx"),
        relu_dx=kernel("T dy, T x, T mean, T inv_std, T gamma, T beta, T scale, T dbeta_mean, "
                       "T dgamma_mean", "T dx",
                       f"T g = {xhat} * gamma + beta > T(0) ? dy : T(0); "
                       f"dx = scale * (g - dbeta_mean - {xhat} * dgamma_mean)",
                       "minicnn_bn_relu_dx"),
        relu_scale=kernel("T dy, T x, T mean, T inv_std, T gamma, T beta, T scale", "T dx",
                          f"dx = {xhat} * gamma + beta > T(0) ? dy * scale : T(0)",
                          "minicnn_bn_relu_scale"))


def add(a, b):
    return a + b


@functools.cache
def _add_relu_elementwise():
    return _cupy().ElementwiseKernel("T a, T b", "T y", "T s = a + b; y = s > T(0) ? s : T(0)",
                                     "minicnn_add_relu")


def add_relu(a, b):
    """max(a + b, 0) in one kernel: a Residual block's sum and the ReLU after it (layers.fused),
    where the array expression takes two kernels and writes the sum between them."""
    cp = _cupy()
    a, b = cp.ascontiguousarray(a), cp.ascontiguousarray(b, dtype=a.dtype)
    y = cp.empty_like(a)
    _add_relu_elementwise()(a, b, y)
    return y


def channel_mean_var(x):
    x = _cupy().ascontiguousarray(x)
    count = x.size // x.shape[1]
    sums = _channel_sums("batchnorm_stats", x, x)
    mean = sums[0] / count
    var = _cupy().maximum(sums[1] / count - mean * mean, 0)  # in float64: nothing cancels
    return mean.astype(x.dtype), var.astype(x.dtype)


def batchnorm_forward(x, mean, inv_std, gamma, beta):
    y = _cupy().empty(x.shape, dtype=x.dtype)
    _batchnorm_elementwise().forward(x, *(_per_channel(v, x.dtype)
                                          for v in (mean, inv_std, gamma, beta)), y)
    return y


def batchnorm_relu_forward(x, mean, inv_std, gamma, beta):
    y = _cupy().empty(x.shape, dtype=x.dtype)
    _batchnorm_elementwise().relu_forward(x, *(_per_channel(v, x.dtype)
                                               for v in (mean, inv_std, gamma, beta)), y)
    return y


def _backward(dy, x, mean, inv_std, gamma, beta, batch_statistics, relu):
    cp, kernels, dtype = _cupy(), _batchnorm_elementwise(), x.dtype
    dy, x = cp.ascontiguousarray(dy, dtype=dtype), cp.ascontiguousarray(x)
    vectors = [v.astype(dtype, copy=False) for v in (mean, inv_std, gamma, beta)]
    sums = _channel_sums("batchnorm_grad_sums", x, dy, x, *vectors, relu=relu)
    dbeta, dgamma = sums[0].astype(dtype), sums[1].astype(dtype)
    scale = _per_channel(gamma * inv_std, dtype)
    channel = [_per_channel(v, dtype) for v in vectors]  # mean, inv_std, gamma, beta
    if not batch_statistics and not relu:
        return dy * scale, dgamma, dbeta
    dx = cp.empty(x.shape, dtype=dtype)
    if not batch_statistics:
        kernels.relu_scale(dy, x, *channel, scale, dx)
        return dx, dgamma, dbeta
    count = dy.shape[0] * dy.shape[2] * dy.shape[3]
    means = (_per_channel(dbeta / count, dtype), _per_channel(dgamma / count, dtype))
    if relu:
        kernels.relu_dx(dy, x, *channel, scale, *means, dx)
    else:
        kernels.dx(dy, x, *channel[:2], scale, *means, dx)
    return dx, dgamma, dbeta


def batchnorm_backward(dy, x, mean, inv_std, gamma, batch_statistics):
    return _backward(dy, x, mean, inv_std, gamma, gamma, batch_statistics, relu=False)


def batchnorm_relu_backward(dy, x, mean, inv_std, gamma, beta, batch_statistics):
    return _backward(dy, x, mean, inv_std, gamma, beta, batch_statistics, relu=True)


@functools.cache
def _adam_elementwise():
    cp = _cupy()
    # lr and step may be 0-d arrays on the GPU (Optimizer.rate, .count: a recorded step reads
    # them there); the constants are doubles, rounded to T where the reference rounds them
    return cp.ElementwiseKernel(
        "T grad, T lr, double beta1, double beta2, double eps, double step, double wd, "
        "bool decoupled",
        "T param, T m, T v",
        """
        T g = grad;
        if (wd != 0) {
            if (decoupled) param *= (T)(1 - (double)lr * wd); else g = g + (T)wd * param;
        }
        m = m + (T)(1 - beta1) * (g - m);
        v = v * (T)beta2 + (T)(1 - beta2) * g * g;
        const T step_size = (T)((double)lr / (1 - pow(beta1, step)));
        param -= step_size * (m / (sqrt(v) / (T)sqrt(1 - pow(beta2, step)) + (T)eps));
        """,
        "minicnn_adam")


def adam_update(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, step, weight_decay,
                decoupled):
    lr = lr if hasattr(lr, "dtype") else param.dtype.type(lr)
    _adam_elementwise()(grad, lr, float(beta1), float(beta2), float(eps),
                        step if hasattr(step, "dtype") else float(step), float(weight_decay),
                        bool(decoupled), param, exp_avg, exp_avg_sq)


@functools.cache
def _dropout_mask_elementwise():
    # u of each element from a hash of (seed, index), SplitMix64's (Steele, Lea and Flood, 2014):
    # the seed is a 0-d array on the GPU, so a recorded step reads the one given to each replay
    return _cupy().ElementwiseKernel(
        "double seed, double p", "T mask",
        """
        unsigned long long z = (unsigned long long)seed
                               + (unsigned long long)i * 0x9E3779B97F4A7C15ULL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        z ^= z >> 31;
        const double u = (double)(z >> 11) * (1.0 / 9007199254740992.0);
        mask = u >= p ? (T)(1.0 / (1.0 - p)) : (T)0;
        """,
        "minicnn_dropout_mask")


def dropout_mask(seed, p, shape, dtype):
    """Dropout's mask, ``(u >= p) / (1 - p)`` with u uniform in [0, 1), drawn on the GPU from
    ``seed`` (a 0-d float64 array holding an integer below 2**53)."""
    mask = _cupy().empty(shape, dtype=dtype)
    _dropout_mask_elementwise()(seed, float(p), mask)
    return mask
