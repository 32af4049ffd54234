"""Every layer's backward pass against central differences, in float64, on drawn shapes.

A correct backward pass lands around 1e-9 relative error (float64, the five-point stencil with
step 1e-4); a wrong one is off by order 1. The bound (helpers.GRADCHECK_BOUND, 1e-6) leaves
orders of magnitude of room on both sides; ``python tests/gradcheck_margins.py`` measures the
worst case of every check over 50 draws.
"""

import copy

import numpy as np
import pytest
from helpers import assert_gradients_match, away_from_kinks, distinct_values, draws
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from minicnn import naive
from minicnn.gradcheck import check_layer, check_loss
from minicnn.layers import (
    ELU,
    GELU,
    LAYER_TYPES,
    AvgPool2D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    LeakyReLU,
    MaxPool2D,
    ReLU,
    Residual,
    Sequential,
    Sigmoid,
    Tanh,
)
from minicnn.losses import SoftmaxCrossEntropy

TESTED_LAYERS = set()


def covers(*layer_types):
    TESTED_LAYERS.update(cls.__name__ for cls in layer_types)
    return lambda test: test


seeds = st.integers(0, 2**32 - 1)


@st.composite
def conv_configs(draw):
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, kh - 2 * ph), 7))
    w = draw(st.integers(max(1, kw - 2 * pw), 7))
    return dict(
        n=draw(st.integers(1, 2)), c=draw(st.integers(1, 3)), f=draw(st.integers(1, 3)),
        kernel=(kh, kw), stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        padding=(ph, pw), hw=(h, w), bias=draw(st.booleans()),
    )


@covers(Conv2D)
@given(cfg=conv_configs(), seed=seeds)
def test_conv2d_gradients(cpu_backend, cfg, seed):
    rng = np.random.default_rng(seed)
    layer = Conv2D(cfg["c"], cfg["f"], cfg["kernel"], stride=cfg["stride"],
                   padding=cfg["padding"], bias=cfg["bias"], rng=rng)
    x = rng.standard_normal((cfg["n"], cfg["c"], *cfg["hw"]))
    errors = check_layer(layer, x, seed=seed % 1000)
    assert set(errors) == ({"x", "weight", "bias"} if cfg["bias"] else {"x", "weight"})
    assert_gradients_match(errors)
    # the second reference: the plain loops of minicnn.naive, which share no code with im2col
    layer.astype(np.float64)
    dy = rng.standard_normal(layer.forward(x).shape)
    dx = layer.backward(dy)
    expected_dx, expected_dW, expected_db = naive.conv2d_backward(
        dy, x, layer.weight.data, cfg["stride"], cfg["padding"])
    np.testing.assert_allclose(dx, expected_dx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.weight.grad, expected_dW, rtol=1e-10, atol=1e-12)
    if cfg["bias"]:
        np.testing.assert_allclose(layer.bias.grad, expected_db, rtol=1e-10, atol=1e-12)


@st.composite
def pool_configs(draw):
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    # stride < kernel gives overlapping windows, stride > kernel skips pixels
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    h, w = draw(st.integers(kh, 7)), draw(st.integers(kw, 7))
    return dict(n=draw(st.integers(1, 2)), c=draw(st.integers(1, 3)), kernel=(kh, kw),
                stride=stride, hw=(h, w))


@covers(MaxPool2D, AvgPool2D)
@pytest.mark.parametrize("pool", [MaxPool2D, AvgPool2D])
@given(cfg=pool_configs(), seed=seeds)
def test_pool_gradients(cpu_backend, pool, cfg, seed):
    rng = np.random.default_rng(seed)
    # distinct values: no two elements of a window tie, so the max is differentiable
    x = distinct_values(rng, (cfg["n"], cfg["c"], *cfg["hw"]))
    layer = pool(cfg["kernel"], cfg["stride"])
    assert_gradients_match(check_layer(layer, x, seed=seed % 1000))
    # the second reference: the plain loops of minicnn.naive
    naive_backward = {MaxPool2D: naive.maxpool2d_backward, AvgPool2D: naive.avgpool2d_backward}
    dy = rng.standard_normal(layer.forward(x).shape)
    np.testing.assert_allclose(layer.backward(dy),
                               naive_backward[pool](dy, x, cfg["kernel"], cfg["stride"]),
                               rtol=1e-12, atol=1e-12)


def test_overlapping_maxpool_accumulates_into_a_shared_winner():
    # a single large value wins all four overlapping 2x2 windows (stride 1) of a 3x3 input
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = 5.0
    pool = MaxPool2D(2, stride=1)
    pool.forward(x)
    dx = pool.backward(np.ones((1, 1, 2, 2)))
    assert dx[0, 0, 1, 1] == 4.0 and dx.sum() == 4.0


@covers(GlobalAvgPool2D, Flatten)
@pytest.mark.parametrize("layer_type", [GlobalAvgPool2D, Flatten])
@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 5), st.integers(1, 5)),
       seed=seeds)
def test_reshaping_and_global_pool_gradients(layer_type, shape, seed):
    x = np.random.default_rng(seed).standard_normal(shape)
    assert_gradients_match(check_layer(layer_type(), x, seed=seed % 1000))


@covers(Dense)
@given(n=st.integers(1, 4), fan_in=st.integers(1, 8), fan_out=st.integers(1, 6),
       bias=st.booleans(), seed=seeds)
def test_dense_gradients(n, fan_in, fan_out, bias, seed):
    rng = np.random.default_rng(seed)
    layer = Dense(fan_in, fan_out, bias=bias, rng=rng)
    errors = check_layer(layer, rng.standard_normal((n, fan_in)), seed=seed % 1000)
    assert len(errors) == (3 if bias else 2)
    assert_gradients_match(errors)


@covers(ReLU, LeakyReLU, Sigmoid, Tanh, ELU, GELU)
@pytest.mark.parametrize("make", [ReLU, lambda: LeakyReLU(0.1), LeakyReLU, Sigmoid, Tanh,
                                  lambda: ELU(0.5), GELU, lambda: GELU("tanh")],
                         ids=["relu", "leaky0.1", "leaky", "sigmoid", "tanh", "elu0.5", "gelu",
                              "gelu-tanh"])
@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4)),
       scale=st.floats(0.1, 1.0), seed=seeds)
def test_activation_gradients(make, shape, scale, seed):
    # |x| stays below ~5, where sigmoid/tanh slopes (>= 2e-4) are still resolvable by finite
    # differences; further out the true slope drowns in rounding noise, not the layer's error.
    x = away_from_kinks(np.random.default_rng(seed).standard_normal(shape) * scale)
    assert_gradients_match(check_layer(make(), x, seed=seed % 1000))


@covers(Dropout)
@given(p=st.floats(0.0, 0.9), shape=st.tuples(st.integers(1, 4), st.integers(1, 10)),
       training=st.booleans(), seed=seeds)
def test_dropout_gradients(p, shape, training, seed):
    x = np.random.default_rng(seed).standard_normal(shape)
    assert_gradients_match(check_layer(Dropout(p), x, training=training, seed=seed % 1000))


# BatchNorm's dx is a difference of three terms (dy, its mean, xhat times the mean of dy*xhat),
# so some entries land near zero, where the finite differences' rounding noise (~1e-11) is a
# large *relative* error; a step of 1e-3 (BatchNorm is smooth: the stencil's O(h^4) truncation
# stays negligible) keeps that noise 10x lower. Seen at step 1e-4: an entry of 7e-6 (against a
# largest entry of 2.1) at 6e-7 relative error.
BATCHNORM_STEP = 1e-3


@covers(BatchNorm2D)
@given(n=st.integers(1, 3), c=st.integers(1, 3), hw=st.tuples(st.integers(1, 4), st.integers(1, 4)),
       training=st.booleans(), seed=seeds)
def test_batchnorm_gradients(n, c, hw, training, seed):
    if training and n * hw[0] * hw[1] < 4:
        # with 2 values per channel the output is +-1 whatever x is (a zero gradient that
        # finite differences only see as noise); 4 values make the check meaningful
        n = 4
    rng = np.random.default_rng(seed)
    layer = BatchNorm2D(c)
    layer.gamma.data = rng.uniform(0.5, 2.0, c).astype(np.float32)
    layer.beta.data = rng.standard_normal(c).astype(np.float32)
    layer.running_mean.data = rng.standard_normal(c).astype(np.float32)
    layer.running_var.data = rng.uniform(0.5, 2.0, c).astype(np.float32)
    x = rng.standard_normal((n, c, *hw)) * 2 + 1
    errors = check_layer(layer, x, training=training, seed=seed % 1000, eps=BATCHNORM_STEP)
    assert set(errors) == {"x", "gamma", "beta"}
    assert_gradients_match(errors)


@pytest.mark.parametrize("training", [True, False])
@settings(max_examples=draws(10, minimum=5))
@given(seed=seeds)
def test_batchnorm_gradients_on_every_cpu_backend(cpu_backend, training, seed):
    """The numba backend has its own BatchNorm kernels (float64 here, like every gradcheck)."""
    rng = np.random.default_rng(seed)
    layer = BatchNorm2D(3)
    layer.gamma.data = rng.uniform(0.5, 2.0, 3).astype(np.float32)
    layer.beta.data = rng.standard_normal(3).astype(np.float32)
    x = rng.standard_normal((4, 3, 3, 2)) * 2 + 1
    assert_gradients_match(check_layer(layer, x, training=training, seed=seed % 1000,
                                       eps=BATCHNORM_STEP))


@st.composite
def residual_configs(draw):
    stride = draw(st.sampled_from([1, 2]))
    # at least 2 input channels: a 1x1 projection from one channel followed by BatchNorm has
    # one weight per filter, which the normalization cancels exactly (a zero gradient that
    # finite differences only see as noise)
    c = draw(st.integers(2, 3))
    # stride 2 always needs a projection; at stride 1 it is drawn, and without one the body
    # must keep the channel count
    projection = stride == 2 or draw(st.booleans())
    f = draw(st.integers(1, 3)) if projection else c
    n, training = draw(st.integers(1, 2)), draw(st.booleans())
    h, w = draw(st.integers(3, 5)), draw(st.integers(3, 5))
    if training and n * -(-h // stride) * -(-w // stride) < 4:
        n = 4  # BatchNorm needs a few values per channel (see test_batchnorm_gradients)
    return dict(stride=stride, c=c, f=f, n=n, hw=(h, w), training=training,
                projection=projection, projection_bn=draw(st.booleans()),
                activation=draw(st.sampled_from(["tanh", "relu"])))


def residual_block(cfg, rng):
    """Conv-BN-act-Conv-BN, plus a 1x1 (+ BN) projection when drawn: the ResNet basic block."""
    c, f, stride = cfg["c"], cfg["f"], cfg["stride"]
    body = [Conv2D(c, f, 3, stride=stride, padding=1, bias=False), BatchNorm2D(f),
            ReLU() if cfg["activation"] == "relu" else Tanh(),
            Conv2D(f, f, 3, padding=1, bias=False), BatchNorm2D(f)]
    shortcut = None
    if cfg["projection"]:
        shortcut = [Conv2D(c, f, 1, stride=stride, bias=False)]
        shortcut += [BatchNorm2D(f)] if cfg["projection_bn"] else []
    block = Residual(body, shortcut)
    block.initialize(rng)
    for layer in [*block.body, *(block.shortcut or [])]:
        if isinstance(layer, BatchNorm2D):  # not the identity: exercise gamma, beta, running stats
            layer.gamma.data = rng.uniform(0.5, 2.0, f).astype(np.float32)
            layer.beta.data = (rng.standard_normal(f) * 0.5).astype(np.float32)
            layer.running_mean.data = rng.standard_normal(f).astype(np.float32)
            layer.running_var.data = rng.uniform(0.5, 2.0, f).astype(np.float32)
    return block


@covers(Residual)
# each example checks up to ~300 gradient entries, each by four forward passes through a
# five-layer block: a third of the other tests' examples keeps this test near 10 s
@settings(max_examples=draws(3, minimum=30))
@given(cfg=residual_configs(), seed=seeds)
def test_residual_gradients(cfg, seed):
    """x + f(x) and proj(x) + f(x), stride 1 and 2: gradients of x and of every inner parameter."""
    rng = np.random.default_rng(seed)
    block = residual_block(cfg, rng)
    x = rng.standard_normal((cfg["n"], cfg["c"], *cfg["hw"]))
    dy = rng.standard_normal((cfg["n"], *block.output_shape(x.shape[1:])))

    # Two kinds of draws say nothing about the layer, so they are skipped. (1) ReLU inputs
    # within 1e-3 of the kink, where a finite-difference step may cross it. (2) Gradient
    # entries near zero: the two paths' gradients are *summed*, and where they (or BatchNorm's
    # terms) almost cancel, the rounding noise of finite differences (~1e-10 absolute) is a large
    # *relative* error. A wrong backward pass is off by order 1 everywhere, not only there.
    probe = copy.deepcopy(block).astype(np.float64)
    pre = x
    for layer in probe.body[:2]:
        pre = layer.forward(pre, training=cfg["training"])
    assume(cfg["activation"] != "relu" or np.abs(pre).min() > 1e-3)
    probe.forward(x, training=cfg["training"])
    grads = [probe.backward(dy)] + [p.grad for p in probe.parameters()]
    assume(all(np.abs(g).min() > 1e-4 * np.abs(g).max() for g in grads))

    errors = check_layer(block, x, dy=dy, training=cfg["training"], seed=seed % 1000)
    expected = {"x", "body.0.weight", "body.1.gamma", "body.1.beta", "body.3.weight",
                "body.4.gamma", "body.4.beta"}
    if cfg["projection"]:
        expected |= {"shortcut.0.weight"}
        expected |= {"shortcut.1.gamma", "shortcut.1.beta"} if cfg["projection_bn"] else set()
    assert set(errors) == expected
    assert_gradients_match(errors)


def test_residual_identity_path_passes_the_gradient_through():
    """With a body whose output ignores x (a zero convolution), dL/dx is exactly dy."""
    block = Residual([Conv2D(2, 2, 3, padding=1)])
    block.body[0].weight.data[:] = 0
    x = np.random.default_rng(0).standard_normal((2, 2, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(block.forward(x), x + block.body[0].bias.data[None, :, None, None])
    dy = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    np.testing.assert_array_equal(block.backward(dy), dy)


@given(n=st.integers(1, 6), classes=st.integers(2, 7), scale=st.floats(0.1, 2.0),
       smoothing=st.sampled_from([0.0, 0.1]), seed=seeds)
def test_softmax_cross_entropy_gradient(n, classes, scale, smoothing, seed):
    # Moderate logits: a class probability below ~1e-5 has a gradient smaller than the
    # rounding noise of finite differences. Large logits are covered by the stability tests.
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n, classes)) * scale
    labels = rng.integers(0, classes, n)
    assert_gradients_match(check_loss(SoftmaxCrossEntropy(smoothing), logits, labels))


@covers(Sequential)
# each example checks ~190 gradient entries by four passes through the nested network (half a
# second): a fifth of the profile's examples, per backend, keeps the test near 10 s
@settings(max_examples=draws(5, minimum=20))
@given(seed=seeds)
def test_sequential_gradients(cpu_backend, seed):
    """A Sequential is a layer: nested in another, its parameters are named by their path."""
    rng = np.random.default_rng(seed)
    model = Sequential([Conv2D(2, 3, 3, padding=1, rng=rng), Tanh(),
                        Sequential([AvgPool2D(2), Flatten()]), Dense(3 * 2 * 2, 4, rng=rng)])
    errors = check_layer(model, rng.standard_normal((2, 2, 4, 5)), seed=seed % 1000)
    assert set(errors) == {"x", "0.weight", "0.bias", "3.weight", "3.bias"}
    assert_gradients_match(errors)


def test_every_layer_type_has_a_gradient_check():
    assert TESTED_LAYERS == set(LAYER_TYPES), f"untested: {set(LAYER_TYPES) - TESTED_LAYERS}"


def test_gradcheck_catches_a_broken_backward():
    """The checker itself must fail a wrong gradient (here: ReLU's slope doubled)."""

    class BrokenReLU(ReLU):
        def _backward(self, dy, input_grad):
            return 2 * dy * self._cache

    x = away_from_kinks(np.random.default_rng(0).standard_normal((2, 5)))
    errors = check_layer(BrokenReLU(), x)
    assert errors["x"] > 0.1
