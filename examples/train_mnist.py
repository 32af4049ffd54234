"""Train a CNN on MNIST and report its test accuracy.

    python examples/train_mnist.py                 # 8 epochs, 16 wide: >= 99.5% in ~70 s
    python examples/train_mnist.py --fast          # 1 epoch, 16 wide: >= 99.0% in ~10 s
    python examples/train_mnist.py --long          # 20 epochs, 32 wide: >= 99.65% in ~8 min
    python examples/train_mnist.py --epochs 1 --quiet

Accuracy over seeds 0-2 and training time on 2 cores of an AMD EPYC Zen 5 (AVX-512), 2026-12-06;
docs/usage.md has every seed, the CPU of each figure and why the recipe is built this way.

The network (minicnn.models.mnist_cnn) has three conv-BatchNorm-ReLU-maxpool blocks (16, 32, 64
channels by default) and a dense classifier. It is trained with AdamW under a one-cycle
learning-rate schedule on randomly rotated, zoomed and shifted digits; its test score averages
the logits of each image and of its copies shifted by one pixel (minicnn.evaluate(shifts=1)).
--fast trains the same network for one epoch without those; --long a 32-wide one for 20 epochs.
The MNIST files ship with the repository (data/mnist), so this runs offline on a fresh clone.
The model, its training history (JSON) and curves (PNG) are written to --out.
"""

import argparse
import sys
import time

from minicnn.recipes import RECIPES, train_classifier


def main(argv=None):
    start = time.perf_counter()
    defaults, fast, long = RECIPES["mnist"], RECIPES["mnist-fast"], RECIPES["mnist-long"]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"training epochs (default {defaults.epochs}; --fast: "
                             f"{fast.epochs}; --long: {long.epochs})")
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"images per step (default {defaults.batch_size}; --fast: "
                             f"{fast.batch_size}; --long: {long.batch_size})")
    parser.add_argument("--lr", type=float, default=None,
                        help=f"peak learning rate of the one-cycle schedule (default "
                             f"{defaults.lr:g}; --fast: {fast.lr:g}; --long: {long.lr:g})")
    parser.add_argument("--backend", choices=("numpy", "numba", "cupy"), default=None,
                        help="compute backend (default: $MINICNN_BACKEND, else numba)")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                        help="random rotations, zooms and shifts (default: on; off with --fast)")
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument("--fast", action="store_true",
                        help="the fastest road to 99%%: one epoch, no augmentation")
    preset.add_argument("--long", action="store_true",
                        help="the best accuracy: 20 epochs of a 32-wide network")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="output folder (default runs/mnist-<timestamp>)")
    parser.add_argument("--data-dir", default=None,
                        help="folder holding the four MNIST files (default: data/mnist and the "
                             "other usual places)")
    parser.add_argument("--limit", type=int, default=None,
                        help="use only the first N training (and test) images: a quick smoke run")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        results = train_classifier(
            "mnist", recipe="mnist-long" if args.long else "mnist-fast" if args.fast else "mnist",
            data_dir=args.data_dir,
            epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, augment=args.augment,
            seed=args.seed, out=args.out, backend_name=args.backend, verbose=0 if args.quiet else 1,
            resume=args.resume, limit=args.limit)
    except KeyboardInterrupt:
        print("\ninterrupted: run again with --resume --out <the run folder> to continue",
              file=sys.stderr)
        return 130
    print(f"test accuracy: {results['test_accuracy']:.2%} ({results['epochs']} epochs, "
          f"{results['train_seconds']:.0f} s of training, {results['images_per_s']:,.0f} images/s; "
          f"{time.perf_counter() - start:.0f} s in all, with loading and scoring)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
