"""Model files: one safetensors file with the weights and the architecture as JSON metadata.

This module is the file format and nothing else: bytes <-> (architecture, tensors, metadata),
with every check a file from elsewhere needs. Turning an architecture into layers is
:mod:`minicnn.layers.build`'s job, and ``minicnn.load_model`` puts the two together.

Layout of a file (``Sequential.save``, :func:`write_model_file`):

- tensors ``layers.<name>`` for every Parameter and Buffer of the model, ``<name>`` being its
  path in the network (``layers.0.weight``, ``layers.3.running_var``; inside a ``Residual``
  ``layers.4.body.0.weight``, ``layers.4.shortcut.1.gamma``);
- metadata (string -> string): ``format = "minicnn"``, ``format_version``, ``architecture``
  (the JSON of ``model.config()``) and ``user`` (JSON of the metadata dict the caller passed:
  class names, normalization, ...); a training checkpoint adds ``training_state`` (JSON, see
  ``minicnn.checkpoints``) and ``optimizer.<i>.<name>`` tensors.

safetensors holds only raw arrays and a JSON header, so loading never executes code (unlike
pickle); the safetensors library reads and checks the container (header length, JSON, dtypes,
shapes, byte offsets inside the file) before anything is read.

**Format version 1** (``format_version = "1"``, the first and current version) is exactly the
layout above, with tensors of dtype F32 or F64 only, finite, in C order; ``architecture`` is
``{"layers": [{"type": <a minicnn.layers name>, <constructor arguments>}], "input_shape":
[C, H, W] or null}``; ``user`` is a JSON object whose keys minicnn itself reads are checked:
``class_names`` (strings, one per output), ``input_shape`` (as above) and ``normalization``
(``{"mean": [...], "std": [...]}``, one finite value per input channel, std > 0). A file with a
version below 1 (or none) was not written by minicnn and is refused as such; a newer version
is refused with a request to upgrade minicnn. When a version 2 appears, version 1 files will
keep loading (``SUPPORTED_VERSIONS``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import backend
from .atomic import atomic_write_bytes
from .validation import is_number

FORMAT_NAME = "minicnn"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
MAX_DIM = 2**20  # largest input_shape entry accepted (a 1M-pixel side)
_FLOAT_DTYPES = {"F32": "float32", "F64": "float64"}
_OTHER_DTYPES = {"F16": "float16", "BF16": "bfloat16", "I8": "int8", "I16": "int16", "I32": "int32",
                 "I64": "int64", "U8": "uint8", "U16": "uint16", "U32": "uint32", "U64": "uint64",
                 "BOOL": "bool"}
# JSON parsing of hostile input can fail in more ways than JSONDecodeError: deep nesting
# (RecursionError), integers of more than 4300 digits (ValueError)
_JSON_ERRORS = (ValueError, TypeError, RecursionError)


class ModelFileError(ValueError):
    """A model file is unreadable, damaged, or inconsistent with the architecture it declares."""


def write_model_file(path, architecture: dict, arrays: dict, metadata: dict | None = None,
                     extra_tensors: dict | None = None, training_state: dict | None = None) -> None:
    """Write a model file atomically (the old file survives a crash mid-save).

    ``arrays`` maps names to Parameters/Buffers or arrays (``model.named_arrays()``); they are
    stored as ``layers.<name>``. ``extra_tensors`` (stored under their own names) and
    ``training_state`` (JSON) are what training checkpoints add.
    """
    from safetensors.numpy import save

    tensors = {name: np.ascontiguousarray(backend.to_numpy(array))
               for name, array in (extra_tensors or {}).items()}
    for name, array in arrays.items():
        tensors[f"layers.{name}"] = np.ascontiguousarray(
            backend.to_numpy(getattr(array, "data", array)))
    # Never write a file that the loader would refuse (it would look like a good save).
    for name, array in tensors.items():
        if array.dtype not in (np.float32, np.float64):
            raise TypeError(f"save: tensor {name} has dtype {array.dtype}; model files hold "
                            "float32 or float64 tensors")
        if not np.isfinite(array).all():
            raise ValueError(f"save: tensor {name} contains NaN or infinite values; refusing to "
                             "save a model that could not be loaded back")
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"save: metadata must be a dict, got {type(metadata).__name__}")
    try:
        user = json.dumps(metadata or {}, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise TypeError(f"save: metadata must be JSON-serializable: {err}") from None
    header = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION),
              "architecture": json.dumps(architecture), "user": user}
    if training_state is not None:
        header["training_state"] = json.dumps(training_state)
    atomic_write_bytes(path, save(tensors, metadata=header))


@dataclass
class ModelFile:
    """What a model file holds, checked; tensors are read on demand (``tensor(name)``)."""

    path: Path
    architecture: dict
    user: dict
    training_state: dict | None
    shapes: dict  # tensor name -> shape, from the checked header

    def tensors(self, names) -> dict[str, np.ndarray]:
        """The named tensors (copies), each checked to be finite."""
        from safetensors import safe_open

        values = {}
        try:
            with safe_open(str(self.path), framework="numpy") as handle:
                for name in names:
                    values[name] = np.array(handle.get_tensor(name))
        except Exception as err:  # safetensors raises its own types for damaged data
            raise ModelFileError(f"{self.path}: damaged tensor data: {err}") from None
        for name, value in values.items():
            if not np.isfinite(value).all():
                raise ModelFileError(f"{self.path}: tensor {name} contains NaN or infinite values")
        return values


def read_model_file(path) -> ModelFile:
    """Open and check a model file: container, format name and version, architecture and user
    metadata (types), tensor dtypes. No tensor data is read yet. Raises FileNotFoundError for a
    missing file and :class:`ModelFileError` for anything else wrong, saying what."""
    from safetensors import safe_open

    path = Path(path)
    if path.is_dir():
        raise ModelFileError(f"{path}: a folder, not a model file")
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            meta = handle.metadata() or {}
            shapes, dtypes = {}, {}
            for name in handle.keys():
                view = handle.get_slice(name)
                shapes[name], dtypes[name] = tuple(view.get_shape()), view.get_dtype()
    except Exception as err:  # the library's errors for a damaged or foreign container
        raise ModelFileError(f"{path}: not a safetensors model file ({err})") from None
    if meta.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{path}: a safetensors file, but not a minicnn model "
                             "(no 'format: minicnn' metadata)")
    _check_version(meta, path)
    if "architecture" not in meta:
        raise ModelFileError(f"{path}: no architecture in the metadata")
    try:
        architecture = json.loads(meta["architecture"])
        user = json.loads(meta.get("user", "{}"))
        state = json.loads(meta["training_state"]) if "training_state" in meta else None
    except _JSON_ERRORS:
        raise ModelFileError(f"{path}: architecture, user metadata or training state is not "
                             "valid JSON") from None
    check_architecture(architecture, str(path))
    if not isinstance(user, dict):
        raise ModelFileError(f"{path}: user metadata must be a JSON object")
    _check_user_metadata(user, str(path))
    if state is not None and not isinstance(state, dict):
        raise ModelFileError(f"{path}: training state must be a JSON object")
    for name, dtype in dtypes.items():
        if dtype not in _FLOAT_DTYPES:
            raise ModelFileError(f"{path}: tensor {name} has dtype "
                                 f"{_OTHER_DTYPES.get(dtype, dtype)}; expected float32 or float64")
    return ModelFile(path, architecture, user, state, shapes)


def _check_version(meta: dict, path) -> int:
    version = meta.get("format_version")
    if version is None:
        raise ModelFileError(f"{path}: no format_version in the metadata; every minicnn model "
                             f"file has one (this minicnn reads version(s) "
                             f"{', '.join(map(str, SUPPORTED_VERSIONS))})")
    if not (version.isascii() and version.isdigit()) or len(version) > 9:
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
            f"(supports {', '.join(map(str, SUPPORTED_VERSIONS))}); upgrade minicnn to load it")
    return number


def check_input_shape(input_shape, where: str, what: str = "input_shape") -> None:
    if input_shape is not None and not (
            isinstance(input_shape, list) and 1 <= len(input_shape) <= 3
            and all(isinstance(d, int) and not isinstance(d, bool) and 0 < d <= MAX_DIM
                    for d in input_shape)):
        raise ModelFileError(f"{where}: {what} must be a list of 1 to 3 positive ints "
                             f"(each at most {MAX_DIM}), got {input_shape!r}")


def check_architecture(architecture, where: str) -> None:
    """The outer shape of an architecture: ``{"layers": [...], "input_shape": ...}``."""
    if not isinstance(architecture, dict) or not isinstance(architecture.get("layers"), list) \
            or not architecture["layers"]:
        raise ModelFileError(f"{where}: architecture must be an object with a non-empty "
                             "'layers' list")
    check_input_shape(architecture.get("input_shape"), where)


def _check_user_metadata(user: dict, where: str) -> None:
    """The keys minicnn itself uses (the CLI, reports) must have the right types."""
    names = user.get("class_names")
    if names is not None and not (isinstance(names, list) and names
                                  and all(isinstance(n, str) for n in names)):
        raise ModelFileError(f"{where}: metadata class_names must be a non-empty list of strings")
    check_input_shape(user.get("input_shape"), where, "metadata input_shape")
    norm = user.get("normalization")
    if norm is not None:
        mean = norm.get("mean") if isinstance(norm, dict) else None
        std = norm.get("std") if isinstance(norm, dict) else None
        if not (isinstance(mean, list) and isinstance(std, list) and mean
                and len(mean) == len(std) and all(map(is_number, mean + std))
                and all(v > 0 for v in std)):
            raise ModelFileError(f"{where}: metadata normalization must be {{'mean': [...], "
                                 "'std': [...]}} with one finite value per channel and std > 0")


def check_metadata_fits(model, architecture: dict, user: dict, where: str) -> None:
    """The user metadata minicnn reads must agree with the model (class count, input shape,
    channels), so the CLI and reports can rely on it."""
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


def _short_repr(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
