"""Building layers from configs that may come from an untrusted model file.

A network's config is ``{"layers": [config, ...], "input_shape": [C, H, W] or null}``
(``Sequential.config()``). Everything is checked before anything is built: each layer's config
by :mod:`minicnn.layers.registry`, and the arrays every layer will hold, computed from its
arguments, against the tensors present in the file (or, without a file, their total is capped)
*before* they are allocated, so a hostile ``Dense(10**9, 10**9)`` is refused instead of
allocating 4 EB. Any problem raises :class:`minicnn.io.ModelFileError` saying where.
"""

from __future__ import annotations

import math

from .. import backend
from ..io import ModelFile, ModelFileError, check_architecture, check_metadata_fits, read_model_file
from .registry import MAX_LAYERS, expected_arrays, layer_arguments
from .sequential import Sequential

MAX_CONFIG_ELEMENTS = 2**31  # parameters built from a config without a file (8 GiB float32)


def build_layer(spec, where: str = "config", label: str = "layer", depth: int = 0):
    """Build one layer from ``{"type": ..., **layer.config()}`` (inner layers first)."""
    cls, kwargs = layer_arguments(spec, where, label, depth)
    for field in cls.sublayer_fields:
        if kwargs.get(field) is not None:
            kwargs[field] = [build_layer(s, where, f"{label} ({spec['type']}) {field}[{j}]",
                                         depth + 1) for j, s in enumerate(kwargs[field])]
    try:
        return cls(**kwargs)
    except Exception as err:  # untrusted arguments: whatever the constructor objects to, say it
        detail = str(err) if isinstance(err, (TypeError, ValueError)) else \
            f"{type(err).__name__}: {err}"
        raise ModelFileError(f"{where}: {label} ({spec['type']}) has invalid arguments: "
                             f"{detail}") from None


def build_model(architecture: dict, where: str = "config", tensor_shapes: dict | None = None):
    """An (untrained) Sequential from ``model.config()``.

    Before any layer is built, the arrays every layer will hold are computed from its arguments.
    With ``tensor_shapes`` (``{name: shape}`` of a model file's tensors, named ``layers.<...>``)
    they must match the file exactly; without, their total must stay under
    ``MAX_CONFIG_ELEMENTS``. Either way, an absurd size is refused before it is allocated.
    """
    check_architecture(architecture, where)
    if len(architecture["layers"]) > MAX_LAYERS:
        raise ModelFileError(f"{where}: architecture has {len(architecture['layers'])} layers, "
                             f"more than the {MAX_LAYERS} a model may have")
    total = 0
    for i, spec in enumerate(architecture["layers"]):
        label = f"layer {i}"
        for name, shape in expected_arrays(spec, where, label).items():
            total += math.prod(shape)
            if tensor_shapes is None:
                continue
            key = f"layers.{i}.{name}"
            if key not in tensor_shapes:
                raise ModelFileError(f"{where}: missing tensor {key} for {label} ({spec['type']})")
            if tuple(tensor_shapes[key]) != tuple(shape):
                raise ModelFileError(f"{where}: tensor {key} has shape {tuple(tensor_shapes[key])}, "
                                     f"but {label} ({spec['type']}) needs {tuple(shape)}")
    if tensor_shapes is None and total > MAX_CONFIG_ELEMENTS:
        raise ModelFileError(f"{where}: the architecture has {total:,} parameters, more than "
                             f"the {MAX_CONFIG_ELEMENTS:,} minicnn builds from a config")
    layers = [build_layer(spec, where, f"layer {i}")
              for i, spec in enumerate(architecture["layers"])]
    input_shape = architecture.get("input_shape")
    model = Sequential(layers, input_shape=input_shape)
    if input_shape is not None:
        try:
            model.output_shapes(input_shape)
        except ValueError as err:
            raise ModelFileError(f"{where}: the architecture cannot take its own input_shape "
                                 f"{input_shape}: {err}") from None
    return model


def build_from_file(file: ModelFile):
    """The model a checked model file describes, with its weights and metadata.

    Every layer's arrays are compared with the file's tensors before anything is built. A
    training checkpoint is also a model file: its ``optimizer.*`` and ``callback.*`` tensors are
    left to ``minicnn.checkpoints``; any other tensor the architecture does not use is refused.
    """
    where = str(file.path)
    layer_shapes = {k: v for k, v in file.shapes.items() if k.startswith("layers.")}
    model = build_model(file.architecture, where, tensor_shapes=layer_shapes)
    arrays = {f"layers.{name}": array for name, array in model.named_arrays().items()}
    for name in sorted(set(file.shapes) - set(arrays)):
        if file.training_state is None or not name.startswith(("optimizer.", "callback.")):
            raise ModelFileError(f"{where}: unexpected tensor {name} not used by the architecture")
    for name, value in file.tensors(arrays).items():
        array = arrays[name]
        array.data = backend.to_device(value, model.backend)
        if hasattr(array, "grad"):
            array.zero_grad()
    check_metadata_fits(model, file.architecture, file.user, where)
    model.metadata = file.user
    return model


def load_model(path) -> Sequential:
    """Load a model written by ``Sequential.save``. Never executes code from the file.

    Raises FileNotFoundError for a missing file and :class:`minicnn.ModelFileError` for anything
    unreadable, damaged or inconsistent (with a message saying what). A training checkpoint is
    also a model file: its optimizer state is ignored here (see ``minicnn.checkpoints``).
    """
    return build_from_file(read_model_file(path))
