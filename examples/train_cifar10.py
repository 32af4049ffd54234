"""Train a CNN on CIFAR-10 and report its test accuracy.

    python examples/train_cifar10.py --data-dir ~/datasets/cifar-10-batches-py
    python examples/train_cifar10.py --image-folder /tmp/cifar10-jpg   # train/ and test/ folders

Uses the canonical python-pickle batches (data_batch_1..5, test_batch; read without unpickling
code) when they are found, else an image folder with train/<class>/ and test/<class>/. On 2 CPU
cores an epoch takes minutes: use --epochs and --limit to size the run, or --backend cupy on a GPU.
"""

import argparse
import sys

from minicnn.recipes import RECIPES, train_classifier


def main(argv=None):
    defaults = RECIPES["cifar10"]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--data-dir", help="folder with the CIFAR-10 python batches")
    source.add_argument("--image-folder", help="folder with train/ and test/ class folders")
    parser.add_argument("--model", default=None, help=f"preset (default {defaults.model})")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                        help="random crops (padding 4) and horizontal flips (default on)")
    parser.add_argument("--backend", choices=("numpy", "numba", "cupy"), default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None,
                        help="use only the first N training (and test) images: a quick smoke run")
    parser.add_argument("--out", default=None)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    dataset = "folder" if args.image_folder else "cifar10"
    results = train_classifier(
        dataset, recipe="cifar10", data_dir=args.image_folder or args.data_dir, model=args.model,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, augment=args.augment,
        seed=args.seed, out=args.out, backend_name=args.backend, verbose=0 if args.quiet else 1,
        limit=args.limit, image_size=(32, 32), channels=3)
    print(f"test accuracy: {results['test_accuracy']:.2%} after {results['epochs']} epochs "
          f"({results['train_seconds']:.0f} s of training)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
