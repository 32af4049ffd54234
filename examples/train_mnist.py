"""Train a CNN on MNIST and report its test accuracy.

    python examples/train_mnist.py                 # 6 epochs, ~2.5 minutes on 2 CPU cores: 99.4%
    python examples/train_mnist.py --fast          # 1 epoch, ~15 s: 99.2%
    python examples/train_mnist.py --long          # 15 epochs with augmentation, ~6 min: 99.65%
    python examples/train_mnist.py --epochs 1 --quiet

The network (minicnn.models.mnist_cnn) has three conv-BatchNorm-ReLU-maxpool blocks and a
dropout + dense classifier; it is trained with AdamW under a one-cycle learning-rate schedule.
--fast trains a narrower network for one epoch; --long the same one as the default for 15, with
augmentation.
The MNIST files ship with the repository (data/mnist), so this runs offline on a fresh clone.
The model, its training history (JSON) and curves (PNG) are written to --out.
"""

import argparse
import sys

from minicnn.recipes import RECIPES, train_classifier


def main(argv=None):
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
                        help="random rotations, zooms and shifts (default: off; on with --long)")
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument("--fast", action="store_true",
                        help="the fastest road to 99%%: a 16-wide network, one epoch")
    preset.add_argument("--long", action="store_true",
                        help="the longer recipe: 15 epochs with augmentation, full width")
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
          f"{results['train_seconds']:.0f} s of training, {results['images_per_s']:,.0f} images/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
