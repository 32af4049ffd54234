"""What minicnn studio costs: the server time of one drawn digit, and the slowdown of a training
run that the studio watches.

1. Latency: MNIST test digits, drawn large (112x112, as the page sends them) go through
   ``StudioApp.analyze`` (preprocessing, forward and backward through every layer for one
   class, gradient x input, Grad-CAM, the first layer's dS/dW, encoding): median and 90th
   percentile of the
   server time, for the studio's default model and any other model file given.
2. Training overhead: the page's demo run (mnist_cnn 8 wide, batch 64, AdamW) with and without
   the studio watching (a ``TrainingMonitor``, gradient flow every ``--every`` steps, a client polling
   ``/api/training`` every 0.4 s as the page does), alternated ``--runs`` times; the fastest
   run of each is the figure least disturbed by the machine's noise.

    python benchmarks/bench_studio.py [MODEL ...] [--drawings 50] [--steps 600] [--runs 7]
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import threading

import numpy as np


def latency(model_path, drawings: int) -> tuple[float, float]:
    from PIL import Image

    import minicnn as mc
    from minicnn.studio import build_app

    app = build_app(model_path, verbose=0, demo_training=False)
    _, (x, _), _ = mc.data.load_mnist(verbose=0)
    times = []
    for i in range(drawings + 3):
        big = np.asarray(Image.fromarray((x[i, 0] * 255).astype(np.uint8)).resize((112, 112)),
                         dtype=np.float64) / 255.0
        result = app.analyze({"drawing": np.round(big, 2).tolist()})
        if i >= 3:  # warm-up
            times.append(result["server_ms"])
    return statistics.median(times), float(np.percentile(times, 90))


def training_seconds(steps: int, watched: bool, every: int = 50) -> float:
    import minicnn as mc
    from minicnn import models
    from minicnn.studio import AttachedTraining, StudioApp, TrainingMonitor, make_server

    (x, y), _, _ = mc.data.load_mnist(verbose=0)
    x = ((x[:steps * 64] - 0.13) / 0.31).astype(np.float32)
    y = y[:steps * 64]
    model = models.mnist_cnn(width=8, dropout=0.0)
    callbacks, stop = [], threading.Event()
    if watched:
        monitor = TrainingMonitor(every=10)
        callbacks.append(monitor)
        app = StudioApp(None, AttachedTraining(monitor), verbose=0)
        server = make_server(app)
        threading.Thread(target=server.serve_forever, daemon=True).start()

        def poll():
            while not stop.wait(0.4):
                connection = http.client.HTTPConnection(*server.server_address[:2])
                connection.request("GET", "/api/training", headers={"X-Studio-Token": app.token})
                reply = connection.getresponse()
                reply.read()
                connection.close()
                assert reply.status == 200, reply.status

        threading.Thread(target=poll, daemon=True).start()
    history = mc.fit(model, mc.losses.SoftmaxCrossEntropy(),
                     mc.optim.AdamW(model.parameters(), lr=3e-3), (x, y), epochs=1,
                     batch_size=64, verbose=0, callbacks=callbacks,
                     diagnostics=every if watched else None)
    stop.set()
    if watched:
        server.shutdown()
        server.server_close()
    return history["time_s"][0]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="*", help="model files (default: the studio's own)")
    parser.add_argument("--drawings", type=int, default=50)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--runs", type=int, default=7, help="0: the latency only")
    parser.add_argument("--every", type=int, default=50,
                        help="gradient flow every N steps (minicnn train --studio: 50)")
    args = parser.parse_args(argv)

    for path in args.models or [None]:
        median, p90 = latency(path, args.drawings)
        print(f"{path or 'studio default model'}: one drawn digit to every panel in "
              f"{median:.1f} ms server time (median of {args.drawings}; 90th percentile "
              f"{p90:.1f} ms)")
    if args.runs == 0:
        return
    times = {False: [], True: []}
    training_seconds(20, False)  # JIT warm-up
    for _ in range(args.runs):
        for watched in (False, True):
            times[watched].append(training_seconds(args.steps, watched, args.every))
    plain, watched = statistics.median(times[False]), statistics.median(times[True])
    print(f"training {args.steps} steps (gradient flow every {args.every}), {args.runs} runs "
          f"each: alone "
          f"{sorted(round(t, 2) for t in times[False])} s, watched by the studio "
          f"{sorted(round(t, 2) for t in times[True])} s: median {watched / plain - 1:+.1%}, "
          f"fastest run {min(times[True]) / min(times[False]) - 1:+.1%}")


if __name__ == "__main__":
    main()
