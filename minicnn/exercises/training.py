"""``minicnn exercises train``: MNIST trained by a small CNN whose backward passes are the
learner's own answers (exercises 1-7 and 9), to prove them end to end.

Each layer here is a minicnn layer whose backward pass (and, for the convolution, im2col in the
forward pass too) calls the learner's function instead of minicnn's; everything else (the
forward formulas, the optimizer, the data) is minicnn's. A wrong answer that slipped past the
grader would show here as a network that does not learn.
"""

from __future__ import annotations

import copy
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
    """The learner's functions that pass their exercise, by exercise name; ``failed`` says
    which of ``USED`` do not pass yet, and why."""

    def __init__(self, folder: Path):
        self.functions, self.failed = {}, []
        for name in USED:
            exercise = BY_NAME[name]
            result = grade(exercise, folder / exercise.file_name)
            if not result.passed:
                self.failed.append(f"{exercise.number}. {name} ({result.report[0]})")
            else:
                self.functions[name] = load_function(exercise, folder / exercise.file_name)

    def passed(self, *names) -> bool:
        return all(name in self.functions for name in names)

    def __getattr__(self, name):
        try:
            return self.__dict__["functions"][name]
        except KeyError:
            raise AttributeError(name) from None


class _YourLayer:
    """A layer whose backward pass (part of it, for the convolution) is the learner's."""

    needs: tuple[str, ...] = ()  # the exercises it runs

    def describe(self):
        return f"{super().describe()} [your backward]"


class YourDense(_YourLayer, Dense):
    needs = ("dense_backward",)

    def _backward(self, dy, input_grad):
        dx, self.weight.grad, db = self.yours.dense_backward(self._cache, self.weight.data, dy)
        if self.bias is not None:
            self.bias.grad = db
        return dx


class YourReLU(_YourLayer, ReLU):
    needs = ("relu_backward",)

    def _forward(self, x, training):
        return self._remember(np.maximum(x, 0), cache=x)

    def _backward(self, dy, input_grad):
        return self.yours.relu_backward(self._cache, dy)


class YourMaxPool2D(_YourLayer, MaxPool2D):
    needs = ("maxpool_backward",)

    def _forward(self, x, training):
        y, _ = self.kernels.maxpool_forward(x, self.kernel_size, self.stride)
        return self._remember(y, cache=x)

    def _backward(self, dy, input_grad):
        return self.yours.maxpool_backward(self._cache, dy, self.kernel_size, self.stride)


class YourConv2D(_YourLayer, Conv2D):
    """Conv2D's im2col story with the learner's im2col, dW2/dcols and col2im."""

    needs = ("im2col", "conv_backward_cols", "col2im")

    def _forward(self, x, training):
        n = x.shape[0]
        f, oh, ow = self.output_shape(x.shape[1:])
        W2 = self.weight.data.reshape(f, -1)
        cols = self.yours.im2col(x, self.kernel_size, self.stride, self.padding)
        out = W2 @ cols                                                # (F, N*OH*OW)
        if self.bias is not None:
            out = out + self.bias.data[:, None]
        y = out.reshape(f, n, oh, ow).transpose(1, 0, 2, 3)
        return self._remember(np.ascontiguousarray(y), cache=(x.shape, cols))

    def _backward(self, dy, input_grad):
        x_shape, cols = self._cache
        f = dy.shape[1]
        dout = dy.transpose(1, 0, 2, 3).reshape(f, -1)                # (F, N*OH*OW)
        dW2, dcols = self.yours.conv_backward_cols(cols, self.weight.data.reshape(f, -1), dout)
        self.weight.grad = dW2.reshape(self.weight.data.shape)
        if self.bias is not None:
            self.bias.grad = dy.sum(axis=(0, 2, 3))
        if not input_grad:
            return None
        return self.yours.col2im(dcols, x_shape, self.kernel_size, self.stride, self.padding)


class YourBatchNorm2D(_YourLayer, BatchNorm2D):
    """Your training-mode backward; in inference mode (the studio) the statistics are
    constants, and minicnn's backward (dx = dy * gamma / sqrt(running_var + eps)) runs."""

    needs = ("batchnorm_backward_compact",)

    def _forward(self, x, training):
        y = super()._forward(x, training)
        self._input, self._training = x, training
        return y

    def _backward(self, dy, input_grad):
        if not self._training:
            return super()._backward(dy, input_grad)
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


YOUR_LAYERS = {Conv2D: YourConv2D, BatchNorm2D: YourBatchNorm2D, ReLU: YourReLU,
               MaxPool2D: YourMaxPool2D, Dense: YourDense}


def with_your_layers(model: Sequential, folder) -> tuple[Sequential, list[str]]:
    """A copy of ``model`` whose layers run your backward passes wherever the exercises they
    need pass (the weights are the model's); returns it and one line per layer type kept as
    minicnn's, saying why. For ``minicnn studio --layers DIR``."""
    yours = _Yours(Path(folder))
    layers, kept = [], set()
    for layer in model.layers:
        mine = YOUR_LAYERS.get(type(layer))
        if mine is not None and yours.passed(*mine.needs):
            layer = copy.deepcopy(layer)
            layer.__class__ = mine  # the same arrays and settings, your backward pass
            layer.yours = yours
        elif mine is not None:
            kept.add(f"{type(layer).__name__} stays minicnn's: "
                     + ", ".join(n for n in mine.needs if not yours.passed(n)) + " not passed")
        layers.append(layer)
    copied = Sequential(layers, input_shape=model.input_shape)
    copied.metadata = dict(model.metadata or {})
    return copied, sorted(kept)


def your_network(yours: _Yours, seed: int = 0) -> Sequential:
    """Conv(1->8) BN ReLU MaxPool, Conv(8->16) BN ReLU MaxPool, Dense(784->10), on your layers."""
    layers = [YourConv2D(1, 8, 3, padding=1), YourBatchNorm2D(8), YourReLU(), YourMaxPool2D(2),
              YourConv2D(8, 16, 3, padding=1), YourBatchNorm2D(16), YourReLU(), YourMaxPool2D(2),
              Flatten(), YourDense(16 * 7 * 7, 10)]
    for layer in layers:
        layer.yours = yours
    return Sequential(layers, seed=seed, input_shape=(1, 28, 28))


def train_with_your_layers(folder, epochs: int = 3, limit: int | None = None, seed: int = 0,
                           verbose: int = 1) -> dict:
    """Train :func:`your_network` on MNIST (Adam, batches of 64) and evaluate it on the 10,000
    test images. Returns ``{"test_accuracy", "train_seconds", "epochs", "images"}``."""
    from .. import data, optim
    from ..training import evaluate, fit

    yours = _Yours(Path(folder))
    if yours.failed:
        raise ValueError("train needs every exercise it uses to pass first; not yet: "
                         + "; ".join(yours.failed))
    previous = backend.get_backend()
    backend.set_backend("numpy")  # your functions are NumPy code
    try:
        (x_train, y_train), (x_test, y_test), _ = data.load_mnist(verbose=verbose)
        if limit:
            x_train, y_train = x_train[:limit], y_train[:limit]
        normalize = data.Normalize.fit(x_train)  # as minicnn.recipes.prepare_data does
        x_train, x_test = normalize(x_train, None), normalize(x_test, None)
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
