"""Shared pieces of the benchmarks: the reference network, machine description, timing."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from datetime import datetime, timezone

# isort: off
# minicnn first: it sets OpenBLAS's thread timeout, which OpenBLAS reads when numpy loads it
# (see minicnn/_process_tuning.py). PyTorch (MKL/oneDNN) does not use OpenBLAS.
import minicnn as mc
import numpy as np
# isort: on
from minicnn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU


def reference_minicnn(seed=0):
    """The benchmark network of the project (NCHW float32, MNIST-sized input)."""
    return mc.Sequential([
        Conv2D(1, 32, 3, padding=1), ReLU(), MaxPool2D(2),
        Conv2D(32, 64, 3, padding=1), ReLU(), MaxPool2D(2),
        Flatten(), Dense(3136, 128), ReLU(), Dense(128, 10),
    ], seed=seed, input_shape=(1, 28, 28))


def reference_torch(torch):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10),
    )


def try_import_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_model() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def machine_info() -> dict:
    info = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "gpu": gpu_model(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "minicnn": mc.__version__,
    }
    try:
        import numba

        info["numba"] = numba.__version__
        info["numba_threads"] = numba.get_num_threads()
    except ImportError:
        pass
    torch = try_import_torch()
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    try:
        import cupy

        info["cupy"] = cupy.__version__
    except ImportError:
        pass
    return info


def best_time(fn, repeats: int, sync=None) -> float:
    """Minimum wall time of ``fn()`` over ``repeats`` runs (``sync()`` waits for a GPU)."""
    best = float("inf")
    for _ in range(repeats):
        if sync:
            sync()
        start = time.perf_counter()
        fn()
        if sync:
            sync()
        best = min(best, time.perf_counter() - start)
    return best


def write_json(path, payload) -> None:
    from minicnn.atomic import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(payload, indent=2).encode())


def synthetic_mnist(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, n)
    return x, y
