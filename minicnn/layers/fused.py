"""Neighbouring layers run as one pass: an execution strategy of :class:`Sequential`, not a layer.

A BatchNorm2D followed by a ReLU reads and writes every activation twice in each direction:
BatchNorm writes its output y, ReLU reads it and writes max(y, 0); backward, ReLU writes
dL/dy = dy * (y > 0) and BatchNorm reads it, twice. The backend's ``batchnorm_relu_forward`` /
``batchnorm_relu_backward`` do the same arithmetic without those arrays (the mask y > 0 is
computed again from BatchNorm's input, which its backward reads anyway).

A Residual block followed by a ReLU writes the sum a + b, which ReLU reads to write
max(a + b, 0): ``add_relu`` writes only the latter. Backward, nothing is saved: ReLU's mask
is one pass, and the block's own backward follows.

A ReLU followed by a MaxPool2D (Conv, ReLU, MaxPool) writes max(x, 0) whole for the pool to
read. A window's maximum and max(., 0) commute, so the pair pools x and applies the ReLU to the
pooled values only (a quarter of them, for 2x2 windows). Backward, the pool sends each window's
dy to its winner and ReLU masks the whole result; ``maxpool_relu_backward`` reads the mask at
the winners alone (everywhere else the gradient is 0 anyway).

The layers end up as if each had run its own ``forward``: the same output shapes and gradients,
and caches their own backward reads the same way (a ReLU before a pool keeps its input x, not
max(x, 0): positive at the same places; the pool's winner in a window with nothing positive
may be another of its pixels, and gets no gradient either way), so either pass can follow the
other. A layer joins one pair at most, the pairs read from the left (in BatchNorm2D, ReLU,
MaxPool2D the first two). Only the unobserved passes
(``Sequential.forward`` / ``backward``) fuse; ``forward_steps`` / ``backward_steps``, which show
every layer's output, run each layer's own code, and so does everything once
``minicnn.set_fusion(False)`` is called (or ``MINICNN_FUSION=0`` is set).

**Predicting, a Conv2D and the BatchNorm2D after it are one convolution.** At inference
BatchNorm2D is a fixed affine map per channel, ``y = (z - mu) * gamma / sigma + beta`` with the
running statistics; on a convolution's output z = W * x + b that is the convolution with
``W' = W * s`` (each filter f scaled by ``s[f] = gamma[f] / sigma[f]``) and ``b' = (b - mu) * s +
beta``. :meth:`Sequential.predict` runs the pair so, saving BatchNorm's whole pass over the
activations. Only there: a forward pass with ``training=False`` may be followed by a backward
pass (a saliency map), which needs the convolution's own output; predict's never is, and the
two layers it folded keep no cache (a backward pass after predict says to run forward first).
The results equal the two layers' to rounding (the products are taken with W' instead of W).
Where a ReLU follows the pair (Conv2D, BatchNorm2D, ReLU: most CNNs' unit), the convolution
writes max(y, 0) in the same pass (``rectify``, the kernels' last write of y), sparing the
ReLU's pass over the activations; the ReLU's formula is its backend's ``relu_forward``, so the
values are those of the three layers run one after the other with BatchNorm folded.
"""

from __future__ import annotations

import contextlib
import threading

from ..kernels import get_fusion
from .activations import ReLU
from .conv import Conv2D
from .normalization import BatchNorm2D
from .pooling import MaxPool2D


def _batchnorm_relu_forward(norm: BatchNorm2D, relu: ReLU, x, training: bool):
    """relu.forward(norm.forward(x)) in one pass."""
    mean, inv_std = norm._statistics(x, training)
    y = norm.kernels.batchnorm_relu_forward(x, mean, inv_std, norm.gamma.data, norm.beta.data)
    norm._remember(y, cache=(x, mean, inv_std, training))  # what BatchNorm2D._forward keeps
    return relu._remember(y, cache=y)                      # and ReLU._forward


def _batchnorm_relu_backward(norm: BatchNorm2D, relu: ReLU, dy, input_grad: bool):
    """norm.backward(relu.backward(dy)) in one pass; fills gamma's and beta's gradients."""
    relu._check_output_gradient(dy)
    x, mean, inv_std, training = norm._cache
    dx, norm.gamma.grad, norm.beta.grad = norm.kernels.batchnorm_relu_backward(
        dy, x, mean, inv_std, norm.gamma.data, norm.beta.data, batch_statistics=training)
    return dx


def residual_relu_forward(block, relu: ReLU, x, training: bool):
    """relu.forward(block.forward(x)), the sum and the ReLU in one pass: ``add_relu``, or,
    predicting a body that ends with a Conv2D and the BatchNorm2D it folds, that convolution's
    last write of y (the shortcut runs first, and its output is added there)."""
    body = block.body.layers
    last = len(body) - 2
    if (block.body._passes is None and fused_runs(body).get(last) == 2
            and _entry(body[last:])[0] is _conv_batchnorm_folded):
        b = x if block.shortcut is None else block.shortcut._run_forward(x, training)
        h = block.body._forward_layers(x, training, last)
        body[last]._cache = body[last + 1]._cache = None
        y = _conv_batchnorm_folded(*body[last:], h, training, rectify=True, residual=b)
        block.body._cache = block.body._output_shape = None  # nothing for a backward pass
        block._remember(y)
        return relu._remember(y, cache=y)
    a = block.body._run_forward(x, training)
    b = x if block.shortcut is None else block.shortcut._run_forward(x, training)
    y = block.kernels.add_relu(a, b)
    block._remember(y)                 # Residual keeps no cache: its output's shape
    return relu._remember(y, cache=y)  # what ReLU._forward keeps


def residual_relu_backward(block, relu: ReLU, dy, input_grad: bool):
    return block.backward(relu.backward(dy), input_grad=input_grad)


def _relu_maxpool_forward(relu: ReLU, pool: MaxPool2D, x, training: bool):
    """pool.forward(relu.forward(x)), the ReLU applied to the pooled values."""
    pooled, argmax = pool.kernels.maxpool_forward(x, pool.kernel_size, pool.stride)
    relu._remember(x, cache=x)  # x > 0 where max(x, 0) > 0: the mask ReLU._backward reads
    pool._remember(pooled, cache=(x.shape, argmax))  # what MaxPool2D._forward keeps
    return relu.kernels.relu_forward(pooled)


def _relu_maxpool_backward(relu: ReLU, pool: MaxPool2D, dy, input_grad: bool):
    """relu.backward(pool.backward(dy)) in one pass."""
    pool._check_output_gradient(dy)
    argmax = pool._cache[1]
    return pool.kernels.maxpool_relu_backward(dy, argmax, relu._cache, pool.kernel_size,
                                              pool.stride)


def _conv_batchnorm_folded(conv: Conv2D, norm: BatchNorm2D, x, training: bool, rectify=False,
                           residual=None):
    """norm.forward(conv.forward(x)) at inference, as one convolution with W' and b' (and what
    ``Conv2D._convolve`` adds for ``rectify`` and ``residual``)."""
    mean, inv_std = norm._statistics(x, training=False)    # the running ones (x: its xp)
    s = norm.gamma.data * inv_std                           # (F,)
    W = conv.weight.data * s[:, None, None, None]           # W' = W * s, filter by filter
    b = -mean if conv.bias is None else conv.bias.data - mean
    y, _ = conv._convolve(x, W, b * s + norm.beta.data, training=False, rectify=rectify,
                          residual=residual)
    conv._output_shape = norm._output_shape = None          # nothing for a backward pass
    return y


def _conv_batchnorm_relu_folded(conv: Conv2D, norm: BatchNorm2D, relu: ReLU, x, training: bool):
    """relu.forward(norm.forward(conv.forward(x))) at inference: the folded convolution writing
    max(y, 0)."""
    y = _conv_batchnorm_folded(conv, norm, x, training, rectify=True)
    relu._output_shape = None
    return y


def _folded_no_backward(*layers_and_gradient):
    *layers, dy, _ = layers_and_gradient
    layers[-1]._check_output_gradient(dy)  # raises: the folded pass kept no cache


#: (first layer's type, second's) -> (forward, backward, the kernel the backend needs, or
#: None); a container layer adds its own pair where it is defined (Residual:
#: layers/residual.py), as this module sits below the containers
PAIRS = {(BatchNorm2D, ReLU): (_batchnorm_relu_forward, _batchnorm_relu_backward,
                               "batchnorm_relu_forward"),
         (ReLU, MaxPool2D): (_relu_maxpool_forward, _relu_maxpool_backward,
                             "maxpool_relu_backward")}

#: the runs of layers that are one pass only inside :func:`predicting` (no backward pass
#: follows), the same way; the longest that matches is taken
PREDICT_RUNS = {(Conv2D, BatchNorm2D, ReLU): (_conv_batchnorm_relu_folded, _folded_no_backward,
                                              None),  # the convolution's own kernels
                (Conv2D, BatchNorm2D): (_conv_batchnorm_folded, _folded_no_backward, None)}

_predict = threading.local()


@contextlib.contextmanager
def predicting():
    """The forward passes run inside are predict's, which no backward pass follows: the
    :data:`PREDICT_RUNS` fuse too (in this thread)."""
    before = getattr(_predict, "on", False)
    _predict.on = True
    try:
        yield
    finally:
        _predict.on = before


def _entry(layers):
    key = tuple(type(layer) for layer in layers)
    if key in PAIRS:
        return PAIRS[key]
    return PREDICT_RUNS.get(key) if getattr(_predict, "on", False) else None


def run_length(layers, index: int) -> int:
    """How many layers from ``layers[index]`` on run as one pass (0: none): the longest run of
    :data:`PAIRS` (or, :func:`predicting`, of :data:`PREDICT_RUNS`) whose layers run their own
    passes (a subclass, or a layer running a learner's passes, runs its own code), on one
    backend that has the run's kernel, with fusion on."""
    if not get_fusion():
        return 0
    for length in (3, 2):
        run = layers[index:index + length]
        entry = _entry(run) if len(run) == length else None
        if (entry is not None
                and all(layer._passes is None for layer in run)  # their own code, not fused
                and all(layer.backend == run[0].backend for layer in run)
                and (entry[2] is None or hasattr(run[0].kernels, entry[2]))):
            return length
    return 0


def fused_runs(layers) -> dict[int, int]:
    """{i: length}: ``layers[i : i + length]`` run as one pass (:func:`run_length`), read from
    the left: a layer joins one run at most, and the backward pass undoes exactly the runs of
    the forward pass."""
    runs, index = {}, 0
    while index + 1 < len(layers):
        length = run_length(layers, index)
        if length:
            runs[index] = length
        index += max(length, 1)
    return runs


def forward(layers, x, training: bool):
    """The layers' forward passes, one after the other, in one pass (a run :func:`fused_runs`
    found)."""
    for layer in layers:
        layer._cache = None  # the previous batch's arrays can be reused
    return _entry(layers)[0](*layers, x, training)


def backward(layers, dy, input_grad: bool = True):
    """The layers' backward passes, from the last to the first, in one pass; fills the
    parameters' gradients."""
    return _entry(layers)[1](*layers, dy, input_grad)
