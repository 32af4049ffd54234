"""End-to-end training and inference throughput of the reference network, every backend and
PyTorch side by side, in ONE process so that the ratios compare like with like.

    python benchmarks/bench_train.py                      # all available backends + PyTorch
    python benchmarks/bench_train.py --backends numba --steps 50 --batch-size 128

Training: forward, softmax cross-entropy, backward and an Adam step (lr 1e-3) on batches of
``--batch-size`` MNIST-shaped images (synthetic data: throughput does not depend on content).
Inference: ``predict`` over ``--infer-images`` images in batches of ``--infer-batch``.
Prints a markdown table and writes JSON and a PNG bar chart to ``--out``.

Peak RSS is measured per framework in a fresh subprocess (``--rss``), since a process's
high-water mark cannot be split between frameworks that ran in it.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

# isort: off
import minicnn as mc  # before numpy: see common.py
import numpy as np
# isort: on
from common import (
    best_time,
    machine_info,
    reference_minicnn,
    reference_torch,
    synthetic_mnist,
    try_import_torch,
    write_json,
)

HERE = Path(__file__).resolve().parent


def bench_minicnn(backend, x, y, batch_size, steps, warmup, infer_x, infer_batch):
    mc.set_backend(backend)
    xp = mc.backend.xp()
    sync = (lambda: xp.cuda.Device().synchronize()) if backend == "cupy" else None
    model = reference_minicnn().to(backend)
    loss_fn = mc.losses.SoftmaxCrossEntropy()
    opt = mc.optim.Adam(model.parameters(), lr=1e-3)
    batches = [(xp.asarray(x[i:i + batch_size]), xp.asarray(y[i:i + batch_size]))
               for i in range(0, len(x) - batch_size + 1, batch_size)]

    def train(n_steps):
        for step in range(n_steps):
            xb, yb = batches[step % len(batches)]
            loss_fn.forward(model.forward(xb, training=True), yb)
            opt.zero_grad()
            model.backward(loss_fn.backward(), input_grad=False)
            opt.step()

    start = time.perf_counter()
    train(warmup)  # compiles numba kernels / warms caches and allocators
    if sync:
        sync()
    first_steps = time.perf_counter() - start
    train_time = best_time(lambda: train(steps), repeats=3, sync=sync)
    infer_time = best_time(lambda: model.predict(infer_x, batch_size=infer_batch), repeats=3,
                           sync=sync)
    return {"train_images_per_s": steps * batch_size / train_time,
            "infer_images_per_s": len(infer_x) / infer_time,
            "warmup_s": first_steps}


def bench_torch(torch, device, x, y, batch_size, steps, warmup, infer_x, infer_batch):
    torch.manual_seed(0)
    model = reference_torch(torch).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    batches = [(torch.tensor(x[i:i + batch_size], device=device),
                torch.tensor(y[i:i + batch_size], device=device))
               for i in range(0, len(x) - batch_size + 1, batch_size)]
    sync = torch.cuda.synchronize if device == "cuda" else None

    def train(n_steps):
        model.train()
        for step in range(n_steps):
            xb, yb = batches[step % len(batches)]
            opt.zero_grad(set_to_none=True)
            loss_fn(model(xb), yb).backward()
            opt.step()

    def infer():
        model.eval()
        with torch.no_grad():
            for i in range(0, len(infer_x), infer_batch):
                xb = torch.as_tensor(infer_x[i:i + infer_batch]).to(device)
                torch.softmax(model(xb), dim=1).cpu().numpy()

    start = time.perf_counter()
    train(warmup)
    if sync:
        sync()
    first_steps = time.perf_counter() - start
    train_time = best_time(lambda: train(steps), repeats=3, sync=sync)
    infer_time = best_time(infer, repeats=3, sync=sync)
    return {"train_images_per_s": steps * batch_size / train_time,
            "infer_images_per_s": len(infer_x) / infer_time,
            "warmup_s": first_steps}


def peak_rss_mib(framework: str, args) -> float | None:
    """Run one framework alone in a subprocess and return its peak RSS in MiB."""
    cmd = [sys.executable, __file__, "--only", framework, "--steps", str(args.steps),
           "--batch-size", str(args.batch_size), "--infer-batch", str(args.infer_batch),
           "--infer-images", str(args.infer_images), "--warmup", str(args.warmup)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        print(f"RSS run for {framework} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mib"]


def run_one(name, args, data):
    x, y, infer_x = data
    common = (x, y, args.batch_size, args.steps, args.warmup, infer_x, args.infer_batch)
    if name.startswith("torch"):
        torch = try_import_torch()
        return bench_torch(torch, "cuda" if name == "torch-cuda" else "cpu", *common)
    return bench_minicnn(name, *common)


def markdown_table(results, baseline_cpu, baseline_gpu) -> str:
    lines = ["| framework | train img/s | x PyTorch | infer img/s | x PyTorch | peak RSS (MiB) |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        base = baseline_gpu if name in ("cupy", "torch-cuda") else baseline_cpu
        train_ratio = (f"{r['train_images_per_s'] / base['train_images_per_s']:.2f}x"
                       if base else "-")
        infer_ratio = (f"{r['infer_images_per_s'] / base['infer_images_per_s']:.2f}x"
                       if base else "-")
        rss = f"{r['peak_rss_mib']:.0f}" if r.get("peak_rss_mib") else "-"
        lines.append(f"| {name} | {r['train_images_per_s']:,.0f} | {train_ratio} | "
                     f"{r['infer_images_per_s']:,.0f} | {infer_ratio} | {rss} |")
    return "\n".join(lines)


def bar_chart(results, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    train = [results[n]["train_images_per_s"] for n in names]
    infer = [results[n]["infer_images_per_s"] for n in names]
    positions = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    ax.bar(positions - 0.2, train, 0.4, label="training")
    ax.bar(positions + 0.2, infer, 0.4, label="inference")
    ax.set_xticks(positions, names)
    ax.set_ylabel("images / s")
    ax.set_title("Reference CNN throughput (higher is better)")
    ax.legend()
    fig.tight_layout()
    from minicnn.plots import save_figure

    save_figure(fig, path)  # atomic, like every file minicnn writes; closes the figure


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=",".join(mc.available_backends()),
                        help="comma-separated minicnn backends (default: all available)")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40, help="timed training steps per repeat")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--infer-batch", type=int, default=1000)
    parser.add_argument("--infer-images", type=int, default=10000)
    parser.add_argument("--rss", action="store_true", help="also measure peak RSS (subprocesses)")
    parser.add_argument("--out", default=str(HERE / "results"), help="folder for JSON and PNG")
    parser.add_argument("--only", help=argparse.SUPPRESS)  # internal: one framework, print RSS
    args = parser.parse_args()

    x, y = synthetic_mnist(max(args.batch_size * 8, 1024))
    infer_x, _ = synthetic_mnist(args.infer_images, seed=1)
    data = (x, y, infer_x)

    if args.only:
        run_one(args.only, args, data)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"peak_rss_mib": peak}))
        return

    frameworks = [b for b in args.backends.split(",") if b]
    torch = None if args.no_torch else try_import_torch()
    if torch is not None:
        frameworks.append("torch-cpu")
        if torch.cuda.is_available() and "cupy" in frameworks:
            frameworks.append("torch-cuda")

    results = {}
    for name in frameworks:
        print(f"benchmarking {name} ...", file=sys.stderr, flush=True)
        results[name] = run_one(name, args, data)
        if args.rss and name != "torch-cuda":
            results[name]["peak_rss_mib"] = peak_rss_mib(name, args)

    info = machine_info()
    info["command"] = "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    info["batch_size"], info["steps"] = args.batch_size, args.steps
    info["infer_batch"] = args.infer_batch
    table = markdown_table(results, results.get("torch-cpu"), results.get("torch-cuda"))
    print(f"\nReference CNN, batch {args.batch_size}, Adam; inference batch {args.infer_batch}")
    print(f"{info['cpu']} ({info['cores']} cores), GPU: {info['gpu']}; {info['date']}\n")
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = f"train_b{args.batch_size}" + ("_gpu" if info["gpu"] else "")
    write_json(out / f"{tag}.json", {"machine": info, "results": results, "table": table})
    bar_chart(results, out / f"{tag}.png")
    print(f"\nwrote {out / (tag + '.json')} and {out / (tag + '.png')}")


if __name__ == "__main__":
    main()
