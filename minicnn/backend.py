"""Backends: which array module and which kernels the layers use.

minicnn's layers are written once, against "the array module" (``numpy`` or ``cupy``), and
call a handful of hot kernels (im2col, col2im, pooling) through :func:`kernels`. A backend
is the pair (array module, kernel module):

==========  ============  ==========================================================
name        arrays        kernels
==========  ============  ==========================================================
``numpy``   numpy         :mod:`minicnn.kernels.numpy_kernels` (the readable reference)
``numba``   numpy         :mod:`minicnn.kernels.numba_kernels` (JIT-compiled, parallel)
``cupy``    cupy (GPU)    :mod:`minicnn.kernels.cupy_kernels` (CUDA kernels)
==========  ============  ==========================================================

The backend follows the arrays (as Chainer's ``get_array_module`` does): every layer remembers
the backend it computes with (``layer.backend``) and ``model.to(name)`` moves one model, its
arrays and its kernels, leaving the rest of the process alone. The *default* backend, which new
layers start on, is ``$MINICNN_BACKEND`` when set, else ``numba`` when numba imports, else
``numpy``; :func:`set_backend` changes it. Nothing is imported, compiled or initialised on the
GPU until a backend is first used.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import numpy as np

BACKENDS = ("numpy", "numba", "cupy")

_KERNEL_MODULES = {
    "numpy": "minicnn.kernels.numpy_kernels",
    "numba": "minicnn.kernels.numba_kernels",
    "cupy": "minicnn.kernels.cupy_kernels",
}

_active: str | None = None

class BackendUnavailableError(ImportError):
    """The requested backend cannot run here (a package or a GPU is missing)."""


def _check_name(name: str) -> str:
    if not isinstance(name, str) or name.lower() not in BACKENDS:
        raise ValueError(
            f"unknown backend {name!r}; expected one of {', '.join(map(repr, BACKENDS))}"
        )
    return name.lower()


def backend_available(name: str) -> bool:
    """True when backend ``name`` can run on this machine."""
    try:
        _require(_check_name(name))
    except BackendUnavailableError:
        return False
    return True


def available_backends() -> list[str]:
    """The backends that can run on this machine, in the order of :data:`BACKENDS`."""
    return [name for name in BACKENDS if backend_available(name)]


def _require(name: str) -> None:
    """Raise BackendUnavailableError naming what is missing for backend ``name``."""
    if name == "numba":
        try:
            import numba  # noqa: F401
        except ImportError as err:
            raise BackendUnavailableError(
                "the 'numba' backend needs numba: pip install numba "
                f"(import failed: {err})"
            ) from err
    elif name == "cupy":
        try:
            import cupy
        except ImportError as err:
            raise BackendUnavailableError(
                "the 'cupy' backend needs CuPy and an NVIDIA GPU: "
                'pip install "minicnn[gpu]" (installs cupy-cuda12x); '
                f"import failed: {err}"
            ) from err
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as err:  # CUDA driver missing or broken
            raise BackendUnavailableError(
                f"the 'cupy' backend needs an NVIDIA GPU, but CUDA reports an error: {err}"
            ) from err
        if count < 1:
            raise BackendUnavailableError("the 'cupy' backend needs an NVIDIA GPU; none found")


def _default_backend() -> str:
    requested = os.environ.get("MINICNN_BACKEND")
    if requested:
        name = _check_name(requested)
        _require(name)
        return name
    return "numba" if backend_available("numba") else "numpy"


def get_backend() -> str:
    """The name of the default backend (the one new layers start on)."""
    global _active
    if _active is None:
        _active = _default_backend()
    return _active


def check_available(name: str) -> str:
    """``name`` lower-cased, when it is a backend that can run here; else the errors of
    :func:`set_backend` (ValueError, BackendUnavailableError)."""
    name = _check_name(name)
    _require(name)
    return name


def set_backend(name: str) -> str:
    """Make ``name`` ("numpy", "numba" or "cupy") the default backend of new layers; returns the
    old one. Existing models keep theirs (``model.to(name)`` moves one).

    Raises ValueError for an unknown name and BackendUnavailableError (an ImportError)
    when the backend cannot run here, saying what to install.
    """
    global _active
    name = check_available(name)
    previous = get_backend()
    _active = name
    return previous


class MemoryBudgetError(MemoryError, ValueError):
    """A computation would need more memory than :func:`memory_budget` allows, even for one sample.

    Raised *before* anything large is allocated. It is both a MemoryError and a ValueError, so
    ``except MemoryError`` and the usual ``except ValueError`` (e.g. the CLI's) both catch it.
    """


def _budget_from_env(default_mb: float = 1024.0) -> int:
    """``$MINICNN_MEMORY_BUDGET_MB`` in bytes; a malformed value is an error, not ignored."""
    text = os.environ.get("MINICNN_MEMORY_BUDGET_MB", "")
    if not text.strip():
        return int(default_mb * 2**20)
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"MINICNN_MEMORY_BUDGET_MB must be a positive number of MiB, got {text!r}")
    return max(1, int(value * 2**20))


_memory_budget_bytes: int | None = None  # read from the environment on first use


def memory_budget() -> int:
    """Bytes that ``predict``/``evaluate`` may use for activations at once (default 1 GiB,
    ``$MINICNN_MEMORY_BUDGET_MB``); they shrink their batches to stay within it."""
    global _memory_budget_bytes
    if _memory_budget_bytes is None:
        _memory_budget_bytes = _budget_from_env()
    return _memory_budget_bytes


def set_memory_budget(n_bytes: int) -> int:
    """Set the inference memory budget in bytes; returns the old one (see :func:`memory_budget`)."""
    global _memory_budget_bytes
    if isinstance(n_bytes, bool) or not isinstance(n_bytes, (int, np.integer)) or n_bytes < 1:
        raise ValueError(f"memory budget must be a positive number of bytes, got {n_bytes!r}")
    previous = memory_budget()
    _memory_budget_bytes = int(n_bytes)
    return previous


def kernels(name: str | None = None) -> ModuleType:
    """The kernel module of backend ``name`` (default: the active one)."""
    name = get_backend() if name is None else _check_name(name)
    return importlib.import_module(_KERNEL_MODULES[name])


def xp(name: str | None = None) -> ModuleType:
    """The array module of backend ``name`` (default: the active one)."""
    name = get_backend() if name is None else _check_name(name)
    if name == "cupy":
        _require("cupy")
        import cupy

        return cupy
    return np


from .kernels import array_module  # noqa: E402, F401 (numpy, or cupy for a GPU array)


def is_array(obj) -> bool:
    """True for numpy and cupy arrays."""
    return isinstance(obj, np.ndarray) or type(obj).__module__.startswith("cupy")


def to_device(array, name: str | None = None):
    """Move an array to where backend ``name`` keeps its arrays (GPU for cupy)."""
    if array is None:
        return None
    target = xp(name)
    if target is np:
        return to_numpy(array)
    return target.asarray(array)


def read_numbers(rows, backend_name: str | None = None) -> np.ndarray:
    """Rows of 0-d arrays (each step's loss, count, ...) as one float64 numpy array of shape
    (rows, values), read from the device in one transfer: a GPU is made to wait once, not once
    per value."""
    module = xp(backend_name)
    return to_numpy(module.stack([module.stack([value.astype(module.float64) for value in row])
                                  for row in rows]))


def to_numpy(array):
    """A numpy array for any numpy/cupy array (copies GPU arrays to the host)."""
    if array is None:
        return None
    if type(array).__module__.startswith("cupy"):
        return array.get()
    return np.asarray(array)
