"""Weights that leave minicnn (and come back): PyTorch modules and ONNX files.

- :func:`to_torch` turns a Sequential into an equivalent ``torch.nn.Sequential`` with the same
  weights (and BatchNorm running statistics); :func:`from_torch` does the reverse.
- :func:`to_onnx` writes an ONNX model (opset 17 by default) that ONNX Runtime, Netron or a
  browser (onnxruntime-web) can run: input ``images`` (N, C, H, W), outputs ``logits`` and
  ``probabilities`` (softmax). ``minicnn export MODEL --onnx OUT.onnx`` is the command.

Each layer declares what it is in PyTorch and ONNX (``torch_name``, ``torch_arguments``,
``torch_arrays``, ``onnx_op``, ...; ``Layer.to_torch``, ``Layer.from_torch`` and ``Layer.to_onnx``
read them; docs/architecture.md has the table); this module walks the network and holds the
framework-specific plumbing (:class:`TorchBridge`, :class:`OnnxGraph`). Dense's weight travels
transposed (``y = x @ W + b`` in minicnn is ``x @ weight.T + bias`` in PyTorch's Linear);
everything else keeps its layout and its name.

PyTorch and ONNX are optional: ``pip install torch`` for the first two functions,
``pip install "minicnn[onnx]"`` (onnx and onnxruntime) for the third.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from . import backend
from .atomic import atomic_write_bytes
from .layers import LAYER_TYPES, GlobalAvgPool2D, Sequential
from .layers.base import pair_of


def _import(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{module} is not installed ({err}); {extra}") from None


def _array(parameter) -> np.ndarray:
    return np.asarray(backend.to_numpy(getattr(parameter, "data", parameter)))


# -- PyTorch ------------------------------------------------------------------------------------

@functools.cache
def torch_residual_class():
    """``TorchResidual``: ``forward(x) = body(x) + shortcut(x)``, PyTorch's form of Residual."""
    nn = _import("torch.nn", "pip install torch")

    class TorchResidual(nn.Module):
        def __init__(self, body, shortcut=None):
            super().__init__()
            self.body = body
            self.shortcut = shortcut if shortcut is not None else nn.Identity()

        def forward(self, x):
            return self.body(x) + self.shortcut(x)

    return TorchResidual


class TorchBridge:
    """What a layer's ``to_torch``/``from_torch`` needs from PyTorch: ``nn``, weights copied in
    and out, and the way back into minicnn for the layers inside a module."""

    def __init__(self, torch):
        self.torch, self.nn = torch, torch.nn
        #: the torch modules of minicnn's containers (``torch_name``: built from its fields)
        self.containers = {"TorchResidual": torch_residual_class()}
        #: torch.nn class name -> the minicnn layer class that imports it
        self.counterparts = {cls.torch_name: cls for cls in LAYER_TYPES.values()
                             if cls.torch_name is not None}

    def dtype(self, layer):
        """The torch dtype of ``layer``'s parameters (None: the default, for a layer without)."""
        params = layer.parameters()
        if not params:
            return None
        return self.torch.float64 if params[0].data.dtype == np.float64 else self.torch.float32

    def copy_weights(self, module, transposed=(), **arrays) -> None:
        """``module.<name> = array`` for each array given (None: skipped; those named in
        ``transposed`` transposed): parameters as ``nn.Parameter``, buffers (running
        statistics) copied into the module's own."""
        for name, array in arrays.items():
            if array is None:
                continue
            value = _array(array)
            if name in transposed:
                value = value.T
            tensor = self.torch.from_numpy(value.copy())
            if name in dict(module.named_buffers()):
                getattr(module, name).copy_(tensor)
            else:
                setattr(module, name, self.nn.Parameter(tensor))

    def array(self, tensor) -> np.ndarray:
        return tensor.detach().cpu().numpy().copy()

    def sublayers(self, module, where: str) -> list | None:
        """A container's field from a torch module: its layers, or None for ``nn.Identity``."""
        return None if isinstance(module, self.nn.Identity) else self.layers(module, where)

    def layers(self, module, where: str) -> list:
        """The minicnn layers of a torch module (a Sequential's children, in order)."""
        if not isinstance(module, self.nn.Sequential):
            return [self.layer(module, where)]
        layers = []
        for name, child in module.named_children():
            path = f"{where}.{name}"
            inner = list(child.children()) if isinstance(child, self.nn.Sequential) else []
            if (len(inner) == 2 and isinstance(inner[0], self.nn.AdaptiveAvgPool2d)
                    and pair_of(inner[0].output_size) == (1, 1)
                    and isinstance(inner[1], self.nn.Flatten)):
                layers.append(GlobalAvgPool2D())  # what GlobalAvgPool2D.to_torch makes
            elif isinstance(child, self.nn.Sequential):
                layers.extend(self.layers(child, path))
            else:
                layers.append(self.layer(child, path))
        return layers

    def layer(self, module, path: str):
        cls = self.counterparts.get(type(module).__name__)
        if cls is None:
            raise TypeError(f"from_torch: {path} is a {type(module).__name__}, which has no "
                            "minicnn counterpart (docs/architecture.md lists them)")
        return cls.from_torch(module, self, path)


def to_torch(model) -> torch.nn.Sequential:  # noqa: F821 (torch is optional)
    """An equivalent ``torch.nn.Sequential`` with a copy of ``model``'s weights, in the dtype of
    the model's parameters, in training or evaluation mode as you set it (``.eval()`` for
    inference: BatchNorm then uses the running statistics, as minicnn's ``training=False``).
    Each layer makes its own module (``Layer.to_torch``)."""
    torch = _import("torch", "pip install torch (the CPU build is enough)")
    if not isinstance(model, Sequential):
        raise TypeError(f"to_torch: expected a minicnn Sequential, got {type(model).__name__}")
    return model.to_torch(TorchBridge(torch))


def from_torch(module, seed: int | None = 0) -> Sequential:
    """A minicnn Sequential equivalent to a ``torch.nn.Sequential`` of the modules in the table
    of this module's docstring, with a copy of its weights and running statistics (float32 or
    float64 as the module's parameters). Anything else raises TypeError naming the module and
    why (a padded pooling, a grouped or dilated convolution, ...). ``seed`` seeds Dropout."""
    torch = _import("torch", "pip install torch (the CPU build is enough)")
    if not isinstance(module, torch.nn.Sequential):
        raise TypeError(f"from_torch: expected a torch.nn.Sequential, got {type(module).__name__}")
    model = Sequential(TorchBridge(torch).layers(module, "model"))  # no seed: it would re-draw
    if seed is not None:
        model.set_rng(np.random.default_rng(seed))
    return model


# -- ONNX ---------------------------------------------------------------------------------------

def to_onnx(model, path, input_shape=None, opset: int = 17) -> Path:
    """Write ``model`` (inference mode) as an ONNX file, checked by the ONNX checker; float32.

    Inputs: ``images`` of shape (N, C, H, W) with N free, as the model saw its training images
    (normalized: ``metadata["normalization"]`` says how). Outputs: ``logits`` (N, classes) and
    ``probabilities``, their softmax. ``input_shape`` (C, H, W) defaults to the model's own.
    Each layer adds its own nodes (``Layer.to_onnx``).
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
    graph = OnnxGraph(helper, numpy_helper)
    logits = model.to_onnx(graph, "images", "")
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


class OnnxGraph:
    """Collects the nodes and weights of an ONNX graph as the layers add themselves."""

    def __init__(self, helper, numpy_helper):
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.initializers = [], []

    def weight(self, name: str, parameter) -> str:
        """Add an array (a Parameter or Buffer) as a float32 initializer; returns its name."""
        self.initializers.append(self.numpy_helper.from_array(
            _array(parameter).astype(np.float32), name))
        return name

    def node(self, op: str, inputs: list, name: str, output: str | None = None, **attributes):
        output = output or name
        self.nodes.append(self.helper.make_node(op, inputs, [output], name=name, **attributes))
        return output


__all__ = ["OnnxGraph", "TorchBridge", "from_torch", "to_onnx", "to_torch",
           "torch_residual_class"]
