"""Every accelerated backend computes what the NumPy reference computes.

The NumPy kernels are the readable definition; numba and cupy must agree with them on every
kernel, on whole layers (forward and backward) and on a short training run. The kernel checks
draw configurations with hypothesis: non-square kernels, strides > 1, padding wider than the
kernel, overlapping pools (stride < kernel) and pools with gaps (stride > kernel). numba adds
in the reference's order, so most of its kernels are also held to bit-for-bit equality.

Input values are continuous random floats, so max-pool windows have no ties (probability ~0)
and the argmax is unambiguous.
"""

from __future__ import annotations

import contextlib
import importlib.util

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minicnn as mc
from minicnn import backend
from minicnn.kernels import conv_output_size
from minicnn.kernels import numpy_kernels as reference
from minicnn.layers import AvgPool2D, BatchNorm2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU

TOLERANCE = {
    np.float32: {"rtol": 1e-5, "atol": 1e-6},
    np.float64: {"rtol": 1e-12, "atol": 1e-12},
}
DTYPES = pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
# The function-scoped autouse fixtures of conftest.py hold no per-example state.
SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def _skip_reason(name: str) -> str | None:
    """Why backend ``name`` cannot be tested here, or None when it can."""
    if name == "cupy" and importlib.util.find_spec("minicnn.kernels.cupy_kernels") is None:
        return "the cupy backend has no kernel module (minicnn.kernels.cupy_kernels) yet"
    if name not in backend.available_backends():
        try:  # set_backend raises the error that says what is missing
            mc.set_backend(mc.set_backend(name))
        except backend.BackendUnavailableError as err:
            return str(err)
    return None


@pytest.fixture(scope="module", params=[
    pytest.param(name, marks=[pytest.mark.gpu] if name == "cupy" else [])
    for name in backend.BACKENDS if name != "numpy"])
def name(request):
    """The name of each non-reference backend, skipped (with the reason) where it cannot run."""
    reason = _skip_reason(request.param)
    if reason is not None:
        pytest.skip(reason)
    return request.param


@contextlib.contextmanager
def using_backend(name):
    """Make ``name`` the active backend inside the block, restoring the previous one after."""
    previous = mc.set_backend(name)
    try:
        yield
    finally:
        mc.set_backend(previous)


def _on(name, array):
    return backend.to_device(array, name)


def _close(actual, expected, dtype):
    actual = backend.to_numpy(actual)
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, **TOLERANCE[dtype])


# --- configurations -------------------------------------------------------------------------


@st.composite
def conv_configs(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, 3)), draw(st.integers(0, 3))  # may exceed the kernel
    h = draw(st.integers(max(1, kh - 2 * ph), 9))
    w = draw(st.integers(max(1, kw - 2 * pw), 9))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 4)), h, w)
    return shape, (kh, kw), (sh, sw), (ph, pw), draw(st.integers(0, 2**32 - 1))


@st.composite
def pool_configs(draw):
    if draw(st.booleans()):  # the common 2x2 window at stride 2, which numba runs on its own path
        kh = kw = sh = sw = 2
    else:
        kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
        sh, sw = draw(st.integers(1, 4)), draw(st.integers(1, 4))  # < kernel overlaps, > gaps
    h, w = draw(st.integers(kh, 10)), draw(st.integers(kw, 10))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 4)), h, w)
    return shape, (kh, kw), (sh, sw), draw(st.integers(0, 2**32 - 1))


def _normal(seed, shape, dtype):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# --- kernels --------------------------------------------------------------------------------


@DTYPES
@SETTINGS
@given(config=conv_configs())
def test_im2col_matches_reference(name, dtype, config):
    shape, kernel, stride, padding, seed = config
    kernels = backend.kernels(name)
    x = _normal(seed, shape, dtype)
    expected = reference.im2col(x, kernel, stride, padding)
    _close(kernels.im2col(_on(name, x), kernel, stride, padding), expected, dtype)


@DTYPES
@SETTINGS
@given(config=conv_configs())
def test_col2im_matches_reference(name, dtype, config):
    shape, kernel, stride, padding, seed = config
    n, c = shape[:2]
    oh, ow = (conv_output_size(shape[2 + a], kernel[a], stride[a], padding[a])
              for a in (0, 1))
    cols = _normal(seed, (c * kernel[0] * kernel[1], n * oh * ow), dtype)
    expected = reference.col2im(cols, shape, kernel, stride, padding)
    actual = backend.kernels(name).col2im(_on(name, cols), shape, kernel, stride, padding)
    _close(actual, np.ascontiguousarray(expected), dtype)


@DTYPES
@SETTINGS
@given(config=pool_configs())
def test_maxpool_matches_reference(name, dtype, config):
    shape, kernel, stride, seed = config
    kernels = backend.kernels(name)
    x = _normal(seed, shape, dtype)
    y_ref, argmax_ref = reference.maxpool_forward(x, kernel, stride)
    y, argmax = kernels.maxpool_forward(_on(name, x), kernel, stride)
    _close(y, y_ref, dtype)
    argmax = backend.to_numpy(argmax)
    assert argmax.dtype == np.int32
    np.testing.assert_array_equal(argmax, argmax_ref)

    dy = _normal(seed + 1, y_ref.shape, dtype)
    expected = reference.maxpool_backward(dy, argmax_ref, shape, kernel, stride)
    actual = kernels.maxpool_backward(_on(name, dy), _on(name, argmax_ref), shape, kernel, stride)
    _close(actual, expected, dtype)
    # with a ReLU before the pool (layers.fused): its mask, from its input x (half negative)
    expected = reference.maxpool_relu_backward(dy, argmax_ref, x, kernel, stride)
    actual = kernels.maxpool_relu_backward(_on(name, dy), _on(name, argmax_ref), _on(name, x),
                                           kernel, stride)
    _close(actual, expected, dtype)


@DTYPES
@SETTINGS
@given(config=pool_configs())
def test_avgpool_matches_reference(name, dtype, config):
    shape, kernel, stride, seed = config
    kernels = backend.kernels(name)
    x = _normal(seed, shape, dtype)
    y_ref = reference.avgpool_forward(x, kernel, stride)
    _close(kernels.avgpool_forward(_on(name, x), kernel, stride), y_ref, dtype)

    dy = _normal(seed + 1, y_ref.shape, dtype)
    expected = reference.avgpool_backward(dy, shape, kernel, stride)
    _close(kernels.avgpool_backward(_on(name, dy), shape, kernel, stride), expected, dtype)


@pytest.mark.parametrize("kernel, stride", [((3, 3), (1, 1)), ((3, 2), (2, 1)), ((4, 4), (2, 3))])
def test_overlapping_maxpool_backward_sums_every_win(name, kernel, stride):
    """With stride < kernel one pixel can win many windows; all their gradients must add up."""
    shape = (4, 8, 19, 17)  # enough planes that every core gets work at once
    x = _normal(7, shape, np.float32)
    _, argmax = reference.maxpool_forward(x, kernel, stride)
    dy = _normal(8, argmax.shape, np.float32)
    expected = reference.maxpool_backward(dy, argmax, shape, kernel, stride)
    actual = backend.kernels(name).maxpool_backward(_on(name, dy), _on(name, argmax), shape,
                                                    kernel, stride)
    _close(actual, expected, np.float32)


CONFIGS = [  # (x shape, kernel, stride, padding)
    ((2, 3, 9, 8), (3, 3), (1, 1), (1, 1)),
    ((2, 2, 9, 7), (3, 2), (2, 1), (2, 0)),
    ((1, 3, 7, 10), (2, 3), (1, 2), (3, 1)),
    ((2, 4, 8, 8), (2, 2), (2, 2), (0, 0)),
]


@pytest.mark.skipif(not backend.backend_available("numba"), reason="numba is not installed")
@pytest.mark.parametrize("shape, kernel, stride, padding", CONFIGS)
def test_numba_kernels_equal_reference_bit_for_bit(shape, kernel, stride, padding):
    """numba sums in the reference's order (see numba_kernels' docstring): no rounding drift.

    Average-pool forward is left out: np.mean picks its summation order from the memory layout.
    """
    numba_kernels = backend.kernels("numba")
    x = _normal(0, shape, np.float32)
    cols = reference.im2col(x, kernel, stride, padding)
    np.testing.assert_array_equal(numba_kernels.im2col(x, kernel, stride, padding), cols)
    dcols = _normal(1, cols.shape, np.float32)
    np.testing.assert_array_equal(numba_kernels.col2im(dcols, shape, kernel, stride, padding),
                                  reference.col2im(dcols, shape, kernel, stride, padding))

    y, argmax = reference.maxpool_forward(x, kernel, stride)
    dy = _normal(2, y.shape, np.float32)
    for actual, expected in [
        (numba_kernels.maxpool_forward(x, kernel, stride)[0], y),
        (numba_kernels.maxpool_backward(dy, argmax, shape, kernel, stride),
         reference.maxpool_backward(dy, argmax, shape, kernel, stride)),
        (numba_kernels.avgpool_backward(dy, shape, kernel, stride),
         reference.avgpool_backward(dy, shape, kernel, stride)),
    ]:
        np.testing.assert_array_equal(actual, expected)


# --- layers ---------------------------------------------------------------------------------


def _forward_backward(name, make_layer, x, seed):
    """Output, input gradient and parameter gradients of a fresh layer on backend ``name``."""
    with using_backend(name):
        layer = make_layer()
        y = layer.forward(_on(name, x), training=True)
        dy = _normal(seed, y.shape, x.dtype)
        dx = layer.backward(_on(name, dy))
        grads = [backend.to_numpy(p.grad) for p in layer.parameters()]
        return backend.to_numpy(y), backend.to_numpy(dx), grads


def _check_layer(name, make_layer, x, seed, dtype):
    y_ref, dx_ref, grads_ref = _forward_backward("numpy", make_layer, x, seed)
    y, dx, grads = _forward_backward(name, make_layer, x, seed)
    _close(y, y_ref, dtype)
    _close(dx, dx_ref, dtype)
    assert len(grads) == len(grads_ref)
    for grad, grad_ref in zip(grads, grads_ref):
        _close(grad, grad_ref, dtype)


@DTYPES
@settings(SETTINGS, max_examples=15)
@given(config=conv_configs(), out_channels=st.integers(1, 5))
def test_conv2d_layer_matches_numpy_backend(name, dtype, config, out_channels):
    shape, kernel, stride, padding, seed = config

    def make_layer():
        return Conv2D(shape[1], out_channels, kernel, stride=stride, padding=padding,
                      dtype=dtype, rng=np.random.default_rng(seed))

    _check_layer(name, make_layer, _normal(seed, shape, dtype), seed + 1, dtype)


@DTYPES
@pytest.mark.parametrize("pool", [MaxPool2D, AvgPool2D])
@settings(SETTINGS, max_examples=15)
@given(config=pool_configs())
def test_pool_layers_match_numpy_backend(name, dtype, pool, config):
    shape, kernel, stride, seed = config
    _check_layer(name, lambda: pool(kernel, stride=stride), _normal(seed, shape, dtype),
                 seed + 1, dtype)


@DTYPES
@settings(SETTINGS, max_examples=15)
@given(n=st.integers(1, 4), c=st.integers(1, 5), hw=st.tuples(st.integers(1, 6), st.integers(1, 6)),
       training=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_batchnorm_layer_matches_numpy_backend(name, dtype, n, c, hw, training, seed):
    """Training (batch statistics, running-stat update) and inference (running statistics).
    numba sums in float64, so float32 results differ from NumPy's float32 sums in the last
    bits; the centred dx formula amplifies that near zero, hence the looser float32 bound."""
    if training and n * hw[0] * hw[1] < 2:
        n = 2
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, c, *hw)) * 3 + 2).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    state = [rng.uniform(0.5, 2, c), rng.standard_normal(c), rng.standard_normal(c),
             rng.uniform(0.5, 2, c)]
    results = {}
    for backend_name in ("numpy", name):
        with using_backend(backend_name):
            layer = BatchNorm2D(c, dtype=dtype)
            for array, value in zip((layer.gamma, layer.beta, layer.running_mean,
                                     layer.running_var), state):
                array.data = _on(backend_name, value.astype(dtype))
            y = layer.forward(_on(backend_name, x), training=training)
            dx = layer.backward(_on(backend_name, dy))
            results[backend_name] = [backend.to_numpy(a) for a in (
                y, dx, layer.gamma.grad, layer.beta.grad, layer.running_mean.data,
                layer.running_var.data)]
    tolerance = {"rtol": 1e-4, "atol": 1e-4} if dtype == np.float32 else TOLERANCE[dtype]
    for actual, expected in zip(results[name], results["numpy"]):
        assert actual.dtype == expected.dtype == dtype
        np.testing.assert_allclose(actual, expected, **tolerance)


def test_using_backend_restores_the_previous_backend(name):
    before = mc.get_backend()
    with pytest.raises(RuntimeError), using_backend(name):
        assert mc.get_backend() == name
        raise RuntimeError("leave the block early")
    assert mc.get_backend() == before


# --- training -------------------------------------------------------------------------------


def _loss_curve(name, x, labels, steps=6):
    with using_backend(name):
        model = mc.Sequential([
            Conv2D(1, 4, 3, padding=1), ReLU(), MaxPool2D(2),
            Conv2D(4, 8, (3, 2), stride=(1, 2), padding=(1, 0)), ReLU(), AvgPool2D(2, stride=1),
            Flatten(), Dense(8 * 5 * 2, 10),
        ], seed=0)
        loss_fn = mc.losses.SoftmaxCrossEntropy()
        optimizer = mc.optim.Adam(model.parameters(), lr=1e-2)
        x, labels = _on(name, x), _on(name, labels)
        losses = []
        for _ in range(steps):
            losses.append(loss_fn.forward(model.forward(x, training=True), labels))
            optimizer.zero_grad()
            model.backward(loss_fn.backward())
            optimizer.step()
        weights = [backend.to_numpy(p.data) for p in model.parameters()]
        return np.array(losses), weights


def test_training_run_matches_numpy_backend(name):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 1, 12, 12)).astype(np.float32)
    labels = rng.integers(0, 10, size=16)
    losses_ref, weights_ref = _loss_curve("numpy", x, labels)
    losses, weights = _loss_curve(name, x, labels)
    assert losses_ref[-1] < losses_ref[0]  # the run does learn, so the comparison means something
    np.testing.assert_allclose(losses, losses_ref, rtol=1e-5, atol=1e-6)
    for weight, weight_ref in zip(weights, weights_ref):
        _close(weight, weight_ref, np.float32)


# --- layout, activation and optimizer kernels -------------------------------------------------


@DTYPES
@SETTINGS
@given(n=st.integers(1, 3), f=st.integers(1, 5), oh=st.integers(1, 6), ow=st.integers(1, 6),
       bias=st.booleans(), rectify=st.booleans(), residual=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_layout_kernels(name, dtype, n, f, oh, ow, bias, rectify, residual, seed):
    rng = np.random.default_rng(seed)
    kernels = backend.kernels(name)
    out = rng.standard_normal((f, n * oh * ow)).astype(dtype)
    b = rng.standard_normal(f).astype(dtype) if bias else None
    r = rng.standard_normal((n, f, oh, ow)).astype(dtype) if residual else None
    expected = reference.cnhw_to_nchw(out, b, n, oh, ow, rectify, r)
    definition = out.reshape(f, n, oh, ow).transpose(1, 0, 2, 3) + (0 if b is None else b[:, None, None])
    definition = definition + (0 if r is None else r)
    np.testing.assert_array_equal(  # the definition, spelled out once
        expected, np.maximum(definition, 0) if rectify else definition)
    _close(kernels.cnhw_to_nchw(_on(name, out), _on(name, b), n, oh, ow, rectify, _on(name, r)),
           expected, dtype)
    dy = rng.standard_normal((n, f, oh, ow)).astype(dtype)
    expected_out = reference.nchw_to_cnhw(dy)
    np.testing.assert_array_equal(expected_out, dy.transpose(1, 0, 2, 3).reshape(f, -1))
    _close(kernels.nchw_to_cnhw(_on(name, dy)), expected_out, dtype)


@DTYPES
@SETTINGS
@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 5)),
       seed=st.integers(0, 2**32 - 1))
def test_relu_kernels(name, dtype, shape, seed):
    rng = np.random.default_rng(seed)
    kernels = backend.kernels(name)
    x = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    y = reference.relu_forward(x)
    _close(kernels.relu_forward(_on(name, x)), y, dtype)
    _close(kernels.relu_backward(_on(name, dy), _on(name, y)), reference.relu_backward(dy, y), dtype)


@DTYPES
@SETTINGS
@given(shape=st.tuples(st.integers(0, 3), st.integers(1, 5), st.integers(1, 9), st.integers(1, 9)),
       seed=st.integers(0, 2**32 - 1))
def test_channel_sum(name, dtype, shape, seed):
    """A convolution's dL/db: dy summed over samples and pixels, channel by channel."""
    rng = np.random.default_rng(seed)
    dy = (rng.standard_normal(shape) + 3).astype(dtype)  # sums far from 0: relative errors
    expected = reference.channel_sum(dy)
    definition = [dy[:, c].astype(np.float64).sum() for c in range(shape[1])]
    _close(expected, np.array(definition, dtype), dtype)  # the definition, spelled out once
    _close(backend.kernels(name).channel_sum(_on(name, dy)), expected, dtype)


@DTYPES
@pytest.mark.parametrize("weight_decay, decoupled", [(0.0, False), (0.1, False), (0.1, True)])
def test_adam_kernel(name, dtype, weight_decay, decoupled):
    rng = np.random.default_rng(0)
    kernels = backend.kernels(name)
    # the parameter and Adam's two moment estimates, all updated in place by the kernel
    arrays = [rng.standard_normal((7, 5)).astype(dtype), np.zeros((7, 5), dtype),
              np.zeros((7, 5), dtype)]
    ours = [_on(name, a.copy()) for a in arrays]
    for step in range(1, 4):
        grad = rng.standard_normal((7, 5)).astype(dtype)
        args = (0.01, 0.9, 0.999, 1e-8, step, weight_decay, decoupled)
        reference.adam_update(arrays[0], grad, arrays[1], arrays[2], *args)
        kernels.adam_update(ours[0], _on(name, grad), ours[1], ours[2], *args)
    for mine, expected in zip(ours, arrays):
        np.testing.assert_allclose(backend.to_numpy(mine), expected, rtol=1e-5 if dtype == np.float32
                                   else 1e-12, atol=1e-7)


@pytest.mark.gpu
def test_a_gpu_run_reading_its_steps_every_20_trains_as_one_reading_every_step():
    """The cupy backend's default read_every (steps read 20 at a time, the GPU never waiting
    inside a step) against reading every step: the same weights and epoch totals; the BatchNorm
    + ReLU pairs run fused on the GPU in both."""
    reason = _skip_reason("cupy")
    if reason is not None:
        pytest.skip(reason)
    from minicnn.layers import BatchNorm2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU
    from minicnn.losses import SoftmaxCrossEntropy

    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 1, 12, 12)).astype(np.float32)
    y = rng.integers(0, 3, 200)
    runs = []
    for read_every in (None, 1):
        model = mc.Sequential([Conv2D(1, 8, 3, padding=1), BatchNorm2D(8), ReLU(), MaxPool2D(2),
                               Flatten(), Dense(8 * 6 * 6, 3)], seed=0).to("cupy")
        history = mc.fit(model, SoftmaxCrossEntropy(), mc.optim.Adam(model.parameters()), (x, y),
                         epochs=2, batch_size=16, verbose=0, read_every=read_every,
                         record_steps=False)  # recorded steps: tests/test_capture.py
        runs.append(([backend.to_numpy(p.data) for p in model.parameters()], history))
    (weights, history), (weights_1, history_1) = runs
    for a, b in zip(weights, weights_1):
        np.testing.assert_array_equal(a, b)
    assert history["train_loss"] == history_1["train_loss"]
