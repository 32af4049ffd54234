"""Weights that travel: minicnn <-> PyTorch (equal outputs and gradients, both ways) and
minicnn -> ONNX (ONNX Runtime's probabilities equal minicnn's)."""

import numpy as np
import pytest
from helpers import require

import minicnn as mc
from minicnn import cli, models
from minicnn.interop import from_torch, to_onnx, to_torch
from minicnn.layers import (
    GELU,
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


def every_layer_model(dtype=np.float64, seed=0):
    """Every layer type with a PyTorch counterpart, BatchNorm statistics made non-trivial."""
    model = Sequential([
        Conv2D(2, 4, (3, 2), stride=(1, 2), padding=(1, 0)), BatchNorm2D(4), ReLU(),
        mc.models.basic_block(4, 6, stride=2),              # projection shortcut
        Residual([Conv2D(6, 6, 3, padding=1), Tanh()]),   # identity shortcut
        GELU(), LeakyReLU(0.2), MaxPool2D(2, stride=1), Conv2D(6, 5, 1, bias=False), Sigmoid(),
        AvgPool2D((2, 1)), Dropout(0.3), Flatten(), Dense(5 * 2 * 2, 7), GELU("tanh"), ReLU(),
        Dense(7, 3, bias=False),
    ], seed=seed).astype(dtype)
    rng = np.random.default_rng(seed)
    for array in model.buffers():
        array.data = rng.uniform(0.5, 1.5, array.data.shape).astype(dtype)
    for p in model.parameters():
        if "gamma" in p.name or "beta" in p.name:
            p.data = rng.uniform(0.5, 1.5, p.data.shape).astype(dtype)
    return model


def gap_model(seed=0):
    return Sequential([Conv2D(1, 3, 3), ReLU(), GlobalAvgPool2D(), Dense(3, 4)], seed=seed)


def test_to_torch_gives_the_same_outputs_and_gradients(cpu_backend):
    torch = require("torch")
    model = every_layer_model()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 2, 9, 12))
    dy = rng.standard_normal((3, 3))
    tmodel = to_torch(model).eval()  # inference: running statistics, no dropout

    y = model.forward(x, training=False)
    dx = model.backward(dy)
    tx = torch.tensor(x, requires_grad=True)
    ty = tmodel(tx)
    (ty * torch.tensor(dy)).sum().backward()
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-9, atol=1e-12)
    tparams = dict(tmodel.named_parameters())
    for name, p in model.named_arrays().items():
        tname = name.replace("gamma", "weight").replace("beta", "bias")
        if name.endswith(("running_mean", "running_var")):
            np.testing.assert_array_equal(p.data, tmodel.get_buffer(tname).numpy())
            continue
        grad = tparams[tname].grad.numpy()
        layer = model.layers[int(name.split(".")[0])]
        if isinstance(layer, Dense) and name.endswith("weight"):
            grad = grad.T  # Linear keeps the transpose of Dense's weight
        np.testing.assert_allclose(p.grad, grad, rtol=1e-9, atol=1e-12, err_msg=name)


def test_training_mode_matches_too(cpu_backend):
    torch = require("torch")
    model = Sequential([Conv2D(1, 3, 3), BatchNorm2D(3), ReLU(), GlobalAvgPool2D(),
                        Dense(3, 2)], seed=0).astype(np.float64)
    x = np.random.default_rng(0).standard_normal((4, 1, 6, 6))
    tmodel = to_torch(model).train()
    np.testing.assert_allclose(model.forward(x, training=True), tmodel(torch.tensor(x))
                               .detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(model.layers[1].running_var.data,
                               tmodel[1].running_var.numpy(), rtol=1e-12)


def test_from_torch_round_trip_and_a_model_built_in_pytorch(cpu_backend):
    torch = require("torch")
    model = every_layer_model(np.float32)
    back = from_torch(to_torch(model))
    assert [layer.name for layer in back.layers] == [layer.name for layer in model.layers]
    for (name, a), (other, b) in zip(model.named_arrays().items(), back.named_arrays().items()):
        assert name == other
        np.testing.assert_array_equal(a.data, b.data)
    x = np.random.default_rng(2).standard_normal((2, 2, 9, 12)).astype(np.float32)
    np.testing.assert_allclose(back.predict(x), model.predict(x), rtol=1e-6, atol=1e-7)

    nn = torch.nn
    torch.manual_seed(0)
    tmodel = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                           nn.MaxPool2d(2), nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
                           nn.Linear(4, 3))
    tmodel.train()
    tmodel(torch.randn(16, 1, 8, 8))  # running statistics move away from 0 and 1
    tmodel.eval()
    ours = from_torch(tmodel)
    assert isinstance(ours.layers[4], GlobalAvgPool2D)
    x = np.random.default_rng(3).standard_normal((5, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        expected = tmodel(torch.tensor(x)).numpy()
    np.testing.assert_allclose(ours.forward(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make, message", [
    (lambda nn: nn.Conv2d(4, 4, 3, groups=2), "groups=2 has no counterpart in minicnn's Conv2D"),
    (lambda nn: nn.Conv2d(4, 4, 3, dilation=2), r"dilation=\(2, 2\) has no counterpart"),
    (lambda nn: nn.Conv2d(4, 4, 3, padding_mode="reflect"), "padding_mode='reflect'"),
    (lambda nn: nn.Conv2d(1, 4, 3, padding="same"), "padding must be an int or a pair of ints"),
    (lambda nn: nn.MaxPool2d(2, padding=1), "padding=1 has no counterpart in minicnn's MaxPool2D"),
    (lambda nn: nn.AvgPool2d(2, ceil_mode=True), "ceil_mode=True"),
    (lambda nn: nn.AvgPool2d(2, divisor_override=3), "divisor_override=3"),
    (lambda nn: nn.BatchNorm2d(4, track_running_stats=False), "track_running_stats=False"),
    (lambda nn: nn.BatchNorm2d(4, momentum=None), "momentum"),
    (lambda nn: nn.Flatten(0), "start_dim=0"),
    (lambda nn: nn.SiLU(), "SiLU, which has no minicnn counterpart"),
])
def test_from_torch_refuses_what_has_no_counterpart(make, message):
    torch = require("torch")
    with pytest.raises(TypeError, match=message) as info:
        from_torch(torch.nn.Sequential(torch.nn.ReLU(), make(torch.nn)))
    assert "model.1" in str(info.value)


@pytest.mark.parametrize("make", [models.mnist_cnn, lambda: models.cifar_resnet((1, 28, 28)),
                                  lambda: every_layer_model(np.float32)],
                         ids=["mnist_cnn", "cifar_resnet", "every_layer"])
def test_onnx_runtime_gives_minicnn_probabilities(make, tmp_path, cpu_backend):
    onnx = require("onnx")
    onnxruntime = require("onnxruntime")
    model = make()
    if model.input_shape is None:
        model.input_shape = (2, 9, 12)
    rng = np.random.default_rng(0)
    for array in model.buffers():  # non-trivial BatchNorm statistics
        array.data = rng.uniform(0.5, 1.5, array.data.shape).astype(np.float32)
    if model.input_shape == (1, 28, 28):
        _, (x, _), _ = mc.data.load_mnist(verbose=0)
        x = ((x[:100] - 0.13) / 0.31).astype(np.float32)  # 100 test images
    else:
        x = rng.standard_normal((100, *model.input_shape)).astype(np.float32)
    path = to_onnx(model, tmp_path / "model.onnx")
    checked = onnx.load(path)
    onnx.checker.check_model(checked, full_check=True)
    assert checked.opset_import[0].version >= 17
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits, probabilities = session.run(["logits", "probabilities"], {"images": x})
    assert np.abs(probabilities - model.predict(x)).max() <= 1e-5
    np.testing.assert_allclose(logits, model.forward(x), rtol=1e-4, atol=1e-4)


def test_export_command(tmp_path, capsys):
    require("onnx")
    require("onnxruntime")
    out = tmp_path / "digits"
    assert cli.main(["train", "--dataset", "digits", "--epochs", "1", "--quiet",
                     "--out", str(out)]) == 0
    capsys.readouterr()
    assert cli.main(["export", str(out / "model.safetensors"), "--onnx",
                     str(tmp_path / "digits.onnx")]) == 0
    line = capsys.readouterr().out
    assert "wrote" in line and "differ from minicnn's by at most" in line
    assert (tmp_path / "digits.onnx").stat().st_size > 1000
    assert cli.main(["export", str(out / "model.safetensors"), "--onnx", "x.onnx",
                     "--opset", "13"]) == 2


def test_to_onnx_needs_an_input_shape(tmp_path):
    require("onnx")
    with pytest.raises(ValueError, match="input_shape"):
        to_onnx(gap_model(), tmp_path / "m.onnx")
    assert to_onnx(gap_model(), tmp_path / "m.onnx", input_shape=(1, 5, 5)).is_file()
