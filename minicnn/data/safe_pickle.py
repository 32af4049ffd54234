"""A safe reader for the small subset of pickle that dataset files such as CIFAR-10 use.

``pickle.load`` runs code: a pickle may name any importable callable (``os.system``...) and have
it called while loading. This module never does that. It walks the opcodes with
``pickletools.genops`` (which only parses) and interprets them itself, building nothing but
dicts, lists, tuples, ints, floats, bools, None, str, bytes and numpy arrays/dtypes/scalars.

Only these globals are recognised, and they are *interpreted*, never imported or called:

- ``numpy.core.multiarray._reconstruct`` (also ``numpy._core...``) with ``numpy.ndarray``,
  followed by BUILD with the state ``(version, shape, dtype, is_fortran, rawdata)``: the array
  is rebuilt from its raw bytes with ``np.frombuffer`` (how numpy pickles arrays up to protocol 4,
  and how Python 2's cPickle wrote the CIFAR-10 batches);
- ``numpy.core.numeric._frombuffer(buffer, dtype, shape, order)`` (numpy with protocol 5);
- ``numpy.dtype(typestr, align, copy)`` plus BUILD with its state (byte order), for plain
  numeric dtypes only (bool, int, uint, float, complex; never object or structured dtypes);
- ``numpy.core.multiarray.scalar(dtype, rawbytes)`` (numpy scalars);
- ``_codecs.encode(text, "latin1")`` and ``bytes()``/``bytearray()``: how Python 3 writes
  bytes in protocols 0-2.

Anything else (another global, an object's ``__reduce__``, persistent ids, extension codes,
out-of-band buffers) raises DatasetFileError without having executed anything.

Python 2 ``str`` objects (opcodes STRING, BINSTRING, SHORT_BINSTRING) come back as ``bytes``,
like ``pickle.load(..., encoding="bytes")``, so the CIFAR keys read as ``b"data"``, ``b"labels"``.
"""

from __future__ import annotations

import math
import pickletools
from pathlib import Path

import numpy as np

from .idx import DatasetFileError

_MAX_DEPTH = 64  # nesting depth accepted when resolving the result; dataset files are shallow

_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): "reconstruct",
    ("numpy._core.multiarray", "_reconstruct"): "reconstruct",
    ("numpy.core.multiarray", "scalar"): "scalar",
    ("numpy._core.multiarray", "scalar"): "scalar",
    ("numpy.core.numeric", "_frombuffer"): "frombuffer",
    ("numpy._core.numeric", "_frombuffer"): "frombuffer",
    ("numpy", "ndarray"): "ndarray",
    ("numpy", "dtype"): "dtype",
    ("_codecs", "encode"): "encode",
    ("__builtin__", "bytes"): "bytes",
    ("builtins", "bytes"): "bytes",
    ("__builtin__", "bytearray"): "bytes",
    ("builtins", "bytearray"): "bytes",
}


class _Refused(Exception):
    """Internal: the pickle is well-formed but asks for something this reader does not do."""


class _Global:
    """A whitelisted global, as a name only: it is interpreted by REDUCE, never called."""

    __slots__ = ("kind", "qualname")

    def __init__(self, kind: str, qualname: str):
        self.kind, self.qualname = kind, qualname


class _DtypeStub:
    """``numpy.dtype(typestr, ...)`` awaiting its BUILD state (which carries the byte order)."""

    __slots__ = ("dtype",)

    def __init__(self, typestr):
        if isinstance(typestr, bytes):
            typestr = typestr.decode("ascii", "replace")
        if not isinstance(typestr, str):
            raise _Refused(f"numpy.dtype with a non-string type {type(typestr).__name__}")
        try:
            dtype = np.dtype(typestr)
        except (TypeError, ValueError):
            raise _Refused(f"unknown numpy dtype {typestr!r}") from None
        _check_plain(dtype)
        self.dtype = dtype

    def setstate(self, state):
        if not isinstance(state, tuple) or len(state) < 2:
            raise _Refused("unexpected numpy.dtype state")
        order = state[1].decode("latin-1") if isinstance(state[1], bytes) else state[1]  # Python 2 str
        if order in ("<", ">"):
            self.dtype = self.dtype.newbyteorder(order)
        elif order not in ("|", "="):
            raise _Refused(f"unexpected byte order {order!r} in numpy.dtype state")
        if any(item is not None for item in state[2:5]):
            raise _Refused("structured or sub-array numpy dtypes are not supported")


class _ArrayStub:
    """``numpy.core.multiarray._reconstruct(ndarray, ...)`` awaiting its BUILD state."""

    __slots__ = ("value",)

    def __init__(self):
        self.value = None

    def setstate(self, state):
        # (version, shape, dtype, is_fortran, rawdata); very old numpy omitted the version.
        if isinstance(state, tuple) and len(state) == 4:
            state = (0, *state)
        if not isinstance(state, tuple) or len(state) != 5:
            raise _Refused("unexpected numpy.ndarray state")
        _, shape, dtype, is_fortran, raw = state
        if not isinstance(dtype, np.dtype):
            raise _Refused("numpy.ndarray state without a dtype")
        self.value = _array_from_bytes(raw, dtype, shape, "F" if is_fortran else "C")


def _check_plain(dtype: np.dtype) -> None:
    if dtype.kind not in "biufc" or dtype.fields is not None or dtype.subdtype is not None:
        raise _Refused(f"numpy dtype {dtype} is not a plain numeric type")


def _array_from_bytes(raw, dtype, shape, order: str) -> np.ndarray:
    if isinstance(raw, bytearray):
        raw = bytes(raw)
    if not isinstance(raw, bytes):
        raise _Refused(f"array data given as {type(raw).__name__}, not raw bytes (object arrays are refused)")
    if not isinstance(dtype, np.dtype):
        raise _Refused("array without a numpy dtype")
    _check_plain(dtype)
    if isinstance(shape, int):
        shape = (shape,)
    if not isinstance(shape, tuple) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise _Refused(f"bad array shape {shape!r}")
    if len(raw) != math.prod(shape) * dtype.itemsize:
        raise _Refused(f"array of shape {shape} and dtype {dtype} needs {math.prod(shape) * dtype.itemsize} "
                       f"bytes, the pickle has {len(raw)}")
    if order not in ("C", "F"):
        raise _Refused(f"bad array order {order!r}")
    # A writable copy in native byte order, independent of the pickle's buffer.
    array = np.frombuffer(raw, dtype=dtype).reshape(shape, order=order)
    return np.array(array, dtype=dtype.newbyteorder("="), order="C")


def _reduce(func, args):
    """Interpret a REDUCE of a whitelisted global; everything else was refused at GLOBAL time."""
    if not isinstance(func, _Global):
        raise _Refused("REDUCE of something that is not a recognised global")
    if not isinstance(args, tuple):
        raise _Refused(f"{func.qualname} called with non-tuple arguments")
    kind = func.kind
    if kind == "reconstruct":
        if len(args) != 3 or not (isinstance(args[0], _Global) and args[0].kind == "ndarray"):
            raise _Refused("_reconstruct for something other than numpy.ndarray")
        return _ArrayStub()
    if kind == "dtype":
        if not 1 <= len(args) <= 3:
            raise _Refused("numpy.dtype with unexpected arguments")
        return _DtypeStub(args[0])
    if kind == "frombuffer":
        if len(args) != 4:
            raise _Refused("_frombuffer with unexpected arguments")
        buffer, dtype, shape, order = args
        return _array_from_bytes(buffer, dtype, shape, order)
    if kind == "scalar":
        if len(args) != 2 or not isinstance(args[0], np.dtype) or not isinstance(args[1], bytes):
            raise _Refused("numpy scalar with unexpected arguments")
        dtype, raw = args
        _check_plain(dtype)
        if len(raw) != dtype.itemsize:
            raise _Refused(f"numpy scalar of dtype {dtype} with {len(raw)} bytes")
        return np.frombuffer(raw, dtype=dtype)[0]
    if kind == "encode":
        if len(args) != 2 or not isinstance(args[0], str) or args[1] not in ("latin1", "latin-1"):
            raise _Refused("_codecs.encode other than (str, 'latin1')")
        return args[0].encode("latin-1")
    if kind == "bytes":
        if args == ():
            return b""
        if len(args) == 1 and isinstance(args[0], (bytes, bytearray)):
            return bytes(args[0])
        raise _Refused("bytes() with unexpected arguments")
    raise _Refused(f"{func.qualname} cannot be called")  # e.g. numpy.ndarray on its own


def _lookup_global(module, name) -> _Global:
    if not isinstance(module, str) or not isinstance(name, str):
        raise _Refused("global with a non-string name")
    kind = _GLOBALS.get((module, name))
    if kind is None:
        # The whole point of this module: refuse before anything is imported or called.
        raise _Refused(f"refusing the global {module}.{name} (only numpy arrays and basic types are allowed)")
    return _Global(kind, f"{module}.{name}")


class _Resolver:
    """Replaces the numpy stubs by the arrays/dtypes they built, walking lists, tuples and dicts.

    Globals may appear inside REDUCE arguments (``_reconstruct(numpy.ndarray, ...)``), never in
    the final result (``final=True``).

    The memo lets a pickle share one object in many places, so a few hundred bytes can describe
    a structure with 2**40 paths (``l1 = [l0, l0]``, ``l2 = [l1, l1]``, ...). A naive recursive
    walk would then never finish. So each call resolves every container once (by identity, which
    also keeps the sharing, as ``pickle`` does), refuses self-referencing containers, and all the
    calls of one :func:`loads` share a work budget proportional to the pickle's size, which stops
    a file that makes the reader resolve the same big structure again for every REDUCE.
    """

    def __init__(self, data_size: int):
        self.budget = 4 * data_size + 100_000

    def __call__(self, value, final=False):
        self._done: dict[int, tuple] = {}  # id(container) -> (container, resolved copy)
        self._active: set[int] = set()
        return self._walk(value, 0, final)

    def _walk(self, value, depth, final):
        if depth > _MAX_DEPTH:
            raise _Refused("nesting too deep")
        self.budget -= 1
        if self.budget < 0:
            raise _Refused("too many (shared) references for the size of the file")
        if isinstance(value, _ArrayStub):
            if value.value is None:
                raise _Refused("numpy array without its BUILD state")
            return value.value
        if isinstance(value, _DtypeStub):
            return value.dtype
        if isinstance(value, _Global):
            if final:
                raise _Refused(f"the global {value.qualname} used as a value")
            return value
        if not isinstance(value, (list, tuple, dict)):
            return value
        key = id(value)
        if key in self._done:
            return self._done[key][1]
        if key in self._active:
            raise _Refused("a container that contains itself")
        self._active.add(key)
        if isinstance(value, list):
            out = [self._walk(item, depth + 1, final) for item in value]
        elif isinstance(value, tuple):
            out = tuple(self._walk(item, depth + 1, final) for item in value)
        else:
            out = {self._walk(k, depth + 1, final): self._walk(v, depth + 1, final)
                   for k, v in value.items()}
        self._active.discard(key)
        self._done[key] = (value, out)  # keeps `value` alive, so its id is not reused
        return out


_MARK = object()
_INTS = {"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"}
_PY2_STRINGS = {"STRING", "BINSTRING", "SHORT_BINSTRING"}
_BYTES = {"BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8"}
_UNICODE = {"UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"}
_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}
_GETS = {"GET", "BINGET", "LONG_BINGET"}


def _run(data: bytes):
    _resolve = _Resolver(len(data))
    stack: list = []
    metastack: list = []
    memo: dict = {}

    def pop_mark() -> list:
        nonlocal stack
        items = stack
        stack = metastack.pop()
        return items

    for opcode, arg, _pos in pickletools.genops(data):
        op = opcode.name
        if op in ("PROTO", "FRAME"):
            if op == "PROTO" and not 0 <= arg <= 5:
                raise _Refused(f"unknown pickle protocol {arg}")
        elif op == "STOP":
            break
        elif op == "MARK":
            metastack.append(stack)
            stack = []
        elif op in _INTS or op in ("BINFLOAT", "FLOAT") or op in _UNICODE:
            stack.append(arg)
        elif op in _PY2_STRINGS:
            stack.append(arg.encode("latin-1"))  # pickletools decodes them as latin-1 text
        elif op in _BYTES:
            stack.append(bytes(arg))
        elif op == "NONE":
            stack.append(None)
        elif op in ("NEWTRUE", "NEWFALSE"):
            stack.append(op == "NEWTRUE")
        elif op == "EMPTY_LIST":
            stack.append([])
        elif op == "EMPTY_DICT":
            stack.append({})
        elif op == "EMPTY_TUPLE":
            stack.append(())
        elif op in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(op[-1])
            if len(stack) < n:
                raise _Refused("stack underflow")
            items = tuple(stack[-n:])
            del stack[-n:]
            stack.append(items)
        elif op in ("TUPLE", "LIST", "DICT"):
            # pop_mark() rebinds `stack`: take the items first, then append to the outer list.
            items = pop_mark()
            if op == "DICT":
                if len(items) % 2:
                    raise _Refused("DICT with an odd number of items")
                stack.append({_hashable(k): v for k, v in zip(items[::2], items[1::2])})
            else:
                stack.append(tuple(items) if op == "TUPLE" else items)
        elif op == "APPEND":
            value = stack.pop()
            _expect(stack[-1], list, "APPEND").append(value)
        elif op == "APPENDS":
            items = pop_mark()
            _expect(stack[-1], list, "APPENDS").extend(items)
        elif op == "SETITEM":
            value, key = stack.pop(), stack.pop()
            _expect(stack[-1], dict, "SETITEM")[_hashable(key)] = value
        elif op == "SETITEMS":
            items = pop_mark()
            target = _expect(stack[-1], dict, "SETITEMS")
            if len(items) % 2:
                raise _Refused("SETITEMS with an odd number of items")
            for key, value in zip(items[::2], items[1::2]):
                target[_hashable(key)] = value
        elif op == "POP":
            if stack:
                stack.pop()
            else:
                pop_mark()
        elif op == "POP_MARK":
            pop_mark()
        elif op == "DUP":
            stack.append(stack[-1])
        elif op in _PUTS:
            memo[arg] = stack[-1]
        elif op == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif op in _GETS:
            stack.append(memo[arg])
        elif op == "GLOBAL":
            module, _, name = arg.partition(" ")
            stack.append(_lookup_global(module, name))
        elif op == "STACK_GLOBAL":
            name, module = stack.pop(), stack.pop()
            stack.append(_lookup_global(module, name))
        elif op == "REDUCE":
            args = _resolve(stack.pop())
            func = stack.pop()
            stack.append(_reduce(func, args))
        elif op == "BUILD":
            state = _resolve(stack.pop())
            target = stack[-1]
            if not isinstance(target, (_ArrayStub, _DtypeStub)):
                raise _Refused(f"BUILD (object state) on a {type(target).__name__}")
            target.setstate(state)
        else:
            # INST, OBJ, NEWOBJ, NEWOBJ_EX, PERSID, BINPERSID, EXT1/2/4, NEXT_BUFFER, sets...
            raise _Refused(f"opcode {op} is not allowed in a dataset file")
    else:
        raise _Refused("no STOP opcode")  # genops raises before this; kept as a guard
    if len(stack) != 1 or metastack:
        raise _Refused("malformed pickle (stack not balanced at STOP)")
    return _resolve(stack[0], final=True)


def _expect(target, kind, op):
    if not isinstance(target, kind):
        raise _Refused(f"{op} on a {type(target).__name__}")
    return target


def _hashable(key):
    if isinstance(key, (_ArrayStub, _DtypeStub, _Global, list, dict)):
        raise _Refused(f"unhashable or unsupported dict key of type {type(key).__name__}")
    return key


def loads(data: bytes, name: str = "pickle data"):
    """Safely decode ``data`` (see the module docstring); errors name ``name``.

    Raises DatasetFileError for a truncated or malformed pickle and for anything outside the
    supported subset. Nothing in the pickle is ever executed.
    """
    try:
        return _run(bytes(data))
    except _Refused as err:
        raise DatasetFileError(f"{name}: unsafe or unsupported pickle content: {err}") from None
    except (ValueError, IndexError, KeyError, TypeError, EOFError, UnicodeError, OverflowError) as err:
        # genops raises ValueError on truncated data; our stack operations raise IndexError/KeyError
        # on malformed (not necessarily malicious) input.
        raise DatasetFileError(f"{name}: not a valid pickle file (corrupt or truncated: "
                               f"{type(err).__name__}: {err})") from None


def load(path):
    """Safely decode the pickle file at ``path`` (see :func:`loads`)."""
    path = Path(path)
    return loads(path.read_bytes(), str(path))
