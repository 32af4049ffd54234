"""Reading dataset pickles (CIFAR-10's batches) without ever running code from the file.

``pickle.load`` runs code: a pickle names importable callables (``os.system``...) and has them
called. The standard library's answer (the ``pickle`` documentation, "Restricting Globals") is an
Unpickler whose ``find_class`` decides what a name may resolve to; here it resolves only the few
names numpy uses to pickle numeric arrays, each to a stand-in that checks its arguments, and
refuses everything else. The result must then be plain data: dicts, lists, tuples, numbers,
strings, bytes and numeric numpy arrays (no object arrays), without cycles.

``encoding="bytes"`` reads Python 2 pickles (the CIFAR-10 batches were written by Python 2's
cPickle): their ``str`` objects come back as ``bytes``, so the keys read ``b"data"``.
"""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path

import numpy as np

from .idx import DatasetFileError

_MAX_DEPTH = 64  # dataset files are shallow


class _Refused(pickle.UnpicklingError):
    """A well-formed pickle asking for something this reader does not build."""


def _numeric_dtype(dtype) -> np.dtype:
    dtype = np.dtype(dtype.decode("latin1") if isinstance(dtype, bytes) else dtype)
    if dtype.kind not in "biufc" or dtype.fields is not None:
        raise _Refused(f"refusing dtype {dtype}: not a plain numeric type")
    return dtype


def _shape(shape) -> tuple:
    if not (isinstance(shape, tuple) and len(shape) <= 32
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise _Refused(f"refusing array shape {str(shape)[:60]}")
    return shape


class _Name:
    """What a name that is only ever an argument resolves to: not callable, so no opcode can
    call it (``numpy.ndarray`` itself would allocate any shape asked for)."""

    def __init__(self, name):
        self.name = name


_NDARRAY = _Name("numpy.ndarray")


def _reconstruct(subtype, shape, dtype):  # numpy.core.multiarray._reconstruct
    # numpy pickles an empty array here and sets its shape and bytes with BUILD (which checks
    # that the bytes, present in the file, match the shape)
    if subtype is not _NDARRAY or 0 not in _shape(shape):
        raise _Refused("refusing an array other than numpy's empty placeholder")
    return np.ndarray(shape, _numeric_dtype(dtype))


def _frombuffer(buffer, dtype, shape, order):  # numpy.core.numeric._frombuffer (protocol 5)
    return np.frombuffer(buffer, _numeric_dtype(dtype)).reshape(_shape(shape), order=order)


def _scalar(dtype, data):  # numpy.core.multiarray.scalar
    return np.frombuffer(data, _numeric_dtype(dtype), count=1)[0]


def _encode(text, encoding="utf-8"):  # _codecs.encode: how Python 3 pickles bytes in protocols 0-2
    if not isinstance(text, str) or encoding != "latin1":
        raise _Refused("refusing _codecs.encode other than text to latin1 bytes")
    return codecs.encode(text, "latin1")


def _bytes(kind):  # bytes() and bytearray(data[, "latin1"]): never bytes(n), which allocates n
    def build(*args):
        if args and not isinstance(args[0], (bytes, bytearray, str)):
            raise _Refused(f"refusing {kind.__name__}({type(args[0]).__name__})")
        return kind(*args)

    return build


_ALLOWED = {("_codecs", "encode"): _encode, ("numpy", "ndarray"): _NDARRAY,
            ("numpy", "dtype"): lambda dtype, align=False, copy=False:  # a copy: BUILD sets
            np.dtype(_numeric_dtype(dtype), align=bool(align), copy=True)}  # its byte order
for _builtins in ("builtins", "__builtin__"):
    _ALLOWED.update({(_builtins, "bytes"): _bytes(bytes),
                     (_builtins, "bytearray"): _bytes(bytearray)})
for _core in ("numpy.core", "numpy._core"):
    _ALLOWED.update({(f"{_core}.multiarray", "_reconstruct"): _reconstruct,
                     (f"{_core}.multiarray", "scalar"): _scalar,
                     (f"{_core}.numeric", "_frombuffer"): _frombuffer})


class _DatasetUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise _Refused(f"refusing {module}.{name}: not numpy array data")
        return _ALLOWED[(module, name)]

    def persistent_load(self, pid):
        raise _Refused("refusing a persistent id")


def _check_plain(value, depth=0, seen=None, active=None) -> None:
    """Plain data only, each container checked once (shared ones are not re-walked)."""
    seen, active = (set(), set()) if seen is None else (seen, active)
    if isinstance(value, np.ndarray):
        _numeric_dtype(value.dtype)
        return
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes, bytearray,
                                           np.generic)):
        return
    if not isinstance(value, (dict, list, tuple)):
        raise _Refused(f"refusing a {type(value).__name__} object")
    if id(value) in active:
        raise _Refused("the data contains itself (a cycle)")
    if id(value) in seen:
        return
    if depth > _MAX_DEPTH:
        raise _Refused(f"nested more than {_MAX_DEPTH} levels deep")
    active.add(id(value))
    items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
    for item in items:
        _check_plain(item, depth + 1, seen, active)
    active.discard(id(value))
    seen.add(id(value))


def loads(data: bytes, name: str = "pickle data"):
    """Decode ``data`` (see the module docstring); errors name ``name``.

    Raises DatasetFileError for a truncated or malformed pickle and for anything that is not
    plain data and numeric arrays. Nothing in the pickle is ever executed.
    """
    try:
        value = _DatasetUnpickler(io.BytesIO(bytes(data)), encoding="bytes").load()
        _check_plain(value)
    except _Refused as err:
        raise DatasetFileError(f"{name}: unsafe or unsupported pickle content: {err}") from None
    except Exception as err:  # truncated or malformed data: whatever the parser tripped on
        raise DatasetFileError(f"{name}: not a valid pickle file (corrupt or truncated: "
                               f"{type(err).__name__}: {err})") from None
    return value


def load(path):
    """Decode the pickle file at ``path`` (see :func:`loads`)."""
    path = Path(path)
    return loads(path.read_bytes(), str(path))
