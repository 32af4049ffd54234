"""How far float32 Winograd is from the exact convolution, on a network's real activations.

    python benchmarks/winograd_error.py                                   # MNIST, mnist_cnn
    python benchmarks/winograd_error.py --model runs/cifar/model.safetensors \\
        --image-folder /tmp/cifar10/test

Runs one batch through the network in float64 (im2col), keeps every 3x3 stride-1 convolution's
input and the gradient of the loss at its output, then computes each such layer again in float32
with im2col, Winograd F(2x2,3x3) and F(4x4,3x3) and compares y, dL/dx and dL/dW with the float64
result. Errors are relative to the largest |value| of the exact result (the bound
tests/test_winograd.py holds them to) and, in brackets, root-mean-square error over
root-mean-square value. Without --model, an untrained network (He initialization) is used.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np


def images(args, shape):
    if args.image_folder:
        from PIL import Image

        files = sorted(Path(args.image_folder).rglob("*.jpg"))
        files = files[:: max(1, len(files) // args.batch_size)][: args.batch_size]
        mode = "L" if shape[0] == 1 else "RGB"
        x = np.stack([np.asarray(Image.open(f).convert(mode).resize(shape[1:][::-1]), np.float64)
                      for f in files]) / 255.0
        return x.reshape(len(files), *shape), np.zeros(len(files), np.int64)
    import minicnn as mc

    _, (x, y), _ = mc.data.load_mnist(verbose=0)
    return x[: args.batch_size].astype(np.float64), y[: args.batch_size]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a minicnn model file (default: an untrained mnist_cnn)")
    parser.add_argument("--image-folder", help="images to feed it (default: MNIST test images)")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    import minicnn as mc
    from minicnn.layers import Conv2D

    mc.set_backend("numba" if "numba" in mc.available_backends() else "numpy")
    model = mc.load_model(args.model) if args.model else mc.models.mnist_cnn(seed=0)
    shape = tuple(model.input_shape)
    x, labels = images(args, shape)
    x = mc.data.normalize_as_trained(x, model.metadata or {}) if args.model else x
    model.astype(np.float64)
    mc.set_conv_algorithm("im2col")
    loss = mc.losses.SoftmaxCrossEntropy()
    inputs, activations = {}, x
    for i, layer in enumerate(model.layers):  # a flat network: each layer's input, in order
        inputs[i] = activations
        activations = layer.forward(activations, training=False)
    loss.forward(activations, labels)
    grads, dy = {}, loss.backward()
    for i in reversed(range(len(model.layers))):
        grads[i] = dy
        dy = model.layers[i].backward(dy)

    rows = []
    for i, layer in enumerate(model.layers):
        if not (isinstance(layer, Conv2D) and layer.kernel_size == (3, 3) and layer.stride == (1, 1)):
            continue
        exact = copy.deepcopy(layer)
        y = exact.forward(inputs[i], training=True)
        dx = exact.backward(grads[i])
        reference = {"y": y, "dL/dx": dx, "dL/dW": exact.weight.grad}
        cells = []
        for algorithm in ("im2col", "winograd2", "winograd"):
            mc.set_conv_algorithm(algorithm)
            single = copy.deepcopy(layer).astype(np.float32)
            got = {"y": single.forward(inputs[i].astype(np.float32), training=True)}
            got["dL/dx"] = single.backward(grads[i].astype(np.float32))
            got["dL/dW"] = single.weight.grad
            parts = []
            for key, value in reference.items():
                error = np.abs(got[key] - value)
                rms = np.sqrt((error**2).mean()) / np.sqrt((value**2).mean())
                parts.append(f"{error.max() / np.abs(value).max():.1e} ({rms:.0e})")
            cells.append(" / ".join(parts))
        rows.append(f"| {i} {layer.describe()} | " + " | ".join(cells) + " |")
    print(f"{args.model or 'untrained mnist_cnn'} on {len(x)} images of "
          f"{args.image_folder or 'MNIST test'}; errors of y / dL/dx / dL/dW, max |error| over "
          "max |exact| (RMS error over RMS value)\n")
    print("| layer | im2col float32 | Winograd F(2x2,3x3) float32 | Winograd F(4x4,3x3) float32 |")
    print("|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
