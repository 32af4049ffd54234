"""Train a CNN on your own images: one sub-folder per class.

    photos/
      cats/  001.jpg 002.png ...
      dogs/  ...
    python examples/train_image_folder.py photos --size 64 --epochs 20

A stratified 20% of every class is held out for validation (by --seed), unless the folder has
train/ and test/ sub-folders, which are then used as they are. Unreadable files are skipped
with a warning that names them. The model file records the class names, the image size and the
normalization, so `minicnn predict MODEL image.jpg` works on new pictures.
"""

import argparse
import sys

from minicnn.recipes import train_classifier


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="the image folder (one sub-folder per class)")
    parser.add_argument("--size", type=int, default=32, help="resize images to SIZE x SIZE")
    parser.add_argument("--grayscale", action="store_true", help="one channel instead of RGB")
    parser.add_argument("--model", default=None, help="network preset (default mnist_cnn)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--backend", choices=("numpy", "numba", "cupy"), default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    results = train_classifier(
        "folder", data_dir=args.folder, model=args.model, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, augment=args.augment, seed=args.seed,
        out=args.out, backend_name=args.backend, verbose=0 if args.quiet else 1,
        image_size=(args.size, args.size), channels=1 if args.grayscale else 3)
    print(f"held-out accuracy: {results['test_accuracy']:.2%}; model: {results['model_file']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
