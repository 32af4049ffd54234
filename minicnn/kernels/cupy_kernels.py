"""The GPU kernels: CUDA C++ in ``cupy_kernels.cu``, compiled by CuPy on first use.

Same functions, signatures and results as :mod:`minicnn.kernels.numpy_kernels`. Every kernel
runs one thread per output element (im2col: per column entry; col2im and pooling backward:
per input pixel, as gathers, so no atomics). The matrix multiplies of the layers go through
cuBLAS via ``cupy.matmul``; nothing here copies data to or from the host.

The CUDA source is compiled lazily (the first call of each kernel), never at import, and CuPy
caches the compiled module on disk. The same source is compiled for the CPU by the tests
(tests/test_cuda_sources.py), so the index arithmetic is checked in CI without a GPU.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from . import conv_output_size

SOURCE_PATH = Path(__file__).with_name("cupy_kernels.cu")
KERNEL_NAMES = ("im2col", "col2im", "maxpool_forward", "maxpool_backward", "avgpool_forward",
                "avgpool_backward")
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
    cp = _cupy()
    x = cp.ascontiguousarray(x)
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    oh, ow = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
    cols = cp.empty((c * kh * kw, n * oh * ow), dtype=x.dtype)
    _launch("im2col", x.dtype, cols.size, x, cols, (n, c, h, w, kh, kw, sh, sw, ph, pw, oh, ow))
    return cols


def col2im(cols, x_shape, kernel, stride, padding):
    cp = _cupy()
    cols = cp.ascontiguousarray(cols)
    n, c, h, w = x_shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    oh, ow = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
    dx = cp.empty(x_shape, dtype=cols.dtype)
    _launch("col2im", cols.dtype, dx.size, cols, dx, (n, c, h, w, kh, kw, sh, sw, ph, pw, oh, ow))
    return dx


def _pool_geometry(x_shape, kernel, stride):
    n, c, h, w = x_shape
    (kh, kw), (sh, sw) = kernel, stride
    oh, ow = conv_output_size(h, kh, sh, 0), conv_output_size(w, kw, sw, 0)
    return (n, c, oh, ow), (h, w, kh, kw, sh, sw, oh, ow)


def maxpool_forward(x, kernel, stride):
    cp = _cupy()
    x = cp.ascontiguousarray(x)
    out_shape, geometry = _pool_geometry(x.shape, kernel, stride)
    y = cp.empty(out_shape, dtype=x.dtype)
    argmax = cp.empty(out_shape, dtype=cp.int32)
    _launch("maxpool_forward", x.dtype, y.size, x, y, argmax, geometry)
    return y, argmax


def maxpool_backward(dy, argmax, x_shape, kernel, stride):
    cp = _cupy()
    dy = cp.ascontiguousarray(dy)
    _, geometry = _pool_geometry(x_shape, kernel, stride)
    dx = cp.empty(x_shape, dtype=dy.dtype)
    _launch("maxpool_backward", dy.dtype, dx.size, dy, cp.ascontiguousarray(argmax), dx, geometry)
    return dx


def avgpool_forward(x, kernel, stride):
    cp = _cupy()
    x = cp.ascontiguousarray(x)
    out_shape, geometry = _pool_geometry(x.shape, kernel, stride)
    y = cp.empty(out_shape, dtype=x.dtype)
    _launch("avgpool_forward", x.dtype, y.size, x, y, geometry)
    return y


def avgpool_backward(dy, x_shape, kernel, stride):
    cp = _cupy()
    dy = cp.ascontiguousarray(dy)
    _, geometry = _pool_geometry(x_shape, kernel, stride)
    dx = cp.empty(x_shape, dtype=dy.dtype)
    _launch("avgpool_backward", dy.dtype, dx.size, dy, dx, geometry)
    return dx


# --- layout, activation and optimizer kernels: CuPy's element-wise operations already run
# one thread per element on the GPU, so the numpy reference formulas serve as they are.


def cnhw_to_nchw(out, bias, n, oh, ow):
    cp = _cupy()
    f = out.shape[0]
    by_sample = out.reshape(f, n, oh * ow).transpose(1, 0, 2)
    y = by_sample + bias[:, None] if bias is not None else by_sample.copy()
    return cp.ascontiguousarray(y).reshape(n, f, oh, ow)


def nchw_to_cnhw(dy):
    n, f, oh, ow = dy.shape
    return _cupy().ascontiguousarray(dy.reshape(n, f, oh * ow).transpose(1, 0, 2)).reshape(
        f, n * oh * ow)


def matmul(a, b):
    return a @ b  # cuBLAS


def relu_forward(x):
    return _cupy().maximum(x, x.dtype.type(0))


def relu_backward(dy, y):
    return dy * (y > 0)


# Batch normalization: the reference functions use only array methods and arithmetic, so on
# CuPy arrays they run as CuPy reductions and element-wise kernels, all on the GPU.
from .numpy_kernels import (  # noqa: E402
    batchnorm_backward,  # noqa: F401
    batchnorm_forward,  # noqa: F401
    channel_mean_var,  # noqa: F401
)


@functools.cache
def _adam_elementwise():
    cp = _cupy()
    return cp.ElementwiseKernel(
        "T grad, T lr, T beta1, T beta2, T eps, T bc1, T bc2_sqrt, T wd, bool decoupled",
        "T param, T m, T v",
        """
        T g = grad;
        if (wd != 0) {
            if (decoupled) param *= 1 - lr * wd; else g = g + wd * param;
        }
        m = m + (1 - beta1) * (g - m);
        v = v * beta2 + (1 - beta2) * g * g;
        param -= (lr / bc1) * (m / (sqrt(v) / bc2_sqrt + eps));
        """,
        "minicnn_adam")


def adam_update(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, step, weight_decay,
                decoupled):
    t = param.dtype.type
    _adam_elementwise()(grad, t(lr), t(beta1), t(beta2), t(eps), t(1 - beta1**step),
                        t(np.sqrt(1 - beta2**step)), t(weight_decay), bool(decoupled),
                        param, exp_avg, exp_avg_sq)
