"""Shared pieces of the benchmarks: data, FLOP counts, a description of the machine."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone

from minicnn.benchmark import cpu_isa, cpu_model  # noqa: F401 (the benchmarks name the CPU so)


def synthetic_images(n: int, shape, seed: int = 0):
    """Random float32 images and int labels (throughput does not depend on the content)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return rng.random((n, *shape), dtype=np.float32), rng.integers(0, 10, n)


def training_flops(model_name: str, shape) -> int:
    """FLOPs of one training image: 2 per multiply-add of every Conv2D and Dense layer, for the
    forward pass, the weight gradient and the input gradient (none for the first layer, whose
    input gradient training skips). Element-wise work (ReLU, pooling, BatchNorm) is not
    counted: this is the work a matrix multiply does, to compare with the matmul peak."""
    from minicnn import models
    from minicnn.layers import Conv2D, Dense

    model = {"reference": models.reference_cnn, "cifar_vgg": models.cifar_vgg,
             "cifar_resnet": models.cifar_resnet}[model_name]()
    total, first = 0, True

    def walk(layer, current):  # a Residual's body and shortcut both see its input
        nonlocal total, first
        if isinstance(layer, (Conv2D, Dense)):
            multiply_adds = layer.flops(current)  # forward, bias adds included (negligible)
            total += multiply_adds * (2 if first else 3)
            first = False
        elif layer.name == "Residual":
            for _, part in layer.children():
                walk(part, current)
        elif layer.name == "Sequential":
            for inner in layer.layers:
                walk(inner, current)
                current = inner.output_shape(current)

    for layer in model.layers:
        walk(layer, tuple(shape))
        shape = layer.output_shape(tuple(shape))
    return total


def cpu_slug() -> str:
    """cpu_model() as a file name: one result file per CPU."""
    slug = "".join(c if c.isalnum() else "-" for c in cpu_model().lower())
    return "-".join(part for part in slug.split("-") if part)


def gpu_model() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def environment() -> dict:
    """Versions, the BLAS numpy uses and the threading layer numba runs on, in this process."""
    import numpy as np
    from threadpoolctl import threadpool_info

    info = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(), "cores": os.cpu_count(), "gpu": gpu_model(),
        "python": platform.python_version(), "numpy": np.__version__,
        "in_venv": sys.prefix != sys.base_prefix,
    }
    blas = sorted((lib for lib in threadpool_info() if lib["user_api"] == "blas"),
                  key=lambda lib: "numpy" not in lib["filepath"])  # numpy's own BLAS first
    info["blas"] = ", ".join(f"{lib['internal_api']} {lib['version']} {lib.get('architecture', '')}"
                             f" kernels, {lib['num_threads']} threads" for lib in blas[:1])
    if "minicnn.kernels.numba_kernels" in sys.modules:  # the numba backend ran here
        import numba

        from minicnn.kernels import numba_kernels

        info["numba"] = numba.__version__
        info["numba_threading_layer"] = numba_kernels.threading_layer()
    if "minicnn.kernels" in sys.modules:
        from minicnn import kernels

        info["conv_algorithm"] = kernels.get_conv_algorithm()
    if "cupy" in sys.modules:
        import cupy

        info["cupy"] = cupy.__version__
        info["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
    if "torch" in sys.modules:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    return info


def best_time(fn, repeats: int, sync=None) -> float:
    """Minimum wall time of ``fn()`` over ``repeats`` runs (``sync()`` waits for a GPU)."""
    import time

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

    atomic_write_bytes(path, json.dumps(payload, indent=1).encode())
