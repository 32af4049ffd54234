"""How the numba backend uses the CPU cores, without changing anything else in the process.

A training step alternates parallel numba kernels (im2col, pooling, ...) with matrix multiplies
(GEMMs). Two thread pools that take turns like this on few cores only work if neither one keeps
a core busy while the other runs, and that is what the defaults of the libraries involved do:
OpenBLAS's workers spin for about 0.1 s after every multiply (``OPENBLAS_THREAD_TIMEOUT``),
numba's OpenMP workers spin after every kernel, and a PyTorch imported first brings its own
spinning OpenMP pool. Environment variables could quiet some of them, but only before those
libraries load, and they would change how every other library in the process runs.
minicnn arranges its own work instead:

- **Kernels** run on numba's TBB threading layer, whose workers go to sleep right after a
  parallel loop. The ``tbb`` package (a dependency) installs ``libtbb`` next to the Python
  environment, where numba's loader does not look inside a virtual environment; :func:`load_tbb`
  loads it by its path before the first kernel runs, so numba picks TBB in a venv too (check with
  ``numba.threading_layer()``). Where TBB is missing, numba falls back to OpenMP or its
  workqueue; minicnn still runs, a little slower.
- **Matrix multiplies** run on minicnn's own threads (:func:`matmul`): the product is cut into
  one block of columns per core, and each block is one single-threaded BLAS call. OpenBLAS's
  own pool is held to one thread for the duration of the call (threadpoolctl), so its workers
  are never woken and never spin; the previous setting is restored when the call returns, so
  other code in the process sees numpy's BLAS as it was. The setting is the process's, not a
  thread's, so threads that multiply at once (the studio's requests beside its training run)
  take turns holding it (:func:`blas_on_one_thread`).
- **Memory**: every training step allocates the same large arrays (im2col columns,
  activations, gradients). Fresh large allocations cost a page fault per 4 KiB, so the kernels
  take their outputs from :class:`Recycler`, which hands out again an array that nothing
  references any more (glibc's allocator is left alone).

None of this happens at import: the threads start with the first multiply, TBB loads with the
first kernel.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import math
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

# --- numba's threading layer -----------------------------------------------------------------

_TBB_LIBRARIES = ("libtbb.so.12", "libtbb.12.dylib", "tbb12.dll")


def load_tbb() -> str | None:
    """Load the ``tbb`` package's library by its path, so that numba can start its TBB
    threading layer from any install layout; returns the path, or None when not installed."""
    try:
        files = importlib.metadata.files("tbb") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name in _TBB_LIBRARIES:
            path = str(file.locate())
            try:
                ctypes.CDLL(path)
            except OSError:
                return None
            return path
    return None


# --- matrix multiplies on minicnn's threads --------------------------------------------------

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_blas = None
_parts = 1  # blocks per product: the caller's thread and the pool's

# Below this many multiply-adds a product runs in one call: splitting it costs more than it saves.
_SPLIT_MIN_MACS = 2_000_000


def _workers() -> ThreadPoolExecutor:
    """The thread pool: one thread per core numba uses, less the caller's."""
    global _pool, _parts
    with _lock:
        if _pool is None:
            import numba

            _parts = max(1, numba.get_num_threads())
            _pool = ThreadPoolExecutor(max(1, _parts - 1), thread_name_prefix="minicnn-matmul")
        return _pool


def numpy_blas():
    """numpy's BLAS as a threadpoolctl controller (``numpy_blas().info()``: what it runs on)."""
    global _blas
    if _blas is not None:  # every multiply asks: no lock once it exists
        return _blas
    with _lock:
        if _blas is None:
            from threadpoolctl import ThreadpoolController

            _blas = ThreadpoolController().select(user_api="blas")
        return _blas


# Re-entrant: a studio request holds it around a forward pass whose multiplies hold it again
_blas_turn = threading.RLock()


@contextmanager
def blas_on_one_thread():
    """Inside, numpy's BLAS runs each multiply on its calling thread; after, as it was.

    The thread count is one setting for the whole process. Two threads that each set it and
    restore what they found would, interleaved, leave it wrong for good (A sets 1, B finds 1,
    A restores all cores, B restores 1), and threadpoolctl (3.8 on) ignores a thread that sets
    it while another holds it. So the threads take turns: a multiply is already spread over
    every core, and one that waits for another's loses nothing.
    """
    with _blas_turn, numpy_blas().limit(limits=1):
        yield


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for 2-D float arrays, one block per core, numpy's BLAS held to one thread.

    The output is cut into column blocks (``a @ b[:, block]``); when it is too narrow for that,
    into row blocks (``a[block] @ b``), and when the product is long in its inner dimension and
    small (a weight gradient, ``dout @ cols.T``), into blocks of the inner dimension whose
    partial products are summed. Each block is an ordinary single-threaded BLAS call. (A product
    whose inner dimension dwarfs its sides is a loop of dot products instead, see
    ``_skinny_matmul``.)
    """
    m, k = a.shape
    n = b.shape[1]
    out = recycler.empty((m, n), np.result_type(a.dtype, b.dtype))
    pool = _workers()
    parts = _parts
    if (_is_skinny(m, k, n) and a.flags.c_contiguous and b.T.flags.c_contiguous
            and a.dtype == b.dtype == out.dtype and parts > 1):
        _skinny_matmul(a, b.T, out)
        return out
    if m * n * k < _SPLIT_MIN_MACS or parts == 1 or min(m, n) < 16:
        with blas_on_one_thread():
            np.matmul(a, b, out=out)
        return out
    if k > 4 * max(m, n):  # a long inner product: split k, add the partial products
        bounds = _blocks(k, parts)
        partial = [np.empty((m, n), out.dtype) for _ in bounds[1:]]
        with blas_on_one_thread():
            futures = [pool.submit(np.matmul, a[:, lo:hi], b[lo:hi], out=p)
                       for (lo, hi), p in zip(bounds[1:], partial)]
            lo, hi = bounds[0]
            np.matmul(a[:, lo:hi], b[lo:hi], out=out)
            for future, p in zip(futures, partial):
                future.result()
                out += p
        return out
    if n >= parts * 64:
        tasks = [(a, b[:, lo:hi], out[:, lo:hi]) for lo, hi in _blocks(n, parts)]
    else:
        tasks = [(a[lo:hi], b, out[lo:hi]) for lo, hi in _blocks(m, parts)]
    with blas_on_one_thread():
        futures = [pool.submit(np.matmul, x, y, out=z) for x, y, z in tasks[1:]]
        np.matmul(*tasks[0][:2], out=tasks[0][2])
        for future in futures:
            future.result()
    return out


def on_cores(count: int, work) -> list:
    """``work(lo, hi)`` for one contiguous share of ``range(count)`` per core, side by side on
    minicnn's threads, numpy's BLAS held to one thread per call meanwhile (so ``work`` may
    multiply with :func:`matmul_here`); returns the shares' results in order. ``work`` must not
    call :func:`on_cores` or :func:`matmul` itself: the pool's threads are busy with the shares."""
    pool = _workers()
    bounds = [(p * count // _parts, (p + 1) * count // _parts) for p in range(_parts)]
    bounds = [(lo, hi) for lo, hi in bounds if hi > lo] or [(0, count)]
    with blas_on_one_thread():
        futures = [pool.submit(work, lo, hi) for lo, hi in bounds[1:]]
        return [work(*bounds[0])] + [future.result() for future in futures]


def matmul_here(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``a @ b`` on the calling thread alone (into ``out`` where given, which may be a strided
    view): for the work that :func:`on_cores` runs."""
    return np.matmul(a, b, out=out)


# A product whose inner dimension is far longer than its sides, e.g. the weight gradient of a
# first convolution, ``dout @ cols.T`` = (16 x 131072) @ (131072 x 27): BLAS packs both operands
# for an output of a few hundred values and runs far under its peak. Dot products over blocks of
# the inner dimension, on every core, 2 rows of ``a`` against 4 rows of ``bt`` at a time
# (:func:`~minicnn.kernels.numba_dots.dots_2x4`), run 1.5 to 4 times as fast.
_SKINNY_BLOCK = 4096


def residual_array(residual, y):
    """What the kernels that write a convolution's y take for its ``residual``: the array, flat
    and in y's dtype, or an empty one for none (a kernel adds it where it has values)."""
    if residual is None:
        return np.empty(0, y.dtype)
    if residual.shape != y.shape:
        raise ValueError(f"residual of shape {residual.shape}: it is added to the convolution's "
                         f"output, of shape {y.shape}")
    return np.ascontiguousarray(residual, y.dtype).reshape(-1)


def _skinny_kernel():
    from numba import njit, prange
    from numba import uint64 as u

    from .numba_dots import dots_2x4

    @njit(parallel=True, cache=True, fastmath={"reassoc", "contract"})
    def skinny(a_flat, bt_flat, m, n, length, zero, partial):
        # partial[t, i, j] = a[i, block t] . bt[j, block t]
        blocks = (length + _SKINNY_BLOCK - 1) // _SKINNY_BLOCK
        for t in prange(blocks):
            lo = t * _SKINNY_BLOCK
            hi = min(length, lo + _SKINNY_BLOCK)
            for i in range(0, m, 2):
                a0, a1 = i * length, min(i + 1, m - 1) * length  # past the edge: row m-1 again
                for j in range(0, n, 4):
                    b0, b1 = j * length, min(j + 1, n - 1) * length
                    b2, b3 = min(j + 2, n - 1) * length, min(j + 3, n - 1) * length
                    rows = dots_2x4(a_flat, a0, a1, bt_flat, b0, b1, b2, b3, lo, hi, zero)
                    for di, sums in ((0, rows[0]), (1, rows[1])):
                        for dj in range(4):
                            if i + di < m and j + dj < n:
                                partial[u((t * m + i + di) * n + j + dj)] = sums[dj]

    return skinny


_skinny = None


def _is_skinny(m: int, k: int, n: int) -> bool:
    """Whether ``_skinny_matmul`` beats BLAS on (m, k) @ (k, n): a side under 16 with a long inner
    dimension, or an inner dimension at least 1024 times the longer side."""
    return (min(m, n) < 16 and k >= _SKINNY_BLOCK) or k >= 1024 * max(m, n)


def _skinny_matmul(a: np.ndarray, bt: np.ndarray, out: np.ndarray) -> None:
    """``out = a @ bt.T`` for C-contiguous a (m, k) and bt (n, k), k long (:func:`_is_skinny`)."""
    global _skinny
    if _skinny is None:
        _skinny = _skinny_kernel()
    m, k = a.shape
    n = bt.shape[0]
    blocks = -(-k // _SKINNY_BLOCK)
    partial = np.empty((blocks, m, n), out.dtype)
    _skinny(a.reshape(-1), bt.reshape(-1), m, n, k, out.dtype.type(0), partial.reshape(-1))
    np.sum(partial, axis=0, out=out)


def _blocks(size: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ranges covering [0, size), multiples of 16 where possible (whole
    SIMD vectors and cache lines for each thread)."""
    step = max(16, -(-math.ceil(size / parts) // 16) * 16)
    return [(lo, min(size, lo + step)) for lo in range(0, size, step)]


# --- recycled arrays --------------------------------------------------------------------------


class Recycler:
    """Hands out arrays for kernel outputs, reusing those that nothing references any more.

    ``empty(shape, dtype)`` returns an uninitialized array, like ``np.empty``. Arrays of at least
    ``min_bytes`` are remembered; a later request for the same shape and dtype gets one of them
    back once no one else holds it, or a view of it (CPython's reference count tells: the
    recycler's own reference is then the only one). Nothing can change under a caller: an array
    is only reused when the caller has let go of it and of every view into it.

    Keeps at most ``per_shape`` arrays of each shape and drops the least recently used free
    arrays beyond ``max_bytes`` in total.
    """

    # per_shape: a training step holds a dozen or more arrays of one shape at once (a ResNet
    # stage's activations and gradients all share it); fewer kept, the rest are fresh each step
    def __init__(self, min_bytes: int = 1 << 18, per_shape: int = 16, max_bytes: int = 1 << 30):
        self.min_bytes, self.per_shape, self.max_bytes = min_bytes, per_shape, max_bytes
        self._arrays: dict[tuple, list[np.ndarray]] = {}
        self._lock = threading.Lock()

    def empty(self, shape, dtype) -> np.ndarray:
        shape, dtype = tuple(int(s) for s in shape), np.dtype(dtype)
        if math.prod(shape) * dtype.itemsize < self.min_bytes:
            return np.empty(shape, dtype)
        with self._lock:
            arrays = self._arrays.setdefault((shape, dtype.str), [])
            for index in range(len(arrays)):
                if self._unused(arrays, index):
                    array = arrays.pop(index)
                    arrays.append(array)  # the most recently used last
                    return array
            array = np.empty(shape, dtype)
            arrays.append(array)
            if len(arrays) > self.per_shape:
                del arrays[0]  # forgotten here; it lives on as long as its user holds it
            self._trim()
            return array

    @staticmethod
    def _unused(arrays: list, index: int) -> bool:
        # the only references left: the list's and getrefcount's own argument
        return sys.getrefcount(arrays[index]) == 2

    def _trim(self) -> None:
        """Forget unused arrays, oldest first, until the remembered ones fit ``max_bytes``."""
        total = sum(a.nbytes for arrays in self._arrays.values() for a in arrays)
        for arrays in list(self._arrays.values()):
            index = 0
            while total > self.max_bytes and index < len(arrays):
                if self._unused(arrays, index):
                    total -= arrays[index].nbytes
                    del arrays[index]
                else:
                    index += 1

    def clear(self) -> None:
        with self._lock:
            self._arrays.clear()


recycler = Recycler()
