"""Conv2D's memory behaviour: reused buffers, chunked batches, skipped input gradients."""

import numpy as np
import pytest

import minicnn as mc
from minicnn.layers import Conv2D, Dense, Flatten


@pytest.fixture
def conv_and_data():
    rng = np.random.default_rng(0)
    conv = Conv2D(3, 5, (3, 2), stride=(2, 1), padding=1, rng=rng)
    x = rng.standard_normal((7, 3, 9, 8)).astype(np.float32)
    return conv, x, rng.standard_normal((7, 5, 5, 9)).astype(np.float32)


def test_chunked_batches_give_the_same_results(cpu_backend, conv_and_data):
    conv, x, dy = conv_and_data
    y_whole = conv.forward(x)
    dx_whole = conv.backward(dy)
    dw_whole, db_whole = conv.weight.grad.copy(), conv.bias.grad.copy()

    previous = mc.backend.set_im2col_budget(3 * 45 * 18 * 4)  # 3 samples of 45 rows x 18 floats
    try:
        assert conv._samples_per_chunk(7, 4) == 3
        y = conv.forward(x)
        dx = conv.backward(dy)
    finally:
        mc.backend.set_im2col_budget(previous)
    np.testing.assert_allclose(y, y_whole, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dx, dx_whole, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(conv.weight.grad, dw_whole, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(conv.bias.grad, db_whole, rtol=1e-5, atol=1e-5)  # float32 sums


def test_im2col_buffer_is_reused_across_batches(conv_and_data):
    conv, x, dy = conv_and_data
    conv.forward(x)
    buffer = conv._buffers["cols"]
    conv.forward(x[:4])  # a smaller batch fits in the same buffer
    conv.forward(x)
    assert conv._buffers["cols"] is buffer


def test_input_gradient_can_be_skipped(conv_and_data):
    conv, x, dy = conv_and_data
    conv.forward(x)
    assert conv.backward(dy, input_grad=False) is None
    dw = conv.weight.grad.copy()
    conv.forward(x)
    assert conv.backward(dy) is not None
    np.testing.assert_array_equal(conv.weight.grad, dw)

    model = mc.Sequential([Conv2D(3, 2, 3), Flatten(), Dense(2 * 7 * 6, 2)], seed=0)
    model.forward(x)
    assert model.backward(np.ones((7, 2), np.float32), input_grad=False) is None
    assert model.layers[0].weight.grad.any()


def test_budget_must_be_positive():
    with pytest.raises(ValueError, match="positive number of bytes"):
        mc.backend.set_im2col_budget(0)
