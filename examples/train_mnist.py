"""Train the DESIGN.md reference CNN on MNIST for one epoch and print the test accuracy.

    python examples/train_mnist.py [--epochs 1] [--batch-size 64] [--lr 1e-3] [--backend numba]

The MNIST files ship with the project (data/mnist), so this runs offline on a fresh clone.
"""

import argparse
import time

import numpy as np
from tqdm import tqdm

import minicnn as mc
from minicnn.data import load_mnist
from minicnn.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU


def build_model(seed):
    return mc.Sequential([
        Conv2D(1, 32, kernel_size=3, stride=1, padding=1), ReLU(), MaxPool2D(2),
        Conv2D(32, 64, kernel_size=3, padding=1), ReLU(), MaxPool2D(2),
        Flatten(), Dense(64 * 7 * 7, 128), ReLU(), Dropout(0.5), Dense(128, 10),
    ], seed=seed, input_shape=(1, 28, 28))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--backend", choices=mc.BACKENDS, default=None,
                        help="array/kernel backend (default: $MINICNN_BACKEND, else numba if installed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None, help="folder holding the four MNIST files")
    parser.add_argument("--out", default="mnist_cnn.safetensors", help="where to save the model")
    args = parser.parse_args()
    if args.backend:
        mc.set_backend(args.backend)

    (x_train, y_train), (x_test, y_test), class_names = load_mnist(args.data_dir)
    model = build_model(args.seed)
    model.metadata = {"class_names": class_names}
    model.summary()
    loss_fn = mc.losses.SoftmaxCrossEntropy()
    optimizer = mc.optim.Adam(model.parameters(), lr=args.lr)
    rng = np.random.default_rng(args.seed)

    print(f"backend: {mc.get_backend()}; {len(x_train):,} training images")
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(len(x_train))
        batches = range(0, len(order), args.batch_size)
        bar = tqdm(batches, desc=f"epoch {epoch}/{args.epochs}", unit="batch")
        for i in bar:
            idx = order[i:i + args.batch_size]
            loss = loss_fn.forward(model.forward(x_train[idx], training=True), y_train[idx])
            optimizer.zero_grad()
            model.backward(loss_fn.backward())
            optimizer.step()
            bar.set_postfix(loss=f"{loss:.4f}")
    train_time = time.perf_counter() - start

    accuracy = float((model.predict(x_test).argmax(axis=1) == y_test).mean())
    print(f"test accuracy: {accuracy:.2%} after {args.epochs} epoch(s); "
          f"training took {train_time:.1f} s ({args.epochs * len(x_train) / train_time:,.0f} images/s)")
    model.save(args.out)
    print(f"model saved to {args.out}")


if __name__ == "__main__":
    main()
