"""The numba Winograd layers of this checkout against those of another commit, in one process.

    python benchmarks/ab_winograd.py 8011463             # this checkout against commit 8011463
    python benchmarks/ab_winograd.py 8011463 --rounds 10

A host whose speed drifts from minute to minute (a shared 2-core VM) makes two separate runs hard
to compare; here both versions of ``minicnn/kernels/numba_winograd.py`` are loaded side by side
(the other one from ``git show REV:...``, with its relative imports pointed at this checkout's
package) and run on the same inputs, alternated layer by layer (which one first, alternated round
by round), for several rounds; each gets its best time. Each layer: forward + backward (dL/dx
and dL/dW) at batch 128, float32, F(4x4, 3x3), stride 1, padding 1: the 3x3 layers of cifar_vgg
and cifar_resnet.

Commits before the blocked Winograd imported ``batched_matmul`` from cpu_runtime, which no longer
has it: the script gives them one (each core's share of the products, as it was).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
LAYERS = [(32, 32, 32), (32, 64, 16), (64, 64, 16), (64, 128, 8), (128, 128, 8),  # cifar_vgg
          (16, 16, 32), (32, 32, 16), (64, 64, 8),                                # cifar_resnet
          (32, 64, 14), (64, 128, 7)]                                             # mnist_cnn
VGG = 5  # the first five are cifar_vgg's

_OLD_PRODUCTS = '''
def batched_matmul(a, b):
    import numpy
    out = numpy.empty((a.shape[0], a.shape[1], b.shape[2]), numpy.result_type(a.dtype, b.dtype))
    on_cores(a.shape[0], lambda lo, hi: numpy.matmul(a[lo:hi], b[lo:hi], out=out[lo:hi]))
    return out
'''


def load(name: str, source: str, folder: Path):
    source = source.replace("from . import winograd", "from minicnn.kernels import winograd")
    source = source.replace("from .cpu_runtime import batched_matmul,",
                            "from minicnn.kernels.cpu_runtime import on_cores,")
    source = source.replace("from .cpu_runtime import", "from minicnn.kernels.cpu_runtime import")
    if "batched_matmul" in source and "def batched_matmul" not in source:
        source += _OLD_PRODUCTS
    path = folder / f"{name}.py"
    path.write_text(source.replace("cache=True", "cache=False"))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("revision", help="the commit to compare with (git show REV:...)")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()

    from minicnn.benchmark import cpu_model
    from minicnn.kernels import winograd

    path = "minicnn/kernels/numba_winograd.py"
    other = subprocess.run(["git", "show", f"{args.revision}:{path}"], cwd=HERE.parent,
                           capture_output=True, text=True, check=True).stdout
    with tempfile.TemporaryDirectory() as folder:
        versions = {args.revision: load("winograd_then", other, Path(folder)),
                    "this checkout": load("winograd_now", (HERE.parent / path).read_text(),
                                          Path(folder))}
        t = winograd.TRANSFORMS[4]
        rng = np.random.default_rng(0)
        inputs = [(rng.standard_normal((128, c, s, s), dtype=np.float32),
                   (rng.standard_normal((f, c, 3, 3)) * 0.1).astype(np.float32),
                   np.zeros(f, np.float32), rng.standard_normal((128, f, s, s), dtype=np.float32))
                  for c, f, s in LAYERS]
        best = {name: [[np.inf, np.inf] for _ in LAYERS] for name in versions}
        for round_ in range(args.rounds + 1):  # round 0 compiles
            # which version goes first alternates: the second run of a layer can be slower (or
            # faster) for running second (128->128 @8x8's backward: 14 against 23 ms)
            order = list(versions.items())[::1 if round_ % 2 else -1]
            for i, (x, w, b, dy) in enumerate(inputs):
                for name, module in order:
                    start = time.perf_counter()
                    _, saved = module.conv_forward(x, w, b, (1, 1), t)
                    middle = time.perf_counter()
                    module.conv_backward(dy, saved, w, x.shape, (1, 1), t)
                    end = time.perf_counter()
                    if round_:
                        best[name][i][0] = min(best[name][i][0], middle - start)
                        best[name][i][1] = min(best[name][i][1], end - middle)

    print(f"{cpu_model()}; batch 128, float32, best of {args.rounds} alternated rounds\n")
    then, now = best[args.revision], best["this checkout"]
    print(f"| layer (C->F @ HxW) | {args.revision}, ms (fwd + bwd) | this checkout | speed-up |")
    print("|---|---:|---:|---:|")
    for (c, f, s), old, new in zip(LAYERS, then, now):
        print(f"| {c}->{f} @{s}x{s} | {old[0] * 1e3:.1f} + {old[1] * 1e3:.1f} | "
              f"{new[0] * 1e3:.1f} + {new[1] * 1e3:.1f} | {sum(old) / sum(new):.2f}x |")
    old, new = (sum(map(sum, times[:VGG])) * 1e3 for times in (then, now))
    print(f"| cifar_vgg's five | {old:.1f} | {new:.1f} | {old / new:.2f}x |")


if __name__ == "__main__":
    sys.exit(main())
