"""How fast minicnn trains and infers on this machine: ``minicnn bench``, and the training loop
``benchmarks/bench_train.py`` times beside PyTorch.

A speed holds for the processor it was measured on, so every figure names it:
:func:`cpu_model` gives it as the benchmarks' tables do, e.g. "AMD EPYC (family 26, Zen 5),
AVX-512". Each backend is measured in a fresh process of its own (one backend's threads and
caches never slow another's): ``python -m minicnn.benchmark --backend NAME`` measures one and
prints its result as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time

import numpy as np

WARM_UP_STEPS = 3  # the first steps compile numba's kernels and warm the caches

# AMD's families as their cores: the model name of a cloud VM often says only "AMD EPYC"
_AMD_CORES = {23: "Zen/Zen 2", 25: "Zen 3/Zen 4", 26: "Zen 5"}


def _cpuinfo() -> dict:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_isa(flags: str) -> str:
    """The widest vector ISA in /proc/cpuinfo's ``flags`` (what a BLAS and PyTorch's oneDNN pick
    their kernels by)."""
    flags = set(flags.split())
    return "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"


def cpu_model() -> str:
    """The CPU as a figure should name it: model (and AMD core family) and vector ISA, e.g.
    "AMD EPYC (family 26, Zen 5), AVX-512"."""
    info = _cpuinfo()
    name = info.get("model name") or platform.processor() or platform.machine()
    family = info.get("cpu family", "")
    if info.get("vendor_id") == "AuthenticAMD" and family.isdigit():
        core = _AMD_CORES.get(int(family))
        name += f" (family {family}" + (f", {core})" if core else ")")
    return f"{name}, {cpu_isa(info.get('flags', ''))}" if info else name


def training_steps(model, optimizer, loss_fn, batches):
    """``train(steps)``: that many training steps (forward, loss, backward without the input's
    gradient, as PyTorch skips it too, and the optimizer's step) over ``batches`` in turn."""
    def train(steps: int) -> None:
        for step in range(steps):
            xb, yb = batches[step % len(batches)]
            loss_fn.forward(model.forward(xb, training=True), yb)
            optimizer.zero_grad()
            model.backward(loss_fn.backward(), input_grad=False)
            optimizer.step()
    return train


def images_per_second(backend_name: str, batch_size: int = 128, steps: int = 20) -> dict:
    """Training (forward, loss, backward, Adam) and inference (``predict``) throughput of the
    reference network on ``backend_name``, in images per second, on random MNIST-shaped
    images: ``{"training": ..., "inference": ...}``."""
    from . import backend, models, optim
    from .losses import SoftmaxCrossEntropy

    backend.set_backend(backend_name)
    rng = np.random.default_rng(0)
    x = rng.random((batch_size, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, batch_size)
    xp = backend.xp()
    model = models.reference_cnn().to(backend_name)
    optimizer = optim.Adam(model.parameters())
    train = training_steps(model, optimizer, SoftmaxCrossEntropy(), [(xp.asarray(x),
                                                                      xp.asarray(y))])
    train(WARM_UP_STEPS)
    start = time.perf_counter()
    train(steps)
    float(optimizer.params[0].data.sum())  # waits for a GPU
    training = steps * batch_size / (time.perf_counter() - start)
    model.predict(x)
    start = time.perf_counter()
    for _ in range(steps):
        model.predict(x, batch_size=batch_size)
    return {"training": training, "inference": steps * batch_size / (time.perf_counter() - start)}


def bench(backends, batch_size: int = 128, steps: int = 20, verbose: int = 1) -> dict:
    """:func:`images_per_second` of each backend, each in a fresh process; prints a line per
    backend (and, with ``verbose``, what was measured where). Returns ``{backend: result}``."""
    if verbose:
        print(f"reference network, batches of {batch_size}, {steps} timed training steps and "
              f"inference batches, each backend in a fresh process; on {cpu_model()}")
    results = {}
    for name in backends:
        done = subprocess.run(
            [sys.executable, "-m", "minicnn.benchmark", "--backend", name, "--batch-size",
             str(batch_size), "--steps", str(steps)], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"minicnn bench: the {name} backend failed:\n"
                               f"{done.stderr[-2000:]}")
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{name:6s} training {results[name]['training']:8,.0f} images/s   "
              f"inference {results[name]['inference']:8,.0f} images/s")
    return results


def _main(argv=None) -> None:
    """One backend, measured in this process: its result as one line of JSON."""
    parser = argparse.ArgumentParser(prog="python -m minicnn.benchmark")
    parser.add_argument("--backend", required=True)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    print(json.dumps(images_per_second(args.backend, args.batch_size, args.steps)))


if __name__ == "__main__":
    _main()
