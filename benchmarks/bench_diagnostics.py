"""What gradient-flow diagnostics cost: ``fit(..., diagnostics=N)`` against plain training.

Two measurements, in one process (the numba backend, ``minicnn.models.mnist_cnn`` on MNIST):

1. Step by step: plain steps and watched steps (forward and backward through ``GradientFlow``,
   the weight snapshot and the record) interleaved, many of each; the overhead at every-N is
   ``(median watched - median plain) / N / median plain``. Interleaving cancels slow drifts of
   the machine, which a whole-run comparison on 2 cores cannot resolve to 1%.
2. Whole runs: ``fit`` for ``--steps`` steps with and without ``diagnostics=N``, alternated
   ``--runs`` times (the end-to-end figure, with the machine's noise in it).

    python benchmarks/bench_diagnostics.py [--every 50] [--steps 300] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args(argv)

    import minicnn as mc
    from minicnn import models
    from minicnn.training import Trainer

    (x, y), _, _ = mc.data.load_mnist(verbose=0)
    x = ((x - x.mean()) / x.std()).astype(np.float32)
    batch = args.batch_size

    def make():
        model = models.mnist_cnn()
        return model, mc.optim.AdamW(model.parameters(), lr=1e-3)

    # 1. step by step
    model, optimizer = make()
    trainer = Trainer(model, mc.losses.SoftmaxCrossEntropy(), optimizer, (x, y), verbose=0,
                      diagnostics=2)
    flow = trainer.gradient_flow
    plain, watched = [], []
    for step in range(2 * args.steps + 20):
        xb, yb = x[(step * batch) % 59_000:][:batch], y[(step * batch) % 59_000:][:batch]
        start = time.perf_counter()
        trainer.train_step(xb, yb)  # watched when flow.watches_layers(global_step + 1)
        flow.on_before_update(trainer)
        optimizer.step()
        trainer.global_step += 1
        flow.on_batch_end(trainer, trainer.global_step, {})
        seconds = time.perf_counter() - start
        if step >= 20:  # after the JIT warm-up
            (watched if flow.watches_layers(trainer.global_step) else plain).append(seconds)
    p, w = statistics.median(plain), statistics.median(watched)
    print(f"step by step ({len(plain)} plain, {len(watched)} watched steps, batch {batch}): "
          f"plain {p * 1e3:.1f} ms, watched {w * 1e3:.1f} ms (+{(w - p) * 1e3:.1f} ms); "
          f"overhead at every {args.every}: {(w - p) / args.every / p:.2%} of a step")

    # 2. whole runs
    times = {None: [], args.every: []}
    for _ in range(args.runs):
        for every in times:
            model, optimizer = make()
            n = args.steps * batch
            history = mc.fit(model, mc.losses.SoftmaxCrossEntropy(), optimizer, (x[:n], y[:n]),
                             epochs=1, batch_size=batch, verbose=0, diagnostics=every)
            times[every].append(history["time_s"][0])
    base, with_flow = statistics.median(times[None]), statistics.median(times[args.every])
    print(f"whole runs ({args.steps} steps, {args.runs} runs each, median): without "
          f"{base:.2f} s {sorted(round(t, 2) for t in times[None])}, with diagnostics="
          f"{args.every} {with_flow:.2f} s {sorted(round(t, 2) for t in times[args.every])}: "
          f"{with_flow / base - 1:+.1%}")


if __name__ == "__main__":
    main()
