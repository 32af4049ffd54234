"""Building layers from configs that may come from an untrusted model file.

A config is ``{"type": <a layer name>, <constructor arguments>}``; a network is
``{"layers": [config, ...], "input_shape": [C, H, W] or null}`` (``Sequential.config()``).
Everything is checked before anything is built: the layer type must be one of minicnn's, the
arguments the constructor's own (never ``dtype`` or ``rng``), plain JSON values of the right
kind, nested layers no deeper than 32 levels; and the arrays every layer will hold, computed
from its arguments by the layer class itself (``Layer.array_shapes``), are compared with the
tensors present in the file (or, without a file, their total is capped) *before* they are
allocated, so a hostile ``Dense(10**9, 10**9)`` is refused instead of allocating 4 EB.
Any problem raises :class:`minicnn.io.ModelFileError` saying where.
"""

from __future__ import annotations

import inspect
import math

from .. import backend
from ..io import ModelFile, ModelFileError, check_architecture, check_metadata_fits, read_model_file
from .sequential import Sequential

MAX_NESTING = 32  # a config cannot make the builder recurse without bound
MAX_LAYERS = 10_000  # per list of layers; real networks have tens
MAX_CONFIG_ELEMENTS = 2**31  # parameters built from a config without a file (8 GiB float32)
# Constructor arguments a config may not set: they are not architecture, and a hostile file could
# use them to make arrays of object dtype or hand in something that is not a random generator.
_FORBIDDEN_ARGUMENTS = ("dtype", "rng")


def layer_arguments(spec, where: str = "config", label: str = "layer", depth: int = 0):
    """``(layer class, arguments)`` of a layer config, every argument checked; the inner layers'
    configs (``cls.sublayer_fields``) are checked to be lists of at most MAX_LAYERS, no deeper
    than MAX_NESTING, but not built."""
    from . import LAYER_TYPES

    if depth >= MAX_NESTING:
        raise ModelFileError(f"{where}: {label} nests layers more than {MAX_NESTING} deep")
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
        raise ModelFileError(f"{where}: {label} has no 'type'")
    kind = spec["type"]
    if kind not in LAYER_TYPES:
        raise ModelFileError(f"{where}: {label} has unknown type {kind!r}; known types: "
                             f"{', '.join(sorted(LAYER_TYPES))}")
    cls = LAYER_TYPES[kind]
    params = {name: param for name, param in inspect.signature(cls.__init__).parameters.items()
              if name != "self" and name not in _FORBIDDEN_ARGUMENTS
              and param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY)}
    kwargs = {k: v for k, v in spec.items() if k != "type"}
    for name, value in kwargs.items():
        if name not in params:
            raise ModelFileError(f"{where}: {label} ({kind}) has invalid arguments: unknown "
                                 f"argument {name!r} (allowed: {', '.join(params) or 'none'})")
        if name in cls.sublayer_fields:
            if value is not None and not isinstance(value, list):
                raise ModelFileError(f"{where}: {label} ({kind}) field {name!r} must be a list "
                                     f"of layers, got {type(value).__name__}")
            if value is not None and len(value) > MAX_LAYERS:
                raise ModelFileError(f"{where}: {label} ({kind}) field {name!r} has more than "
                                     f"{MAX_LAYERS} layers")
            continue
        if not _is_plain(value) and not (isinstance(value, list) and len(value) <= 8
                                         and all(map(_is_plain, value))):
            raise ModelFileError(f"{where}: {label} ({kind}) has invalid arguments: {name} must "
                                 f"be a number, bool, string or a short list of them, got "
                                 f"{_short_repr(value)}")
        if isinstance(params[name].default, bool) and not isinstance(value, bool):
            raise ModelFileError(f"{where}: {label} ({kind}) has invalid arguments: {name} must "
                                 f"be true or false, got {_short_repr(value)}")
    return cls, kwargs


def expected_arrays(spec, where: str = "config", label: str = "layer",
                    depth: int = 0) -> dict[str, tuple]:
    """``{array name: shape}`` that the layer described by ``spec`` will hold, asked of its class
    (``Layer.array_shapes``) after its arguments are checked; nothing is allocated."""
    cls, kwargs = layer_arguments(spec, where, label, depth)
    try:
        return dict(cls.array_shapes(_Nested(kwargs, where, f"{label} ({spec['type']})",
                                             depth + 1)))
    except ModelFileError:
        raise
    except (TypeError, ValueError, KeyError) as err:
        raise ModelFileError(f"{where}: {label} ({spec['type']}) has invalid arguments: "
                             f"{err}") from None


class _Nested(dict):
    """A config handed to ``array_shapes``: its lists of inner layers report their problems
    with the right label and depth when a container asks ``expected_arrays`` about them."""

    def __init__(self, kwargs, where, label, depth):
        super().__init__(kwargs)
        self.where, self.label, self.depth = where, label, depth


def inner_arrays(config, field: str, prefix: str) -> dict[str, tuple]:
    """For containers' ``array_shapes``: the arrays of the layers in ``config[field]``, named
    ``<prefix><index>.<name>`` (e.g. ``body.0.weight``)."""
    where = getattr(config, "where", "config")
    label = getattr(config, "label", "layer")
    depth = getattr(config, "depth", 0)
    shapes = {}
    for j, spec in enumerate(config.get(field) or []):
        inner = expected_arrays(spec, where, f"{label} {field}[{j}]", depth)
        shapes.update({f"{prefix}{j}.{name}": shape for name, shape in inner.items()})
    return shapes


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
    training checkpoint is also a model file: its ``optimizer.*`` tensors are left to
    ``minicnn.checkpoints``; any other tensor the architecture does not use is refused.
    """
    where = str(file.path)
    layer_shapes = {k: v for k, v in file.shapes.items() if k.startswith("layers.")}
    model = build_model(file.architecture, where, tensor_shapes=layer_shapes)
    arrays = {f"layers.{name}": array for name, array in model.named_arrays().items()}
    for name in sorted(set(file.shapes) - set(arrays)):
        if file.training_state is None or not name.startswith("optimizer."):
            raise ModelFileError(f"{where}: unexpected tensor {name} not used by the architecture")
    for name, value in file.tensors(arrays).items():
        array = arrays[name]
        array.data = backend.to_device(value, model.backend)
        if hasattr(array, "grad"):
            array.zero_grad()
    check_metadata_fits(model, file.architecture, file.user, where)
    model.metadata = file.user
    return model


def _is_plain(value) -> bool:
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, int):
        return abs(value) < 2**62  # beyond this numpy itself overflows
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str) and len(value) <= 100


def _short_repr(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def load_model(path) -> Sequential:
    """Load a model written by ``Sequential.save``. Never executes code from the file.

    Raises FileNotFoundError for a missing file and :class:`minicnn.ModelFileError` for anything
    unreadable, damaged or inconsistent (with a message saying what). A training checkpoint is
    also a model file: its optimizer state is ignored here (see ``minicnn.checkpoints``).
    """
    return build_from_file(read_model_file(path))
