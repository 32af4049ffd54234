"""Model files: one safetensors file with the weights and the architecture as JSON metadata.

Layout of a file written by :func:`save_model`:

- tensors ``layers.<i>.<name>`` for every Parameter and Buffer of layer i
  (e.g. ``layers.0.weight``, ``layers.3.running_var``);
- metadata (string -> string): ``format = "minicnn"``, ``format_version``,
  ``architecture`` (the JSON of ``model.config()``) and ``user`` (JSON of the metadata dict the
  caller passed: class names, normalization, ...).

safetensors holds only raw arrays and a JSON header, so loading never executes code (unlike
pickle). :func:`load_model` validates everything before it builds the model; any problem with
the file raises :class:`ModelFileError`.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from . import backend
from .atomic import atomic_write_bytes

FORMAT_NAME = "minicnn"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
_MAX_HEADER_BYTES = 100_000_000


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
    try:
        user = json.dumps(metadata or {})
    except TypeError as err:
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


def _read_header(data: bytes, path) -> dict:
    if len(data) < 8:
        raise ModelFileError(f"{path}: not a model file (only {len(data)} bytes)")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > min(len(data) - 8, _MAX_HEADER_BYTES):
        raise ModelFileError(f"{path}: not a safetensors model file (bad header length)")
    try:
        header = json.loads(data[8:8 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelFileError(f"{path}: not a safetensors model file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: not a safetensors model file (header is not an object)")
    return header


def _parse_metadata(header: dict, path) -> tuple[dict, dict]:
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{path}: a safetensors file, but not a minicnn model "
                             "(no 'format: minicnn' metadata)")
    version = meta.get("format_version")
    if not isinstance(version, str) or not version.isdigit():
        raise ModelFileError(f"{path}: missing or malformed format_version {version!r}")
    if int(version) not in SUPPORTED_VERSIONS:
        raise ModelFileError(
            f"{path}: format version {version} is not supported by this minicnn "
            f"(supports {', '.join(map(str, SUPPORTED_VERSIONS))}); upgrade minicnn to load it"
        )
    try:
        architecture = json.loads(meta.get("architecture", ""))
        user = json.loads(meta.get("user", "{}"))
    except (TypeError, json.JSONDecodeError):
        raise ModelFileError(f"{path}: architecture or user metadata is not valid JSON") from None
    if not isinstance(architecture, dict) or not isinstance(architecture.get("layers"), list) \
            or not architecture["layers"]:
        raise ModelFileError(f"{path}: architecture must be an object with a non-empty "
                             "'layers' list")
    if not isinstance(user, dict):
        raise ModelFileError(f"{path}: user metadata must be a JSON object")
    return architecture, user


def build_from_config(architecture: dict, where="config"):
    """Build an (untrained) Sequential from ``model.config()``; raises ModelFileError."""
    from .layers import LAYER_TYPES
    from .model import Sequential

    layers = []
    for i, spec in enumerate(architecture["layers"]):
        if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
            raise ModelFileError(f"{where}: layer {i} has no 'type'")
        kind = spec["type"]
        if kind not in LAYER_TYPES:
            raise ModelFileError(f"{where}: layer {i} has unknown type {kind!r}; known types: "
                                 f"{', '.join(sorted(LAYER_TYPES))}")
        kwargs = {k: v for k, v in spec.items() if k != "type"}
        try:
            layers.append(LAYER_TYPES[kind](**kwargs))
        except (TypeError, ValueError) as err:
            raise ModelFileError(f"{where}: layer {i} ({kind}) has invalid arguments: {err}") \
                from None
    input_shape = architecture.get("input_shape")
    if input_shape is not None and (
            not isinstance(input_shape, list)
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0
                       for d in input_shape)):
        raise ModelFileError(f"{where}: input_shape must be a list of positive ints, "
                             f"got {input_shape!r}")
    return Sequential(layers, input_shape=input_shape)


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
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    data = path.read_bytes()
    header = _read_header(data, path)
    architecture, user = _parse_metadata(header, path)
    model = build_from_config(architecture, where=str(path))
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
        except (TypeError, json.JSONDecodeError):
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
    model.metadata = user
    return model, optimizer_tensors, training_state
