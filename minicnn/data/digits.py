"""scikit-learn's built-in 8x8 handwritten digits (1,797 images): no file, no download."""

from __future__ import annotations

import numpy as np

from .utils import stratified_split


def load_digits(test_fraction: float = 0.2, seed: int = 0):
    """The 8x8 digits as ``(x_train, y_train), (x_test, y_test), class_names``.

    Images are float32 of shape (N, 1, 8, 8) scaled from 0..16 to [0, 1]; labels int64 0..9;
    class names "0".."9". The split is stratified (each digit keeps its share in both parts)
    and depends only on ``seed``. Small enough to train a CNN in seconds: good for examples
    and smoke tests.
    """
    from sklearn.datasets import load_digits as _sk_load_digits  # scikit-learn imports slowly

    bunch = _sk_load_digits()
    images = (np.asarray(bunch.images, dtype=np.float32) / np.float32(16.0))[:, None, :, :]
    labels = np.asarray(bunch.target, dtype=np.int64)
    train_idx, test_idx = stratified_split(labels, test_fraction, seed)
    return (
        (images[train_idx], labels[train_idx]),
        (images[test_idx], labels[test_idx]),
        [str(d) for d in range(10)],
    )
