"""Training and inference throughput of minicnn and PyTorch, each framework in its own fresh
process, in the settings a user meets: minicnn alone, after ``import numpy``, after PyTorch.

    python benchmarks/bench_train.py                           # reference network, 3 runs each
    python benchmarks/bench_train.py --models reference,cifar_vgg --runs 5
    python benchmarks/bench_train.py --settings alone --frameworks numba,torch

Every measurement runs in a new Python process (``--child``), so no framework inherits another's
thread pools, allocator state or environment, and each setting is repeated ``--runs`` times,
in rounds: every framework and setting once, then again, so that a host whose speed drifts from
minute to minute slows all of them alike. The tables give the median and the spread (min-max) of
the runs; a ratio to PyTorch divides each run by PyTorch's run of the same round. Settings for
minicnn:

- ``alone``: minicnn imported first, nothing else loaded;
- ``numpy-first``: ``import numpy`` before minicnn (as in every notebook);
- ``torch-first``: PyTorch imported and a few PyTorch training steps run, then minicnn.

With ``cupy`` among the frameworks, minicnn on the GPU runs twice: each step as written
(``cupy alone``) and recorded once as a CUDA graph and replayed (``cupy recorded``,
:mod:`minicnn.capture`; its inference is ``predict``'s pass recorded too,
:mod:`minicnn.cuda_graphs`); the GPU rows are against ``torch-cuda``.

PyTorch runs alone; every ratio is to PyTorch alone, round by round. Training is forward,
softmax cross-entropy, backward and an optimizer step (the reference network: Adam, batch 128,
1x28x28; cifar_vgg and cifar_resnet: AdamW, batch 128, 3x32x32; PyTorch runs the same networks,
written out below), on synthetic data. ``--conv-algo im2col`` (or any value of
``MINICNN_CONV_ALGO``) adds a row of minicnn alone with that convolution algorithm forced,
beside the automatic choice. Inference is ``predict`` in batches of ``--infer-batch``. Each
child also measures numpy's float32 matmul peak (a 2048^3 product on every core) and reports the
training GFLOP/s (multiply-adds of the forward pass, the weight gradients and the input
gradients) as a fraction of it, the threading layer numba runs on and the BLAS numpy uses.
Prints markdown tables; writes them (and every run, as JSON) to ``--out``."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SETTINGS = ("alone", "numpy-first", "torch-first")
MODELS = ("reference", "cifar_vgg", "cifar_resnet")


# --- the child: one framework, one setting, one run --------------------------------------------


def warm_up_torch_first():
    """A few PyTorch training steps, as a notebook would have run before trying minicnn."""
    import torch

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(8 * 26 * 26, 10))
    opt = torch.optim.Adam(net.parameters())
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    for _ in range(5):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()


def matmul_peak_gflops(framework: str = "numpy") -> float:
    """float32 matmul GFLOP/s on the device the framework trains on: numpy's BLAS on every core
    (a 2048^3 product), or the GPU's (an 8192^3 product, TF32 off) for cupy and torch-cuda."""
    if framework in ("cupy", "torch-cuda"):
        if framework == "cupy":
            import cupy as xp
            a = xp.random.rand(8192, 8192, dtype=xp.float32)
            sync = xp.cuda.Device().synchronize
        else:
            import torch as xp
            a = xp.rand(8192, 8192, device="cuda")
            sync = xp.cuda.synchronize
        a @ a
        sync()
        return 2 * 8192**3 / min(_timed(lambda: (a @ a, sync())) for _ in range(5)) / 1e9
    import numpy as np

    a = np.random.default_rng(0).random((2048, 2048), dtype=np.float32)
    a @ a
    best = min(_timed(lambda: a @ a) for _ in range(5))
    return 2 * 2048**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def child(framework: str, setting: str, model_name: str, args) -> dict:
    if setting == "numpy-first":
        import numpy  # noqa: F401
    elif setting == "torch-first":
        warm_up_torch_first()
    from common import environment, synthetic_images, training_flops

    shape = (1, 28, 28) if model_name == "reference" else (3, 32, 32)
    x, y = synthetic_images(max(args.batch_size * 4, 512), shape)
    infer_x, _ = synthetic_images(args.infer_images, shape, seed=1)
    if framework.startswith("torch"):
        result = bench_torch(model_name, x, y, infer_x, args,
                             "cuda" if framework == "torch-cuda" else "cpu")
    else:
        result = bench_minicnn(framework, model_name, x, y, infer_x, args,
                               recorded=setting == "recorded")
    result["flops_per_image"] = training_flops(model_name, shape)
    result["train_gflops"] = result["train_images_per_s"] * result["flops_per_image"] / 1e9
    result["matmul_peak_gflops"] = matmul_peak_gflops(framework)
    result["on_gpu"] = framework in ("cupy", "torch-cuda")
    result["environment"] = environment()
    return result


def _measure(train, infer, args, sync=None) -> dict:  # sync: waits for a GPU
    sync = sync or (lambda: None)
    train(3)  # compiles numba kernels, warms caches
    sync()
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        train(args.steps)
        sync()
        times.append(time.perf_counter() - start)
    infer()
    infer_time = min(_timed(lambda: (infer(), sync())) for _ in range(3))
    return {"train_images_per_s": args.steps * args.batch_size / min(times),
            "infer_images_per_s": args.infer_images / infer_time}


def bench_minicnn(backend: str, model_name: str, x, y, infer_x, args,
                  recorded: bool = False) -> dict:
    """``recorded``: the steps recorded once as a CUDA graph and replayed (minicnn.capture,
    through Trainer.train_step), and predict's pass too; otherwise each run as written."""
    import minicnn as mc
    from minicnn import models
    from minicnn.benchmark import training_steps
    from minicnn.training import Trainer

    mc.set_backend(backend)
    if model_name == "reference":
        model = models.reference_cnn(seed=0)
        opt = mc.optim.Adam(model.parameters(), lr=1e-3)
    else:
        model = models.PRESETS[model_name](seed=0)
        opt = mc.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = mc.losses.SoftmaxCrossEntropy()
    n = args.batch_size
    xp = mc.backend.xp(backend)  # cupy keeps the batches on the GPU
    batches = [(xp.asarray(x[i:i + n]), xp.asarray(y[i:i + n]))
               for i in range(0, len(x) - n + 1, n)]
    sync = (lambda: xp.cuda.Device().synchronize()) if backend == "cupy" else None
    train = training_steps(model, opt, loss_fn, batches)  # what `minicnn bench` times too
    if recorded:
        trainer = Trainer(model, loss_fn, opt, (x, y), batch_size=n, verbose=0,
                          record_steps=True)

        def train(steps):  # noqa: F811 (the recorded step instead)
            for step in range(steps):
                trainer.train_step(*batches[step % len(batches)])
    return _measure(train, lambda: model.predict(infer_x, batch_size=args.infer_batch,
                                                 record=recorded), args, sync)


def torch_resnet(nn, width=16, blocks_per_stage=2):
    """minicnn.models.cifar_resnet, module for module."""

    class Block(nn.Module):  # minicnn.models.basic_block, then a ReLU
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
            self.shortcut = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                           nn.BatchNorm2d(cout))
                             if stride != 1 or cin != cout else nn.Identity())

        def forward(self, x):
            return (self.body(x) + self.shortcut(x)).relu()

    layers, channels = [nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                        nn.ReLU()], width
    for stage, out in enumerate((width, 2 * width, 4 * width)):
        for block in range(blocks_per_stage):
            layers.append(Block(channels, out, 2 if stage > 0 and block == 0 else 1))
            channels = out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 10))


def torch_model(torch, model_name: str):
    nn = torch.nn
    if model_name == "cifar_resnet":
        return torch_resnet(nn)
    if model_name == "reference":
        return nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10))
    layers, channels = [], 3  # minicnn.models.cifar_vgg, width 32
    for out in (32, 64, 128):
        for _ in range(2):
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out),
                       nn.ReLU()]
            channels = out
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers, nn.Flatten(), nn.Dropout(0.3), nn.Linear(128 * 4 * 4, 10))


def bench_torch(model_name: str, x, y, infer_x, args, device: str = "cpu") -> dict:
    import torch

    torch.manual_seed(0)
    # float32 as minicnn computes it: PyTorch's default runs cuDNN convolutions in TF32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    model = torch_model(torch, model_name).to(device)
    optimizer = torch.optim.Adam if model_name == "reference" else torch.optim.AdamW
    opt = optimizer(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    n = args.batch_size
    batches = [(torch.tensor(x[i:i + n], device=device), torch.tensor(y[i:i + n], device=device))
               for i in range(0, len(x) - n + 1, n)]
    sync = torch.cuda.synchronize if device == "cuda" else None

    def train(steps):
        model.train()
        for step in range(steps):
            xb, yb = batches[step % len(batches)]
            opt.zero_grad(set_to_none=True)
            loss_fn(model(xb), yb).backward()
            opt.step()

    def infer():
        model.eval()
        with torch.no_grad():
            for i in range(0, len(infer_x), args.infer_batch):
                batch = torch.as_tensor(infer_x[i:i + args.infer_batch]).to(device)
                torch.softmax(model(batch), 1).cpu().numpy()

    return _measure(train, infer, args, sync)


# --- the parent: every run in a fresh process, then the tables --------------------------------


def run_child(framework, setting, model_name, args) -> dict:
    setting, _, algorithm = setting.partition("+")  # "alone+im2col": a forced conv algorithm
    env = {**os.environ, "MINICNN_CONV_ALGO": algorithm} if algorithm else None
    command = [sys.executable, __file__, "--child", f"{framework}:{setting}:{model_name}",
               "--steps", str(args.steps), "--repeats", str(args.repeats),
               "--batch-size", str(args.batch_size), "--infer-batch", str(args.infer_batch),
               "--infer-images", str(args.infer_images)]
    out = subprocess.run(command, capture_output=True, text=True, cwd=HERE, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{framework} ({setting}, {model_name}) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def spread(values, digits=0) -> str:
    return (f"{statistics.median(values):,.{digits}f} ({min(values):,.{digits}f}-"
            f"{max(values):,.{digits}f})")


def _ratios(runs, torch_runs, key) -> str:
    """Each run over PyTorch's run of the same round (the runs go in rounds), as a spread."""
    if not torch_runs:
        return "-"
    pairs = zip(runs, torch_runs) if len(runs) == len(torch_runs) else \
        ((run, {key: statistics.median(r[key] for r in torch_runs)}) for run in runs)
    return spread([run[key] / base[key] for run, base in pairs], 2) + "x"


def table(model_name, rows, torch_runs) -> str:
    lines = [f"| {model_name}: framework, setting | train img/s | x PyTorch alone | infer img/s "
             "| x PyTorch alone | train GFLOP/s (% of matmul peak) | threads |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for label, runs in rows:
        train = [r["train_images_per_s"] for r in runs]
        infer = [r["infer_images_per_s"] for r in runs]
        ratio = _ratios(runs, torch_runs, "train_images_per_s")
        infer_ratio = _ratios(runs, torch_runs, "infer_images_per_s")
        share = statistics.median(r["train_gflops"] / r["matmul_peak_gflops"] for r in runs)
        gflops = statistics.median(r["train_gflops"] for r in runs)
        env = runs[0]["environment"]
        threads = (env.get("numba_threading_layer")
                   or (f"torch, {env['torch_threads']} threads" if "torch_threads" in env else "-"))
        lines.append(f"| {label} | {spread(train)} | {ratio} | {spread(infer)} | {infer_ratio} | "
                     f"{gflops:.0f} ({share:.0%}) | {threads} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frameworks", default="numba,numpy,torch",
                        help="minicnn backends (numba, numpy, cupy) and torch / torch-cuda "
                             "(default numba,numpy,torch)")
    parser.add_argument("--settings", default=",".join(SETTINGS),
                        help="settings for the numba backend (numpy and torch run alone)")
    parser.add_argument("--models", default="reference",
                        help="reference, cifar_vgg and/or cifar_resnet")
    parser.add_argument("--conv-algo", default="",
                        help="also run minicnn alone with this convolution algorithm forced "
                             "(im2col, winograd, winograd2: MINICNN_CONV_ALGO)")
    parser.add_argument("--runs", type=int, default=3, help="fresh processes per setting")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per repeat")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per process (best kept)")
    parser.add_argument("--infer-batch", type=int, default=1000)
    parser.add_argument("--infer-images", type=int, default=10000)
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--child", help=argparse.SUPPRESS)  # framework:setting:model
    args = parser.parse_args()

    sys.path.insert(0, str(HERE))
    if args.child:
        print(json.dumps(child(*args.child.split(":"), args)))
        return
    from common import cpu_slug, write_json

    from minicnn.atomic import atomic_write_bytes

    frameworks = [f for f in args.frameworks.split(",") if f]
    settings = [s for s in args.settings.split(",") if s]
    report, tables = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix(),
                                                       *sys.argv[1:]])}, []
    for model_name in [m for m in args.models.split(",") if m]:
        runs = {}
        plan = [(f, "alone") for f in ("torch", "torch-cuda") if f in frameworks]
        plan += [("numba", s) for s in settings if "numba" in frameworks]
        if args.conv_algo and "numba" in frameworks:
            plan.append(("numba", f"alone+{args.conv_algo}"))
        plan += [(f, "alone") for f in ("numpy", "cupy") if f in frameworks]
        plan += [("cupy", "recorded")] if "cupy" in frameworks else []  # minicnn.capture
        for round_number in range(args.runs):  # rounds: a drifting host slows all rows alike
            print(f"{model_name}: round {round_number + 1} of {args.runs} ...", file=sys.stderr,
                  flush=True)
            for framework, setting in plan:
                runs.setdefault(f"{framework} {setting}", []).append(
                    run_child(framework, setting, model_name, args))
        torch_runs = runs.get("torch alone", [])
        rows = [(f"minicnn {key}", r) for key, r in runs.items()
                if not key.startswith(("torch", "cupy"))]
        rows += [("PyTorch alone", torch_runs)] if torch_runs else []
        if rows:  # the CPU frameworks
            tables.append(table(model_name, rows, torch_runs))
        gpu_rows = [(f"minicnn {key}", r) for key, r in runs.items() if key.startswith("cupy")]
        gpu_base = runs.get("torch-cuda alone", [])
        if gpu_rows or gpu_base:  # the GPU against PyTorch on the GPU
            rows = gpu_rows + ([("PyTorch CUDA alone", gpu_base)] if gpu_base else [])
            tables.append(table(f"{model_name} (GPU)", rows, gpu_base))
        report[model_name] = runs
    every_run = [r for k, v in report.items() if k != "command" for runs in v.values() for r in runs]
    env = {key: value for r in every_run for key, value in r["environment"].items()}
    gpu = (f"; GPU {env['gpu']}, cupy {env.get('cupy', '-')}, CUDA runtime "
           f"{env.get('cuda_runtime', '-')}, float32 with TF32 off, the GPU rows' matmul peak "
           "the GPU's own" if any(r["on_gpu"] for r in every_run) else "")
    header = (f"{env['cpu']} ({env['cores']} cores); Python {env['python']}, numpy {env['numpy']} "
              f"({env['blas']}), numba {env.get('numba', '-')}, torch {env.get('torch', '-')}{gpu}; "
              f"{env['date']}; batch {args.batch_size}, {args.runs} fresh processes per row in "
              "rounds (median, min-max; ratios to PyTorch's run of the same round)")
    print("\n" + header + "\n\n" + "\n\n".join(tables))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"train_b{args.batch_size}_{cpu_slug()}"  # a ratio holds for one CPU: a file each
    path = out / f"{name}.json"
    write_json(path, {"header": header, "tables": tables, **report})
    markdown = out / f"{name}.md"
    atomic_write_bytes(markdown, (f"{report['command']}\n\n{header}\n\n"
                                  + "\n\n".join(tables) + "\n").encode())
    print(f"\nwrote {path} and {markdown}")


if __name__ == "__main__":
    main()
