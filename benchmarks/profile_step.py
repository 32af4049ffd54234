"""Where a training step's (or an inference pass's) time goes, kernel by kernel (numba backend by
default).

    python benchmarks/profile_step.py                      # reference network, batch 128
    python benchmarks/profile_step.py --model cifar_vgg --steps 5
    python benchmarks/profile_step.py --backend cupy       # on the GPU (each kernel synchronized)
    python benchmarks/profile_step.py --model cifar_resnet --inference   # at predict's batch

Wraps every kernel of the backend with a timer, runs some training steps (with ``--inference``,
forward passes as ``predict`` runs them, each BatchNorm2D folded into its Conv2D, by default at
the batch size predict picks for its memory budget: a larger one shows memory-bound kernels that
predict does not meet) and prints, per kernel
(matrix multiplies, Winograd and direct layers per shape), the milliseconds per step, its share of the
step and, for the multiplies, the GFLOP/s reached as a fraction of numpy's float32 matmul peak
(a 2048^3 product, measured in the same process; on cupy the GPU's, an 8192^3 product). On
cupy it first times the step as written against the step recorded as a CUDA graph and replayed,
and says how many operations (kernel launches, copies) one replay launches at once.
"""

from __future__ import annotations

import argparse
import collections
import inspect
import time

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="reference",
                        choices=("reference", "cifar_vgg", "cifar_resnet"))
    parser.add_argument("--backend", default="numba")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="default: 128 for a training step, predict's own batch (its default "
                             "request, cut to the memory budget) with --inference")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--inference", action="store_true",
                        help="time the forward pass of predict (training=False) instead of a "
                             "training step")
    args = parser.parse_args()

    import minicnn as mc
    from minicnn import models
    from minicnn.layers import fused

    mc.set_backend(args.backend)
    kernels = mc.backend.kernels()
    xp = mc.backend.xp(args.backend)
    # a GPU runs kernels asynchronously: time each one from an idle GPU to its end
    sync = xp.cuda.Device().synchronize if args.backend == "cupy" else (lambda: None)
    spent, calls, flops = collections.defaultdict(float), collections.Counter(), {}
    depth = [0]  # a kernel that calls another (BatchNorm + ReLU calls BatchNorm): time it once

    def timer(name, kernel, algorithm="winograd"):
        def timed(*a, **kw):
            if depth[0]:
                return kernel(*a, **kw)
            label = name
            if name == "matmul":
                (m, k), n = a[0].shape, a[1].shape[1]
                label = f"matmul ({m}x{k}) @ ({k}x{n})"
                flops[label] = 2 * m * k * n
            elif name in ("conv_forward", "conv_backward"):  # a Winograd or direct layer, whole
                n, c, h, w = a[0].shape if name == "conv_forward" else a[3]
                f = a[1].shape[0] if name == "conv_forward" else a[2].shape[0]
                label = f"{algorithm} {name[5:]} {c}->{f} @{h}x{w}"
            sync()
            start = time.perf_counter()
            depth[0] += 1
            try:
                result = kernel(*a, **kw)
            finally:
                depth[0] -= 1
            sync()
            spent[label] += time.perf_counter() - start
            calls[label] += 1
            return result

        return timed

    inside = collections.defaultdict(float)

    def inside_timer(label, kernel):
        # CPU time of the calling thread: a thread that waits for the GIL uses none
        def timed(*a, **kw):
            start = time.thread_time()
            result = kernel(*a, **kw)
            inside[label] += time.thread_time() - start
            return result

        return timed

    model, loss_fn, optimizer, x, y = _training_job(args, mc, models, xp)

    def step():
        if args.inference:
            with fused.predicting():  # as predict runs it: BatchNorm folded into its Conv2D
                model.forward(x, training=False)
            return
        loss_fn.forward(model.forward(x, training=True), y)
        optimizer.zero_grad()
        model.backward(loss_fn.backward(), input_grad=False)
        optimizer.step()

    # before the kernels are timed one by one (which synchronizes)
    if args.backend == "cupy" and not args.inference:
        _recorded_against_written(args, model, loss_fn, optimizer, x, y, sync)
    for name in getattr(kernels, "__all__", dir(kernels)):
        if not name.startswith("_") and callable(getattr(kernels, name)) \
                and name != "conv_algorithm":
            setattr(kernels, name, timer(name, getattr(kernels, name)))
    if args.backend == "numba":  # the Winograd layers: transforms and products, block by block
        from minicnn.kernels import numba_direct as direct
        from minicnn.kernels import numba_winograd as winograd

        for name in ("conv_forward", "conv_backward"):
            setattr(winograd, name, timer(name, getattr(winograd, name)))
            setattr(direct, name, timer(name, getattr(direct, name), "direct"))
        # inside them, the steps of each block, on every core at once: their time is summed
        # over the cores, and its share is of the cores' time (the step's time x the cores)
        for name in ("_input_transform_kernel", "_output_transform_kernel",
                     "_output_transform_transposed_kernel", "_input_transform_transposed_kernel",
                     "filter_transform", "filter_transform_transposed", "matmul_here"):
            label = "products" if name == "matmul_here" else \
                "transforms: " + name.strip("_").replace("_kernel", "")
            setattr(winograd, name, inside_timer(label, getattr(winograd, name)))

    rng = np.random.default_rng(0)
    for _ in range(3):
        step()
    sync()
    spent.clear()
    inside.clear()
    calls.clear()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    per_step = (time.perf_counter() - start) / args.steps
    size = 8192 if args.backend == "cupy" else 2048
    a = xp.asarray(rng.random((size, size), dtype=np.float32))
    a @ a
    peak = max(2 * size**3 / t for t in [_timed(lambda: (a @ a, sync())) for _ in range(5)]) / 1e9

    job = "inference pass" if args.inference else "step"
    print(f"{args.model}, batch {args.batch_size}, {args.backend}: {per_step * 1e3:.1f} ms per "
          f"{job} ({args.batch_size / per_step:,.0f} images/s); matmul peak {peak:.0f} GFLOP/s")
    print(f"{'kernel':<36} {'ms/step':>8} {'share':>6} {'calls':>6}  GFLOP/s (of peak)")
    for label, seconds in sorted(spent.items(), key=lambda item: -item[1]):
        ms = seconds / args.steps * 1e3
        rate = ""
        if label in flops:
            gflops = flops[label] * calls[label] / seconds / 1e9
            rate = f"{gflops:.0f} ({gflops / peak:.0%})"
        print(f"{label:<36} {ms:8.2f} {ms / (per_step * 1e3):6.0%} {calls[label] // args.steps:6d}  "
              f"{rate}")
    other = per_step - sum(spent.values()) / args.steps
    print(f"{'(everything else: Python, NumPy)':<36} {other * 1e3:8.2f} {other / per_step:6.0%}")
    if inside:
        import numba

        cores = numba.get_num_threads()
        print(f"\ninside the Winograd layers, summed over the {cores} cores (share: of {cores} x "
              f"the step)")
        for label, seconds in sorted(inside.items(), key=lambda item: -item[1]):
            ms = seconds / args.steps * 1e3
            print(f"{label:<48} {ms:8.2f} {ms / (cores * per_step * 1e3):6.0%}")
        transforms = sum(v for k, v in inside.items() if k.startswith("transforms")) / args.steps
        print(f"{'transforms, all':<48} {transforms * 1e3:8.2f} "
              f"{transforms / (cores * per_step):6.0%}")


def _training_job(args, mc, models, xp):
    shape = (1, 28, 28) if args.model == "reference" else (3, 32, 32)
    model = {"reference": models.reference_cnn, "cifar_vgg": models.cifar_vgg,
             "cifar_resnet": models.cifar_resnet}[args.model](seed=0)
    loss_fn = mc.losses.SoftmaxCrossEntropy()
    optimizer = mc.optim.Adam(model.parameters(), lr=1e-3)
    if args.batch_size is None:
        requested = inspect.signature(model.predict).parameters["batch_size"].default
        args.batch_size = model.inference_batch_size(shape, np.float32, requested,
                                                     "profile_step") if args.inference else 128
    rng = np.random.default_rng(0)
    x = xp.asarray(rng.random((args.batch_size, *shape), dtype=np.float32))
    y = xp.asarray(rng.integers(0, 10, args.batch_size))
    return model, loss_fn, optimizer, x, y


def _recorded_against_written(args, model, loss_fn, optimizer, x, y, sync):
    """On the GPU: the step as written (each kernel launched from Python, the loss left on the
    GPU as fit leaves it, so that neither side waits for the host) against the same step
    recorded once as a CUDA graph and replayed (minicnn.capture's record), and how many
    operations the record holds, i.e. how many launches one replay saves."""
    from minicnn.cuda_graphs import RecordedCall

    def recordable(xb, yb):  # the step with its loss left on the GPU, as fit's record has it
        loss = loss_fn.forward_array(model.forward(xb, training=True, check_finite=False), yb)
        optimizer.zero_grad()
        model.backward(loss_fn.backward(), input_grad=False)
        optimizer.step()
        return (loss,)

    for _ in range(3):
        recordable(x, y)
    sync()
    start = time.perf_counter()
    for _ in range(args.steps):
        recordable(x, y)
    sync()
    written = (time.perf_counter() - start) / args.steps
    record = RecordedCall(recordable, (x, y))
    steps_before = optimizer.step_count
    record.run(x, y)
    sync()
    start = time.perf_counter()
    for _ in range(args.steps):
        record.run(x, y)
    sync()
    recorded = (time.perf_counter() - start) / args.steps
    optimizer.step_count = steps_before
    print(f"{args.model}, batch {args.batch_size}, cupy: as written {written * 1e3:.2f} ms per "
          f"step, {record.operations()} operations launched one by one; recorded and replayed "
          f"{recorded * 1e3:.2f} ms per step, 1 graph launch (+ 2 copies in, 1 out): "
          f"{written / recorded:.2f}x\n")


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
