"""Presets (incl. cifar_vgg, cifar_resnet, tunable_cnn), the Residual layer's bookkeeping, and
the config / model-file round trips of nested layers."""

import copy
import re

import numpy as np
import pytest
from helpers import assert_gradients_match, require

import minicnn as mc
from minicnn import models
from minicnn.gradcheck import check_layer
from minicnn.io import ModelFileError
from minicnn.layers import (
    BatchNorm2D,
    Conv2D,
    Dropout,
    GlobalAvgPool2D,
    LeakyReLU,
    ReLU,
    Residual,
    Tanh,
)
from minicnn.losses import SoftmaxCrossEntropy

PRESET_INPUTS = {"reference_cnn": (1, 28, 28), "mnist_cnn": (1, 28, 28), "lenet5": (1, 28, 28),
                 "cifar_vgg": (3, 32, 32), "cifar_resnet": (3, 32, 32)}


def batch(shape, n=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *shape)).astype(np.float32), rng.integers(0, 10, n)


def copy_weights(source, target):
    for a, b in zip(source.layers, target.layers, strict=True):
        theirs = b.named_arrays()
        assert set(theirs) == set(a.named_arrays())
        for name, array in a.named_arrays().items():
            theirs[name].data = array.data.copy()


@pytest.mark.parametrize("name", sorted(models.PRESETS))
def test_presets_run_forward_and_backward(name):
    shape = PRESET_INPUTS[name]
    model = models.PRESETS[name](shape, num_classes=10, seed=0)
    x, y = batch(shape)
    loss_fn = SoftmaxCrossEntropy()
    logits = model.forward(x, training=True)
    assert logits.shape == (2, 10) and logits.dtype == np.float32
    assert np.isfinite(loss_fn.forward(logits, y))
    model.zero_grad()
    dx = model.backward(loss_fn.backward())
    assert dx.shape == x.shape
    for p in model.parameters():
        assert p.grad.shape == p.data.shape and np.isfinite(p.grad).all()
    assert any(np.abs(p.grad).max() > 0 for p in model.parameters())
    assert model.predict(x).shape == (2, 10)


@pytest.mark.parametrize("name", sorted(models.PRESETS))
def test_preset_docstrings_state_the_parameter_count(name):
    """Each docstring's "N parameters" is what summary() counts at the default input shape."""
    model = models.PRESETS[name](seed=0)
    stated = re.search(r"([\d,]+) parameters", models.PRESETS[name].__doc__)
    assert stated, f"{name}: the docstring should give the parameter count"
    assert int(stated.group(1).replace(",", "")) == model.num_parameters()


def test_cifar_resnet_structure():
    model = models.cifar_resnet(seed=0)
    blocks = [layer for layer in model.layers if isinstance(layer, Residual)]
    assert len(blocks) == 6  # 3 stages x 2 blocks
    # projections exactly where the shape changes: the first block of stages 2 and 3
    assert [b.shortcut is not None for b in blocks] == [False, False, True, False, True, False]
    assert [b.body[0].stride for b in blocks] == [(1, 1), (1, 1), (2, 2), (1, 1), (2, 2), (1, 1)]
    # a ReLU after every block, global pooling before the classifier
    after = [model.layers[model.layers.index(b) + 1] for b in blocks]
    assert all(isinstance(layer, ReLU) for layer in after)
    assert isinstance(model.layers[-2], GlobalAvgPool2D)
    assert model.output_shapes((3, 32, 32))[-3] == (64, 8, 8)
    assert models.cifar_resnet(blocks_per_stage=3).num_parameters() > model.num_parameters()


def test_tunable_cnn_defaults_are_mnist_cnn_and_options_apply():
    for shape in [(1, 28, 28), (1, 8, 8)]:
        assert models.tunable_cnn(shape).config() == models.mnist_cnn(shape).config()
    model = models.tunable_cnn((1, 8, 8), width=8, kernel_size=5, activation="tanh", dropout=0.1,
                               blocks=4)
    convs = [layer for layer in model.layers if isinstance(layer, Conv2D)]
    assert [c.out_channels for c in convs] == [8, 16, 32, 64]
    assert all(c.kernel_size == (5, 5) and c.padding == (2, 2) and c.init == "glorot" for c in convs)
    assert sum(isinstance(layer, Tanh) for layer in model.layers) == 4
    assert model.output_shape((1, 8, 8)) == (10,)  # the 4th block's 1x1 input skips its pool
    leaky = models.tunable_cnn((1, 8, 8), activation="leaky_relu", blocks=1)
    assert any(isinstance(layer, LeakyReLU) for layer in leaky.layers)
    for bad in [dict(activation="gelu"), dict(kernel_size=4), dict(width=0), dict(dropout=1.0),
                dict(blocks=True)]:
        with pytest.raises(ValueError, match="tunable_cnn"):
            models.tunable_cnn((1, 8, 8), **bad)


# -- Residual ------------------------------------------------------------------------------------

def test_residual_parameters_and_names_are_ordered_and_unique():
    block = models.basic_block(3, 8, stride=2)
    names = list(block.named_arrays())
    assert names == [
        "body.0.weight", "body.1.gamma", "body.1.beta", "body.1.running_mean", "body.1.running_var",
        "body.3.weight", "body.4.gamma", "body.4.beta", "body.4.running_mean", "body.4.running_var",
        "shortcut.0.weight", "shortcut.1.gamma", "shortcut.1.beta", "shortcut.1.running_mean",
        "shortcut.1.running_var"]
    params = [a for a in block.named_arrays().values() if isinstance(a, mc.Parameter)]
    assert [id(p) for p in block.parameters()] == [id(p) for p in params]
    assert len(block.buffers()) == 6
    identity = models.basic_block(8, 8)
    assert identity.shortcut is None and len(identity.parameters()) == 6


def test_residual_shapes_flops_description_and_errors():
    block = models.basic_block(3, 8, stride=2)
    assert block.output_shape((3, 9, 9)) == (8, 5, 5)
    inner = sum(layer.flops(s) for layer, s in zip(
        block.body, [(3, 9, 9), (8, 5, 5), (8, 5, 5), (8, 5, 5), (8, 5, 5)]))
    inner += sum(layer.flops(s) for layer, s in zip(block.shortcut, [(3, 9, 9), (8, 5, 5)]))
    assert block.flops((3, 9, 9)) == inner + 8 * 5 * 5
    # the body's and then the shortcut's, each on the block's input
    assert block.algorithms((3, 9, 9)) == block.body.algorithms((3, 9, 9)) + \
        block.shortcut.algorithms((3, 9, 9))
    assert block.workspace_bytes((3, 9, 9), 4) == block.body.workspace_bytes((3, 9, 9), 4) + \
        block.shortcut.workspace_bytes((3, 9, 9), 4) > block.body.workspace_bytes((3, 9, 9), 4)
    assert "Conv2D" in block.describe() and "BatchNorm2D" in block.describe()
    with pytest.raises(ValueError, match="projection shortcut"):
        Residual([Conv2D(3, 8, 3, padding=1)]).output_shape((3, 9, 9))
    with pytest.raises(ValueError, match="body layer 0 .Conv2D.*4 channels"):
        block.output_shape((4, 9, 9))
    with pytest.raises(ValueError, match="Residual"):
        models.basic_block(3, 8).forward(np.zeros((2, 4, 5, 5), np.float32))
    with pytest.raises(TypeError, match="Residual: body: item 1 is a str"):
        Residual([ReLU(), "conv"])
    with pytest.raises(ValueError, match="at least one layer"):
        Residual([])
    with pytest.raises(TypeError, match="shortcut"):
        Residual([ReLU()], shortcut=42)


def test_residual_first_layer_can_skip_the_input_gradient():
    block = models.basic_block(2, 4, stride=2)
    x = np.random.default_rng(0).standard_normal((2, 2, 6, 6)).astype(np.float32)
    y = block.forward(x, training=True)
    assert block.backward(np.ones_like(y), input_grad=False) is None
    assert all(np.abs(p.grad).max() > 0 for p in block.parameters())


def test_residual_with_dropout_is_seeded_and_converts_dtype_and_backend():
    def make():
        return mc.Sequential([Residual([Conv2D(2, 2, 3, padding=1), Dropout(0.5)]), ReLU()], seed=3)

    x = np.random.default_rng(0).standard_normal((2, 2, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(make().forward(x, training=True), make().forward(x, training=True))
    model = make().astype(np.float64)
    assert all(a.data.dtype == np.float64 for a in model.layers[0].named_arrays().values())
    assert model.forward(x.astype(np.float64)).dtype == np.float64
    model.to("numpy")
    # check_layer deep-copies, converts to float64 and re-seeds: dropout draws one mask
    assert_gradients_match(check_layer(Residual([Conv2D(2, 2, 3, padding=1), Dropout(0.3)]), x))


def test_residual_matches_the_same_computation_written_out():
    """Forward = body(x) + shortcut(x); backward = the sum of both paths' input gradients."""
    block = models.basic_block(2, 3, stride=2)
    block.initialize(np.random.default_rng(0))
    body, short = copy.deepcopy(block.body), copy.deepcopy(block.shortcut)
    x = np.random.default_rng(1).standard_normal((4, 2, 6, 5)).astype(np.float32)
    a, b = x, x
    for layer in body:
        a = layer.forward(a, training=True)
    for layer in short:
        b = layer.forward(b, training=True)
    np.testing.assert_allclose(block.forward(x, training=True), a + b, rtol=1e-6, atol=1e-6)
    dy = np.random.default_rng(2).standard_normal(a.shape).astype(np.float32)
    da, db = dy, dy
    for layer in reversed(body):
        da = layer.backward(da)
    for layer in reversed(short):
        db = layer.backward(db)
    np.testing.assert_allclose(block.backward(dy), da + db, rtol=1e-5, atol=1e-6)


def test_gradcheck_catches_a_residual_that_drops_the_shortcut_gradient():
    """The gradient check must fail a block whose backward forgets one of the two paths."""

    class BodyOnlyBackward(Residual):
        def _backward(self, dy, input_grad):
            for layer in reversed(self.body):
                dy = layer.backward(dy)
            return dy

    x = np.random.default_rng(0).standard_normal((2, 2, 4, 4))
    errors = check_layer(BodyOnlyBackward([Conv2D(2, 2, 3, padding=1), Tanh()]), x)
    assert errors["x"] > 0.1 and errors["body.0.weight"] < 1e-6


def test_residual_block_matches_torch():
    torch = require("torch")
    F = torch.nn.functional  # noqa: N806 (torch's usual name)
    block = models.basic_block(3, 4, stride=2).astype(np.float64)
    block.initialize(np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((3, 3, 7, 6))
    dy = np.random.default_rng(2).standard_normal((3, 4, 4, 3))
    y = block.forward(x, training=True)
    dx = block.backward(dy)

    tx = torch.tensor(x, requires_grad=True)
    weights = {name: torch.tensor(np.array(a.data), requires_grad=True)
               for name, a in block.named_arrays().items() if isinstance(a, mc.Parameter)}

    def bn(t, prefix):
        return F.batch_norm(t, None, None, weights[f"{prefix}.gamma"], weights[f"{prefix}.beta"],
                            training=True, eps=1e-5)

    a = bn(F.conv2d(tx, weights["body.0.weight"], stride=2, padding=1), "body.1").relu()
    a = bn(F.conv2d(a, weights["body.3.weight"], padding=1), "body.4")
    b = bn(F.conv2d(tx, weights["shortcut.0.weight"], stride=2), "shortcut.1")
    ty = a + b
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-7, atol=1e-10)
    for name, p in zip(weights, block.parameters()):
        np.testing.assert_allclose(p.grad, weights[name].grad.numpy(), rtol=1e-7, atol=1e-10)


@pytest.mark.skipif(not mc.backend.backend_available("numba"), reason="numba is not installed")
def test_residual_runs_identically_on_numba_and_numpy():
    mc.set_backend("numba")
    model = mc.Sequential([models.basic_block(3, 4, stride=2), ReLU(), GlobalAvgPool2D()], seed=0)
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    y = model.forward(x, training=True)
    model.backward(np.ones_like(y))
    mc.set_backend("numpy")
    reference = mc.Sequential([models.basic_block(3, 4, stride=2), ReLU(), GlobalAvgPool2D()],
                              seed=0)
    y_ref = reference.forward(x, training=True)
    reference.backward(np.ones_like(y_ref))
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-6)
    for p, q in zip(model.parameters(), reference.parameters()):
        np.testing.assert_allclose(p.grad, q.grad, rtol=1e-4, atol=1e-5)


# -- config and model-file round trips -------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(models.PRESETS))
def test_from_config_rebuilds_the_architecture_and_with_the_weights_the_outputs(name):
    shape = PRESET_INPUTS[name]
    model = models.PRESETS[name](shape, num_classes=7, seed=0)
    x, _ = batch(shape, n=4)
    model.forward(x, training=True)  # moves BatchNorm's running statistics away from 0 / 1
    rebuilt = models.from_config(model.config())
    assert rebuilt.config() == model.config()
    assert [layer.describe() for layer in rebuilt.layers] == [layer.describe() for layer in model.layers]
    copy_weights(model, rebuilt)
    np.testing.assert_array_equal(rebuilt.forward(x), model.forward(x))


def test_cifar_resnet_model_file_round_trip_is_exact(tmp_path):
    model = models.cifar_resnet(seed=0)
    x, y = batch((3, 32, 32), n=4)
    loss_fn = SoftmaxCrossEntropy()
    opt = mc.optim.SGD(model.parameters(), lr=0.1)
    loss_fn.forward(model.forward(x, training=True), y)
    model.backward(loss_fn.backward())
    opt.step()  # trained weights and moved running statistics, not the initial values
    model.save(tmp_path / "resnet.safetensors")
    loaded = mc.load_model(tmp_path / "resnet.safetensors")
    assert loaded.config() == model.config()
    for a, b in zip(model.layers, loaded.layers):
        theirs = b.named_arrays()
        assert set(theirs) == set(a.named_arrays())
        for name, array in a.named_arrays().items():
            assert theirs[name].data.dtype == array.data.dtype
            np.testing.assert_array_equal(theirs[name].data, array.data)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_a_model_file_with_a_broken_nested_layer_is_refused(tmp_path):
    config = models.cifar_resnet(seed=0).config()
    config["layers"][3]["body"][1] = {"type": "BatchNorm2D", "num_features": -1}
    with pytest.raises(ModelFileError, match=r"layer 3 \(Residual\) body\[1\]"):
        models.from_config(config)
    config["layers"][3]["body"] = "not a list"
    with pytest.raises(ModelFileError, match="must be a list of layers"):
        models.from_config(config)


def test_cifar_presets_are_available_to_the_command_line_and_the_cifar10_recipe():
    from minicnn.cli import build_parser
    from minicnn.recipes import RECIPES

    for name in ("cifar_vgg", "cifar_resnet"):
        assert build_parser().parse_args(["train", "--model", name]).model == name
    assert RECIPES["cifar10"].model in ("cifar_vgg", "cifar_resnet")
    assert RECIPES["cifar10"].augment


def test_summary_counts_nested_parameters():
    model = mc.Sequential([models.basic_block(3, 8, stride=2), ReLU()], input_shape=(3, 8, 8))
    text = model.summary(print_fn=None)
    assert f"{model.num_parameters():,} parameters" in text
    assert model.num_parameters() == 3 * 8 * 9 + 8 * 8 * 9 + 3 * 8 + 3 * 2 * 8
    assert isinstance(model.layers[0].body[1], BatchNorm2D)
