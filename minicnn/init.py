"""Weight initializers: He (Kaiming) for ReLU networks, Glorot (Xavier) for tanh/sigmoid ones.

Both keep the variance of activations roughly constant from layer to layer, so a deep network
starts neither exploding nor vanishing. ``fan_in`` is the number of inputs feeding one output
(in_channels * kh * kw for a conv, in_features for a dense layer).
"""

from __future__ import annotations

import numpy as np

INITIALIZERS = ("he", "glorot")


def he_normal(rng: np.random.Generator, shape, fan_in: int, dtype=np.float32) -> np.ndarray:
    """N(0, 2 / fan_in): ReLU halves the variance, the factor 2 restores it."""
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dtype)


def glorot_uniform(rng: np.random.Generator, shape, fan_in: int, fan_out: int, dtype=np.float32):
    """U(-a, a) with a = sqrt(6 / (fan_in + fan_out)): variance 2 / (fan_in + fan_out)."""
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype(dtype)


def initialize(kind: str, rng, shape, fan_in: int, fan_out: int, dtype=np.float32):
    if kind == "he":
        return he_normal(rng, shape, fan_in, dtype)
    if kind == "glorot":
        return glorot_uniform(rng, shape, fan_in, fan_out, dtype)
    raise ValueError(f"unknown initializer {kind!r}; expected one of {INITIALIZERS}")
