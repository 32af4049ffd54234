"""Run the cupy backend on the CPU: its CUDA source compiled with g++, launched by its own glue.

CI has no GPU. Instead of checking the CUDA kernels through a harness of their own, the tests
put a stand-in for CuPy in ``sys.modules["cupy"]`` and call minicnn.kernels.cupy_kernels as the
layers do. The stand-in is NumPy for arrays, plus:

- ``RawModule``: compiles the real ``cupy_kernels.cu`` with g++ and a launcher that plays the GPU
  (every thread of every block of the grid the glue asked for, with blockIdx/threadIdx set);
  ``get_function`` refuses a name that was not among the module's ``name_expressions``, as
  CuPy does; calling a kernel checks the glue's arguments against the kernel's compiled
  parameter list (an array for every pointer, a scalar of the same size and kind otherwise);
- ``ElementwiseKernel``: turns the kernel's parameter lists and operation into a C++ loop, so
  the CUDA C of the element-wise kernels (Adam) is compiled and run too.

So the grid and block sizes, the argument order and types and the instantiations the glue asks
for are exercised, not only the index arithmetic inside the kernels.
"""

from __future__ import annotations

import ctypes
import hashlib
import re
import shutil
import subprocess
import types
from pathlib import Path

import numpy as np

_SCALAR_CTYPES = {
    ("i", 1): ctypes.c_bool, ("i", 4): ctypes.c_int32, ("i", 8): ctypes.c_int64,
    ("f", 4): ctypes.c_float, ("f", 8): ctypes.c_double,
}
MAX_THREADS_PER_BLOCK = 1024  # CUDA's limit on every current GPU
MAX_GRID_X = 2**31 - 1

LAUNCHER = r"""
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>
struct Index3 { unsigned int x, y, z; };
static Index3 blockIdx, threadIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__
#include "%(source)s"

template <typename... P, std::size_t... I>
static void call_kernel(void (*kernel)(P...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<typename std::remove_reference<P>::type*>(args[I])...);
}

// a 1-D launch: every thread of every block, in order (the kernels must not depend on the order)
template <typename... P>
static void launch(void (*kernel)(P...), unsigned grid, unsigned block, void** args) {
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    for (blockIdx.x = 0; blockIdx.x < grid; ++blockIdx.x)
        for (threadIdx.x = 0; threadIdx.x < block; ++threadIdx.x)
            call_kernel(kernel, args, std::index_sequence_for<P...>{});
}

// the parameter list as text: 'p' pointer, 'i' integer, 'f' floating point, then the size
template <typename T> static void describe(char* out) {
    out[0] = std::is_pointer<T>::value ? 'p' : std::is_floating_point<T>::value ? 'f' : 'i';
    out[1] = (char)('0' + sizeof(T));
}
template <typename... P>
static int signature(void (*)(P...), char* out) {
    int i = 0;
    ((describe<P>(out + 2 * i), ++i), ...);
    return i;
}
"""


def find_compiler() -> str | None:
    return shutil.which("g++") or shutil.which("c++")


def _build(source: str, folder: Path) -> ctypes.CDLL:
    """Compile C++ ``source`` into a shared library (cached by its hash in ``folder``)."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    library = folder / f"emulated_{digest}.so"
    if not library.exists():
        cpp = folder / f"emulated_{digest}.cpp"
        cpp.write_text(source)
        result = subprocess.run([find_compiler(), "-O1", "-shared", "-fPIC", "-std=c++17",
                                 "-Wall", "-Werror", "-o", str(library), str(cpp)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"g++ could not compile the emulated kernels:\n{result.stderr}")
    return ctypes.CDLL(str(library))


def _c_name(expression: str) -> str:
    """'im2col<float>' -> 'im2col_float' (a C identifier for the exported launcher)."""
    return re.sub(r"\W+", "_", expression).strip("_")


def _argument(value, kind: str, size: int):
    """The C value the glue passes for one kernel parameter, checked like a real launch."""
    if kind == "p":
        if not isinstance(value, np.ndarray):
            raise TypeError(f"expected an array for a pointer parameter, got {type(value).__name__}")
        if not value.flags.c_contiguous:
            raise TypeError("kernels index arrays as C-contiguous; got a non-contiguous array")
        return ctypes.c_void_p(value.ctypes.data)
    if not isinstance(value, (np.generic, bool)):
        raise TypeError(f"expected a NumPy scalar of {size} bytes (CuPy passes Python ints as "
                        f"64-bit), got {type(value).__name__} {value!r}")
    dtype = np.dtype(type(value)) if isinstance(value, bool) else value.dtype
    actual = "f" if dtype.kind == "f" else "i"
    if (actual, dtype.itemsize) != (kind, size):
        raise TypeError(f"argument {value!r} is {dtype} but the kernel takes a "
                        f"{'floating point' if kind == 'f' else 'integer'} of {size} bytes")
    return _SCALAR_CTYPES[(kind, size)](value.item())


class EmulatedKernel:
    def __init__(self, library: ctypes.CDLL, expression: str):
        name = _c_name(expression)
        self.expression = expression
        self._launch = getattr(library, f"launch_{name}")
        self._launch.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.POINTER(ctypes.c_void_p)]
        text = ctypes.create_string_buffer(256)
        count = getattr(library, f"signature_{name}")(text)
        self.parameters = [(chr(text.raw[2 * k]), int(chr(text.raw[2 * k + 1])))
                           for k in range(count)]
        self.launches: list[tuple[int, int]] = []

    def __call__(self, grid, block, args):
        if not (isinstance(grid, tuple) and isinstance(block, tuple)):
            raise TypeError("CuPy kernels take grid and block as tuples")
        (blocks,), (threads,) = grid, block
        if not (1 <= threads <= MAX_THREADS_PER_BLOCK and 1 <= blocks <= MAX_GRID_X):
            raise ValueError(f"invalid launch of {self.expression}: grid {grid}, block {block}")
        if len(args) != len(self.parameters):
            raise TypeError(f"{self.expression} takes {len(self.parameters)} arguments, "
                            f"the glue passed {len(args)}")
        values = [_argument(value, kind, size)
                  for value, (kind, size) in zip(args, self.parameters)]
        pointers = (ctypes.c_void_p * len(values))(
            *[ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) for v in values])
        self.launches.append((blocks, threads))
        self._launch(blocks, threads, pointers)


class EmulatedRawModule:
    """``cupy.RawModule(code=..., options=..., name_expressions=[...])`` compiled by g++."""

    def __init__(self, folder: Path, code: str, options=(), name_expressions=()):
        self.names = list(name_expressions)
        exports = []
        for expression in self.names:
            name = _c_name(expression)
            exports.append(
                f'extern "C" void launch_{name}(unsigned g, unsigned b, void** a) '
                f"{{ launch(&{expression}, g, b, a); }}\n"
                f'extern "C" int signature_{name}(char* out) '
                f"{{ return signature(&{expression}, out); }}\n")
        source_file = folder / "cupy_kernels_source.cu"
        source_file.write_text(code)
        self._library = _build(LAUNCHER % {"source": source_file} + "".join(exports), folder)
        self.kernels: dict[str, EmulatedKernel] = {}

    def get_function(self, name: str) -> EmulatedKernel:
        if name not in self.names:
            raise KeyError(f"{name!r} is not among the module's name_expressions {self.names}")
        if name not in self.kernels:
            self.kernels[name] = EmulatedKernel(self._library, name)
        return self.kernels[name]


_C_TYPE_NAMES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
_NUMPY_TYPES = {"bool": np.bool_, "int": np.int32, "float": np.float32, "double": np.float64}


class EmulatedElementwiseKernel:
    """``cupy.ElementwiseKernel(in_params, out_params, operation, name)`` as a C++ loop.

    As in CuPy, an input parameter bound to an array is read element by element (arrays are
    broadcast against each other, so a (1, C, 1, 1) vector serves every pixel of channel c), one
    bound to a scalar is a constant, output parameters are arrays of the broadcast shape written
    in place, and the type placeholder T takes the dtype of the arrays it describes, which must
    all have that one dtype."""

    def __init__(self, folder: Path, in_params: str, out_params: str, operation: str, name: str,
                 **_):
        self.folder, self.operation, self.name = folder, operation, name
        self.inputs = [tuple(p.split()) for p in in_params.split(",")]
        self.outputs = [tuple(p.split()) for p in out_params.split(",")]
        self._compiled = {}

    def __call__(self, *args):
        params = self.inputs + self.outputs
        if len(args) != len(params):
            raise TypeError(f"{self.name} takes {len(params)} arguments, got {len(args)}")
        t_dtypes = {a.dtype for a, (t, _) in zip(args, params)
                    if isinstance(a, np.ndarray) and t == "T"}
        if len(t_dtypes) != 1:
            raise TypeError(f"{self.name}: the arrays of type T have dtypes {t_dtypes}")
        t_dtype = t_dtypes.pop()
        shape = np.broadcast_shapes(*(a.shape for a in args if isinstance(a, np.ndarray)))
        size = int(np.prod(shape))
        args = [np.ascontiguousarray(np.broadcast_to(a, shape))
                if isinstance(a, np.ndarray) and k < len(self.inputs) else a
                for k, a in enumerate(args)]
        lines = []
        for k, ((ctype, name), value) in enumerate(zip(params, args)):
            ctype = _C_TYPE_NAMES[t_dtype] if ctype == "T" else ctype
            is_output = k >= len(self.inputs)
            if isinstance(value, np.ndarray):
                if value.shape != shape or not value.flags.c_contiguous:
                    raise ValueError(f"{self.name}: output {name} must be contiguous, of the "
                                     f"broadcast shape {shape}, got {value.shape}")
                ref = "&" if is_output else ""
                lines.append(f"{ctype}{ref} {name} = (*({ctype}**)args[{k}])[i]; (void){name};")
            elif is_output:
                raise TypeError(f"{self.name}: output {name} must be an array")
            else:
                lines.append(f"const {ctype} {name} = *(const {ctype}*)args[{k}]; (void){name};")
        body = "\n".join(lines)
        source = ("#include <cmath>\nusing std::sqrt; using std::exp; using std::log;\n"
                  f'extern "C" void run(long long n, void** args) {{\n'
                  f"  typedef {_C_TYPE_NAMES[t_dtype]} T; (void)sizeof(T);\n"
                  f"  for (long long i = 0; i < n; ++i) {{\n{body}\n{self.operation};\n  }}\n}}\n")
        library = self._compiled.get(source)
        if library is None:
            library = self._compiled[source] = _build(source, self.folder)
        values = []
        for (ctype, _), value in zip(params, args):
            if isinstance(value, np.ndarray):
                values.append(ctypes.c_void_p(value.ctypes.data))
            else:
                dtype = t_dtype if ctype == "T" else np.dtype(_NUMPY_TYPES[ctype])
                values.append(np.ctypeslib.as_ctypes_type(dtype)(np.asarray(value, dtype).item()))
        pointers = (ctypes.c_void_p * len(values))(
            *[ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) for v in values])
        library.run(ctypes.c_longlong(size), pointers)


def fake_cupy(folder: Path) -> types.ModuleType:
    """A module that stands in for ``cupy``: NumPy's functions, the emulated kernels, one GPU."""
    module = types.ModuleType("cupy")
    for name in dir(np):
        if not name.startswith("__"):
            setattr(module, name, getattr(np, name))
    module.__emulated__ = True
    module.RawModule = lambda **kwargs: EmulatedRawModule(folder, **kwargs)
    module.ElementwiseKernel = lambda *args, **kwargs: EmulatedElementwiseKernel(folder, *args,
                                                                                 **kwargs)
    runtime = types.SimpleNamespace(getDeviceCount=lambda: 1)
    module.cuda = types.SimpleNamespace(runtime=runtime)
    return module
