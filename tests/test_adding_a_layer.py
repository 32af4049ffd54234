"""The walk-through of docs/architecture.md ("how to add a layer"), checked: ELU was added by
writing its class in minicnn/layers/activations.py (forward, backward, the docstring's equations
that the studio shows, its
PyTorch and ONNX names and arguments) with ``@register`` and exporting it from
minicnn/layers/__init__.py. Nothing else in minicnn/ names it, yet it trains, saves and loads,
shows its formula in the studio and travels to PyTorch and ONNX and back."""

import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import require

import minicnn as mc
from minicnn.gradcheck import check_layer
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
    Sequential,
    Sigmoid,
    Tanh,
)

ROOT = Path(__file__).resolve().parents[1]


def elu_model(seed=0):
    return Sequential([Conv2D(1, 3, 3, padding=1), ELU(0.7), Flatten(), Dense(3 * 5 * 5, 4),
                       ELU()], seed=seed, input_shape=(1, 5, 5))


def test_elu_gradients_match_central_differences():
    x = np.random.default_rng(0).standard_normal((4, 3, 5, 5))
    x[np.abs(x) < 1e-3] = 0.5  # keep the finite differences off the one point where ELU(0.7) bends
    errors = check_layer(ELU(0.7), x)
    assert max(errors.values()) < 1e-7, errors


def test_elu_forward_is_what_its_docstring_says():
    x = np.array([[-2.0, -0.5, 0.0, 0.5, 3.0]])
    y = ELU(0.7).forward(x)
    np.testing.assert_allclose(y, np.where(x > 0, x, 0.7 * (np.exp(x) - 1)), rtol=1e-15)
    assert ELU().forward(x.astype(np.float32)).dtype == np.float32


def test_elu_is_registered_and_round_trips_through_a_model_file(tmp_path):
    assert LAYER_TYPES["ELU"] is ELU
    model = elu_model()
    x = np.random.default_rng(1).standard_normal((2, 1, 5, 5)).astype(np.float32)
    model.save(tmp_path / "elu.safetensors")
    loaded = mc.load_model(tmp_path / "elu.safetensors")
    assert loaded.config() == model.config() and loaded.layers[1].alpha == 0.7
    np.testing.assert_array_equal(loaded.forward(x), model.forward(x))


def test_elu_has_a_formula_for_the_studio():
    """Read from its docstring: the equations, the shapes of what they name, alpha's value."""
    panel = ELU(0.7).formula((1, 3, 5, 5), (1, 3, 5, 5))
    assert panel["forward"] == ["y = x if x > 0 else alpha * (exp(x) - 1)   y (1, 3, 5, 5), "
                                "x (1, 3, 5, 5), alpha = 0.7"]
    assert panel["backward"] == ["dx = dy * (1 if x > 0 else y + alpha)   dx (1, 3, 5, 5), "
                                 "dy (1, 3, 5, 5), x (1, 3, 5, 5), y (1, 3, 5, 5), alpha = 0.7"]
    assert "-0.7" in panel["explain"]


def test_elu_travels_to_pytorch_and_back():
    torch = require("torch")
    from minicnn.interop import from_torch, to_torch

    model = elu_model().astype(np.float64)
    x = np.random.default_rng(2).standard_normal((3, 1, 5, 5))
    module = to_torch(model)
    assert isinstance(module[1], torch.nn.ELU) and module[1].alpha == 0.7
    with torch.no_grad():
        theirs = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(theirs, model.forward(x), rtol=1e-12, atol=1e-12)
    back = from_torch(module)
    assert back.config()["layers"] == model.config()["layers"]
    np.testing.assert_allclose(back.forward(x), model.forward(x), rtol=1e-12, atol=1e-12)


def test_elu_is_exported_to_onnx(tmp_path):
    ort = require("onnxruntime")
    require("onnx")
    from minicnn.interop import to_onnx

    model = elu_model()
    path = to_onnx(model, tmp_path / "elu.onnx")
    x = np.random.default_rng(3).standard_normal((3, 1, 5, 5)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"images": x})[0]
    np.testing.assert_allclose(logits, model.forward(x), rtol=1e-5, atol=1e-5)


def test_no_module_outside_the_layers_names_the_new_layer():
    """The point of the exercise: adding ELU touched its own file and the package's export list,
    and nothing of the upper floors (the studio, interop, diagnostics, ...)."""
    found = subprocess.run(["grep", "-rlw", "ELU", "minicnn", "--include=*.py"], cwd=ROOT,
                           capture_output=True, text=True).stdout.split()
    assert sorted(found) == ["minicnn/layers/__init__.py", "minicnn/layers/activations.py"], found


#: one of each layer and an input shape, for the studio's panel (a new layer adds itself here)
STUDIO_EXAMPLES = {
    "AvgPool2D": (AvgPool2D(2), (3, 4, 4)), "BatchNorm2D": (BatchNorm2D(3), (3, 4, 4)),
    "Conv2D": (Conv2D(3, 4, 3), (3, 5, 5)), "Dense": (Dense(6, 2), (6,)),
    "Dropout": (Dropout(0.5), (6,)), "ELU": (ELU(), (6,)), "Flatten": (Flatten(), (3, 2, 2)),
    "GELU": (GELU(), (6,)), "GlobalAvgPool2D": (GlobalAvgPool2D(), (3, 4, 4)),
    "LeakyReLU": (LeakyReLU(), (6,)), "MaxPool2D": (MaxPool2D(2), (3, 4, 4)), "ReLU": (ReLU(), (6,)),
    "Residual": (mc.models.basic_block(3, 3), (3, 4, 4)), "Sigmoid": (Sigmoid(), (6,)),
    "Tanh": (Tanh(), (6,)),
}


@pytest.mark.parametrize("layer_type", sorted(LAYER_TYPES))
def test_every_registered_layer_answers_for_the_studio_pytorch_and_onnx(layer_type):
    """A layer that forgets one of its facts is caught here, not by a user of the studio."""
    cls = LAYER_TYPES[layer_type]
    if cls.__name__ != "Sequential":  # the studio shows the layers inside it
        layer, shape = STUDIO_EXAMPLES[layer_type]
        panel = layer.formula((2, *shape), (2, *layer.output_shape(shape)))
        assert panel["forward"] and panel["backward"] and "explain" in vars(cls), \
            f"{layer_type}'s docstring gives the studio no equation of a pass, or it has no explain"
    assert cls.torch_name is not None or "to_torch" in vars(cls), layer_type
    assert cls.onnx_op is not None or "to_onnx" in vars(cls) or cls.identity_at_inference, \
        layer_type
