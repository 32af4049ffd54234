"""``minicnn exercises train``: MNIST trained by a small CNN that runs the learner's own
answers, to prove them end to end.

Each layer here is a minicnn layer whose backward pass (and, for the convolution, im2col in the
forward pass too) calls the learner's function instead of minicnn's. The backward passes of
exercises 1-7 and one of the BatchNorm forms (8 or 9) must pass before training; every other
exercise that passes is used too (the convolution's forward, 10; average pooling, 11; the
optimizer, Adam 13 or else SGD with momentum 12), and minicnn's code runs for those that do
not, said so. A wrong answer that slipped past the grader would show here as a network that
does not learn.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np

from .. import backend, optim
from ..layers import AvgPool2D, BatchNorm2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sequential
from ..losses import SoftmaxCrossEntropy
from .course import BY_NAME
from .grading import grade, load_function

#: the exercises train needs to pass (a tuple: one of them)
REQUIRED = ("dense_backward", "relu_backward", "softmax_cross_entropy_backward",
            "maxpool_backward", "im2col", "conv_backward_cols", "col2im",
            ("batchnorm_backward_compact", "batchnorm_backward_staged"))
#: the exercises train uses when they pass (minicnn's code runs for the others)
OPTIONAL = ("conv_forward", "avgpool_backward", "adam_step", "sgd_momentum_step")


def _alternatives(need) -> tuple[str, ...]:
    """An exercise needed, as the tuple of exercises any one of which will do."""
    return (need,) if isinstance(need, str) else tuple(need)


class _Yours:
    """The learner's functions that pass their exercise, by exercise name; ``failed`` says
    which of ``REQUIRED`` do not pass yet, and why."""

    def __init__(self, folder: Path):
        self.functions, self.failed = {}, []
        reasons = {}
        names = [*(n for need in REQUIRED for n in _alternatives(need)), *OPTIONAL]
        for name in names:  # each in a child process, a second or less
            exercise = BY_NAME[name]
            result = grade(exercise, folder / exercise.file_name)
            if result.passed:
                self.functions[name] = load_function(exercise, folder / exercise.file_name)
            else:
                reasons[name] = f"{exercise.number}. {name} ({result.report[0]})"
        for need in REQUIRED:
            if not self.passed(need):
                self.failed.append(" or ".join(reasons[name] for name in _alternatives(need)))

    def passed(self, *names) -> bool:
        """Whether every exercise named passes (a tuple of names: any one of them)."""
        return all(any(n in self.functions for n in _alternatives(need)) for need in names)

    def __getattr__(self, name):
        try:
            return self.__dict__["functions"][name]
        except KeyError:
            raise AttributeError(name) from None


# -- your passes, run by minicnn's layers (Layer.use_passes) --------------------------------------
#
# Each function takes the layer and does what its _forward or _backward does, calling your
# answers where the exercises say; the layer keeps its class, parameters and config.

def _dense_backward(yours):
    def backward(layer, dy, input_grad):
        dx, layer.weight.grad, db = yours.dense_backward(layer._cache, layer.weight.data, dy)
        if layer.bias is not None:
            layer.bias.grad = db
        return dx
    return None, backward  # Dense's forward caches x, as yours needs


def _relu_passes(yours):
    def forward(layer, x, training):  # minicnn's ReLU keeps y; yours asks for x
        return layer._remember(np.maximum(x, 0), cache=x)

    def backward(layer, dy, input_grad):
        return yours.relu_backward(layer._cache, dy)
    return forward, backward


def _maxpool_passes(yours):
    def forward(layer, x, training):  # minicnn's keeps the winners' indices; yours asks for x
        y, _ = layer.kernels.maxpool_forward(x, layer.kernel_size, layer.stride)
        return layer._remember(y, cache=x)

    def backward(layer, dy, input_grad):
        return yours.maxpool_backward(layer._cache, dy, layer.kernel_size, layer.stride)
    return forward, backward


def _avgpool_backward(yours):
    def backward(layer, dy, input_grad):  # AvgPool2D caches x's shape, as yours needs
        return yours.avgpool_backward(dy, layer._cache, layer.kernel_size, layer.stride)
    return None, backward


def _conv_passes(yours):
    """Conv2D's im2col story with your im2col, dW2/dcols and col2im, and your forward pass
    (exercise 10) where it passes."""
    def forward(layer, x, training):
        n = x.shape[0]
        f, oh, ow = layer.output_shape(x.shape[1:])
        cols = yours.im2col(x, layer.kernel_size, layer.stride, layer.padding)
        if yours.passed("conv_forward"):
            bias = layer.bias.data if layer.bias is not None else \
                np.zeros(f, dtype=layer.weight.data.dtype)
            y = yours.conv_forward(x, layer.weight.data, bias, layer.stride, layer.padding)
        else:
            out = layer.weight.data.reshape(f, -1) @ cols               # (F, N*OH*OW)
            if layer.bias is not None:
                out = out + layer.bias.data[:, None]
            y = out.reshape(f, n, oh, ow).transpose(1, 0, 2, 3)
        return layer._remember(np.ascontiguousarray(y), cache=(x.shape, cols))

    def backward(layer, dy, input_grad):
        x_shape, cols = layer._cache
        f = dy.shape[1]
        dout = dy.transpose(1, 0, 2, 3).reshape(f, -1)                # (F, N*OH*OW)
        dW2, dcols = yours.conv_backward_cols(cols, layer.weight.data.reshape(f, -1), dout)
        layer.weight.grad = dW2.reshape(layer.weight.data.shape)
        if layer.bias is not None:
            layer.bias.grad = dy.sum(axis=(0, 2, 3))
        if not input_grad:
            return None
        return yours.col2im(dcols, x_shape, layer.kernel_size, layer.stride, layer.padding)
    return forward, backward


def _batchnorm_passes(yours):
    """Your training-mode backward (the compact form, else the staged one: the same gradient);
    in inference mode (the studio) the statistics are constants, and minicnn's backward
    (dx = dy * gamma / sqrt(running_var + eps)) runs."""
    def forward(layer, x, training):
        y = BatchNorm2D._forward(layer, x, training)
        return layer._remember(y, cache=(layer._cache, x, training))

    def backward(layer, dy, input_grad):
        cache, x, training = layer._cache
        if not training:
            layer._cache = cache
            return BatchNorm2D._backward(layer, dy, input_grad)
        answer = yours.functions.get("batchnorm_backward_compact") or \
            yours.functions["batchnorm_backward_staged"]
        dx, layer.gamma.grad, layer.beta.grad = answer(x, layer.gamma.data, dy, layer.eps)
        return dx
    return forward, backward


#: layer type -> (the exercises its passes need, the function making them from your answers)
YOUR_PASSES = {
    Conv2D: (("im2col", "conv_backward_cols", "col2im"), _conv_passes),
    BatchNorm2D: ((("batchnorm_backward_compact", "batchnorm_backward_staged"),),
                  _batchnorm_passes),
    ReLU: (("relu_backward",), _relu_passes),
    MaxPool2D: (("maxpool_backward",), _maxpool_passes),
    AvgPool2D: (("avgpool_backward",), _avgpool_backward),
    Dense: (("dense_backward",), _dense_backward),
}
YOURS = "[your backward]"


class YourLoss(SoftmaxCrossEntropy):
    def forward_array(self, logits, labels):  # forward() and the training loop both call it
        self._logits, self._labels = logits, np.asarray(labels)
        return super().forward_array(logits, labels)

    def backward(self, scale: float = 1.0):
        return self.yours.softmax_cross_entropy_backward(self._logits, self._labels) * scale


class YourSGD(optim.SGD):
    """SGD with momentum whose step is the learner's (exercise 12)."""

    def _update(self, p, grad, state):
        velocity = state.setdefault("velocity", np.zeros_like(p.data))
        w, state["velocity"] = self.yours.sgd_momentum_step(p.data, grad, velocity, self.lr,
                                                            self.momentum)
        p.data[...] = w  # into the array the layer holds


class YourAdam(optim.Adam):
    """Adam whose step is the learner's (exercise 13)."""

    def _update(self, p, grad, state):
        m = state.setdefault("m", np.zeros_like(p.data))
        v = state.setdefault("v", np.zeros_like(p.data))
        w, state["m"], state["v"] = self.yours.adam_step(p.data, grad, m, v, self.step_count,
                                                         self.lr, *self.betas, self.eps)
        p.data[...] = w


def your_optimizer(yours: _Yours, parameters):
    """Your Adam (exercise 13) if it passes, else your SGD with momentum (12), else minicnn's
    Adam; with the words that say which."""
    if yours.passed("adam_step"):
        chosen, words = YourAdam(parameters, lr=2e-3), "your Adam"
    elif yours.passed("sgd_momentum_step"):
        chosen, words = YourSGD(parameters, lr=0.05, momentum=0.9), "your SGD with momentum"
    else:
        return optim.Adam(parameters, lr=2e-3), "minicnn's Adam (exercises 12, 13 not passed)"
    chosen.yours = yours
    return chosen, words


def with_your_layers(model: Sequential, folder) -> tuple[Sequential, list[str]]:
    """A copy of ``model`` whose layers run your backward passes wherever the exercises they
    need pass (the weights are the model's); returns it and one line per layer type kept as
    minicnn's, saying why. For ``minicnn studio --layers DIR``."""
    return _swap_layers(model, _Yours(Path(folder)))


def _swap_layers(model: Sequential, yours: _Yours) -> tuple[Sequential, list[str]]:
    layers, kept = [], set()
    for layer in model.layers:
        needs, passes = YOUR_PASSES.get(type(layer), ((), None))
        if passes is not None and yours.passed(*needs):
            layer = copy.deepcopy(layer).use_passes(*passes(yours), words=YOURS)
        elif passes is not None:
            kept.add(f"{type(layer).__name__} stays minicnn's: "
                     + ", ".join(" or ".join(_alternatives(n))
                                 for n in needs if not yours.passed(n)) + " not passed")
        layers.append(layer)
    copied = Sequential(layers, input_shape=model.input_shape)
    copied.metadata = dict(model.metadata or {})
    return copied, sorted(kept)


def your_network(yours: _Yours, seed: int = 0) -> tuple[Sequential, list[str]]:
    """Conv(1->8) BN ReLU MaxPool, Conv(8->16) BN ReLU AvgPool, Dense(784->10), on your layers
    wherever their exercises pass; returns it and the lines saying which stay minicnn's."""
    model = Sequential([Conv2D(1, 8, 3, padding=1), BatchNorm2D(8), ReLU(), MaxPool2D(2),
                        Conv2D(8, 16, 3, padding=1), BatchNorm2D(16), ReLU(), AvgPool2D(2),
                        Flatten(), Dense(16 * 7 * 7, 10)], seed=seed, input_shape=(1, 28, 28))
    return _swap_layers(model, yours)


def train_with_your_layers(folder, epochs: int = 3, limit: int | None = None, seed: int = 0,
                           verbose: int = 1) -> dict:
    """Train :func:`your_network` on MNIST (batches of 64, :func:`your_optimizer`) and
    evaluate it on the 10,000 test images. Returns ``{"test_accuracy", "train_seconds",
    "epochs", "images", "yours", "minicnns"}``: the last two name the exercises whose answers
    ran, and what ran minicnn's code instead."""
    from .. import data
    from ..training import evaluate, fit

    yours = _Yours(Path(folder))
    if yours.failed:
        raise ValueError("train needs every exercise it uses to pass first; not yet: "
                         + "; ".join(yours.failed))
    previous = backend.get_backend()
    backend.set_backend("numpy")  # your functions are NumPy code
    try:
        mnist = data.prepare_data("mnist", limit=limit or None, limit_test=False, verbose=verbose)
        (x_train, y_train), (x_test, y_test) = mnist.train, mnist.test
        model, kept = your_network(yours, seed)
        optimizer, optimizer_words = your_optimizer(yours, model.parameters())
        if optimizer_words.startswith("minicnn"):
            kept.append(optimizer_words)
        ran = [name for name in yours.functions if not (
            name == "batchnorm_backward_staged" and yours.passed("batchnorm_backward_compact")
            or name == "sgd_momentum_step" and yours.passed("adam_step"))]
        if verbose:
            print(f"your answers run: {', '.join(ran)}\nminicnn's: "
                  + ("; ".join(kept) if kept else "nothing else"))
        loss = YourLoss()
        loss.yours = yours
        start = time.perf_counter()
        fit(model, loss, optimizer, (x_train, y_train),
            epochs=epochs, batch_size=64, seed=seed, verbose=verbose)
        seconds = time.perf_counter() - start
        accuracy = evaluate(model, SoftmaxCrossEntropy(), x_test, y_test)["acc"]
    finally:
        backend.set_backend(previous)
    if verbose:
        print(f"test accuracy {accuracy:.2%} with your backward passes ({len(x_train):,} "
              f"training images, {epochs} epoch(s), {seconds:.0f} s)")
    return {"test_accuracy": float(accuracy), "train_seconds": seconds, "epochs": epochs,
            "images": int(len(x_train)), "yours": ran, "minicnns": kept}
