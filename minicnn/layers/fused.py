"""Neighbouring layers run as one pass: an execution strategy of :class:`Sequential`, not a layer.

A BatchNorm2D followed by a ReLU reads and writes every activation twice in each direction:
BatchNorm writes its output y, ReLU reads it and writes max(y, 0); backward, ReLU writes
dL/dy = dy * (y > 0) and BatchNorm reads it, twice. The backend's ``batchnorm_relu_forward`` /
``batchnorm_relu_backward`` do the same arithmetic without those arrays (the mask y > 0 is
computed again from BatchNorm's input, which its backward reads anyway).

Both layers end up exactly as if each had run its own ``forward``: the same caches, output shapes
and gradients, so either pass can follow the other. Only the unobserved passes
(``Sequential.forward`` / ``backward``) fuse; ``forward_steps`` / ``backward_steps``, which show
every layer's output, run each layer's own code, and so does everything once
``minicnn.set_fusion(False)`` is called (or ``MINICNN_FUSION=0`` is set).
"""

from __future__ import annotations

from ..kernels import get_fusion
from .activations import ReLU
from .normalization import BatchNorm2D


def fuses(layers, index: int) -> bool:
    """Whether ``layers[index]`` and ``layers[index + 1]`` run as one pass: exactly a
    BatchNorm2D then exactly a ReLU running their own passes (a subclass, or a layer running a
    learner's passes, runs its own code), on one backend that has the fused kernels, with
    fusion on."""
    if index + 1 >= len(layers) or not get_fusion():
        return False
    first, second = layers[index], layers[index + 1]
    return (type(first) is BatchNorm2D and type(second) is ReLU
            and first._passes is None and second._passes is None  # their own code, not fused
            and first.backend == second.backend
            and hasattr(first.kernels, "batchnorm_relu_forward"))


def forward(norm: BatchNorm2D, relu: ReLU, x, training: bool):
    """relu.forward(norm.forward(x)) in one pass."""
    norm._cache = relu._cache = None  # the previous batch's arrays can be reused
    mean, inv_std = norm._statistics(x, training)
    y = norm.kernels.batchnorm_relu_forward(x, mean, inv_std, norm.gamma.data, norm.beta.data)
    norm._remember(y, cache=(x, mean, inv_std, training))  # what BatchNorm2D._forward keeps
    return relu._remember(y, cache=y)                      # and ReLU._forward


def backward(norm: BatchNorm2D, relu: ReLU, dy):
    """norm.backward(relu.backward(dy)) in one pass; fills gamma's and beta's gradients."""
    relu._check_output_gradient(dy)
    x, mean, inv_std, training = norm._cache
    dx, norm.gamma.grad, norm.beta.grad = norm.kernels.batchnorm_relu_backward(
        dy, x, mean, inv_std, norm.gamma.data, norm.beta.data, batch_statistics=training)
    return dx
