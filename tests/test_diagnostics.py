"""Gradient-flow diagnostics: what they record, that they leave training unchanged, and that
they recognise a vanishing, an exploding and a dead network (and stay quiet on a healthy one)."""

import json

import numpy as np
import pytest

import minicnn as mc
from minicnn.diagnostics import GradientFlow, gradient_flow_warnings
from minicnn.layers import (
    BatchNorm2D,
    Conv2D,
    Dense,
    Flatten,
    MaxPool2D,
    ReLU,
    Sequential,
    Sigmoid,
)


def deep_dense(activation, depth, weight_scale, width=32, seed=0):
    """``depth`` Dense+activation blocks whose He-initialized weights are multiplied by
    ``weight_scale``: below ~1/sqrt(2) the gradient shrinks at every block, above it grows."""
    layers = []
    for _ in range(depth):
        layers += [Dense(width, width), activation()]
    model = Sequential([*layers, Dense(width, 10)], seed=seed)
    for layer in model.layers[:-1]:
        if isinstance(layer, Dense):
            layer.weight.data *= weight_scale
    return model


def train(model, steps=40, every=5, lr=1e-3, optimizer=mc.optim.SGD, seed=0, x=None, y=None):
    rng = np.random.default_rng(seed)
    if x is None:
        x = rng.standard_normal((steps * 16, 32)).astype(np.float32)
        y = rng.integers(0, 10, len(x))
    return mc.fit(model, mc.losses.SoftmaxCrossEntropy(), optimizer(model.parameters(), lr=lr),
                  (x, y), epochs=1, batch_size=16, verbose=0, diagnostics=every)


def test_records_every_layer_on_the_first_and_every_nth_step():
    history = train(deep_dense(ReLU, 2, 1.0), steps=20, every=5)
    assert [r["step"] for r in history.diagnostics] == [1, 5, 10, 15, 20]
    assert all(r["epoch"] == 1 for r in history.diagnostics)
    layers = history.diagnostics[-1]["layers"]
    assert [s["name"] for s in layers] == ["Dense", "ReLU", "Dense", "ReLU", "Dense"]
    for stats in layers:
        assert stats["dy_norm"] > 0 and np.isfinite(stats["act_std"])
        has_params = stats["name"] == "Dense"
        assert (stats["grad_norm"] is not None) == has_params
        assert (stats["update_ratio"] is not None) == has_params
        assert (stats["dead_fraction"] is not None) == (stats["name"] == "ReLU")
    # SGD: the step is lr * dL/dW, so ||update|| / ||W|| is lr * grad_norm / ||W||
    first = history.diagnostics[0]["layers"][0]
    assert 0 < first["update_ratio"] < 1e-2


def test_update_ratio_is_the_optimizer_step_relative_to_the_weights():
    model = deep_dense(ReLU, 1, 1.0)
    weights = model.layers[0].weight.data.copy()
    bias = model.layers[0].bias.data.copy()
    history = train(model, steps=1, every=1, lr=0.1)
    stats = history.diagnostics[0]["layers"][0]
    change = np.sqrt(np.sum((model.layers[0].weight.data - weights) ** 2)
                     + np.sum((model.layers[0].bias.data - bias) ** 2))
    before = np.sqrt(np.sum(weights ** 2) + np.sum(bias ** 2))
    assert stats["update_ratio"] == pytest.approx(change / before, rel=1e-5)
    # with SGD the step is lr * gradient
    assert stats["update_ratio"] == pytest.approx(0.1 * stats["grad_norm"] / before, rel=1e-4)


def test_diagnostics_leave_training_exactly_unchanged():
    plain, watched = deep_dense(ReLU, 2, 1.0), deep_dense(ReLU, 2, 1.0)
    losses = [train(m, steps=12, every=every, optimizer=mc.optim.Adam)["train_loss"]
              for m, every in ((plain, 10**6), (watched, 1))]
    assert losses[0] == losses[1]
    for a, b in zip(plain.parameters(), watched.parameters()):
        np.testing.assert_array_equal(a.data, b.data)


def test_vanishing_gradients_are_detected():
    # ten sigmoid blocks (slope <= 1/4) with weights at a tenth of He: each block multiplies the
    # gradient by well under 1/10
    history = train(deep_dense(Sigmoid, 10, 0.1))
    warnings = gradient_flow_warnings(history.diagnostics)
    assert any("vanishing" in w and "layer 0 (Dense)" in w for w in warnings), warnings
    assert not any("exploding" in w for w in warnings)


def test_exploding_gradients_are_detected():
    history = train(deep_dense(ReLU, 10, 3.0), lr=1e-9)
    warnings = gradient_flow_warnings(history.diagnostics)
    assert any("exploding" in w and "grows" in w for w in warnings), warnings
    assert not any("vanishing" in w for w in warnings)


def test_gradients_that_shrink_during_an_epoch_are_named():
    def record(step, norm):
        return {"step": step, "epoch": 1, "layers": [
            {"layer": 0, "name": "Dense", "grad_norm": norm, "dy_norm": 1.0,
             "update_ratio": 1e-3, "act_mean": 0.0, "act_std": 1.0, "dead_fraction": None}]}
    warnings = gradient_flow_warnings([record(1, 2e-1), record(50, 1e-4)])
    assert warnings == ["layer 0 (Dense)'s gradients shrank 2,000x during epoch 1 "
                        "(||dL/dW|| 2.0e-01 -> 1.0e-04): vanishing gradients"]
    assert gradient_flow_warnings([record(1, 2e-1), record(50, 1e-3)]) == []
    assert "grew" in gradient_flow_warnings([record(1, 1e-4), record(50, 1.0)])[0]


def test_dead_relus_and_oversized_steps_are_detected():
    model = deep_dense(ReLU, 2, 1.0)
    model.layers[2].bias.data[:] = -100.0  # the second ReLU never fires
    history = train(model, steps=5, every=1, lr=5.0)
    stats = history.diagnostics[-1]["layers"]
    assert stats[3]["dead_fraction"] == 1.0
    warnings = gradient_flow_warnings(history.diagnostics)
    assert any("layer 3 (ReLU): 100% of its units" in w for w in warnings), warnings
    assert any("changed its weights by" in w for w in warnings), warnings


def test_a_healthy_network_raises_no_warning(cpu_backend):
    (x, y), _, _ = mc.data.load_mnist()
    x = ((x[:2048] - 0.13) / 0.31).astype(np.float32)
    model = Sequential([Conv2D(1, 8, 3, padding=1, bias=False), BatchNorm2D(8), ReLU(),
                        MaxPool2D(2), Conv2D(8, 16, 3, padding=1, bias=False), BatchNorm2D(16),
                        ReLU(), MaxPool2D(2), Flatten(), Dense(16 * 7 * 7, 10)], seed=0)
    history = mc.fit(model, mc.losses.SoftmaxCrossEntropy(),
                     mc.optim.Adam(model.parameters(), lr=2e-3), (x, y[:2048]), epochs=2,
                     batch_size=64, verbose=0, diagnostics=8)
    assert history["train_acc"][-1] > 0.8
    assert gradient_flow_warnings(history.diagnostics) == []


def test_history_keeps_saves_and_plots_the_diagnostics(tmp_path):
    history = train(deep_dense(ReLU, 2, 1.0), steps=10, every=2)
    loaded = mc.History.load(history.save(tmp_path / "history.json"))
    assert loaded.diagnostics == json.loads(json.dumps(history.diagnostics))
    png = loaded.plot_gradient_flow(tmp_path / "flow.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert mc.History([]).to_dict() == {"epochs": []}  # no diagnostics: the file is as before
    with pytest.raises(ValueError, match="no diagnostics recorded"):
        mc.History([]).plot_gradient_flow(tmp_path / "none.png")


def test_resumed_training_keeps_the_records(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((64, 32)).astype(np.float32), rng.integers(0, 10, 64)

    def run(epochs, resume):
        model = deep_dense(ReLU, 1, 1.0)
        return mc.fit(model, mc.losses.SoftmaxCrossEntropy(),
                      mc.optim.SGD(model.parameters(), lr=1e-2), (x, y), epochs=epochs,
                      batch_size=16, verbose=0, diagnostics=2,
                      checkpoint=tmp_path / "ckpt.safetensors", resume=resume)

    run(1, resume=False)
    resumed = run(2, resume=True)
    assert [(r["epoch"], r["step"]) for r in resumed.diagnostics] == \
        [(1, 1), (1, 2), (1, 4), (2, 6), (2, 8)]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="every"):
        GradientFlow(0)
    with pytest.raises(TypeError, match="every"):
        GradientFlow(2.5)


def test_cli_train_with_diagnostics_writes_the_figure_and_the_report_shows_it(tmp_path, capsys):
    from minicnn import cli

    out = tmp_path / "digits"
    assert cli.main(["train", "--dataset", "digits", "--epochs", "2", "--diagnostics", "5",
                     "--out", str(out)]) == 0
    assert "gradient flow (" in capsys.readouterr().out
    assert (out / "gradient_flow.png").is_file()
    results = json.loads((out / "results.json").read_text())
    assert isinstance(results["gradient_flow_warnings"], list)
    steps = [r["step"] for r in mc.History.load(out / "history.json").diagnostics]
    assert steps[:3] == [1, 5, 10]
    assert cli.main(["evaluate", str(out / "model.safetensors"), "--out", str(out / "report"),
                     "--quiet"]) == 0
    page = (out / "report" / "report.html").read_text()
    assert "Gradient flow, per layer" in page and (out / "report" / "gradient_flow.png").is_file()
