"""Two process-wide settings that make the CPU backends much faster on machines with few cores.

Imported first by ``minicnn/__init__.py``, before NumPy. Both are measured on the reference
network (2 cores, numba backend; benchmarks/README.md), and both can be switched off.

**OpenBLAS's worker threads sleep as soon as a matrix multiply ends.** By default they keep
spinning for about 2**28 CPU cycles (~0.1 s) waiting for the next one. A training step
alternates GEMMs with numba kernels, so on 2 cores the spinning worker took a core away from
the numba kernel that ran next (about 20% of the training throughput). OpenBLAS reads
``OPENBLAS_THREAD_TIMEOUT`` (log2 of the spin time in cycles) only when it loads, i.e. when
NumPy is first imported: the setting applies when minicnn is imported before NumPy (the
``minicnn`` command, the examples and the benchmarks do) or when you export it yourself. A
value already in the environment is kept.

**Freed arrays stay in the heap for the next batch.** Every training step allocates the same
large arrays (activations, gradients) and frees them. glibc returns big blocks to the kernel on
free and gets fresh, zero-filled pages on the next allocation, paying a page fault per 4 KiB
each time (about 15% of a training step). With ``mallopt``, blocks up to 32 MiB come from the
heap, and up to 256 MiB of free space at its top is kept rather than given back, so the next
batch reuses the same memory. Set ``MINICNN_MALLOC_TUNING=0`` to leave glibc's defaults alone;
other C libraries are not touched.
"""

from __future__ import annotations

import ctypes
import os
import platform

OPENBLAS_THREAD_TIMEOUT = "8"  # 2**8 cycles: sleep almost at once
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # from glibc's <malloc.h>
_MMAP_THRESHOLD_BYTES = 32 * 2**20  # the largest value glibc accepts on 64-bit machines
_TRIM_THRESHOLD_BYTES = 256 * 2**20


def quiet_openblas_threads() -> None:
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", OPENBLAS_THREAD_TIMEOUT)


def keep_freed_memory() -> bool:
    """Ask glibc to serve and keep large blocks in the heap; True when it took the settings."""
    if os.environ.get("MINICNN_MALLOC_TUNING", "1").strip() == "0":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
                and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES))


quiet_openblas_threads()
MALLOC_TUNED = keep_freed_memory()
