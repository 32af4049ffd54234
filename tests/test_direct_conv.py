"""The direct 3x3 convolution of the numba backend (minicnn.kernels.numba_direct) against
im2col, the reference of Conv2D's own code, and where the backends' rules choose it."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minicnn
from minicnn import gradcheck, kernels
from minicnn.layers import Conv2D

pytestmark = pytest.mark.skipif(not minicnn.backend.backend_available("numba"),
                                reason="the direct convolution is a numba kernel")


@pytest.fixture
def numba_backend():
    previous = minicnn.get_backend()
    minicnn.set_backend("numba")
    yield
    minicnn.set_backend(previous)


@pytest.fixture
def algorithm():
    """Starts on "auto" whatever $MINICNN_CONV_ALGO forces; restored after."""
    previous = kernels.set_conv_algorithm("auto")
    yield
    kernels.set_conv_algorithm(previous)


def _results(layer, x, dy, setting):
    kernels.set_conv_algorithm(setting)
    results = []
    for training in (True, False):  # a saliency map's backward pass follows an inference one
        y = layer.forward(x, training=training)
        dx = layer.backward(dy)
        results.append((y, dx, layer.weight.grad, None if layer.bias is None else layer.bias.grad))
    return results


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3), c=st.sampled_from([1, 2, 3, 5]), f=st.sampled_from([1, 4, 7]),
       size=st.tuples(st.integers(1, 11), st.integers(1, 11)),
       padding=st.tuples(st.integers(0, 2), st.integers(0, 2)), bias=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_a_conv2d_layer_computes_the_same_summed_directly_as_with_im2col(
        numba_backend, algorithm, n, c, f, size, padding, bias, seed):
    """In float64, y, dL/dx, dL/dW and dL/db: 1-pixel inputs, unpadded and
    2-padded sides, an odd number of filters (the weight gradient pairs them)."""
    h, w = size
    if h + 2 * padding[0] < 3 or w + 2 * padding[1] < 3:
        return  # no output pixel: Conv2D refuses the shape
    rng = np.random.default_rng(seed)
    layer = Conv2D(c, f, 3, padding=padding, bias=bias, rng=rng).astype(np.float64)
    x = rng.standard_normal((n, c, h, w))
    dy = rng.standard_normal((n, *layer.output_shape((c, h, w))))
    reference = _results(layer, x, dy, "im2col")
    direct = _results(layer, x, dy, "direct")
    assert layer.algorithms((c, h, w)) == ["direct 3x3"]
    for expected_pass, actual_pass in zip(reference, direct):
        for expected, actual in zip(expected_pass, actual_pass):
            if expected is not None:
                np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-11)


def test_float32_stays_as_close_to_float64_as_im2col_does(numba_backend, algorithm):
    """A first layer's shape at batch 16: the weight gradient sums 16*32*32 products per tap."""
    rng = np.random.default_rng(0)
    layer = Conv2D(3, 16, 3, padding=1, rng=rng)
    x = rng.standard_normal((16, 3, 32, 32)).astype(np.float32)
    dy = rng.standard_normal((16, 16, 32, 32)).astype(np.float32)
    exact = _results(layer.astype(np.float64), x.astype(np.float64), dy.astype(np.float64),
                     "im2col")[0]
    layer = layer.astype(np.float32)
    for setting in ("im2col", "direct"):
        for expected, actual, what in zip(exact, _results(layer, x, dy, setting)[0],
                                          ("y", "dx", "dW", "db")):
            scale = max(1.0, np.abs(expected).max())
            assert np.abs(actual - expected).max() / scale < 1e-5, (setting, what)


def test_the_direct_sum_passes_the_gradient_check(numba_backend, algorithm):
    kernels.set_conv_algorithm("direct")
    rng = np.random.default_rng(3)
    layer = Conv2D(3, 5, 3, padding=1, rng=rng)
    layer.bias.data = rng.standard_normal(5).astype(np.float32)
    assert layer.algorithms((3, 6, 7)) == ["direct 3x3"]
    errors = gradcheck.check_layer(layer, rng.standard_normal((2, 3, 6, 7)))
    assert max(errors.values()) < 1e-7, errors


def test_the_rules_choose_the_direct_sum_for_a_first_layer_only(algorithm):
    from minicnn.kernels import numba_kernels, numpy_kernels

    def chosen(module, weight_shape, stride=(1, 1), padding=(1, 1)):
        found = module.conv_algorithm((8, weight_shape[1], 32, 32), weight_shape, stride, padding)
        return "im2col" if found is None else found.name

    assert chosen(numba_kernels, (32, 3, 3, 3)) == "direct 3x3"   # RGB in
    assert chosen(numba_kernels, (32, 1, 3, 3)) == "direct 3x3"   # grayscale in
    assert chosen(numba_kernels, (32, 16, 3, 3)) == "winograd F(4x4,3x3)"
    assert chosen(numba_kernels, (2, 3, 3, 3)) == "im2col"  # too few filters to share
    assert chosen(numba_kernels, (32, 3, 5, 5)) == "im2col"
    assert chosen(numba_kernels, (32, 3, 3, 3), stride=(2, 2)) == "im2col"
    assert chosen(numpy_kernels, (32, 3, 3, 3)) == "im2col"  # the reference backend
    kernels.set_conv_algorithm("direct")
    assert chosen(numba_kernels, (64, 64, 3, 3)) == "direct 3x3"  # forced: wherever it applies
    assert chosen(numba_kernels, (32, 3, 3, 3), padding=(3, 3)) == "im2col"
    assert chosen(numpy_kernels, (32, 3, 3, 3)) == "im2col"  # numba's kernel only
    kernels.set_conv_algorithm("im2col")
    assert chosen(numba_kernels, (32, 3, 3, 3)) == "im2col"
