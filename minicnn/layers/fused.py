"""Neighbouring layers run as one pass: an execution strategy of :class:`Sequential`, not a layer.

A BatchNorm2D followed by a ReLU reads and writes every activation twice in each direction:
BatchNorm writes its output y, ReLU reads it and writes max(y, 0); backward, ReLU writes
dL/dy = dy * (y > 0) and BatchNorm reads it, twice. The backend's ``batchnorm_relu_forward`` /
``batchnorm_relu_backward`` do the same arithmetic without those arrays (the mask y > 0 is
computed again from BatchNorm's input, which its backward reads anyway).

A Residual block followed by a ReLU writes the sum a + b, which ReLU reads to write
max(a + b, 0): ``add_relu`` writes only the latter. Backward, nothing is saved: ReLU's mask
is one pass, and the block's own backward follows.

The layers end up exactly as if each had run its own ``forward``: the same caches, output
shapes and gradients, so either pass can follow the other. Only the unobserved passes
(``Sequential.forward`` / ``backward``) fuse; ``forward_steps`` / ``backward_steps``, which show
every layer's output, run each layer's own code, and so does everything once
``minicnn.set_fusion(False)`` is called (or ``MINICNN_FUSION=0`` is set).
"""

from __future__ import annotations

from ..kernels import get_fusion
from .activations import ReLU
from .normalization import BatchNorm2D


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
    """relu.forward(block.forward(x)), the sum and the ReLU in one pass."""
    a = block.body._run_forward(x, training)
    b = x if block.shortcut is None else block.shortcut._run_forward(x, training)
    y = block.kernels.add_relu(a, b)
    block._remember(y)                 # Residual keeps no cache: its output's shape
    return relu._remember(y, cache=y)  # what ReLU._forward keeps


def residual_relu_backward(block, relu: ReLU, dy, input_grad: bool):
    return block.backward(relu.backward(dy), input_grad=input_grad)


#: (first layer's type, second's) -> (forward, backward, the kernel the backend needs); a
#: container layer adds its own pair where it is defined (Residual: layers/residual.py), as
#: this module sits below the containers
PAIRS = {(BatchNorm2D, ReLU): (_batchnorm_relu_forward, _batchnorm_relu_backward,
                               "batchnorm_relu_forward")}


def fuses(layers, index: int) -> bool:
    """Whether ``layers[index]`` and ``layers[index + 1]`` run as one pass: exactly a pair of
    :data:`PAIRS` running their own passes (a subclass, or a layer running a learner's passes,
    runs its own code), on one backend that has the pair's kernel, with fusion on."""
    if index + 1 >= len(layers) or not get_fusion():
        return False
    first, second = layers[index], layers[index + 1]
    pair = PAIRS.get((type(first), type(second)))
    return (pair is not None
            and first._passes is None and second._passes is None  # their own code, not fused
            and first.backend == second.backend and hasattr(first.kernels, pair[2]))


def forward(first, second, x, training: bool):
    """second.forward(first.forward(x)) in one pass (a pair :func:`fuses` accepts)."""
    first._cache = second._cache = None  # the previous batch's arrays can be reused
    return PAIRS[type(first), type(second)][0](first, second, x, training)


def backward(first, second, dy, input_grad: bool = True):
    """first.backward(second.backward(dy)) in one pass; fills the parameters' gradients."""
    return PAIRS[type(first), type(second)][1](first, second, dy, input_grad)
