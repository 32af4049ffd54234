"""Sequential: whole-model gradients, training a tiny batch to zero loss, predict, summary, seeds."""

import numpy as np
import pytest
from helpers import assert_gradients_match, clear_input
from hypothesis import given
from hypothesis import strategies as st

import minicnn as mc
from minicnn.gradcheck import check_model
from minicnn.layers import (
    AvgPool2D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    MaxPool2D,
    ReLU,
)
from minicnn.losses import SoftmaxCrossEntropy


def small_cnn(seed=0):
    return mc.Sequential([
        Conv2D(2, 3, kernel_size=(3, 2), stride=1, padding=1), ReLU(), MaxPool2D(2),
        Flatten(), Dense(3 * 4 * 4, 4),
    ], seed=seed)


@given(seed=st.integers(0, 2**32 - 1))
def test_whole_model_gradient_conv_relu_pool_dense_loss(cpu_backend, seed):
    """d(loss)/d(x) and d(loss)/d(every parameter) of the full model and loss against the
    derivatives of the scalar loss (gradcheck.check_model), on an input drawn clear of ReLU's
    kink and of max-pool ties."""
    rng = np.random.default_rng(seed)
    model = small_cnn(seed % 1000).astype(np.float64)
    x = clear_input(model, rng, (3, 2, 8, 7))
    labels = rng.integers(0, 4, 3)
    errors = check_model(model, SoftmaxCrossEntropy(), x, labels, seed=seed % 1000)
    assert set(errors) == {"x", "0.weight", "0.bias", "4.weight", "4.bias"}
    assert_gradients_match(errors)


def test_whole_model_check_catches_a_broken_layer():
    """check_model must fail a model whose max pool sends the gradient to the wrong pixel."""

    class ShiftedMaxPool(MaxPool2D):
        def _backward(self, dy, input_grad):
            return np.roll(super()._backward(dy, input_grad), 1, axis=-1)

    rng = np.random.default_rng(0)
    model = small_cnn(0).astype(np.float64)
    model.layers[2] = ShiftedMaxPool(2)
    x = clear_input(model, rng, (3, 2, 8, 7))
    errors = check_model(model, SoftmaxCrossEntropy(), x, rng.integers(0, 4, 3))
    assert errors["x"] > 1e-2 and errors["0.weight"] > 1e-2 and errors["4.weight"] < 1e-6


def test_overfits_a_tiny_batch(cpu_backend):
    """A small CNN must drive the loss on 32 fixed images close to zero."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 4, 32)
    model = mc.Sequential([
        Conv2D(1, 8, 3, padding=1), ReLU(), MaxPool2D(2),
        Conv2D(8, 16, 3, padding=1), BatchNorm2D(16), ReLU(), AvgPool2D(2),
        Flatten(), Dense(16 * 2 * 2, 32), ReLU(), Dense(32, 4),
    ], seed=0)
    loss_fn = SoftmaxCrossEntropy()
    opt = mc.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(150):
        loss = loss_fn.forward(model.forward(x, training=True), y)
        first = loss if first is None else first
        opt.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()
    assert first > 1.0
    assert loss < 0.02
    assert (model.predict(x).argmax(axis=1) == y).all()


def test_same_seed_same_model_and_same_training():
    def run():
        model = mc.Sequential([Conv2D(1, 4, 3), ReLU(), Flatten(), Dense(4 * 4 * 4, 3),
                               Dropout(0.5), Dense(3, 2)], seed=42)
        x = np.random.default_rng(1).standard_normal((8, 1, 6, 6)).astype(np.float32)
        opt = mc.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        loss_fn = SoftmaxCrossEntropy()
        for _ in range(3):
            loss_fn.forward(model.forward(x, training=True), np.arange(8) % 2)
            model.backward(loss_fn.backward())
            opt.step()
        return [p.data.copy() for p in model.parameters()]

    a, b = run(), run()
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    other = mc.Sequential([Conv2D(1, 4, 3)], seed=43)
    assert not np.array_equal(other.layers[0].weight.data, a[0])


def test_he_initialization_statistics():
    model = mc.Sequential([Conv2D(64, 128, 3), Dense(4096, 512)], seed=0)
    conv, dense = model.layers
    assert np.std(conv.weight.data) == pytest.approx(np.sqrt(2 / (64 * 9)), rel=0.02)
    assert np.std(dense.weight.data) == pytest.approx(np.sqrt(2 / 4096), rel=0.02)
    assert not conv.bias.data.any()


def test_predict_runs_in_batches_and_returns_probabilities(monkeypatch):
    model = mc.Sequential([Conv2D(1, 2, 3), ReLU(), GlobalAvgPool2D(), Dense(2, 3)], seed=0)
    x = np.random.default_rng(0).random((1000, 1, 6, 6)).astype(np.float32)
    seen = []
    original = model.forward

    def spy(batch, training=False, **options):
        seen.append(batch.shape[0])
        return original(batch, training, **options)

    monkeypatch.setattr(model, "forward", spy)
    probs = model.predict(x, batch_size=300)
    assert seen == [300, 300, 300, 100]
    assert probs.shape == (1000, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
    monkeypatch.undo()
    np.testing.assert_allclose(probs, model.predict(x), rtol=1e-6)
    with pytest.raises(ValueError, match="batch_size"):
        model.predict(x, batch_size=0)


def test_first_not_finite_names_the_layer_where_a_nan_appears():
    model = mc.Sequential([Dense(4, 3), ReLU(), Dense(3, 2)], seed=0)
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    words = "every layer's output is finite in inference mode"
    assert model.first_not_finite(x).startswith(words)
    logits = model.forward(x, training=True)
    dy = np.ones_like(logits)
    dy[0, 1] = np.inf  # the backward pass replayed over the caches: the last layer's grads first
    assert model.first_not_finite(x, dy) == ("layer 2 (Dense) is the first to produce a "
                                             "non-finite gradient, for its weight (backward pass)")
    # finite input and weights whose every product overflows float32, whatever the order of sums
    huge = np.full_like(x, 3e38)
    model.layers[0].weight.data[...] = 10
    with np.errstate(over="ignore", invalid="ignore"):
        assert model.first_not_finite(huge).startswith("layer 0 (Dense) is the first to output")
    model.layers[2].bias.data[1] = np.nan
    assert model.first_not_finite(x) == "layer 2 (Dense) has non-finite bias values"


def test_summary_reports_shapes_parameters_and_flops():
    model = mc.Sequential([
        Conv2D(1, 32, 3, padding=1), ReLU(), MaxPool2D(2),
        Conv2D(32, 64, 3, padding=1), ReLU(), MaxPool2D(2),
        Flatten(), Dense(64 * 7 * 7, 128), ReLU(), Dropout(0.5), Dense(128, 10),
    ], seed=0)
    lines = []
    text = model.summary(input_shape=(1, 28, 28), print_fn=lines.append)
    assert lines == [text]
    assert "(N, 32, 28, 28)" in text and "(N, 64, 7, 7)" in text and "(N, 10)" in text
    assert "421,642 parameters" in text
    assert model.num_parameters() == 421_642
    # conv2: 2 * (32*3*3) * 64 * 14*14 multiply-adds plus one bias add per output
    assert f"{2 * 288 * 64 * 196 + 64 * 196:,}" in text
    with pytest.raises(ValueError, match="input shape unknown"):
        mc.Sequential([Dense(2, 2)]).summary()


def test_backward_overwrites_gradients_instead_of_accumulating():
    model = mc.Sequential([Dense(3, 2)], seed=0)
    x = np.ones((4, 3), np.float32)
    model.forward(x)
    model.backward(np.ones((4, 2), np.float32))
    first = model.layers[0].weight.grad.copy()
    model.forward(x)
    model.backward(np.ones((4, 2), np.float32))
    np.testing.assert_array_equal(model.layers[0].weight.grad, first)
