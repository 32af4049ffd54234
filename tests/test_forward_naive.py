"""Conv2D and the pools against independent, deliberately naive loop implementations."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minicnn.layers import AvgPool2D, Conv2D, MaxPool2D


def naive_conv2d(x, weight, bias, stride, padding):
    n, c, h, w = x.shape
    f, _, kh, kw = weight.shape
    (sh, sw), (ph, pw) = stride, padding
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw))
    xp[:, :, ph:ph + h, pw:pw + w] = x
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    y = np.zeros((n, f, oh, ow))
    for i in range(n):
        for o in range(f):
            for r in range(oh):
                for s in range(ow):
                    total = 0.0 if bias is None else bias[o]
                    for ch in range(c):
                        for a in range(kh):
                            for b in range(kw):
                                total += weight[o, ch, a, b] * xp[i, ch, r * sh + a, s * sw + b]
                    y[i, o, r, s] = total
    return y


def naive_pool(x, kernel, stride, reduce):
    n, c, h, w = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    y = np.zeros((n, c, oh, ow))
    for i in range(n):
        for ch in range(c):
            for r in range(oh):
                for s in range(ow):
                    y[i, ch, r, s] = reduce(x[i, ch, r * sh:r * sh + kh, s * sw:s * sw + kw])
    return y


@given(n=st.integers(1, 2), c=st.integers(1, 3), f=st.integers(1, 3),
       kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)),
       stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       padding=st.tuples(st.integers(0, 2), st.integers(0, 2)),
       extra=st.tuples(st.integers(0, 4), st.integers(0, 4)), bias=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_conv2d_forward_matches_naive_loops(cpu_backend, n, c, f, kernel, stride, padding, extra,
                                           bias, seed):
    rng = np.random.default_rng(seed)
    h = max(1, kernel[0] - 2 * padding[0]) + extra[0]
    w = max(1, kernel[1] - 2 * padding[1]) + extra[1]
    layer = Conv2D(c, f, kernel, stride=stride, padding=padding, bias=bias).astype(np.float64)
    if bias:
        layer.bias.data = rng.standard_normal(f)
    x = rng.standard_normal((n, c, h, w))
    expected = naive_conv2d(x, layer.weight.data, layer.bias.data if bias else None, stride,
                            padding)
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layer_type, reduce", [(MaxPool2D, np.max), (AvgPool2D, np.mean)])
@given(n=st.integers(1, 2), c=st.integers(1, 3),
       kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)),
       stride=st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))),
       extra=st.tuples(st.integers(0, 5), st.integers(0, 5)), seed=st.integers(0, 2**32 - 1))
def test_pool_forward_matches_naive_loops(cpu_backend, layer_type, reduce, n, c, kernel, stride,
                                         extra, seed):
    x = np.random.default_rng(seed).standard_normal((n, c, kernel[0] + extra[0],
                                                     kernel[1] + extra[1]))
    layer = layer_type(kernel, stride)
    expected = naive_pool(x, kernel, stride or kernel, reduce)
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-12, atol=1e-12)


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
    np.testing.assert_array_equal(y, naive_pool(x, kernel, stride, np.max))

    dy = rng.standard_normal(y.shape)
    expected_dx = np.zeros_like(x)
    for index in np.ndindex(*y.shape):
        i, ch, r, s = index
        a, b = divmod(int(expected_argmax[index]), kw)
        expected_dx[i, ch, r * sh + a, s * sw + b] += dy[index]
    np.testing.assert_allclose(backend.kernels().maxpool_backward(dy, argmax, x.shape, kernel, stride),
                               expected_dx, rtol=1e-12, atol=1e-12)
