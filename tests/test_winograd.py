"""Winograd convolution (minicnn.kernels.winograd, numba_winograd) against minicnn.naive and
im2col, and the one place that chooses the algorithm (minicnn.kernels.choose_conv)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minicnn
from minicnn import gradcheck, kernels, naive
from minicnn.kernels import winograd
from minicnn.layers import Conv2D

IMPLEMENTATIONS = ["numpy"] + (["numba"] if minicnn.backend.backend_available("numba") else [])

# float32 bound, relative to the largest |value| of the reference result (at least 1). The worst
# of 300 draws of the test below (both implementations, y, dL/dx and dL/dW): 5.0e-7 for F(2x2),
# 4.7e-6 for F(4x4), whose transforms amplify rounding ~10x more (benchmarks/winograd_error.py
# measures it on a network's activations). The bounds keep a 20x margin over those.
FLOAT32_BOUND = {2: 1e-5, 4: 1e-4}


def implementation(name):
    if name == "numba":
        from minicnn.kernels import numba_winograd

        return numba_winograd
    return winograd


@pytest.fixture
def algorithm():
    """For a test about the choice itself: it starts on "auto" whatever $MINICNN_CONV_ALGO
    forces, and the setting is restored after."""
    previous = kernels.set_conv_algorithm("auto")
    yield
    kernels.set_conv_algorithm(previous)


@pytest.mark.parametrize("m", [2, 4])
def test_the_transforms_compute_a_one_dimensional_correlation(m):
    """y = A^T [(G g) * (B^T d)] is the correlation of d with g: a wrong matrix entry fails."""
    t = winograd.TRANSFORMS[m]
    rng = np.random.default_rng(m)
    for _ in range(20):
        d, g = rng.standard_normal(m + 2), rng.standard_normal(3)
        expected = np.array([d[i:i + 3] @ g for i in range(m)])
        np.testing.assert_allclose(t.AT @ ((t.G @ g) * (t.BT @ d)), expected, rtol=0, atol=1e-13)


@pytest.mark.skipif("numba" not in IMPLEMENTATIONS, reason="numba is not installed")
@pytest.mark.parametrize("m", [2, 4])
def test_the_written_out_transforms_of_numba_are_the_matrices(m):
    """numba_winograd spells each one-dimensional transform out (_bt4 = B^T, _b4 = B, _at4 =
    A^T, _a4 = A, likewise for F(2x2)) with shared sums: applied to each unit vector, each one
    gives the matrix of winograd.TRANSFORMS column by column (a sign or a factor wrong fails)."""
    from numba import njit

    from minicnn.kernels import numba_winograd

    t = winograd.TRANSFORMS[m]
    for name, matrix in [("_bt", t.BT), ("_b", t.BT.T), ("_at", t.AT), ("_a", t.AT.T)]:
        transform = getattr(numba_winograd, f"{name}{m}")
        apply = njit(lambda src, transform=transform: transform(src, 0, 1))
        rows, columns = matrix.shape
        for k in range(columns):
            unit = np.zeros(columns)
            unit[k] = 1
            # the results past the matrix's rows are padding (_pass writes only ``rows`` of them)
            np.testing.assert_array_equal(np.array(apply(unit))[:rows], matrix[:, k],
                                          err_msg=f"{name}{m}, column {k}")


@pytest.mark.skipif("numba" not in IMPLEMENTATIONS, reason="numba is not installed")
def test_numba_sizes_its_blocks_by_the_l2_cache_linux_describes(monkeypatch):
    """The blocks of samples are sized by one core's L2 cache as /sys writes it ("1024K"), with
    1 MiB where there is no such description; a bigger cache, bigger blocks; never so small that
    the products are too thin to pay for their calls, nor, where a sample overflows the cache,
    smaller than 256 tiles."""
    from minicnn.kernels import numba_winograd

    assert numba_winograd._cache_size("1024K\n") == 1 << 20
    assert numba_winograd._cache_size("2M") == 2 << 20
    assert numba_winograd._cache_size("524288") == 1 << 19
    assert numba_winograd._l2_bytes() >= 1 << 16
    g, t = winograd.tile_grid((128, 32, 32, 32), (1, 1), 4), winograd.TRANSFORMS[4]
    narrow = winograd.tile_grid((128, 16, 32, 32), (1, 1), 4)
    sizes, narrow_sizes = {}, {}
    for l2 in (512 << 10, 1 << 20, 4 << 20):
        monkeypatch.setattr(numba_winograd, "_l2_bytes", lambda l2=l2: l2)
        sizes[l2] = numba_winograd._samples_per_block(g, t, 32, 4)
        narrow_sizes[l2] = numba_winograd._samples_per_block(narrow, t, 16, 4)
    # 32 -> 32 at 32x32: 36 * 64 tiles * (2 * 32 + 32) channels * 4 bytes = 864 KiB a sample;
    # where that overflows the cache, blocks of 256 tiles (4 samples) for the products' sake
    assert sizes == {512 << 10: 4, 1 << 20: 1, 4 << 20: 4}
    # 16 -> 16: 432 KiB a sample, but 64 tiles give each product only 64 * 16 * 16 multiply-adds:
    # at least 128 tiles, whatever the cache
    assert narrow_sizes == {512 << 10: 2, 1 << 20: 2, 4 << 20: 9}


def _draw(n, c, f, size, padding, bias, dtype, seed):
    rng = np.random.default_rng(seed)
    h, w = size
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weight = (rng.standard_normal((f, c, 3, 3)) / np.sqrt(9 * c)).astype(dtype)
    b = rng.standard_normal(f).astype(dtype) if bias else None
    dy = rng.standard_normal((n, f, h + 2 * padding[0] - 2, w + 2 * padding[1] - 2)).astype(dtype)
    return x, weight, b, dy


def _assert_close(actual, expected, dtype, m, what):
    scale = max(1.0, float(np.abs(expected).max()))
    bound = 1e-11 if dtype == np.float64 else FLOAT32_BOUND[m]
    error = float(np.abs(np.asarray(actual, np.float64) - expected).max()) / scale
    assert error <= bound, f"{what}: relative error {error:.2e} > {bound:.0e}"


@pytest.mark.parametrize("name", IMPLEMENTATIONS)
@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@settings(max_examples=25)
@given(n=st.integers(1, 2), c=st.sampled_from([1, 2, 3, 5]), f=st.integers(1, 4),
       size=st.tuples(st.integers(1, 11), st.integers(1, 11)),
       padding=st.tuples(st.integers(0, 2), st.integers(0, 2)), bias=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_winograd_matches_the_naive_loops(name, m, dtype, n, c, f, size, padding, bias, seed):
    """Forward, dL/dx and dL/dW on drawn shapes: odd and even sizes, sizes that are no multiple
    of the tile (and smaller than one), one channel and several, batch 1 (many channels: the
    next test, against im2col)."""
    size = tuple(max(s, 3 - 2 * p) for s, p in zip(size, padding))  # at least one output
    x, weight, b, dy = _draw(n, c, f, size, padding, bias, dtype, seed)
    x64, w64, dy64 = x.astype(np.float64), weight.astype(np.float64), dy.astype(np.float64)
    impl, t = implementation(name), winograd.TRANSFORMS[m]

    y, saved = impl.conv_forward(x, weight, b, padding, t)
    assert y.dtype == dtype and y.shape == dy.shape
    _assert_close(y, naive.conv2d_forward(x64, w64, None if b is None else b.astype(np.float64),
                                          (1, 1), padding), dtype, m, "y")
    dx, dW = impl.conv_backward(dy, saved, weight, x.shape, padding, t)
    expected_dx, expected_dW, _ = naive.conv2d_backward(dy64, x64, w64, (1, 1), padding)
    assert dx.dtype == dW.dtype == dtype
    _assert_close(dx, expected_dx, dtype, m, "dL/dx")
    _assert_close(dW, expected_dW, dtype, m, "dL/dW")
    none, dW_only = impl.conv_backward(dy, saved, weight, x.shape, padding, t, input_grad=False)
    assert none is None
    np.testing.assert_array_equal(dW_only, dW)


@pytest.mark.parametrize("name", IMPLEMENTATIONS)
@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("size", [(8, 8), (4, 12), (16, 8)])
def test_winograd_matches_the_naive_loops_where_the_tiles_cover_the_output_exactly(name, m, size):
    """The networks' shapes, which the drawn ones above rarely are: sides that are multiples of
    the tile (no tile overhangs the edge), with a bias, against the naive loops."""
    x, weight, b, dy = _draw(2, 3, 5, size, (1, 1), True, np.float64, seed=sum(size) + m)
    impl, t = implementation(name), winograd.TRANSFORMS[m]
    y, saved = impl.conv_forward(x, weight, b, (1, 1), t)
    _assert_close(y, naive.conv2d_forward(x, weight, b, (1, 1), (1, 1)), np.float64, m, "y")
    dx, dW = impl.conv_backward(dy, saved, weight, x.shape, (1, 1), t)
    expected_dx, expected_dW, _ = naive.conv2d_backward(dy, x, weight, (1, 1), (1, 1))
    _assert_close(dx, expected_dx, np.float64, m, "dL/dx")
    _assert_close(dW, expected_dW, np.float64, m, "dL/dW")


@pytest.mark.skipif("numba" not in IMPLEMENTATIONS, reason="numba is not installed")
@pytest.mark.parametrize("keep", [True, False], ids=["training", "inference"])
@pytest.mark.parametrize("samples_per_block", [1, 2, 64])
def test_numba_runs_the_blocks_of_samples_that_the_reference_runs_whole(samples_per_block, keep,
                                                                       monkeypatch):
    """numba_winograd splits the batch between the cores and each share into blocks of samples
    (transform, products, transform back, block after block): every split, uneven ones
    included, gives the reference's y, dL/dx and dL/dW (float64, where only rounding differs),
    whether the forward pass kept V (training) or the backward pass computes it again."""
    from minicnn.kernels import numba_winograd

    monkeypatch.setattr(numba_winograd, "_samples_per_block", lambda *args: samples_per_block)
    t = winograd.TRANSFORMS[4]
    x, weight, b, dy = _draw(5, 3, 4, (9, 7), (1, 1), True, np.float64, 0)
    y, saved = numba_winograd.conv_forward(x, weight, b, (1, 1), t, keep=keep)
    assert (saved[0] is None) == (not keep)
    dx, dW = numba_winograd.conv_backward(dy, saved, weight, x.shape, (1, 1), t)
    y_ref, saved_ref = winograd.conv_forward(x, weight, b, (1, 1), t)
    dx_ref, dW_ref = winograd.conv_backward(dy, saved_ref, weight, x.shape, (1, 1), t)
    for actual, expected, what in [(y, y_ref, "y"), (dx, dx_ref, "dL/dx"), (dW, dW_ref, "dL/dW")]:
        _assert_close(actual, expected, np.float64, 4, what)


@pytest.mark.parametrize("setting", ["winograd", "winograd2"])
@settings(max_examples=25)
@given(n=st.integers(1, 3), c=st.sampled_from([1, 4, 9, 33]), f=st.sampled_from([1, 8, 12, 40]),
       size=st.tuples(st.integers(2, 11), st.integers(2, 11)), bias=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_a_conv2d_layer_computes_the_same_with_winograd_as_with_im2col(
        cpu_backend, algorithm, setting, n, c, f, size, bias, seed):
    """In float64 (float32's rounding: the test above), through Conv2D, on both CPU backends;
    after a training forward pass and after an inference one (a saliency map's backward pass:
    Winograd on numba then keeps less and computes V again)."""
    rng = np.random.default_rng(seed)
    layer = Conv2D(c, f, 3, padding=1, bias=bias, rng=rng).astype(np.float64)
    x = rng.standard_normal((n, c, *size))
    dy = rng.standard_normal((n, f, *size))
    results = {}
    for name in ("im2col", setting):
        kernels.set_conv_algorithm(name)
        assert layer.algorithms((c, *size)) == [
            "im2col" if name == "im2col" else winograd.TRANSFORMS[2 if name == "winograd2" else 4].name]
        for training in (True, False):
            y = layer.forward(x, training=training)
            dx = layer.backward(dy)
            results[name, training] = (y, dx, layer.weight.grad,
                                       None if layer.bias is None else layer.bias.grad)
    for training in (True, False):
        for reference, other in zip(results["im2col", training], results[setting, training]):
            if reference is not None:
                np.testing.assert_allclose(other, reference, rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize("setting", ["winograd", "winograd2"])
def test_winograd_passes_the_gradient_check(cpu_backend, algorithm, setting):
    kernels.set_conv_algorithm(setting)
    rng = np.random.default_rng(3)
    layer = Conv2D(3, 4, 3, padding=1, rng=rng)
    layer.bias.data = rng.standard_normal(4).astype(np.float32)
    errors = gradcheck.check_layer(layer, rng.standard_normal((2, 3, 6, 7)))
    assert max(errors.values()) < 1e-7, errors


def test_the_setting_chooses_the_algorithm(algorithm):
    x_shape, weight = (8, 32, 16, 16), (32, 32, 3, 3)
    from minicnn.kernels import numba_kernels, numpy_kernels

    assert numpy_kernels.conv_algorithm(x_shape, weight, (1, 1), (1, 1)) is None  # the reference
    assert numba_kernels.conv_algorithm(x_shape, weight, (1, 1), (1, 1)).name == \
        "winograd F(4x4,3x3)"
    # a first layer with 3 channels: too few channels for Winograd's products (the direct sum)
    assert numba_kernels.conv_algorithm((8, 3, 32, 32), (32, 3, 3, 3), (1, 1), (1, 1)).name == \
        "direct 3x3"
    kernels.set_conv_algorithm("im2col")
    assert numba_kernels.conv_algorithm(x_shape, weight, (1, 1), (1, 1)) is None
    kernels.set_conv_algorithm("winograd2")
    assert numpy_kernels.conv_algorithm(x_shape, weight, (1, 1), (1, 1)).name == \
        "winograd F(2x2,3x3)"
    for weight_shape, stride in [((4, 4, 3, 3), (2, 2)), ((4, 4, 5, 5), (1, 1)),
                                 ((4, 4, 1, 1), (1, 1)), ((4, 4, 3, 1), (1, 1))]:
        # Winograd F(m x m, 3x3) computes 3x3 kernels at stride 1 only: the rest run im2col
        assert numba_kernels.conv_algorithm(x_shape, weight_shape, stride, (1, 1)) is None
    assert kernels.set_conv_algorithm("auto") == "winograd2"


def test_a_bad_setting_is_refused_naming_the_choices(algorithm, monkeypatch):
    with pytest.raises(ValueError, match="'auto', 'im2col', 'winograd', 'winograd2'"):
        kernels.set_conv_algorithm("fft")
    monkeypatch.setenv("MINICNN_CONV_ALGO", "winograd6")
    monkeypatch.setattr(kernels, "_conv_algorithm", None)  # read the environment again
    with pytest.raises(ValueError, match="MINICNN_CONV_ALGO must be one of"):
        kernels.get_conv_algorithm()
    monkeypatch.setenv("MINICNN_CONV_ALGO", "IM2COL")
    assert kernels.get_conv_algorithm() == "im2col"


def test_summary_reports_each_convolution_algorithm(algorithm):
    if "numba" in IMPLEMENTATIONS:
        minicnn.set_backend("numba")
    model = minicnn.models.cifar_resnet(seed=0)
    text = model.summary(print_fn=None)
    assert "algorithm" in text.splitlines()[0]
    expected = "winograd F(4x4,3x3)" if "numba" in IMPLEMENTATIONS else "im2col"
    assert f"{expected} + {expected}" in text  # a residual block's two 3x3 convolutions
    assert "winograd F(4x4,3x3) + im2col" in text or expected == "im2col"  # 1x1 shortcut
    kernels.set_conv_algorithm("im2col")
    assert "winograd" not in model.summary(print_fn=None)
