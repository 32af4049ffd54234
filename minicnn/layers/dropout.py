"""Inverted dropout."""

from __future__ import annotations

import numpy as np

from .. import backend
from ..cuda_graphs import ReplayedSeed
from ..validation import is_number
from .base import Layer
from .registry import register


@register
class Dropout(Layer):
    """Zero each element with probability ``p`` during training, scale survivors by 1/(1-p).

    Forward in training: ``y = x * mask`` with ``mask = (u >= p) / (1 - p)``, u uniform in
    [0, 1), same shape as x. Why 1/(1-p): each entry of the mask is 1/(1-p) with probability
    1-p and 0 otherwise, so ``E[mask] = (1-p) * 1/(1-p) = 1`` and ``E[y] = x``. Scaling at
    training time ("inverted" dropout) thus keeps the expected activation unchanged, and
    inference, where no unit is dropped, is the identity.
    A new mask is drawn at every step, so each step trains another "thinned" network and no unit
    can rely on a particular other one being there (Srivastava et al., 2014).

    Backward: y is linear in x with the fixed mask, so ``dx = dy * mask`` (identity at inference).
    """

    identity_at_inference = True
    per_channel = True
    describe_as = "Dropout(p={p:g})"
    explain = ("Zeroes each unit with probability {p:g} in training only, scaling the others up; "
               "at inference (as here) it passes x through.")

    def __init__(self, p: float = 0.5, rng=None):
        super().__init__()
        if not is_number(p) or not 0 <= p < 1:
            raise ValueError(f"Dropout: p must be a probability in [0, 1), got {p!r}")
        self.p = float(p)
        self.rng = rng if rng is not None else np.random.default_rng()
        self._seed = ReplayedSeed()  # on a GPU, where the mask is drawn from

    def _forward(self, x, training):
        if not training or self.p == 0:
            return self._remember(x, cache=None)
        xp = backend.array_module(x)
        if xp is np:
            uniform = self.rng.random(x.shape, dtype=np.float32)
            mask = (uniform >= self.p).astype(x.dtype) * x.dtype.type(1 / (1 - self.p))
        else:  # the same formula on the GPU, from a seed our generator draws for each step
            seed = self._seed.for_step(self.rng, xp)  # drawn now, or before a replay
            mask = self.kernels.dropout_mask(seed, self.p, x.shape, x.dtype)
        return self._remember(x * mask, cache=mask)

    def _backward(self, dy, input_grad):
        return dy if self._cache is None else dy * self._cache

    # -- what the rest of minicnn asks of it: shapes, config, summary, studio, PyTorch, ONNX ---

    def draw_for_replay(self):
        self._seed.draw(self.rng)

    shaped_like_x = ("mask", "u")
    torch_name, torch_arguments = "Dropout", ("p",)
