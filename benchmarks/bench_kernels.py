"""Per-layer convolution kernels: forward, backward-data and backward-weight time and GFLOP/s,
for every available backend and PyTorch, plus where the time goes (im2col/col2im vs GEMM).

    python benchmarks/bench_kernels.py                 # all backends, batch 128
    python benchmarks/bench_kernels.py --backends numba --batch-size 64

Layers: the two convolutions of the reference network (1->32 at 28x28, 32->64 at 14x14) and a
CIFAR-size 64->64 3x3 convolution at 32x32, all stride 1, padding 1. Each framework runs in its
own fresh process. "GEMM efficiency" compares the conv forward's GFLOP/s with numpy's own matmul
(every core) at the same GEMM shape (F x C*KH*KW) @ (C*KH*KW x N*OH*OW), measured in the same
process. numba's JIT compile time is measured separately, cold (empty cache) and warm (cache on
disk), in fresh subprocesses. GPU timings are synchronized.
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
LAYERS = {
    "conv1 1->32 @28x28": (1, 32, 28),
    "conv2 32->64 @14x14": (32, 64, 14),
    "cifar 64->64 @32x32": (64, 64, 32),
}


def conv_flops(n, c, f, size, k=3):
    return 2 * n * size * size * c * k * k * f  # stride 1, padding 1: output size == input size


def bench_minicnn_layer(backend, n, c, f, size, repeats):
    import minicnn as mc
    from minicnn.layers import Conv2D

    mc.set_backend(backend)
    xp = mc.backend.xp()
    kernels = mc.backend.kernels()
    sync = (lambda: xp.cuda.Device().synchronize()) if backend == "cupy" else None
    rng = np.random.default_rng(0)
    conv = Conv2D(c, f, 3, padding=1, rng=rng).to(backend)
    x = xp.asarray(rng.standard_normal((n, c, size, size), dtype=np.float32))
    dy = xp.asarray(rng.standard_normal((n, f, size, size), dtype=np.float32))

    # backward() reads what the last forward() cached, so it can be timed on its own
    t_forward = best_time(lambda: conv.forward(x, training=True), repeats, sync)
    conv.forward(x, training=True)
    t_backward_weight = best_time(lambda: conv.backward(dy, input_grad=False), repeats, sync)
    t_backward_both = best_time(lambda: conv.backward(dy), repeats, sync)

    # the pieces, with the same shapes the layer uses
    cols = kernels.im2col(x, (3, 3), (1, 1), (1, 1))
    w2 = conv.weight.data.reshape(f, -1)
    dout = kernels.nchw_to_cnhw(dy)  # (F, N*OH*OW), as the layer lays it out
    t_im2col = best_time(lambda: kernels.im2col(x, (3, 3), (1, 1), (1, 1)), repeats, sync)
    dcols = kernels.matmul(w2.T, dout)
    t_col2im = best_time(lambda: kernels.col2im(dcols, x.shape, (3, 3), (1, 1), (1, 1)), repeats, sync)
    t_gemm_fwd = best_time(lambda: kernels.matmul(w2, cols), repeats, sync)
    t_gemm_dw = best_time(lambda: kernels.matmul(dout, cols.T), repeats, sync)
    t_gemm_dx = best_time(lambda: kernels.matmul(w2.T, dout), repeats, sync)
    return {
        "forward_ms": 1e3 * t_forward,
        "backward_weight_ms": 1e3 * t_backward_weight,
        # the input gradient's extra cost (dcols GEMM + col2im) over a weight-only backward
        "backward_data_ms": 1e3 * max(t_backward_both - t_backward_weight, 1e-6),
        "im2col_ms": 1e3 * t_im2col, "col2im_ms": 1e3 * t_col2im,
        "gemm_ms": 1e3 * (t_gemm_fwd + t_gemm_dw + t_gemm_dx),
        "gemm_forward_ms": 1e3 * t_gemm_fwd,
    }


def bench_torch_layer(torch, device, n, c, f, size, repeats):
    sync = torch.cuda.synchronize if device == "cuda" else None
    torch.backends.cudnn.allow_tf32 = False  # float32, as minicnn computes (TF32 is the default)
    x = torch.randn(n, c, size, size, device=device)
    w = torch.randn(f, c, 3, 3, device=device)
    b = torch.randn(f, device=device)
    dy = torch.randn(n, f, size, size, device=device)
    conv_bwd = torch.ops.aten.convolution_backward

    def backward(mask):
        return conv_bwd(dy, x, w, [f], [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask)

    return {
        "forward_ms": 1e3 * best_time(lambda: torch.nn.functional.conv2d(x, w, b, padding=1),
                                      repeats, sync),
        "backward_weight_ms": 1e3 * best_time(lambda: backward([False, True, True]), repeats, sync),
        "backward_data_ms": 1e3 * best_time(lambda: backward([True, False, False]), repeats, sync),
    }


def numpy_gemm_gflops(n, c, f, size, repeats):
    rng = np.random.default_rng(0)
    cols = rng.random((c * 9, n * size * size), dtype=np.float32)
    w = rng.random((f, c * 9), dtype=np.float32)
    return conv_flops(n, c, f, size) / best_time(lambda: w @ cols, repeats) / 1e9


def child(name, n, repeats) -> dict:
    """Every layer on one framework, in this (fresh) process."""
    results = {}
    for layer, (c, f, size) in LAYERS.items():
        if name.startswith("torch"):
            import torch

            r = bench_torch_layer(torch, "cuda" if name == "torch-cuda" else "cpu", n, c, f, size,
                                  repeats)
        else:
            r = bench_minicnn_layer(name, n, c, f, size, repeats)
        results[layer] = r
    # numpy's own (multi-threaded) matmul last: its idle OpenBLAS workers keep spinning for
    # ~0.1 s after it returns and would slow down whatever is measured next
    for layer, (c, f, size) in LAYERS.items():
        results[layer]["numpy_matmul_gflops"] = numpy_gemm_gflops(n, c, f, size, repeats)
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
        "x = np.ones((2, 1, 8, 8), np.float32)\n"
        "c, p = Conv2D(1, 2, 3, padding=1), MaxPool2D(2)\n"
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=None, help="minicnn backends (default: all here)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--out", default=str(HERE / "results"))
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

    rows, results = [], {}
    for layer, (c, f, size) in LAYERS.items():
        flops = conv_flops(n, c, f, size)
        results[layer] = {}
        for name in frameworks:
            r = measured[name][layer]
            for phase in ("forward", "backward_data", "backward_weight"):
                r[f"{phase}_gflops"] = flops / (r[f"{phase}_ms"] / 1e3) / 1e9
            if "gemm_ms" in r:
                total = r["gemm_ms"] + r["im2col_ms"] + r["col2im_ms"]
                r["im2col_col2im_share"] = (r["im2col_ms"] + r["col2im_ms"]) / total
            results[layer][name] = r
            matmul = r["numpy_matmul_gflops"]
            eff = (f"{r['forward_gflops'] / matmul:.0%} of {matmul:.0f}"
                   if not name.endswith("cuda") and name != "cupy" else "-")
            share = f"{r['im2col_col2im_share']:.0%}" if "im2col_col2im_share" in r else "-"
            rows.append(f"| {layer} | {name} | {r['forward_ms']:.2f} ({r['forward_gflops']:.0f}) | "
                        f"{r['backward_data_ms']:.2f} ({r['backward_data_gflops']:.0f}) | "
                        f"{r['backward_weight_ms']:.2f} ({r['backward_weight_gflops']:.0f}) | "
                        f"{eff} | {share} |")

    compile_times = numba_compile_times() if "numba" in frameworks else {}
    env = {key: value for name in frameworks for key, value in measured[name]["environment"].items()}
    env["command"] = "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    header = [f"| layer (batch {n}) | framework | forward ms (GFLOP/s) | backward-data ms (GFLOP/s) "
              "| backward-weight ms (GFLOP/s) | forward vs numpy matmul | im2col+col2im share |",
              "|---|---|---:|---:|---:|---:|---:|"]
    table = "\n".join(header + rows)
    print(f"\n{env['cpu']} ({env['cores']} cores), GPU: {env['gpu']}; {env['blas']}; "
          f"numba threading layer: {env.get('numba_threading_layer', '-')}; {env['date']}\n")
    print(table)
    if compile_times:
        print(f"numba compile (first call, fresh process): {json.dumps(compile_times)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = f"kernels_b{n}" + ("_gpu" if env["gpu"] else "")
    write_json(out / f"{tag}.json", {"machine": env, "results": results,
                                     "numba_compile": compile_times, "table": table})
    print(f"wrote {out / (tag + '.json')}")


if __name__ == "__main__":
    main()
