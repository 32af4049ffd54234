"""The cupy backend's CUDA kernels, compiled for the CPU and checked against the numpy reference.

CI has no GPU, so the real CUDA source (minicnn/kernels/cupy_kernels.cu) is compiled with g++
and a tiny harness that plays the GPU: it loops over every (block, thread) index and calls the
kernel body, exactly as the CUDA launch would. The index arithmetic, bounds checks and gathers
are therefore tested here on every run; tests/test_backend_parity.py runs the same kernels on a
real GPU when one is present.
"""

import ctypes
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minicnn.kernels import conv_output_size
from minicnn.kernels import numpy_kernels as reference
from minicnn.kernels.cupy_kernels import SOURCE_PATH

HARNESS = r"""
#include <cstdint>
struct Index3 { unsigned int x, y, z; };
static Index3 blockIdx, threadIdx, blockDim;
#define __global__
#define __restrict__
#include "%(source)s"

// run a kernel the way a 1-D CUDA launch would: every thread of every block, in order
#define LAUNCH(total, call) \
    blockDim.x = 256; \
    for (blockIdx.x = 0; (long long)blockIdx.x * 256 < (total); ++blockIdx.x) \
        for (threadIdx.x = 0; threadIdx.x < 256; ++threadIdx.x) call;

#define CONV_ARGS int N, int C, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW, int OH, int OW
#define CONV_PASS N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW
#define POOL_ARGS int H, int W, int KH, int KW, int SH, int SW, int OH, int OW
#define POOL_PASS H, W, KH, KW, SH, SW, OH, OW

extern "C" {
void run_im2col(const double* x, double* cols, long long total, CONV_ARGS) {
    LAUNCH(total, im2col<double>(x, cols, total, CONV_PASS)) }
void run_col2im(const double* cols, double* dx, long long total, CONV_ARGS) {
    LAUNCH(total, col2im<double>(cols, dx, total, CONV_PASS)) }
void run_maxpool_forward(const double* x, double* y, int* argmax, long long total, POOL_ARGS) {
    LAUNCH(total, maxpool_forward<double>(x, y, argmax, total, POOL_PASS)) }
void run_maxpool_backward(const double* dy, const int* argmax, double* dx, long long total,
                          POOL_ARGS) {
    LAUNCH(total, maxpool_backward<double>(dy, argmax, dx, total, POOL_PASS)) }
void run_avgpool_forward(const double* x, double* y, long long total, POOL_ARGS) {
    LAUNCH(total, avgpool_forward<double>(x, y, total, POOL_PASS)) }
void run_avgpool_backward(const double* dy, double* dx, long long total, POOL_ARGS) {
    LAUNCH(total, avgpool_backward<double>(dy, dx, total, POOL_PASS)) }
}
"""


@pytest.fixture(scope="module")
def cuda_on_cpu(tmp_path_factory):
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler (g++) to build the CUDA sources for the CPU")
    folder = tmp_path_factory.mktemp("cuda_on_cpu")
    (folder / "harness.cpp").write_text(HARNESS % {"source": SOURCE_PATH})
    library = folder / "kernels.so"
    subprocess.run([compiler, "-O1", "-shared", "-fPIC", "-std=c++14", "-o", str(library),
                    str(folder / "harness.cpp")], check=True, capture_output=True)
    return ctypes.CDLL(str(library))


def ptr(array):
    return array.ctypes.data_as(ctypes.c_void_p)


def ints(*values):
    return [ctypes.c_int(int(v)) for v in values]


@st.composite
def conv_geometry(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    return dict(n=draw(st.integers(1, 3)), c=draw(st.integers(1, 3)), kernel=(kh, kw),
                stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))), padding=(ph, pw),
                h=draw(st.integers(max(1, kh - 2 * ph), 8)), w=draw(st.integers(max(1, kw - 2 * pw), 8)))


@settings(max_examples=60)
@given(g=conv_geometry(), seed=st.integers(0, 2**32 - 1))
def test_im2col_and_col2im_match_numpy(cuda_on_cpu, g, seed):
    rng = np.random.default_rng(seed)
    (kh, kw), (sh, sw), (ph, pw) = g["kernel"], g["stride"], g["padding"]
    oh, ow = conv_output_size(g["h"], kh, sh, ph), conv_output_size(g["w"], kw, sw, pw)
    x = rng.standard_normal((g["n"], g["c"], g["h"], g["w"]))
    geometry = ints(g["n"], g["c"], g["h"], g["w"], kh, kw, sh, sw, ph, pw, oh, ow)

    expected = reference.im2col(x, g["kernel"], g["stride"], g["padding"])
    cols = np.full(expected.shape, np.nan)
    cuda_on_cpu.run_im2col(ptr(x), ptr(cols), ctypes.c_longlong(cols.size), *geometry)
    np.testing.assert_array_equal(cols, expected)

    dcols = rng.standard_normal(expected.shape)
    dx = np.full(x.shape, np.nan)
    cuda_on_cpu.run_col2im(ptr(dcols), ptr(dx), ctypes.c_longlong(dx.size), *geometry)
    np.testing.assert_allclose(dx, reference.col2im(dcols, x.shape, g["kernel"], g["stride"],
                                                    g["padding"]), rtol=1e-12, atol=1e-12)


@settings(max_examples=60)
@given(n=st.integers(1, 2), c=st.integers(1, 3), kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       extra=st.tuples(st.integers(0, 5), st.integers(0, 5)), seed=st.integers(0, 2**32 - 1))
def test_pool_kernels_match_numpy(cuda_on_cpu, n, c, kernel, stride, extra, seed):
    rng = np.random.default_rng(seed)
    (kh, kw), (sh, sw) = kernel, stride
    h, w = kh + extra[0], kw + extra[1]
    oh, ow = conv_output_size(h, kh, sh, 0), conv_output_size(w, kw, sw, 0)
    x = rng.permutation(n * c * h * w).reshape(n, c, h, w).astype(np.float64)  # no ties
    geometry = ints(h, w, kh, kw, sh, sw, oh, ow)
    out_total = ctypes.c_longlong(n * c * oh * ow)
    in_total = ctypes.c_longlong(x.size)
    dy = rng.standard_normal((n, c, oh, ow))

    y_ref, argmax_ref = reference.maxpool_forward(x, kernel, stride)
    y, argmax = np.empty_like(y_ref), np.empty(y_ref.shape, np.int32)
    cuda_on_cpu.run_maxpool_forward(ptr(x), ptr(y), ptr(argmax), out_total, *geometry)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(argmax, argmax_ref)

    dx = np.empty_like(x)
    cuda_on_cpu.run_maxpool_backward(ptr(dy), ptr(argmax), ptr(dx), in_total, *geometry)
    np.testing.assert_allclose(dx, reference.maxpool_backward(dy, argmax_ref, x.shape, kernel, stride),
                               rtol=1e-12, atol=1e-12)

    y = np.empty_like(y_ref)
    cuda_on_cpu.run_avgpool_forward(ptr(x), ptr(y), out_total, *geometry)
    np.testing.assert_allclose(y, reference.avgpool_forward(x, kernel, stride), rtol=1e-12)
    dx = np.empty_like(x)
    cuda_on_cpu.run_avgpool_backward(ptr(dy), ptr(dx), in_total, *geometry)
    np.testing.assert_allclose(dx, reference.avgpool_backward(dy, x.shape, kernel, stride),
                               rtol=1e-12, atol=1e-12)


def test_first_maximum_wins_ties(cuda_on_cpu):
    x = np.zeros((1, 1, 2, 2))
    y, argmax = np.empty((1, 1, 1, 1)), np.empty((1, 1, 1, 1), np.int32)
    cuda_on_cpu.run_maxpool_forward(ptr(x), ptr(y), ptr(argmax), ctypes.c_longlong(1),
                                    *ints(2, 2, 2, 2, 2, 2, 1, 1))
    assert argmax.item() == 0 == reference.maxpool_forward(x, (2, 2), (2, 2))[1].item()
