"""Input builders shared by the tests."""

import numpy as np


def away_from_kinks(x: np.ndarray, margin: float = 1e-2) -> np.ndarray:
    """Move values within ``margin`` of 0 away from it (ReLU's kink), keeping their sign."""
    sign = np.where(x >= 0, 1.0, -1.0)
    return np.where(np.abs(x) < margin, sign * (margin + np.abs(x)), x)


def distinct_values(rng: np.random.Generator, shape, spacing: float = 1e-2) -> np.ndarray:
    """Values that are pairwise at least ``spacing`` apart, in random order: no max-pool ties."""
    size = int(np.prod(shape))
    return (rng.permutation(size) * spacing - size * spacing / 2).reshape(shape).astype(np.float64)
