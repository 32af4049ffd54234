"""Per-layer convolution kernels, per algorithm: forward, backward-data and backward-weight time,
effective GFLOP/s and share of the matmul peak, beside PyTorch's time for the same layer; and a
roofline figure of every kernel.

    python benchmarks/bench_kernels.py                       # every backend here, batch 128
    python benchmarks/bench_kernels.py --backends numba --batch-size 64

Layers: every 3x3 convolution of cifar_vgg (3->32 and 32->32 at 32x32, 32->64 and 64->64 at
16x16, 64->128 and 128->128 at 8x8), cifar_resnet's narrowest (16->16 at 32x32) and the reference
network's two (1->32 at 28x28, 32->64 at 14x14); stride 1, padding 1. minicnn runs each layer
with every algorithm its backend has (im2col; Winograd F(2x2,3x3) and F(4x4,3x3) on the CPU
backends; the direct sum on numba; forced with ``minicnn.set_conv_algorithm``), and the table
marks the one it chooses by itself. Each framework runs in its own fresh process.

**Effective GFLOP/s** counts the direct convolution's multiply-adds (2*N*OH*OW*C*9*F) whatever the
algorithm does, so Winograd, which does fewer, can go past the matmul peak. "% of peak" is that
rate over the matmul peak measured in the same process (numpy's float32 2048^3 product on every
core; the GPU's own for cupy and torch-cuda).

**The roofline** (``--figure``, default benchmarks/results/roofline.png) places every kernel at
its arithmetic intensity (the FLOPs it really does, over the bytes of the arrays it must read and
write at least once: input, output, weights and, for im2col and Winograd, the intermediate
matrices they write and read back) and its achieved rate (those FLOPs over its time). The roofs
are the measured matmul peak and the measured memory bandwidth (a parallel copy of 256 MiB);
points under the slanted roof are memory-bound, under the flat one compute-bound.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import best_time, environment, write_json

HERE = Path(__file__).resolve().parent
LAYERS = {  # name: (in channels, out channels, image size)
    "vgg 3->32 @32": (3, 32, 32),
    "vgg 32->32 @32": (32, 32, 32),
    "vgg 32->64 @16": (32, 64, 16),
    "vgg 64->64 @16": (64, 64, 16),
    "vgg 64->128 @8": (64, 128, 8),
    "vgg 128->128 @8": (128, 128, 8),
    "resnet 16->16 @32": (16, 16, 32),
    "reference 1->32 @28": (1, 32, 28),
    "reference 32->64 @14": (32, 64, 14),
}
PHASES = ("forward", "backward_data", "backward_weight")
ALGORITHMS = {"numpy": ("im2col", "winograd2", "winograd"),
              "numba": ("im2col", "winograd2", "winograd", "direct"), "cupy": ("im2col",)}


def conv_flops(n, c, f, size):
    return 2 * n * size * size * c * 9 * f  # stride 1, padding 1: output size == input size


def algorithm_cost(algorithm, n, c, f, size, itemsize=4, blocked=False):
    """(FLOPs really done, bytes read and written at least once) per phase, for the roofline.
    ``blocked``: Winograd run a block of samples at a time (numba), where only V goes to memory
    (written by the forward pass, read for the weight gradient)."""
    x, y, w = n * c * size * size, n * f * size * size, f * c * 9
    if algorithm == "direct":  # nothing in between but padded copies of x (forward) and dy
        gemm = conv_flops(n, c, f, size)
        return {"forward": (gemm, itemsize * (2 * x + y + w)),
                "backward_data": (gemm, itemsize * (2 * y + x + w)),
                "backward_weight": (gemm, itemsize * (x + 2 * y + w))}
    if algorithm.startswith("winograd"):
        m = 2 if algorithm == "winograd2" else 4
        tiles = n * (-(-size // m)) ** 2
        a2 = (m + 2) ** 2
        gemm = 2 * a2 * f * c * tiles
        v, mm = a2 * c * tiles, a2 * f * tiles  # transformed input (V) and products (M)
        if blocked:
            return {"forward": (gemm, itemsize * (x + v + y + w)),
                    "backward_data": (gemm, itemsize * (y + x + w)),
                    "backward_weight": (gemm, itemsize * (y + v + w))}
        return {"forward": (gemm, itemsize * (x + 2 * v + 2 * mm + y + w)),
                "backward_data": (gemm, itemsize * (y + 2 * mm + 2 * v + x + w)),
                "backward_weight": (gemm, itemsize * (y + 2 * mm + v + w))}
    cols = c * 9 * n * size * size
    gemm = conv_flops(n, c, f, size)
    return {"forward": (gemm, itemsize * (x + 2 * cols + 3 * y + w)),
            "backward_data": (gemm, itemsize * (3 * y + 2 * cols + x + w)),
            "backward_weight": (gemm, itemsize * (y + cols + w))}


def bench_minicnn_layer(backend, n, c, f, size, repeats):
    import minicnn as mc
    from minicnn.layers import Conv2D

    mc.set_backend(backend)
    xp = mc.backend.xp()
    sync = (lambda: xp.cuda.Device().synchronize()) if backend == "cupy" else None
    rng = np.random.default_rng(0)
    conv = Conv2D(c, f, 3, padding=1, bias=False, rng=rng).to(backend)
    x = xp.asarray(rng.standard_normal((n, c, size, size), dtype=np.float32))
    dy = xp.asarray(rng.standard_normal((n, f, size, size), dtype=np.float32))
    chosen = conv.algorithms((c, size, size))[0]
    results = {}
    for algorithm in ALGORITHMS[backend]:
        mc.set_conv_algorithm(algorithm)
        # backward() reads what the last forward() cached, so it can be timed on its own
        t_forward = best_time(lambda: conv.forward(x, training=True), repeats, sync)
        conv.forward(x, training=True)
        t_weight = best_time(lambda: conv.backward(dy, input_grad=False), repeats, sync)
        t_both = best_time(lambda: conv.backward(dy), repeats, sync)
        name = conv.algorithms((c, size, size))[0]
        results[name] = {"forward_ms": 1e3 * t_forward, "backward_weight_ms": 1e3 * t_weight,
                         # the input gradient's extra cost over a weight-only backward
                         "backward_data_ms": 1e3 * max(t_both - t_weight, 1e-6),
                         "chosen": name == chosen, "algorithm": algorithm}
    mc.set_conv_algorithm("auto")
    return results


def bench_torch_layer(torch, device, n, c, f, size, repeats):
    sync = torch.cuda.synchronize if device == "cuda" else None
    torch.backends.cudnn.allow_tf32 = False  # float32, as minicnn computes (TF32 is the default)
    x = torch.randn(n, c, size, size, device=device)
    w = torch.randn(f, c, 3, 3, device=device)
    dy = torch.randn(n, f, size, size, device=device)
    conv_bwd = torch.ops.aten.convolution_backward

    def backward(mask):
        return conv_bwd(dy, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask)

    return {"PyTorch": {
        "forward_ms": 1e3 * best_time(lambda: torch.nn.functional.conv2d(x, w, padding=1),
                                      repeats, sync),
        "backward_weight_ms": 1e3 * best_time(lambda: backward([False, True, False]), repeats, sync),
        "backward_data_ms": 1e3 * best_time(lambda: backward([True, False, False]), repeats, sync),
        "chosen": True, "algorithm": "PyTorch"}}


def matmul_peak_gflops(on_gpu: bool) -> float:
    if on_gpu:
        import cupy

        a = cupy.random.rand(8192, 8192, dtype=cupy.float32)
        sync = cupy.cuda.Device().synchronize
        return 2 * 8192**3 / best_time(lambda: a @ a, 5, sync) / 1e9
    a = np.random.default_rng(0).random((2048, 2048), dtype=np.float32)
    return 2 * 2048**3 / best_time(lambda: a @ a, 5) / 1e9


def memory_bandwidth_gbs(on_gpu: bool) -> float:
    """Bytes read + written per second by a parallel copy of 256 MiB (every core, or the GPU)."""
    if on_gpu:
        import cupy

        a = cupy.ones(64 << 20, cupy.float32)
        b = cupy.empty_like(a)
        sync = cupy.cuda.Device().synchronize
        return 2 * a.nbytes / best_time(lambda: b.__setitem__(Ellipsis, a), 5, sync) / 1e9
    from minicnn.kernels import numba_kernels

    a = np.ones(64 << 20, np.float32)
    numba_kernels.relu_forward(a)  # a parallel streaming kernel: read a, write its output
    return 2 * a.nbytes / best_time(lambda: numba_kernels.relu_forward(a), 5) / 1e9


def child(name, n, repeats) -> dict:
    """Every layer on one framework, in this (fresh) process."""
    results = {}
    for layer, (c, f, size) in LAYERS.items():
        if name.startswith("torch"):
            import torch

            results[layer] = bench_torch_layer(torch, "cuda" if name == "torch-cuda" else "cpu",
                                               n, c, f, size, repeats)
        else:
            results[layer] = bench_minicnn_layer(name, n, c, f, size, repeats)
    on_gpu = name in ("cupy", "torch-cuda")
    # numpy's own (multi-threaded) matmul last: its idle OpenBLAS workers keep spinning for
    # ~0.1 s after it returns and would slow down whatever is measured next
    results["matmul_peak_gflops"] = matmul_peak_gflops(on_gpu)
    results["bandwidth_gbs"] = memory_bandwidth_gbs(on_gpu) if name != "torch-cpu" else None
    results["environment"] = environment()
    return results


def numba_compile_times() -> dict:
    """First-call time of the reference network's kernels in fresh processes: cold, then warm."""
    code = (
        "import time, numpy as np\n"
        "t = time.perf_counter()\n"
        "import minicnn as mc\n"
        "from minicnn.layers import Conv2D, MaxPool2D\n"
        "mc.set_backend('numba')\n"
        "x = np.ones((2, 8, 8, 8), np.float32)\n"
        "c, p = Conv2D(8, 8, 3, padding=1), MaxPool2D(2)\n"
        "y = p.forward(c.forward(x)); c.backward(p.backward(np.ones_like(y)))\n"
        "print(time.perf_counter() - t)\n"
    )
    results = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for label in ("cold_s", "warm_s"):
            out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
            if out.returncode != 0:
                return {"error": out.stderr[-500:]}
            results[label] = float(out.stdout.strip().splitlines()[-1])
    return results


def roofline(measured: dict, n: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6))
    markers = {"forward": "o", "backward_data": "s", "backward_weight": "^"}
    colors = {}
    for name, results in measured.items():
        if name.startswith("torch"):
            continue  # PyTorch's kernels do not say what they read and write
        peak, bandwidth = results["matmul_peak_gflops"], results["bandwidth_gbs"]
        intensity = np.logspace(-1, 3, 200)
        line = ax.plot(intensity, np.minimum(peak, bandwidth * intensity), "--", linewidth=1,
                       label=f"{name}: matmul peak {peak:.0f} GFLOP/s, copy {bandwidth:.0f} GB/s")
        for layer, (c, f, size) in LAYERS.items():
            for algorithm, r in results[layer].items():
                key = f"{name} {algorithm}"
                if key not in colors:
                    colors[key] = f"C{len(colors) + 1}"
                cost = algorithm_cost(r["algorithm"], n, c, f, size, blocked=name == "numba")
                for phase, (flops, nbytes) in cost.items():
                    achieved = flops / (r[f"{phase}_ms"] / 1e3) / 1e9
                    ax.scatter(flops / nbytes, achieved, marker=markers[phase], color=colors[key],
                               s=25, alpha=0.8)
        line[0].set_color("black" if name != "cupy" else "grey")
    for key, color in colors.items():
        ax.scatter([], [], color=color, label=key)
    for phase, marker in markers.items():
        ax.scatter([], [], color="white", edgecolors="black", marker=marker,
                   label=phase.replace("_", " "))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOPs done per byte read and written)")
    ax.set_ylabel("achieved GFLOP/s (FLOPs done / time)")
    ax.set_title(f"Convolution kernels, batch {n}: every layer of bench_kernels, one point per "
                 "kernel", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=None, help="minicnn backends (default: all here)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--figure", default=str(HERE / "results" / "roofline.png"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    n, repeats = args.batch_size, args.repeats
    if args.child:
        print(json.dumps(child(args.child, n, repeats)))
        return

    import importlib.util

    import minicnn as mc

    frameworks = (args.backends.split(",") if args.backends else mc.available_backends())
    if not args.no_torch and importlib.util.find_spec("torch") is not None:
        frameworks.append("torch-cpu")
        if "cupy" in frameworks:
            frameworks.append("torch-cuda")
    measured = {}
    for name in frameworks:
        print(f"{name} ...", file=sys.stderr, flush=True)
        out = subprocess.run([sys.executable, __file__, "--child", name, "--batch-size", str(n),
                              "--repeats", str(repeats)], capture_output=True, text=True, cwd=HERE)
        if out.returncode != 0:
            raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
        measured[name] = json.loads(out.stdout.strip().splitlines()[-1])

    rows = []
    for layer, (c, f, size) in LAYERS.items():
        flops = conv_flops(n, c, f, size)
        torch_row = next((measured[k][layer]["PyTorch"] for k in ("torch-cpu",) if k in measured),
                         None)
        for name in frameworks:
            on_gpu = name in ("cupy", "torch-cuda")
            peak = measured[name]["matmul_peak_gflops"]
            for algorithm, r in measured[name][layer].items():
                cells = []
                for phase in PHASES:
                    gflops = flops / (r[f"{phase}_ms"] / 1e3) / 1e9
                    r[f"{phase}_gflops"] = gflops
                    vs = ""
                    if torch_row is not None and not on_gpu and not name.startswith("torch"):
                        vs = f", {torch_row[f'{phase}_ms'] / r[f'{phase}_ms']:.2f}x"
                    cells.append(f"{r[f'{phase}_ms']:.1f} ({gflops:.0f}, {gflops / peak:.0%}{vs})")
                label = algorithm + (" *" if r["chosen"] and not name.startswith("torch") else "")
                rows.append(f"| {layer} | {name} | {label} | " + " | ".join(cells) + " |")

    compile_times = numba_compile_times() if "numba" in frameworks else {}
    env = {key: value for name in frameworks for key, value in measured[name]["environment"].items()}
    env["command"] = "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    peaks = ", ".join(f"{name} {measured[name]['matmul_peak_gflops']:.0f}" for name in frameworks)
    bandwidths = ", ".join(f"{name} {measured[name]['bandwidth_gbs']:.0f} GB/s"
                           for name in frameworks if measured[name]["bandwidth_gbs"])
    header = [f"| layer (batch {n}) | framework | algorithm (* = chosen) | forward ms (GFLOP/s, "
              "% of peak, x PyTorch) | backward-data ms (...) | backward-weight ms (...) |",
              "|---|---|---|---:|---:|---:|"]
    table = "\n".join(header + rows)
    text = (f"{env['cpu']} ({env['cores']} cores), GPU: {env['gpu']}; {env['blas']}; numba "
            f"threading layer: {env.get('numba_threading_layer', '-')}; matmul peak GFLOP/s: "
            f"{peaks}; copy bandwidth: {bandwidths}; {env['date']}\n\n{table}")
    print("\n" + text)
    if compile_times:
        print(f"numba compile (first call, fresh process): {json.dumps(compile_times)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = f"kernels_b{n}" + ("_gpu" if env["gpu"] else "")
    write_json(out / f"{tag}.json", {"machine": env, "results": measured,
                                     "numba_compile": compile_times, "table": text})
    (out / f"{tag}.md").write_text(env["command"] + "\n\n" + text + "\n")
    roofline(measured, n, Path(args.figure))
    print(f"wrote {out / (tag + '.json')}, {out / (tag + '.md')} and {args.figure}")


if __name__ == "__main__":
    main()
