"""``minicnn exercises train``: MNIST trained by a small CNN whose backward passes are the
learner's own answers (exercises 1-7 and 9), to prove them end to end.

Each layer here is a minicnn layer whose backward pass (and, for the convolution, im2col in the
forward pass too) calls the learner's function instead of minicnn's; everything else (the
forward formulas, the optimizer, the data) is minicnn's. A wrong answer that slipped past the
grader would show here as a network that does not learn.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .. import backend
from ..layers import BatchNorm2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sequential
from ..losses import SoftmaxCrossEntropy
from .course import BY_NAME
from .grading import grade, load_function

#: the exercises whose answers the network runs
USED = ("dense_backward", "relu_backward", "softmax_cross_entropy_backward", "maxpool_backward",
        "im2col", "conv_backward_cols", "col2im", "batchnorm_backward_compact")


class _Yours:
    """The learner's functions, by exercise name."""

    def __init__(self, folder: Path):
        self.functions = {}
        failed = []
        for name in USED:
            exercise = BY_NAME[name]
            result = grade(exercise, folder / exercise.file_name)
            if not result.passed:
                failed.append(f"{exercise.number}. {name} ({result.report[0]})")
            else:
                self.functions[name] = load_function(exercise, folder / exercise.file_name)
        if failed:
            raise ValueError("train needs every exercise it uses to pass first; not yet: "
                             + "; ".join(failed))

    def __getattr__(self, name):
        return self.functions[name]


class YourDense(Dense):
    def _backward(self, dy, input_grad):
        dx, self.weight.grad, self.bias.grad = self.yours.dense_backward(
            self._cache, self.weight.data, dy)
        return dx


class YourReLU(ReLU):
    def _forward(self, x, training):
        return self._remember(np.maximum(x, 0), cache=x)

    def _backward(self, dy, input_grad):
        return self.yours.relu_backward(self._cache, dy)


class YourMaxPool2D(MaxPool2D):
    def _forward(self, x, training):
        y, _ = self.kernels.maxpool_forward(x, self.kernel_size, self.stride)
        return self._remember(y, cache=x)

    def _backward(self, dy, input_grad):
        return self.yours.maxpool_backward(self._cache, dy, self.kernel_size, self.stride)


class YourConv2D(Conv2D):
    """Conv2D's im2col story with the learner's im2col, dW2/dcols and col2im."""

    def _forward(self, x, training):
        n = x.shape[0]
        f, oh, ow = self.output_shape(x.shape[1:])
        W2 = self.weight.data.reshape(f, -1)
        cols = self.yours.im2col(x, self.kernel_size, self.stride, self.padding)
        out = W2 @ cols + self.bias.data[:, None]                      # (F, N*OH*OW)
        y = out.reshape(f, n, oh, ow).transpose(1, 0, 2, 3)
        return self._remember(np.ascontiguousarray(y), cache=(x.shape, cols))

    def _backward(self, dy, input_grad):
        x_shape, cols = self._cache
        f = dy.shape[1]
        dout = dy.transpose(1, 0, 2, 3).reshape(f, -1)                # (F, N*OH*OW)
        dW2, dcols = self.yours.conv_backward_cols(cols, self.weight.data.reshape(f, -1), dout)
        self.weight.grad = dW2.reshape(self.weight.data.shape)
        self.bias.grad = dy.sum(axis=(0, 2, 3))
        if not input_grad:
            return None
        return self.yours.col2im(dcols, x_shape, self.kernel_size, self.stride, self.padding)


class YourBatchNorm2D(BatchNorm2D):
    def _forward(self, x, training):
        y = super()._forward(x, training)
        self._input = x
        return y

    def _backward(self, dy, input_grad):
        dx, self.gamma.grad, self.beta.grad = self.yours.batchnorm_backward_compact(
            self._input, self.gamma.data, dy, self.eps)
        return dx


class YourLoss(SoftmaxCrossEntropy):
    def forward(self, logits, labels):
        self._logits, self._labels = logits, np.asarray(labels)
        return super().forward(logits, labels)

    __call__ = forward

    def backward(self, scale: float = 1.0):
        return self.yours.softmax_cross_entropy_backward(self._logits, self._labels) * scale


def your_network(yours: _Yours, seed: int = 0) -> Sequential:
    """Conv(1->8) BN ReLU MaxPool, Conv(8->16) BN ReLU MaxPool, Dense(784->10), on your layers."""
    layers = [YourConv2D(1, 8, 3, padding=1), YourBatchNorm2D(8), YourReLU(), YourMaxPool2D(2),
              YourConv2D(8, 16, 3, padding=1), YourBatchNorm2D(16), YourReLU(), YourMaxPool2D(2),
              Flatten(), YourDense(16 * 7 * 7, 10)]
    for layer in layers:
        layer.yours = yours
    return Sequential(layers, seed=seed, input_shape=(1, 28, 28))


def train_with_your_layers(folder, epochs: int = 1, limit: int | None = None, seed: int = 0,
                           verbose: int = 1) -> dict:
    """Train :func:`your_network` on MNIST (Adam, batches of 64) and evaluate it on the 10,000
    test images. Returns ``{"test_accuracy", "train_seconds", "epochs", "images"}``."""
    from .. import data, optim
    from ..training import evaluate, fit

    yours = _Yours(Path(folder))
    previous = backend.get_backend()
    backend.set_backend("numpy")  # your functions are NumPy code
    try:
        (x_train, y_train), (x_test, y_test), _ = data.load_mnist(verbose=verbose)
        if limit:
            x_train, y_train = x_train[:limit], y_train[:limit]
        mean, std = 0.1307, 0.3081
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
        model = your_network(yours, seed)
        loss = YourLoss()
        loss.yours = yours
        start = time.perf_counter()
        fit(model, loss, optim.Adam(model.parameters(), lr=2e-3), (x_train, y_train),
            epochs=epochs, batch_size=64, seed=seed, verbose=verbose)
        seconds = time.perf_counter() - start
        accuracy = evaluate(model, SoftmaxCrossEntropy(), x_test, y_test)["acc"]
    finally:
        backend.set_backend(previous)
    if verbose:
        print(f"test accuracy {accuracy:.2%} with your backward passes ({len(x_train):,} "
              f"training images, {epochs} epoch(s), {seconds:.0f} s)")
    return {"test_accuracy": float(accuracy), "train_seconds": seconds, "epochs": epochs,
            "images": int(len(x_train))}
