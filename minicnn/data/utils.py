"""Small helpers shared by the dataset loaders."""

from __future__ import annotations

import numpy as np


def to_float01(images: np.ndarray) -> np.ndarray:
    """uint8 images as float32 in [0, 1] (one allocation: convert, then divide in place)."""
    out = images.astype(np.float32)
    out /= np.float32(255.0)
    return out


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(keep, held_out)`` with about ``fraction`` of every class held out.

    Each class contributes ``round(fraction * count)`` samples to the held-out part, chosen by a
    generator seeded with ``seed``; both index arrays are sorted, so the original order (and with
    it any grouping in the source) is kept within each part.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"the held-out fraction must be in [0, 1), got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    held = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        n_held = int(round(fraction * len(members)))
        if n_held:
            held.append(rng.choice(members, size=n_held, replace=False))
    held_idx = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    mask = np.ones(len(labels), dtype=bool)
    mask[held_idx] = False
    return np.flatnonzero(mask), held_idx
