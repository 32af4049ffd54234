"""Conv2D and the pools against minicnn.naive: the same formulas as plain loops, forward and
backward, sharing no code with the kernels (im2col, col2im, the pooling kernels)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minicnn import naive
from minicnn.layers import AvgPool2D, Conv2D, MaxPool2D


@given(n=st.integers(1, 2), c=st.integers(1, 3), f=st.integers(1, 3),
       kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)),
       stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       padding=st.tuples(st.integers(0, 2), st.integers(0, 2)),
       extra=st.tuples(st.integers(0, 4), st.integers(0, 4)), bias=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_conv2d_matches_naive_loops(cpu_backend, n, c, f, kernel, stride, padding, extra, bias,
                                   seed):
    rng = np.random.default_rng(seed)
    h = max(1, kernel[0] - 2 * padding[0]) + extra[0]
    w = max(1, kernel[1] - 2 * padding[1]) + extra[1]
    layer = Conv2D(c, f, kernel, stride=stride, padding=padding, bias=bias).astype(np.float64)
    if bias:
        layer.bias.data = rng.standard_normal(f)
    x = rng.standard_normal((n, c, h, w))
    expected = naive.conv2d_forward(x, layer.weight.data, layer.bias.data if bias else None,
                                    stride, padding)
    y = layer.forward(x)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)

    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    expected_dx, expected_dW, expected_db = naive.conv2d_backward(dy, x, layer.weight.data,
                                                                  stride, padding)
    np.testing.assert_allclose(dx, expected_dx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.weight.grad, expected_dW, rtol=1e-10, atol=1e-12)
    if bias:
        np.testing.assert_allclose(layer.bias.grad, expected_db, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("layer_type, naive_forward, naive_backward", [
    (MaxPool2D, naive.maxpool2d_forward, naive.maxpool2d_backward),
    (AvgPool2D, naive.avgpool2d_forward, naive.avgpool2d_backward),
], ids=["max", "avg"])
@given(n=st.integers(1, 2), c=st.integers(1, 3),
       kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)),
       stride=st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))),
       extra=st.tuples(st.integers(0, 5), st.integers(0, 5)), seed=st.integers(0, 2**32 - 1))
def test_pool_matches_naive_loops(cpu_backend, layer_type, naive_forward, naive_backward, n, c,
                                  kernel, stride, extra, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, kernel[0] + extra[0], kernel[1] + extra[1]))
    layer = layer_type(kernel, stride)
    y = layer.forward(x)
    np.testing.assert_allclose(y, naive_forward(x, kernel, stride), rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    np.testing.assert_allclose(layer.backward(dy), naive_backward(dy, x, kernel, stride),
                               rtol=1e-12, atol=1e-12)


def test_float32_stays_float32(cpu_backend):
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    conv = Conv2D(3, 4, 3, padding=1)
    for layer in (conv, MaxPool2D(2), AvgPool2D(2)):
        y = layer.forward(x)
        assert y.dtype == np.float32
        assert layer.backward(np.ones_like(y)).dtype == np.float32
    assert conv.weight.grad.dtype == np.float32


# 2x2 windows at stride 2 (the common case, which the numba backend runs on a path of its own)
# are drawn about half of the time
@given(n=st.integers(1, 2), c=st.integers(1, 3),
       kernel=st.one_of(st.just((2, 2)), st.tuples(st.integers(1, 4), st.integers(1, 4))),
       stride=st.one_of(st.just((2, 2)), st.tuples(st.integers(1, 3), st.integers(1, 3))),
       extra=st.tuples(st.integers(0, 5), st.integers(0, 5)), nans=st.integers(0, 3),
       seed=st.integers(0, 2**32 - 1))
def test_maxpool_argmax_picks_the_first_maximum_or_nan(cpu_backend, n, c, kernel, stride, extra,
                                                       nans, seed):
    """Few distinct values (many ties) and a few NaNs: the winner is the first maximum in
    row-major window order, or the first NaN (np.argmax's rule), and dy goes to that pixel."""
    from minicnn import backend

    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, (n, c, kernel[0] + extra[0], kernel[1] + extra[1])).astype(np.float64)
    x.reshape(-1)[rng.integers(0, x.size, nans)] = np.nan
    y, argmax = backend.kernels().maxpool_forward(x, kernel, stride)
    (kh, kw), (sh, sw) = kernel, stride
    expected_argmax = np.zeros(y.shape, dtype=np.int64)
    for index in np.ndindex(*y.shape):
        i, ch, r, s = index
        window = x[i, ch, r * sh:r * sh + kh, s * sw:s * sw + kw].ravel()
        expected_argmax[index] = np.argmax(window)
    np.testing.assert_array_equal(argmax, expected_argmax)
    np.testing.assert_array_equal(y, naive.maxpool2d_forward(x, kernel, stride))

    dy = rng.standard_normal(y.shape)
    expected_dx = np.zeros_like(x)
    for index in np.ndindex(*y.shape):
        i, ch, r, s = index
        a, b = divmod(int(expected_argmax[index]), kw)
        expected_dx[i, ch, r * sh + a, s * sw + b] += dy[index]
    np.testing.assert_allclose(backend.kernels().maxpool_backward(dy, argmax, x.shape, kernel, stride),
                               expected_dx, rtol=1e-12, atol=1e-12)
