"""Model files: one safetensors file with the weights and the architecture as JSON metadata.

Layout of a file written by :func:`save_model`:

- tensors ``layers.<i>.<name>`` for every Parameter and Buffer of layer i
  (e.g. ``layers.0.weight``, ``layers.3.running_var``; a layer holding layers, such as
  ``Residual``, names them by their place: ``layers.4.body.0.weight``, ``layers.4.shortcut.1.gamma``);
- metadata (string -> string): ``format = "minicnn"``, ``format_version``,
  ``architecture`` (the JSON of ``model.config()``) and ``user`` (JSON of the metadata dict the
  caller passed: class names, normalization, ...).

safetensors holds only raw arrays and a JSON header, so loading never executes code (unlike
pickle). :func:`load_model` validates everything before it builds the model; any problem with
the file raises :class:`ModelFileError`.

**Format version 1** (``format_version = "1"``, the first and current version) is exactly the
layout above, with:

- the safetensors container: an 8-byte little-endian header length, a JSON header (tensor
  name -> dtype, shape, byte offsets; ``__metadata__``: string -> string), the raw bytes;
- tensors of dtype F32 or F64 only, finite, in C order; in a training checkpoint also
  ``optimizer.<i>.<name>`` (the optimizer's state for parameter i) and the metadata entry
  ``training_state`` (JSON: data position, step counts, random states, history; see
  ``minicnn.training``);
- ``architecture``: ``{"layers": [{"type": <a minicnn.layers name>, <constructor
  arguments>}], "input_shape": [C, H, W] or null}`` (``input_shape`` is the per-sample shape
  the model was built for or first run on; it is always stored when known, whatever the
  ``user`` metadata holds);
- ``user``: a JSON object. Keys minicnn itself reads are checked on load: ``class_names``
  (strings, one per output), ``input_shape`` (as above) and ``normalization``
  (``{"mean": [...], "std": [...]}``, one finite value per input channel, std > 0).

There is no older version: a file with a version below 1 (or none) was not written by minicnn
and is refused as such; a newer version is refused with a request to upgrade minicnn. When a
version 2 appears, version 1 files will keep loading (``SUPPORTED_VERSIONS``).

Nothing is allocated before its size has been checked against the file: the tensor shapes
every layer needs are computed from its arguments and compared with the tensors present, so a
hostile file declaring ``Dense(10**9, 10**9)`` is refused before anything is built.
"""

from __future__ import annotations

import inspect
import json
import math
import struct
from pathlib import Path

import numpy as np

from . import backend
from .atomic import atomic_write_bytes

FORMAT_NAME = "minicnn"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
_MAX_HEADER_BYTES = 100_000_000
_MAX_LAYERS = 10_000  # per list of layers; real networks have tens
_MAX_DIM = 2**20  # largest input_shape entry accepted (a 1M-pixel side)
_MAX_CONFIG_ELEMENTS = 2**31  # parameters build_from_config creates without a file (8 GiB f32)
# safetensors dtype names -> numpy names (only float32/float64 are model tensors)
_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
           "F8_E5M2": "float8_e5m2", "F8_E4M3": "float8_e4m3", "I64": "int64", "I32": "int32",
           "I16": "int16", "I8": "int8", "U64": "uint64", "U32": "uint32", "U16": "uint16",
           "U8": "uint8", "BOOL": "bool"}
_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E5M2": 1, "F8_E4M3": 1, "I64": 8,
             "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1}
# JSON parsing of hostile input can fail in more ways than JSONDecodeError: deep nesting
# (RecursionError), integers of more than 4300 digits (ValueError)
_JSON_ERRORS = (ValueError, TypeError, RecursionError)


class ModelFileError(ValueError):
    """A model file is unreadable, damaged, or inconsistent with the architecture it declares."""


def save_model(model, path, metadata: dict | None = None, extra_tensors: dict | None = None,
               training_state: dict | None = None) -> None:
    """Write ``model`` to ``path`` atomically (the old file survives a crash mid-save).

    ``extra_tensors`` and ``training_state`` (JSON) are used by training checkpoints: the
    optimizer's arrays are stored as ``optimizer.<i>.<name>`` tensors beside the weights.
    """
    from safetensors.numpy import save

    tensors = {name: np.ascontiguousarray(backend.to_numpy(array))
               for name, array in (extra_tensors or {}).items()}
    for i, layer in enumerate(model.layers):
        for name, array in layer.named_arrays().items():
            tensors[f"layers.{i}.{name}"] = np.ascontiguousarray(backend.to_numpy(array.data))
    # Never write a file that load_model would refuse (it would look like a good save).
    for name, array in tensors.items():
        if array.dtype not in (np.float32, np.float64):
            raise TypeError(f"save_model: tensor {name} has dtype {array.dtype}; model files "
                            "hold float32 or float64 tensors")
        if not np.isfinite(array).all():
            raise ValueError(f"save_model: tensor {name} contains NaN or infinite values; "
                             "refusing to save a model that could not be loaded back")
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"save_model: metadata must be a dict, got {type(metadata).__name__}")
    try:
        user = json.dumps(metadata or {}, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise TypeError(f"save_model: metadata must be JSON-serializable: {err}") from None
    header = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "architecture": json.dumps(model.config()),
        "user": user,
    }
    if training_state is not None:
        header["training_state"] = json.dumps(training_state)
    atomic_write_bytes(path, save(tensors, metadata=header))


def _read_header(data: bytes, path) -> tuple[dict, dict]:
    """The safetensors header and ``{tensor name: (dtype, shape)}``, all checked.

    Every tensor entry must have a known dtype, a shape of non-negative ints and byte offsets
    inside the file that match the shape: so the shapes can be trusted (they are backed by
    bytes actually present) before anything is allocated from them.
    """
    if len(data) < 8:
        raise ModelFileError(f"{path}: not a model file (only {len(data)} bytes)")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > min(len(data) - 8, _MAX_HEADER_BYTES):
        raise ModelFileError(f"{path}: not a safetensors model file (bad header length)")
    try:
        header = json.loads(data[8:8 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, *_JSON_ERRORS):
        raise ModelFileError(f"{path}: not a safetensors model file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: not a safetensors model file (header is not an object)")
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ModelFileError(f"{path}: damaged header: __metadata__ must map strings to strings")
    data_len = len(data) - 8 - header_len
    infos = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise ModelFileError(f"{path}: damaged header: entry {name!r} is not a tensor "
                                 "description (dtype, shape, data_offsets)")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(dtype, str) or dtype not in _ITEMSIZE:
            raise ModelFileError(f"{path}: damaged header: tensor {name} has unknown dtype "
                                 f"{dtype!r}")
        if not (isinstance(shape, list) and len(shape) <= 8 and all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
            raise ModelFileError(f"{path}: damaged header: tensor {name} has an invalid shape "
                                 f"{shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(
                isinstance(o, int) and not isinstance(o, bool) for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= data_len):
            raise ModelFileError(f"{path}: damaged header: tensor {name} has byte offsets "
                                 f"{offsets!r} outside the file's {data_len} data bytes")
        nbytes = math.prod(shape) * _ITEMSIZE[dtype]
        if offsets[1] - offsets[0] != nbytes:
            raise ModelFileError(f"{path}: damaged header: tensor {name} of shape {tuple(shape)} "
                                 f"needs {nbytes} bytes, its offsets span {offsets[1] - offsets[0]}")
        infos[name] = (_DTYPES[dtype], tuple(shape))
    return header, infos


def _parse_version(meta: dict, path) -> int:
    version = meta.get("format_version")
    if version is None:
        raise ModelFileError(f"{path}: no format_version in the metadata; every minicnn model "
                             f"file has one (this minicnn reads version(s) "
                             f"{', '.join(map(str, SUPPORTED_VERSIONS))})")
    if not isinstance(version, str) or not (version.isascii() and version.isdigit()) \
            or len(version) > 9:
        raise ModelFileError(f"{path}: malformed format_version {_short_repr(version)} (expected a "
                             "whole number such as '1')")
    number = int(version)
    if number < min(SUPPORTED_VERSIONS):
        raise ModelFileError(
            f"{path}: format version {number} is older than any minicnn model file: version "
            f"{min(SUPPORTED_VERSIONS)} is the first, so this file was not written by minicnn "
            "(or was edited); re-save the model with minicnn")
    if number not in SUPPORTED_VERSIONS:
        raise ModelFileError(
            f"{path}: format version {number} is not supported by this minicnn "
            f"(supports {', '.join(map(str, SUPPORTED_VERSIONS))}); upgrade minicnn to load it"
        )
    return number


def _check_input_shape(input_shape, where: str, what: str = "input_shape") -> None:
    if input_shape is not None and not (
            isinstance(input_shape, list) and 1 <= len(input_shape) <= 3
            and all(isinstance(d, int) and not isinstance(d, bool) and 0 < d <= _MAX_DIM
                    for d in input_shape)):
        raise ModelFileError(f"{where}: {what} must be a list of 1 to 3 positive ints "
                             f"(each at most {_MAX_DIM}), got {input_shape!r}")


def _parse_metadata(header: dict, path) -> tuple[dict, dict]:
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{path}: a safetensors file, but not a minicnn model "
                             "(no 'format: minicnn' metadata)")
    _parse_version(meta, path)
    if "architecture" not in meta:
        raise ModelFileError(f"{path}: no architecture in the metadata")
    try:
        architecture = json.loads(meta["architecture"])
        user = json.loads(meta.get("user", "{}"))
    except _JSON_ERRORS:
        raise ModelFileError(f"{path}: architecture or user metadata is not valid JSON") from None
    _check_architecture(architecture, str(path))
    if not isinstance(user, dict):
        raise ModelFileError(f"{path}: user metadata must be a JSON object")
    _check_user_metadata(user, str(path))
    return architecture, user


def _check_architecture(architecture, where: str) -> None:
    if not isinstance(architecture, dict) or not isinstance(architecture.get("layers"), list) \
            or not architecture["layers"]:
        raise ModelFileError(f"{where}: architecture must be an object with a non-empty "
                             "'layers' list")
    if len(architecture["layers"]) > _MAX_LAYERS:
        raise ModelFileError(f"{where}: architecture has {len(architecture['layers'])} layers, "
                             f"more than the {_MAX_LAYERS} a model file may have")
    _check_input_shape(architecture.get("input_shape"), where)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_user_metadata(user: dict, where: str) -> None:
    """The keys minicnn itself uses (the CLI, reports) must have the right types."""
    names = user.get("class_names")
    if names is not None and not (isinstance(names, list) and names
                                  and all(isinstance(n, str) for n in names)):
        raise ModelFileError(f"{where}: metadata class_names must be a non-empty list of strings")
    _check_input_shape(user.get("input_shape"), where, "metadata input_shape")
    norm = user.get("normalization")
    if norm is not None:
        mean = norm.get("mean") if isinstance(norm, dict) else None
        std = norm.get("std") if isinstance(norm, dict) else None
        if not (isinstance(mean, list) and isinstance(std, list) and mean
                and len(mean) == len(std) and all(map(_is_number, mean + std))
                and all(v > 0 for v in std)):
            raise ModelFileError(f"{where}: metadata normalization must be {{'mean': [...], "
                                 "'std': [...]}} with one finite value per channel and std > 0")


_MAX_NESTING = 32  # a model file cannot make the builder recurse without bound


# Constructor arguments a model file may not set: they are not architecture, and a hostile
# file could use them to make arrays of object dtype or hand in something that is not a
# random generator.
_FORBIDDEN_ARGUMENTS = ("dtype", "rng")


def _layer_kwargs(spec, where: str, label: str):
    """``(layer class, kind, kwargs)`` for a layer spec, with every argument checked.

    Only the constructor's own argument names are accepted (not ``dtype``/``rng``); plain
    values must be JSON scalars (finite numbers, bools, short strings, None) or short flat
    lists of them, and an argument whose default is a bool must be a bool. Sub-layer fields
    (``Residual.body``) are left to the caller. Raises ModelFileError.
    """
    from .layers import LAYER_TYPES

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
    sublayer_fields = getattr(cls, "sublayer_fields", ())
    kwargs = {k: v for k, v in spec.items() if k != "type"}
    for name, value in kwargs.items():
        if name not in params:
            raise ModelFileError(f"{where}: {label} ({kind}) has invalid arguments: unknown "
                                 f"argument {name!r} (allowed: {', '.join(params) or 'none'})")
        if name in sublayer_fields:
            continue
        if not _is_plain(value) and not (isinstance(value, list) and len(value) <= 8
                                         and all(map(_is_plain, value))):
            raise ModelFileError(f"{where}: {label} ({kind}) has invalid arguments: {name} must "
                                 f"be a number, bool, string or a short list of them, got "
                                 f"{_short_repr(value)}")
        if isinstance(params[name].default, bool) and not isinstance(value, bool):
            raise ModelFileError(f"{where}: {label} ({kind}) has invalid arguments: {name} must "
                                 f"be true or false, got {_short_repr(value)}")
    return cls, kind, kwargs


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


def _conv_arrays(kw):
    from .layers.base import pair
    from .validation import check_positive_int

    cin = check_positive_int(kw.get("in_channels"), "in_channels", "Conv2D")
    cout = check_positive_int(kw.get("out_channels"), "out_channels", "Conv2D")
    kh, kw_ = pair(kw.get("kernel_size"), "kernel_size", "Conv2D", minimum=1)
    shapes = {"weight": (cout, cin, kh, kw_)}
    if kw.get("bias", True):
        shapes["bias"] = (cout,)
    return shapes


def _dense_arrays(kw):
    from .validation import check_positive_int

    n_in = check_positive_int(kw.get("in_features"), "in_features", "Dense")
    n_out = check_positive_int(kw.get("out_features"), "out_features", "Dense")
    shapes = {"weight": (n_in, n_out)}
    if kw.get("bias", True):
        shapes["bias"] = (n_out,)
    return shapes


def _batchnorm_arrays(kw):
    from .validation import check_positive_int

    c = check_positive_int(kw.get("num_features"), "num_features", "BatchNorm2D")
    return {name: (c,) for name in ("gamma", "beta", "running_mean", "running_var")}


# The tensors each layer type with weights stores, as a function of its arguments: computed
# *without* building the layer, so their sizes can be checked against the file before anything
# is allocated. Layer types not listed here have no arrays of their own (tests/test_fuzz.py
# checks this table against every type in minicnn.layers.LAYER_TYPES).
ARRAY_SHAPES = {"Conv2D": _conv_arrays, "Dense": _dense_arrays, "BatchNorm2D": _batchnorm_arrays}


def expected_arrays(spec, where: str = "config", label: str = "layer", depth: int = 0) -> dict:
    """``{array name: shape}`` that the layer described by ``spec`` will hold, computed from
    its arguments only (nothing is allocated); raises ModelFileError for invalid arguments."""
    cls, kind, kwargs = _layer_kwargs(spec, where, label)
    try:
        shapes = dict(ARRAY_SHAPES[kind](kwargs)) if kind in ARRAY_SHAPES else {}
    except (TypeError, ValueError) as err:
        raise ModelFileError(f"{where}: {label} ({kind}) has invalid arguments: {err}") from None
    for field in getattr(cls, "sublayer_fields", ()):
        specs = kwargs.get(field)
        if specs is None:
            continue
        _check_sublayer_list(specs, where, label, kind, field, depth)
        for j, sub in enumerate(specs):
            inner = expected_arrays(sub, where, f"{label} ({kind}) {field}[{j}]", depth + 1)
            shapes.update({f"{field}.{j}.{name}": shape for name, shape in inner.items()})
    return shapes


def _check_sublayer_list(specs, where, label, kind, field, depth) -> None:
    if depth >= _MAX_NESTING:
        raise ModelFileError(f"{where}: {label} nests layers more than {_MAX_NESTING} deep")
    if not isinstance(specs, list):
        raise ModelFileError(f"{where}: {label} ({kind}) field {field!r} must be a list of "
                             f"layers, got {type(specs).__name__}")
    if len(specs) > _MAX_LAYERS:
        raise ModelFileError(f"{where}: {label} ({kind}) field {field!r} has more than "
                             f"{_MAX_LAYERS} layers")


def build_layer(spec, where="config", label="layer", depth=0):
    """Build one layer from ``{"type": ..., **layer.config()}``; raises ModelFileError.

    Layers that contain layers (``Residual``) list the constructor arguments holding them in
    ``sublayer_fields``; those arguments are lists of specs, built here recursively (``label``
    then reads e.g. ``layer 3 (Residual) body[1]``). The arguments are checked by
    :func:`_layer_kwargs` first; sizes are the caller's business (:func:`expected_arrays`).
    """
    cls, kind, kwargs = _layer_kwargs(spec, where, label)
    for field in getattr(cls, "sublayer_fields", ()):
        specs = kwargs.get(field)
        if specs is None:
            continue
        _check_sublayer_list(specs, where, label, kind, field, depth)
        kwargs[field] = [build_layer(s, where, f"{label} ({kind}) {field}[{j}]", depth + 1)
                         for j, s in enumerate(specs)]
    try:
        return cls(**kwargs)
    except Exception as err:  # untrusted arguments: whatever the constructor objects to, say it
        detail = str(err) if isinstance(err, (TypeError, ValueError)) else \
            f"{type(err).__name__}: {err}"
        raise ModelFileError(f"{where}: {label} ({kind}) has invalid arguments: {detail}") \
            from None


def build_from_config(architecture: dict, where="config", tensors: dict | None = None):
    """Build an (untrained) Sequential from ``model.config()``; raises ModelFileError.

    Before any layer is built, the arrays every layer will hold are computed from its
    arguments (:func:`expected_arrays`). With ``tensors`` (``{name: (dtype, shape)}`` of a model
    file) they must match the file's tensors exactly; without, their total must stay below
    ``_MAX_CONFIG_ELEMENTS``. Either way, an absurd size is refused before it is allocated.
    """
    from .model import Sequential

    _check_architecture(architecture, where)
    total = 0
    for i, spec in enumerate(architecture["layers"]):
        label = f"layer {i}"
        for name, shape in expected_arrays(spec, where, label).items():
            total += math.prod(shape)
            if tensors is None:
                continue
            key = f"layers.{i}.{name}"
            if key not in tensors:
                raise ModelFileError(f"{where}: missing tensor {key} for {label} ({spec['type']})")
            if tensors[key][1] != tuple(shape):
                raise ModelFileError(f"{where}: tensor {key} has shape {tensors[key][1]}, but "
                                     f"{label} ({spec['type']}) needs {tuple(shape)}")
    if tensors is None and total > _MAX_CONFIG_ELEMENTS:
        raise ModelFileError(f"{where}: the architecture has {total:,} parameters, more than "
                             f"the {_MAX_CONFIG_ELEMENTS:,} minicnn builds from a config")
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


def load_model(path):
    """Load a model written by :func:`save_model`. Never executes code from the file.

    Raises FileNotFoundError for a missing file and :class:`ModelFileError` for anything
    unreadable, damaged or inconsistent (with a message saying what). A training checkpoint
    is also a model file: its optimizer state is ignored here (see :func:`load_checkpoint`).
    """
    return load_checkpoint(path)[0]


def load_checkpoint(path):
    """``(model, optimizer_tensors, training_state)`` from a model file or training checkpoint.

    ``training_state`` is None for a plain model file. Validation as in :func:`load_model`.
    """
    from safetensors.numpy import load

    path = Path(path)
    if path.is_dir():
        raise ModelFileError(f"{path}: a folder, not a model file")
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    data = path.read_bytes()
    header, infos = _read_header(data, path)
    architecture, user = _parse_metadata(header, path)
    for key, (dtype, _) in infos.items():  # before reading any tensor data
        if dtype not in ("float32", "float64"):
            raise ModelFileError(f"{path}: tensor {key} has dtype {dtype}; expected float32 or "
                                 "float64")
    # compares every layer's array shapes, computed from its arguments, with the header
    # before building anything, so a hostile size is never allocated
    model = build_from_config(architecture, where=str(path), tensors=infos)
    try:
        tensors = load(data)
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise ModelFileError(f"{path}: damaged tensor data: {err}") from None

    expected = set()
    for i, layer in enumerate(model.layers):
        for name, array in layer.named_arrays().items():
            key = f"layers.{i}.{name}"
            expected.add(key)
            if key not in tensors:
                raise ModelFileError(f"{path}: missing tensor {key} for layer {i} ({layer.name})")
            value = tensors[key]
            if value.shape != array.data.shape:
                raise ModelFileError(
                    f"{path}: tensor {key} has shape {value.shape}, but layer {i} "
                    f"({layer.name}) needs {tuple(array.data.shape)}"
                )
            if value.dtype not in (np.float32, np.float64):
                raise ModelFileError(f"{path}: tensor {key} has dtype {value.dtype}; "
                                     "expected float32 or float64")
            if not np.isfinite(value).all():
                raise ModelFileError(f"{path}: tensor {key} contains NaN or infinite values")
            array.data = backend.to_device(np.array(value))
            if hasattr(array, "grad"):
                array.zero_grad()
    training_state = None
    if "training_state" in header["__metadata__"]:
        try:
            training_state = json.loads(header["__metadata__"]["training_state"])
        except _JSON_ERRORS:
            raise ModelFileError(f"{path}: training state is not valid JSON") from None
        if not isinstance(training_state, dict):
            raise ModelFileError(f"{path}: training state must be a JSON object")
    optimizer_tensors = {}
    for key in sorted(set(tensors) - expected):
        if training_state is None or not key.startswith("optimizer."):
            raise ModelFileError(f"{path}: unexpected tensor {key} not used by the architecture")
        value = tensors[key]
        if value.dtype not in (np.float32, np.float64) or not np.isfinite(value).all():
            raise ModelFileError(f"{path}: optimizer tensor {key} is not finite float data")
        optimizer_tensors[key[len("optimizer."):]] = np.array(value)
    _check_metadata_fits(model, architecture, user, str(path))
    model.metadata = user
    return model, optimizer_tensors, training_state


def _check_metadata_fits(model, architecture: dict, user: dict, where: str) -> None:
    """The user metadata minicnn reads must agree with the architecture (class count, input
    shape, channels), so the CLI and reports can rely on it."""
    shape = user.get("input_shape") or architecture.get("input_shape")
    if user.get("input_shape") and architecture.get("input_shape") \
            and user["input_shape"] != architecture["input_shape"]:
        raise ModelFileError(f"{where}: metadata input_shape {user['input_shape']} differs from "
                             f"the architecture's {architecture['input_shape']}")
    if shape is None:
        return
    try:
        out = model.output_shape(shape)
    except ValueError as err:
        raise ModelFileError(f"{where}: the model cannot take its metadata input_shape "
                             f"{shape}: {err}") from None
    names = user.get("class_names")
    if names is not None and out != (len(names),):
        raise ModelFileError(f"{where}: metadata lists {len(names)} class_names but the model "
                             f"outputs shape {out}")
    norm = user.get("normalization")
    if norm is not None and len(norm["mean"]) not in (1, shape[0]):
        raise ModelFileError(f"{where}: metadata normalization has {len(norm['mean'])} values, "
                             f"the input has {shape[0]} channels")
