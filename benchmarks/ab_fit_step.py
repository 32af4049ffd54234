"""fit's training step against the benchmark's, alternated in one process (for a host whose
speed drifts): the loop bench_train.py times (model.forward / model.backward, the fused pairs),
the same step run layer by layer (forward_steps / backward_steps, as fit ran it until
2026-12-06 and still does on a step that a callback watches), and Trainer.device_step +
optimizer.step(), what fit runs. Prints the median and range of each, and the ratio to the
benchmark's.

    python benchmarks/ab_fit_step.py cifar_vgg        # or cifar_resnet, reference_cnn
"""

import sys
import time

import numpy as np

import minicnn as mc
from minicnn import models, optim
from minicnn.benchmark import training_steps
from minicnn.losses import SoftmaxCrossEntropy
from minicnn.training import Trainer


def main(name: str = "cifar_vgg", rounds: int = 4, steps: int = 5) -> None:
    mc.set_backend("numba")
    rng = np.random.default_rng(0)
    shape = (1, 28, 28) if name == "reference_cnn" else (3, 32, 32)
    x = rng.random((128, *shape), dtype=np.float32)
    y = rng.integers(0, 10, 128)
    make = getattr(models, name)

    bench_model = make()
    runs = {"benchmark": training_steps(bench_model, optim.Adam(bench_model.parameters()),
                                        SoftmaxCrossEntropy(), [(x, y)])}

    model, loss_fn = make(), SoftmaxCrossEntropy()
    optimizer = optim.Adam(model.parameters())

    def layer_by_layer(n):
        for _ in range(n):
            for _, _, output in model.forward_steps(x, training=True):
                logits = output
            loss_fn.forward_array(logits, y)
            optimizer.zero_grad()
            for _ in model.backward_steps(loss_fn.backward(), input_grad=False):
                pass
            optimizer.step()
    runs["layer by layer"] = layer_by_layer

    fit_model = make()
    fit_optimizer = optim.Adam(fit_model.parameters())
    trainer = Trainer(fit_model, SoftmaxCrossEntropy(), fit_optimizer, (x, y), batch_size=128,
                      verbose=0)

    def fit_step(n):
        for _ in range(n):
            trainer.train_step(x, y)
    runs["fit"] = fit_step

    for run in runs.values():
        run(2)  # compiles, warms the caches
    times = {key: [] for key in runs}
    for _ in range(rounds):
        for key, run in runs.items():
            start = time.perf_counter()
            run(steps)
            times[key].append((time.perf_counter() - start) / steps * 1e3)
    base = np.median(times["benchmark"])
    for key, values in times.items():
        print(f"{name} {key}: {np.median(values):.1f} ms ({np.median(values) / base:.3f}x) "
              f"[{min(values):.1f}-{max(values):.1f}]")


if __name__ == "__main__":
    main(*sys.argv[1:2])
