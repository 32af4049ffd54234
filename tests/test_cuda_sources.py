"""The cupy backend without a GPU: its CUDA source, launched through its own glue, against NumPy.

tests/cuda_emulator.py compiles the real minicnn/kernels/cupy_kernels.cu with g++ and puts a
stand-in for CuPy in sys.modules, so ``cupy_kernels.im2col(...)`` and the others run exactly as
the layers call them on a GPU: the glue computes the grid, orders and types the arguments and
names the template instantiations; the emulator launches every thread of every block. Each
kernel is compared with the NumPy reference in float32 and float64, on hypothesis-drawn
geometries and on sizes that need several blocks with a partial last one. nvcc (CUDA 13, where
installed) compiles the same source for real GPUs, warnings as errors.
tests/test_backend_parity.py runs the kernels on a real GPU when one is present.

Outside CI, a missing g++ or nvcc skips these tests with the reason; in CI (``CI`` set) it is
an error, because then the CUDA code would go untested.
"""

import importlib
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from cuda_emulator import fake_cupy, find_compiler
from hypothesis import given, settings
from hypothesis import strategies as st

from minicnn.kernels import numpy_kernels as reference

DTYPES = pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
TOLERANCE = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-12)}


def require_tool(found, what: str):
    """Skip (outside CI) or fail (in CI) when a tool the CUDA checks need is missing."""
    if found:
        return found
    message = f"{what} is not installed: the CUDA kernels cannot be checked without it"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI must install it: see .ci/run)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def gpu_kernels(tmp_path_factory):
    """minicnn.kernels.cupy_kernels, imported against the emulated CuPy."""
    require_tool(find_compiler(), "a C++ compiler (g++)")
    saved = {name: sys.modules.get(name) for name in ("cupy", "minicnn.kernels.cupy_kernels")}
    sys.modules["cupy"] = fake_cupy(tmp_path_factory.mktemp("cuda_on_cpu"))
    sys.modules.pop("minicnn.kernels.cupy_kernels", None)
    module = importlib.import_module("minicnn.kernels.cupy_kernels")
    yield module
    for name, previous in saved.items():
        if previous is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = previous


def close(actual, expected, dtype):
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, **TOLERANCE[dtype])


@st.composite
def conv_geometry(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 3)),
             draw(st.integers(max(1, kh - 2 * ph), 8)), draw(st.integers(max(1, kw - 2 * pw), 8)))
    return shape, (kh, kw), (draw(st.integers(1, 3)), draw(st.integers(1, 3))), (ph, pw)


@st.composite
def pool_geometry(draw):
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)),
             kh + draw(st.integers(0, 5)), kw + draw(st.integers(0, 5)))
    return shape, (kh, kw), (draw(st.integers(1, 3)), draw(st.integers(1, 3)))


def check_conv_kernels(kernels, dtype, shape, kernel, stride, padding, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    expected = reference.im2col(x, kernel, stride, padding)
    close(kernels.im2col(x, kernel, stride, padding), expected, dtype)
    dcols = rng.standard_normal(expected.shape).astype(dtype)
    close(kernels.col2im(dcols, shape, kernel, stride, padding),
          np.ascontiguousarray(reference.col2im(dcols, shape, kernel, stride, padding)), dtype)


def check_pool_kernels(kernels, dtype, shape, kernel, stride, seed):
    rng = np.random.default_rng(seed)
    x = rng.permutation(int(np.prod(shape))).reshape(shape).astype(dtype)  # no ties
    y_ref, argmax_ref = reference.maxpool_forward(x, kernel, stride)
    y, argmax = kernels.maxpool_forward(x, kernel, stride)
    close(y, y_ref, dtype)
    assert argmax.dtype == np.int32
    np.testing.assert_array_equal(argmax, argmax_ref)
    dy = rng.standard_normal(y_ref.shape).astype(dtype)
    close(kernels.maxpool_backward(dy, argmax, shape, kernel, stride),
          reference.maxpool_backward(dy, argmax_ref, shape, kernel, stride), dtype)
    relu_x = x - dtype(x.size // 2)  # a ReLU's input before the pool: half negative, one 0
    close(kernels.maxpool_relu_backward(dy, argmax, relu_x, kernel, stride),
          reference.maxpool_relu_backward(dy, argmax_ref, relu_x, kernel, stride), dtype)
    close(kernels.avgpool_forward(x, kernel, stride), reference.avgpool_forward(x, kernel, stride),
          dtype)
    close(kernels.avgpool_backward(dy, shape, kernel, stride),
          reference.avgpool_backward(dy, shape, kernel, stride), dtype)


@DTYPES
@settings(max_examples=40)
@given(geometry=conv_geometry(), seed=st.integers(0, 2**32 - 1))
def test_im2col_and_col2im_match_numpy(gpu_kernels, dtype, geometry, seed):
    check_conv_kernels(gpu_kernels, dtype, *geometry, seed)


@DTYPES
@settings(max_examples=40)
@given(geometry=pool_geometry(), seed=st.integers(0, 2**32 - 1))
def test_pool_kernels_match_numpy(gpu_kernels, dtype, geometry, seed):
    check_pool_kernels(gpu_kernels, dtype, *geometry, seed)


@DTYPES
def test_many_blocks_with_a_partial_last_one(gpu_kernels, dtype):
    """Sizes far from a multiple of the block size: every block, the last partial one too."""
    check_conv_kernels(gpu_kernels, dtype, (3, 5, 13, 11), (3, 2), (1, 2), (1, 1), seed=0)
    check_pool_kernels(gpu_kernels, dtype, (3, 5, 13, 11), (3, 2), (2, 1), seed=1)
    col2im = gpu_kernels._module().get_function(f"col2im<{gpu_kernels._C_TYPES[np.dtype(dtype)]}>")
    blocks, threads = col2im.launches[-1]
    assert blocks > 1 and (blocks - 1) * threads < 3 * 5 * 13 * 11 < blocks * threads


def test_first_maximum_wins_ties(gpu_kernels):
    x = np.zeros((1, 1, 2, 2))
    assert gpu_kernels.maxpool_forward(x, (2, 2), (2, 2))[1].item() == 0 == \
        reference.maxpool_forward(x, (2, 2), (2, 2))[1].item()


@DTYPES
@settings(max_examples=20)
@given(n=st.integers(1, 3), f=st.integers(1, 5), oh=st.integers(1, 6), ow=st.integers(1, 6),
       seed=st.integers(0, 2**32 - 1))
def test_element_wise_kernels_match_numpy(gpu_kernels, dtype, n, f, oh, ow, seed):
    """The kernels CuPy runs as array expressions (layouts, ReLU) and the ElementwiseKernels of
    Adam and a residual sum's ReLU, whose CUDA C the emulator compiles."""
    rng = np.random.default_rng(seed)
    out = rng.standard_normal((f, n * oh * ow)).astype(dtype)
    bias = rng.standard_normal(f).astype(dtype)
    close(gpu_kernels.cnhw_to_nchw(out, bias, n, oh, ow),
          reference.cnhw_to_nchw(out, bias, n, oh, ow), dtype)
    dy = rng.standard_normal((n, f, oh, ow)).astype(dtype)
    close(gpu_kernels.nchw_to_cnhw(dy), reference.nchw_to_cnhw(dy), dtype)
    y = reference.relu_forward(dy)
    close(gpu_kernels.relu_forward(dy), y, dtype)
    close(gpu_kernels.relu_backward(out.reshape(dy.shape), y),
          reference.relu_backward(out.reshape(dy.shape), y), dtype)
    shortcut = rng.standard_normal(dy.shape).astype(dtype)
    shortcut[0, 0] = -dy[0, 0]  # sums exactly 0: the ReLU passes nothing there
    np.testing.assert_array_equal(gpu_kernels.add_relu(dy, shortcut),
                                  reference.relu_forward(dy + shortcut))

    for weight_decay, decoupled in [(0.0, False), (0.1, False), (0.1, True)]:
        ours = [rng.standard_normal((4, 3)).astype(dtype), np.zeros((4, 3), dtype),
                np.zeros((4, 3), dtype)]  # parameter, first and second moments
        theirs = [a.copy() for a in ours]
        for step in range(1, 4):
            grad = rng.standard_normal((4, 3)).astype(dtype)
            args = (0.01, 0.9, 0.999, 1e-8, step, weight_decay, decoupled)
            gpu_kernels.adam_update(ours[0], grad, ours[1], ours[2], *args)
            reference.adam_update(theirs[0], grad, theirs[1], theirs[2], *args)
        for mine, expected in zip(ours, theirs):
            # float32: the kernel rounds its scalars (lr, bias corrections) to float32
            np.testing.assert_allclose(mine, expected, **(dict(rtol=1e-5, atol=1e-6)
                                       if dtype == np.float32 else TOLERANCE[dtype]))
        # the same steps with lr and the step count as 0-d arrays where the arrays are (as a
        # recorded step reads them, Optimizer.rate and .count): the same bits
        on_device = [a.copy() for a in ours]
        host = [a.copy() for a in ours]
        for step in range(4, 7):
            grad = rng.standard_normal((4, 3)).astype(dtype)
            gpu_kernels.adam_update(host[0], grad, host[1], host[2], 0.01, 0.9, 0.999, 1e-8, step,
                                    weight_decay, decoupled)
            gpu_kernels.adam_update(on_device[0], grad, on_device[1], on_device[2],
                                    np.asarray(0.01, dtype), 0.9, 0.999, 1e-8,
                                    np.asarray(float(step)), weight_decay, decoupled)
        for mine, expected in zip(on_device, host):
            np.testing.assert_array_equal(mine, expected)


@DTYPES
@settings(max_examples=25)
@given(n=st.integers(1, 3), c=st.integers(1, 4), h=st.integers(1, 5), w=st.integers(1, 5),
       seed=st.integers(0, 2**32 - 1))
def test_batchnorm_kernels_match_numpy(gpu_kernels, dtype, n, c, h, w, seed):
    """BatchNorm's per-channel sums (one kernel, float64 partials) and ElementwiseKernels
    (broadcast per channel), alone and with the ReLU after it (the fused pass)."""
    # float32: the sums run in another order than NumPy's; a wrong formula is off by O(1)
    tolerance = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else TOLERANCE[dtype]
    rng = np.random.default_rng(seed)
    x = (3 * rng.standard_normal((n, c, h, w)) + 1).astype(dtype)
    mean, var = reference.channel_mean_var(x)
    for ours, theirs in zip(gpu_kernels.channel_mean_var(x), (mean, var)):
        assert ours.dtype == theirs.dtype
        np.testing.assert_allclose(ours, theirs, **tolerance)
    inv_std = (1 / np.sqrt(var + 1e-5)).astype(dtype)
    gamma, beta = rng.standard_normal((2, c)).astype(dtype)
    close(gpu_kernels.batchnorm_forward(x, mean, inv_std, gamma, beta),
          reference.batchnorm_forward(x, mean, inv_std, gamma, beta), dtype)
    x[:, 0, 0, 0], beta[0] = mean[0], 0  # BatchNorm's output exactly 0: ReLU passes nothing
    y_bn = reference.batchnorm_forward(x, mean, inv_std, gamma, beta)
    y = gpu_kernels.batchnorm_relu_forward(x, mean, inv_std, gamma, beta)
    close(y, reference.relu_forward(y_bn), dtype)
    assert ((y > 0) == (y_bn > 0)).all()  # the mask itself, not only values near 0
    dy = rng.standard_normal((n, c, h, 2 * w)).astype(dtype)[..., ::2]  # not contiguous
    for batch_statistics in (True, False):
        ours = gpu_kernels.batchnorm_backward(dy, x, mean, inv_std, gamma, batch_statistics)
        theirs = reference.batchnorm_backward(dy, x, mean, inv_std, gamma, batch_statistics)
        ours_relu = gpu_kernels.batchnorm_relu_backward(dy, x, mean, inv_std, gamma, beta,
                                                        batch_statistics)
        theirs_relu = reference.batchnorm_relu_backward(dy, x, mean, inv_std, gamma, beta,
                                                        batch_statistics)
        for mine, expected in zip((*ours, *ours_relu), (*theirs, *theirs_relu)):
            assert mine.dtype == expected.dtype and mine.shape == expected.shape
            np.testing.assert_allclose(mine, expected, **tolerance)


def find_nvcc():
    for candidate in (shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc", "/usr/local/bin/nvcc"):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_nvcc_compiles_every_instantiation_the_glue_asks_for(tmp_path, arch):
    """The real CUDA compiler, for Ampere and Hopper, warnings as errors: every template
    instantiation that cupy_kernels.py names (its KERNEL_NAMES x _C_TYPES)."""
    nvcc = require_tool(find_nvcc(), "nvcc (the CUDA compiler)")
    from minicnn.kernels import cupy_kernels  # the module itself imports no cupy

    names = [f"{kernel}<{ctype}>" for kernel in cupy_kernels.KERNEL_NAMES
             for ctype in cupy_kernels._C_TYPES.values()]
    source = tmp_path / "instantiate.cu"
    source.write_text(f'#include "{cupy_kernels.SOURCE_PATH}"\n'
                      + "".join(f"void* keep_{i} = (void*)&{name};\n" for i, name in enumerate(names)))
    result = subprocess.run([nvcc, "-std=c++14", f"-arch={arch}", "-Werror", "all-warnings",
                             "-c", str(source), "-o", str(tmp_path / f"{arch}.o")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    if shutil.which("nm"):  # binutils: the host stub of every instantiation is in the object
        symbols = subprocess.run(["nm", "-C", str(tmp_path / f"{arch}.o")], capture_output=True,
                                 text=True, check=True).stdout
        assert all(f"void {name}(" in symbols for name in names), symbols


@DTYPES
def test_batchnorm_sums_read_the_batch_once_with_several_threads_per_channel(gpu_kernels,
                                                                             dtype):
    """20x20 planes: more pixels than the 256 threads a channel gets, so each thread strides
    over its plane; one launch of the sums kernel per pass, whatever N and C."""
    rng = np.random.default_rng(7)
    x = (2 * rng.standard_normal((3, 2, 20, 20)) - 1).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    tolerance = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else TOLERANCE[dtype]
    stats = gpu_kernels._module().get_function(
        f"batchnorm_stats<{gpu_kernels._C_TYPES[np.dtype(dtype)]}>")
    before = len(stats.launches)
    for ours, theirs in zip(gpu_kernels.channel_mean_var(x), reference.channel_mean_var(x)):
        np.testing.assert_allclose(ours, theirs, **tolerance)
    assert len(stats.launches) == before + 1 and stats.launches[-1] == (2, 256)
    mean, var = reference.channel_mean_var(x)
    inv_std = (1 / np.sqrt(var + 1e-5)).astype(dtype)
    gamma, beta = rng.standard_normal((2, 2)).astype(dtype)
    for ours, theirs in zip(
            gpu_kernels.batchnorm_relu_backward(dy, x, mean, inv_std, gamma, beta, True),
            reference.batchnorm_relu_backward(dy, x, mean, inv_std, gamma, beta, True)):
        np.testing.assert_allclose(ours, theirs, **tolerance)


@pytest.mark.parametrize("kind", ["SGD", "Adam"])
def test_the_optimizer_keeps_lr_and_step_count_on_the_gpu(gpu_kernels, kind):
    """On the cupy backend the update reads lr and the step count from 0-d arrays on the GPU
    (what a recorded step replays with): a rate set between steps (a schedule) is read at the
    next step, the count is counted there, and a checkpoint's count is taken up; the weights
    follow the numpy backend's step for step."""
    from minicnn import optim
    from minicnn.layers.base import Parameter

    def parameters(on):
        rng = np.random.default_rng(1)
        made = [Parameter(rng.standard_normal(shape).astype(np.float32), f"p{i}")
                for i, shape in enumerate([(5, 3), (3,)])]
        for p in made:
            p.backend = on
        return made

    def optimizer(params):
        return optim.SGD(params, lr=0.1, momentum=0.9) if kind == "SGD" else \
            optim.Adam(params, lr=0.01)

    gpu, cpu = optimizer(parameters("cupy")), optimizer(parameters("numpy"))
    rng = np.random.default_rng(2)
    for step in range(6):
        if step == 2:  # a schedule's new rate, after the GPU's copy of it exists
            gpu.lr = cpu.lr = gpu.lr / 10
        if step == 4:  # a checkpoint's state taken up
            for opt in (gpu, cpu):
                opt.load_state_arrays(opt.state_arrays(), 40)
        for a, b in zip(gpu.params, cpu.params):
            a.grad = rng.standard_normal(a.data.shape).astype(np.float32)
            b.grad = a.grad.copy()
        gpu.step(), cpu.step()
        assert isinstance(gpu.rate, np.ndarray) and float(gpu.rate) == np.float32(gpu.lr)
        assert float(gpu.count) == gpu.step_count == cpu.step_count
        for a, b in zip(gpu.params, cpu.params):
            np.testing.assert_allclose(a.data, b.data, rtol=2e-6, atol=1e-7)



@DTYPES
def test_the_dropout_mask_is_drawn_from_its_seed(gpu_kernels, dtype):
    """Dropout's mask on the GPU: every element 0 or 1/(1-p), zero with probability p, the
    elements independent of their neighbours, the same seed the same mask and another seed
    another one (the seed is a 0-d array, what a recorded step's replays are given)."""
    p, shape = 0.3, (64, 50, 50)
    mask = gpu_kernels.dropout_mask(np.asarray(12345.0), p, shape, dtype)
    assert mask.dtype == dtype and mask.shape == shape
    assert set(np.unique(mask).tolist()) == {0.0, float(dtype(1 / (1 - p)))}
    dropped = (mask == 0).reshape(-1)
    assert abs(dropped.mean() - p) < 0.005  # 160,000 draws: 4 standard errors
    assert abs((dropped[1:] & dropped[:-1]).mean() - p * p) < 0.005
    np.testing.assert_array_equal(gpu_kernels.dropout_mask(np.asarray(12345.0), p, shape, dtype),
                                  mask)
    other = gpu_kernels.dropout_mask(np.asarray(12346.0), p, shape, dtype)
    assert abs((other != mask).mean() - 2 * p * (1 - p)) < 0.01  # two independent masks
