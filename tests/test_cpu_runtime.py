"""How the numba backend runs: recycled output arrays, matrix multiplies on minicnn's threads with
numpy's BLAS held to one thread and restored, the TBB threading layer, no import side effects."""

import os
import subprocess
import sys

import numpy as np
import pytest

import minicnn as mc
from minicnn.layers import Conv2D, Dense, Flatten

numba_only = pytest.mark.skipif(not mc.backend.backend_available("numba"),
                                reason="numba is not installed")


def test_recycler_reuses_only_arrays_nobody_holds():
    from minicnn.kernels.cpu_runtime import Recycler

    recycler = Recycler(min_bytes=0)
    a = recycler.empty((10, 3), np.float32)
    first = id(a)
    b = recycler.empty((10, 3), np.float32)
    assert b is not a  # a is still held
    del a
    assert id(recycler.empty((10, 3), np.float32)) == first  # released: handed out again
    c = recycler.empty((10, 3), np.float32)
    view = c[2:]
    del c
    held = [recycler.empty((10, 3), np.float32) for _ in range(3)]
    assert all(h.base is None and not np.shares_memory(h, view) for h in held)  # a view holds it
    assert recycler.empty((10, 3), np.float64).dtype == np.float64
    small = Recycler(min_bytes=1 << 20)
    assert small.empty((4,), np.float32) is not small.empty((4,), np.float32)


def test_recycler_forgets_unused_arrays_beyond_its_limit():
    from minicnn.kernels.cpu_runtime import Recycler

    recycler = Recycler(min_bytes=0, max_bytes=1000)
    for n in range(1, 20):
        recycler.empty((n, 10), np.float32)  # dropped at once: all unused
    assert sum(a.nbytes for arrays in recycler._arrays.values() for a in arrays) <= 1000


@numba_only
@pytest.mark.parametrize("shape", [(3, 5, 7), (64, 288, 25088), (288, 64, 25088), (64, 25088, 288),
                                   (4, 70_000, 9), (32, 100_352, 9), (9, 5000, 40), (3, 4097, 5),
                                   (16, 40_000, 27), (33, 40_000, 23),
                                   (200, 3136, 128), (1000, 128, 10)])
def test_matmul_matches_numpy_for_every_way_of_splitting(shape):
    from minicnn.kernels import cpu_runtime

    m, k, n = shape
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    expected = a.astype(np.float64) @ b
    np.testing.assert_allclose(cpu_runtime.matmul(a, b), expected, rtol=1e-4, atol=1e-3)
    # transposed operands, as the layers pass them (dout @ cols.T, W2.T @ dout)
    np.testing.assert_allclose(cpu_runtime.matmul(b.T, a.T), expected.T, rtol=1e-4, atol=1e-3)
    bt = np.ascontiguousarray(b.T)  # a @ bt.T with both C-contiguous: a first layer's dW2
    np.testing.assert_allclose(cpu_runtime.matmul(a, bt.T), expected, rtol=1e-4, atol=1e-3)


def _numpy_blas_threads():
    """Threads of numpy's BLAS, the one minicnn multiplies with (numba loads scipy's as well)."""
    from minicnn.kernels import cpu_runtime

    return [lib["num_threads"] for lib in cpu_runtime.numpy_blas().info()]


@numba_only
def test_matmul_leaves_numpys_blas_threads_as_it_found_them():
    from minicnn.kernels import cpu_runtime

    before = _numpy_blas_threads()
    a = np.ones((256, 256), np.float32)
    cpu_runtime.matmul(a, a)
    assert _numpy_blas_threads() == before


@numba_only
@pytest.mark.parametrize("count", [0, 1, 2, 5, 128])
def test_on_cores_runs_every_index_once_in_order_with_blas_on_one_thread(count):
    """on_cores cuts range(count) into one share per core (the Winograd layers' samples): every
    index in exactly one share, the results in the shares' order, numpy's BLAS held to one
    thread while the shares run and as it was after."""
    from minicnn.kernels import cpu_runtime

    before = _numpy_blas_threads()
    seen = []

    def share(lo, hi):
        seen.append((lo, hi, _numpy_blas_threads()))
        return list(range(lo, hi))

    results = cpu_runtime.on_cores(count, share)
    assert [i for part in results for i in part] == list(range(count))
    assert all(threads == [1] * len(before) for _, _, threads in seen)
    assert len(seen) <= max(1, count)
    assert _numpy_blas_threads() == before


@numba_only
def test_two_threads_holding_blas_to_one_thread_leave_it_as_it_was():
    """The studio's training run and its requests hold numpy's BLAS to one thread from two
    threads at once. The setting is the process's: each thread restoring what it found would,
    interleaved (A holds, B holds, A restores all cores, B restores A's 1), leave BLAS on one
    thread for good. Each must multiply on one thread, and BLAS be as it was after both."""
    import threading
    import time

    from minicnn.kernels import cpu_runtime

    before = _numpy_blas_threads()
    if before == [1] * len(before):
        pytest.skip("numpy's BLAS runs on one thread here: nothing to restore")
    a_in, b_starts, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def a(lo, hi):
        a_in.set()
        b_starts.wait(10)
        time.sleep(0.3)  # B is inside now, or waiting for its turn
        seen["a"] = _numpy_blas_threads()

    def b(lo, hi):
        seen["b"] = _numpy_blas_threads()
        a_out.wait(10)  # B leaves after A

    def first():
        cpu_runtime.on_cores(1, a)
        a_out.set()

    def second():
        a_in.wait(10)
        b_starts.set()
        cpu_runtime.on_cores(1, b)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert seen["a"] == seen["b"] == [1] * len(before)
    assert _numpy_blas_threads() == before


@numba_only
def test_training_reuses_the_large_arrays_of_the_previous_step():
    """Every array of at least the recycler's size that the convolution keeps for its backward
    pass comes from the recycler, and the next step gets the same memory back. (Arrays below
    ``min_bytes`` come from malloc, which may or may not hand back the same address.)"""
    from minicnn.kernels.cpu_runtime import recycler
    mc.set_backend("numba")
    batch = 32  # the padded input (32, 3, 34, 34) float32 is over the recycler's 256 KiB
    model = mc.Sequential([Conv2D(3, 8, 3, padding=1), Flatten(), Dense(8 * 32 * 32, 2)], seed=0)
    x = np.random.default_rng(0).standard_normal((batch, 3, 32, 32)).astype(np.float32)
    dy = np.ones((batch, 2), np.float32)

    def large(saved):  # what the convolution keeps for its backward pass, whichever algorithm
        if isinstance(saved, np.ndarray):
            return [saved] if saved.nbytes >= recycler.min_bytes and saved is not x else []
        if isinstance(saved, (tuple, list)):
            return [array for item in saved for array in large(item)]
        return []

    def recycled(array):
        while array.base is not None:
            array = array.base
        return any(array is kept for kept_list in recycler._arrays.values() for kept in kept_list)

    addresses = []
    for _ in range(3):
        y = model.forward(x, training=True)
        model.backward(dy)
        saved = large(model.layers[0]._cache)
        assert saved and all(recycled(array) for array in saved), [array.shape for array in saved]
        addresses.append((y.ctypes.data, *(array.ctypes.data for array in saved)))
        del y, saved
    assert addresses[1] == addresses[2]  # the same memory, each step


def test_input_gradient_can_be_skipped(cpu_backend):
    rng = np.random.default_rng(0)
    conv = Conv2D(3, 5, (3, 2), stride=(2, 1), padding=1, rng=rng)
    x = rng.standard_normal((7, 3, 9, 8)).astype(np.float32)
    dy = rng.standard_normal((7, 5, 5, 9)).astype(np.float32)
    conv.forward(x)
    assert conv.backward(dy, input_grad=False) is None
    dw = conv.weight.grad.copy()
    conv.forward(x)
    assert conv.backward(dy) is not None
    np.testing.assert_array_equal(conv.weight.grad, dw)

    model = mc.Sequential([Conv2D(3, 2, 3), Flatten(), Dense(2 * 7 * 6, 2)], seed=0)
    model.forward(x)
    assert model.backward(np.ones((7, 2), np.float32), input_grad=False) is None
    assert model.layers[0].weight.grad.any()


CHILD = r"""
import os, sys, threading
before = dict(os.environ)
threads = threading.active_count()
import minicnn
import numpy as np
assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items())
assert threading.active_count() == threads, threading.enumerate()
assert "minicnn.kernels.numba_kernels" not in sys.modules  # nothing compiled or loaded yet
if minicnn.backend.backend_available("numba"):
    from minicnn import models
    from minicnn.kernels import numba_kernels
    minicnn.set_backend("numba")
    models.reference_cnn().forward(np.zeros((2, 1, 28, 28), np.float32))
    print(numba_kernels.threading_layer())
    assert dict(os.environ) == before
"""


def test_import_changes_nothing_in_the_process_and_numba_runs_on_tbb(tmp_path):
    """Importing minicnn sets no environment variable and starts no thread; the numba backend
    then runs on TBB where the tbb package is installed (also inside a virtual environment)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("LD_LIBRARY_PATH", "NUMBA_THREADING_LAYER")}
    result = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    if mc.backend.backend_available("numba") and _tbb_installed():
        assert result.stdout.split()[-1] == "tbb"


def _tbb_installed() -> bool:
    import importlib.metadata

    try:
        importlib.metadata.version("tbb")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def test_no_code_in_the_package_changes_the_process():
    """A static check: no environment writes, no allocator calls anywhere in minicnn/."""
    from pathlib import Path

    root = Path(mc.__file__).parent
    for path in root.rglob("*.py"):
        text = path.read_text()
        for forbidden in ("os.environ[", "os.environ.setdefault", "os.putenv", "mallopt",
                          "environ.update"):
            assert forbidden not in text, f"{path.relative_to(root)} uses {forbidden}"


def test_every_product_of_the_numba_backend_goes_through_cpu_runtime():
    """A static check: the numba backend's kernel modules multiply matrices only through
    cpu_runtime (matmul, and matmul_here inside on_cores), which holds numpy's BLAS to one
    thread. A plain ``@`` there wakes OpenBLAS's own threads, which then spin against the numba
    kernels that follow (it cost a cifar_vgg training step 20% once)."""
    import ast
    from pathlib import Path

    root = Path(mc.__file__).parent / "kernels"
    for name in ("numba_kernels.py", "numba_winograd.py"):
        tree = ast.parse((root / name).read_text())
        for node in ast.walk(tree):
            assert not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult)), \
                f"{name}:{node.lineno}: a product with '@' (use cpu_runtime.matmul)"
            if isinstance(node, ast.Attribute) and node.attr in ("matmul", "dot", "einsum",
                                                                 "tensordot", "inner"):
                assert not (isinstance(node.value, ast.Name) and node.value.id in ("np", "numpy")), \
                    f"{name}:{node.lineno}: np.{node.attr} (use cpu_runtime.matmul)"
