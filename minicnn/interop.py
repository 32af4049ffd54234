"""Weights that leave minicnn (and come back): PyTorch modules and ONNX files.

- :func:`to_torch` turns a Sequential into an equivalent ``torch.nn.Sequential`` with the same
  weights (and BatchNorm running statistics); :func:`from_torch` does the reverse.
- :func:`to_onnx` writes an ONNX model (opset 17 by default) that ONNX Runtime, Netron or a
  browser (onnxruntime-web) can run: input ``images`` (N, C, H, W), outputs ``logits`` and
  ``probabilities`` (softmax). ``minicnn export MODEL --onnx OUT.onnx`` is the command.

Layer by layer (``y = x @ W + b`` in minicnn's Dense is ``x @ weight.T + bias`` in PyTorch's
Linear, so Dense's weight travels transposed; everything else keeps its layout and its name):

=================  =======================================  ==========================
minicnn            PyTorch                                  ONNX
=================  =======================================  ==========================
Conv2D             nn.Conv2d                                Conv
Dense              nn.Linear (weight transposed)            Gemm
MaxPool2D          nn.MaxPool2d                             MaxPool
AvgPool2D          nn.AvgPool2d                             AveragePool
GlobalAvgPool2D    nn.Sequential(AdaptiveAvgPool2d(1),      GlobalAveragePool, Flatten
                   Flatten())
BatchNorm2D        nn.BatchNorm2d (gamma -> weight,         BatchNormalization
                   beta -> bias, running statistics)
Dropout            nn.Dropout                               (inference: nothing)
ReLU, LeakyReLU,   nn.ReLU, nn.LeakyReLU, nn.Sigmoid,       Relu, LeakyRelu, Sigmoid,
Sigmoid, Tanh      nn.Tanh                                  Tanh
Flatten            nn.Flatten                               Flatten
Residual           TorchResidual (body + shortcut)          Add
=================  =======================================  ==========================

PyTorch and ONNX are optional: ``pip install torch`` for the first two functions,
``pip install "minicnn[onnx]"`` (onnx and onnxruntime) for the third.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import backend
from .atomic import atomic_write_bytes
from .layers import (
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


def _import(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{module} is not installed ({err}); {extra}") from None


def _array(parameter) -> np.ndarray:
    return np.asarray(backend.to_numpy(parameter.data))


# -- PyTorch ------------------------------------------------------------------------------------

_TORCH_RESIDUAL = None


def torch_residual_class():
    """``TorchResidual``: ``forward(x) = body(x) + shortcut(x)``, PyTorch's form of Residual."""
    global _TORCH_RESIDUAL
    if _TORCH_RESIDUAL is None:
        nn = _import("torch.nn", "pip install torch")

        class TorchResidual(nn.Module):
            def __init__(self, body, shortcut=None):
                super().__init__()
                self.body = body
                self.shortcut = shortcut if shortcut is not None else nn.Identity()

            def forward(self, x):
                return self.body(x) + self.shortcut(x)

        _TORCH_RESIDUAL = TorchResidual
    return _TORCH_RESIDUAL


def to_torch(model) -> torch.nn.Sequential:  # noqa: F821 (torch is optional)
    """An equivalent ``torch.nn.Sequential`` with a copy of ``model``'s weights, in the dtype of
    the model's parameters, in training or evaluation mode as you set it (``.eval()`` for
    inference: BatchNorm then uses the running statistics, as minicnn's ``training=False``)."""
    torch = _import("torch", "pip install torch (the CPU build is enough)")
    if not isinstance(model, Sequential):
        raise TypeError(f"to_torch: expected a minicnn Sequential, got {type(model).__name__}")
    return _torch_sequential(torch, model.layers)


def _torch_sequential(torch, layers):
    return torch.nn.Sequential(*[_torch_layer(torch, layer) for layer in layers])


def _tensor(torch, parameter):
    return torch.nn.Parameter(torch.from_numpy(_array(parameter).copy()))


def _torch_layer(torch, layer):
    nn = torch.nn
    params = layer.parameters()
    dtype = None if not params else \
        (torch.float64 if params[0].data.dtype == np.float64 else torch.float32)
    if isinstance(layer, Conv2D):
        module = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                           stride=layer.stride, padding=layer.padding,
                           bias=layer.bias is not None, dtype=dtype)
        module.weight = _tensor(torch, layer.weight)
        if layer.bias is not None:
            module.bias = _tensor(torch, layer.bias)
        return module
    if isinstance(layer, Dense):
        fan_in, fan_out = layer.weight.data.shape
        module = nn.Linear(fan_in, fan_out, bias=layer.bias is not None, dtype=dtype)
        module.weight = nn.Parameter(torch.from_numpy(_array(layer.weight).T.copy()))
        if layer.bias is not None:
            module.bias = _tensor(torch, layer.bias)
        return module
    if isinstance(layer, BatchNorm2D):
        module = nn.BatchNorm2d(layer.num_features, eps=layer.eps, momentum=layer.momentum,
                                dtype=dtype)
        module.weight = _tensor(torch, layer.gamma)
        module.bias = _tensor(torch, layer.beta)
        module.running_mean.copy_(torch.from_numpy(_array(layer.running_mean)))
        module.running_var.copy_(torch.from_numpy(_array(layer.running_var)))
        return module
    if isinstance(layer, MaxPool2D):
        return nn.MaxPool2d(layer.kernel_size, layer.stride)
    if isinstance(layer, AvgPool2D):
        return nn.AvgPool2d(layer.kernel_size, layer.stride)
    if isinstance(layer, GlobalAvgPool2D):
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    if isinstance(layer, Residual):
        shortcut = None if layer.shortcut is None else _torch_sequential(torch, layer.shortcut.layers)
        return torch_residual_class()(_torch_sequential(torch, layer.body.layers), shortcut)
    if isinstance(layer, Sequential):
        return _torch_sequential(torch, layer.layers)
    simple = {ReLU: nn.ReLU, Sigmoid: nn.Sigmoid, Tanh: nn.Tanh, Flatten: nn.Flatten}
    if type(layer) in simple:
        return simple[type(layer)]()
    if isinstance(layer, LeakyReLU):
        return nn.LeakyReLU(layer.negative_slope)
    if isinstance(layer, Dropout):
        return nn.Dropout(layer.p)
    raise TypeError(f"to_torch: no PyTorch counterpart for {layer.name}")


def from_torch(module, seed: int | None = 0) -> Sequential:
    """A minicnn Sequential equivalent to a ``torch.nn.Sequential`` of the modules in the table
    of this module's docstring, with a copy of its weights and running statistics (float32 or
    float64 as the module's parameters). Anything else raises TypeError naming the module and
    why (a padded pooling, a grouped or dilated convolution, ...). ``seed`` seeds Dropout."""
    torch = _import("torch", "pip install torch (the CPU build is enough)")
    if not isinstance(module, torch.nn.Sequential):
        raise TypeError(f"from_torch: expected a torch.nn.Sequential, got {type(module).__name__}")
    model = Sequential(_minicnn_layers(torch, module, "model"))  # no seed: it would re-draw
    if seed is not None:
        model.set_rng(np.random.default_rng(seed))
    return model


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _minicnn_layers(torch, sequential, where: str) -> list:
    nn = torch.nn
    children = list(sequential.named_children())
    layers = []
    for name, child in children:
        path = f"{where}.{name}"
        if isinstance(child, nn.Sequential):
            inner = list(child.children())
            if (len(inner) == 2 and isinstance(inner[0], nn.AdaptiveAvgPool2d)
                    and _pair(inner[0].output_size) == (1, 1) and isinstance(inner[1], nn.Flatten)):
                layers.append(GlobalAvgPool2D())
            else:
                layers.extend(_minicnn_layers(torch, child, path))
            continue
        layers.append(_minicnn_layer(torch, child, path))
    return layers


def _numpy(tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy().copy()


def _minicnn_layer(torch, child, path: str):
    nn = torch.nn
    if isinstance(child, nn.Conv2d):
        if isinstance(child.padding, str) or _pair(child.dilation) != (1, 1) or \
                child.groups != 1 or child.padding_mode != "zeros":
            raise TypeError(f"from_torch: {path} ({child}): only zero-padded, undilated, "
                            "ungrouped convolutions with numeric padding have a counterpart")
        weight = _numpy(child.weight)
        layer = Conv2D(child.in_channels, child.out_channels, child.kernel_size,
                       stride=child.stride, padding=child.padding, bias=child.bias is not None,
                       dtype=weight.dtype)
        layer.weight.data = weight
        if child.bias is not None:
            layer.bias.data = _numpy(child.bias)
        return layer
    if isinstance(child, nn.Linear):
        weight = _numpy(child.weight).T.copy()
        layer = Dense(child.in_features, child.out_features, bias=child.bias is not None,
                      dtype=weight.dtype)
        layer.weight.data = weight
        if child.bias is not None:
            layer.bias.data = _numpy(child.bias)
        return layer
    if isinstance(child, nn.BatchNorm2d):
        if child.momentum is None or not child.track_running_stats:
            raise TypeError(f"from_torch: {path} ({child}): BatchNorm2d needs a momentum and "
                            "running statistics")
        layer = BatchNorm2D(child.num_features, momentum=child.momentum, eps=child.eps,
                            dtype=_numpy(child.running_mean).dtype)
        if child.affine:
            layer.gamma.data, layer.beta.data = _numpy(child.weight), _numpy(child.bias)
        layer.running_mean.data = _numpy(child.running_mean)
        layer.running_var.data = _numpy(child.running_var)
        return layer
    if isinstance(child, (nn.MaxPool2d, nn.AvgPool2d)):
        if _pair(child.padding) != (0, 0) or child.ceil_mode or \
                (isinstance(child, nn.MaxPool2d) and _pair(child.dilation) != (1, 1)):
            raise TypeError(f"from_torch: {path} ({child}): only unpadded pooling without "
                            "ceil_mode or dilation has a counterpart")
        kind = MaxPool2D if isinstance(child, nn.MaxPool2d) else AvgPool2D
        return kind(_pair(child.kernel_size), _pair(child.stride or child.kernel_size))
    if isinstance(child, torch_residual_class()):
        shortcut = None if isinstance(child.shortcut, nn.Identity) else \
            _minicnn_layers(torch, _as_sequential(nn, child.shortcut), f"{path}.shortcut")
        return Residual(_minicnn_layers(torch, _as_sequential(nn, child.body), f"{path}.body"),
                        shortcut)
    if isinstance(child, nn.LeakyReLU):
        return LeakyReLU(child.negative_slope)
    if isinstance(child, nn.Dropout):
        return Dropout(child.p)
    if isinstance(child, nn.Flatten):
        if child.start_dim != 1 or child.end_dim != -1:
            raise TypeError(f"from_torch: {path} ({child}): only Flatten(1, -1) has a counterpart")
        return Flatten()
    simple = {nn.ReLU: ReLU, nn.Sigmoid: Sigmoid, nn.Tanh: Tanh}
    if type(child) in simple:
        return simple[type(child)]()
    raise TypeError(f"from_torch: {path} is a {type(child).__name__}, which has no minicnn "
                    "counterpart (see minicnn.interop's table)")


def _as_sequential(nn, module):
    return module if isinstance(module, nn.Sequential) else nn.Sequential(module)


# -- ONNX ---------------------------------------------------------------------------------------

def to_onnx(model, path, input_shape=None, opset: int = 17) -> Path:
    """Write ``model`` (inference mode) as an ONNX file, checked by the ONNX checker; float32.

    Inputs: ``images`` of shape (N, C, H, W) with N free, as the model saw its training images
    (normalized: ``metadata["normalization"]`` says how). Outputs: ``logits`` (N, classes) and
    ``probabilities``, their softmax. ``input_shape`` (C, H, W) defaults to the model's own.
    """
    onnx = _import("onnx", 'pip install "minicnn[onnx]" (onnx and onnxruntime)')
    from onnx import TensorProto, helper, numpy_helper

    if not isinstance(model, Sequential):
        raise TypeError(f"to_onnx: expected a minicnn Sequential, got {type(model).__name__}")
    shape = tuple(input_shape or model.input_shape or (model.metadata or {}).get("input_shape")
                  or ())
    if len(shape) != 3:
        raise ValueError("to_onnx: the model does not record its input shape; pass "
                         "input_shape=(C, H, W)")
    num_classes = model.output_shape(shape)[0]
    graph = _OnnxGraph(helper, numpy_helper)
    logits = graph.layers(model.layers, "images", "")
    graph.node("Identity", [logits], "logits", output="logits")
    graph.node("Softmax", ["logits"], "softmax", output="probabilities", axis=1)
    inputs = [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", *shape])]
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", num_classes])
               for name in ("logits", "probabilities")]
    onnx_model = helper.make_model(
        helper.make_graph(graph.nodes, "minicnn", inputs, outputs, graph.initializers),
        opset_imports=[helper.make_opsetid("", opset)], producer_name="minicnn")
    onnx.checker.check_model(onnx_model, full_check=True)
    path = Path(path)
    atomic_write_bytes(path, onnx_model.SerializeToString())
    return path


class _OnnxGraph:
    """Collects the nodes and weights of an ONNX graph, one minicnn layer at a time."""

    def __init__(self, helper, numpy_helper):
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.initializers = [], []

    def weight(self, name: str, parameter) -> str:
        array = np.asarray(backend.to_numpy(getattr(parameter, "data", parameter)), np.float32)
        self.initializers.append(self.numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list, name: str, output: str | None = None, **attributes):
        output = output or name
        self.nodes.append(self.helper.make_node(op, inputs, [output], name=name, **attributes))
        return output

    def layers(self, layers, x: str, prefix: str) -> str:
        for index, layer in enumerate(layers):
            x = self.layer(layer, x, f"{prefix}{index}")
        return x

    def layer(self, layer, x: str, name: str) -> str:
        if isinstance(layer, Conv2D):
            (ph, pw) = layer.padding
            inputs = [x, self.weight(f"{name}.weight", layer.weight)]
            if layer.bias is not None:
                inputs.append(self.weight(f"{name}.bias", layer.bias))
            return self.node("Conv", inputs, name, kernel_shape=list(layer.kernel_size),
                             strides=list(layer.stride), pads=[ph, pw, ph, pw])
        if isinstance(layer, Dense):
            if layer.bias is None:
                return self.node("MatMul", [x, self.weight(f"{name}.weight", layer.weight)], name)
            return self.node("Gemm", [x, self.weight(f"{name}.weight", layer.weight),
                                      self.weight(f"{name}.bias", layer.bias)], name)
        if isinstance(layer, (MaxPool2D, AvgPool2D)):
            op = "MaxPool" if isinstance(layer, MaxPool2D) else "AveragePool"
            return self.node(op, [x], name, kernel_shape=list(layer.kernel_size),
                             strides=list(layer.stride))
        if isinstance(layer, GlobalAvgPool2D):
            pooled = self.node("GlobalAveragePool", [x], f"{name}.pool")
            return self.node("Flatten", [pooled], name, axis=1)
        if isinstance(layer, BatchNorm2D):
            arrays = [self.weight(f"{name}.{key}", getattr(layer, key))
                      for key in ("gamma", "beta", "running_mean", "running_var")]
            return self.node("BatchNormalization", [x, *arrays], name, epsilon=float(layer.eps))
        if isinstance(layer, Residual):
            body = self.layers(layer.body.layers, x, f"{name}.body.")
            shortcut = x if layer.shortcut is None else \
                self.layers(layer.shortcut.layers, x, f"{name}.shortcut.")
            return self.node("Add", [body, shortcut], name)
        if isinstance(layer, Sequential):
            return self.layers(layer.layers, x, f"{name}.")
        if isinstance(layer, Dropout):
            return x  # the identity in inference
        if isinstance(layer, LeakyReLU):
            return self.node("LeakyRelu", [x], name, alpha=float(layer.negative_slope))
        simple = {ReLU: "Relu", Sigmoid: "Sigmoid", Tanh: "Tanh"}
        if type(layer) in simple:
            return self.node(simple[type(layer)], [x], name)
        if isinstance(layer, Flatten):
            return self.node("Flatten", [x], name, axis=1)
        raise TypeError(f"to_onnx: no ONNX counterpart for {layer.name}")


__all__ = ["from_torch", "to_onnx", "to_torch", "torch_residual_class"]
