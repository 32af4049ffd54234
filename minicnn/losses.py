"""Softmax cross-entropy, fused with the softmax for stability and a simple gradient."""

from __future__ import annotations

import math

from . import backend
from .validation import check_float_array, check_labels, is_number


class SoftmaxCrossEntropy:
    """Mean cross-entropy between ``softmax(logits)`` and integer labels.

    Forward, for logits z of shape (N, C) and labels y of shape (N,):
    ``log p = z - logsumexp(z)`` computed as ``(z - max z) - log(sum(exp(z - max z)))``, so no
    exponential ever overflows (logits of 1e4 are fine), and ``L = -mean_n log p[n, y_n]``.
    With ``label_smoothing = s`` the target is ``(1 - s) * onehot(y) + s / C``, as in PyTorch.

    Backward: with p = softmax(z), the softmax's Jacobian is ``dp_i/dz_j = p_i (delta_ij - p_j)``
    and ``dL/dp_i = -target_i / p_i``; the chain rule sums them to
    ``dL/dz_j = -target_j + p_j * sum_i target_i = p_j - target_j`` (a target sums to 1, with
    label smoothing too). So dL/dz for one sample is ``softmax(z) - target``: the fused form never
    forms the (C x C) Jacobian. Averaging over the batch divides by N, so ``backward()`` returns
    ``(p - target) / N`` of shape (N, C). (Derived step by step, with numbers, in
    docs/notebooks/derivations.ipynb.)
    """

    def __init__(self, label_smoothing: float = 0.0):
        if not is_number(label_smoothing) or not 0 <= label_smoothing < 1:
            raise ValueError(
                f"SoftmaxCrossEntropy: label_smoothing must be in [0, 1), got {label_smoothing!r}"
            )
        self.label_smoothing = float(label_smoothing)
        self._cache = None

    def forward(self, logits, labels) -> float:
        check_float_array(logits, "SoftmaxCrossEntropy")
        if logits.ndim != 2:
            raise ValueError(
                "SoftmaxCrossEntropy: expected logits of shape (N, num_classes), got shape "
                f"{tuple(logits.shape)}"
            )
        labels = check_labels(labels, *logits.shape, "SoftmaxCrossEntropy")
        return float(self.forward_array(logits, labels))

    __call__ = forward

    def forward_array(self, logits, labels):
        """The loss as a 0-d array where ``logits`` are (a GPU's memory): no value is read back
        to the host, and nothing is checked (the training loop checked the labels once).
        :meth:`forward` is ``float(forward_array(...))`` after the checks."""
        n = logits.shape[0]
        xp = backend.array_module(logits)
        labels = xp.asarray(labels)
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
        rows = xp.arange(n)
        nll = -log_probs[rows, labels]
        s = self.label_smoothing
        if s:
            nll = (1 - s) * nll - s * log_probs.mean(axis=1)
        self._cache = (xp.exp(log_probs), labels)
        return nll.mean()

    def backward(self, scale: float = 1.0):
        """dL/dlogits, shape (N, C); ``scale`` multiplies it (e.g. a loss weight)."""
        if self._cache is None:
            raise RuntimeError("SoftmaxCrossEntropy: backward() called before forward()")
        if not math.isfinite(scale):
            raise ValueError(f"SoftmaxCrossEntropy: scale must be finite, got {scale}")
        probs, labels = self._cache
        n, c = probs.shape
        xp = backend.array_module(probs)
        s = self.label_smoothing
        grad = probs - probs.dtype.type(s / c) if s else probs.copy()
        grad[xp.arange(n), labels] -= probs.dtype.type(1 - s)
        grad *= probs.dtype.type(scale / n)
        return grad
