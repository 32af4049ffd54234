"""MNIST from the four official IDX files, verified by SHA-256."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .idx import DatasetFileError, read_idx

MNIST_FILES = {
    # file name (without .gz): SHA-256 of the decompressed content (the published MNIST)
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
CLASS_NAMES = [str(d) for d in range(10)]
_PROJECT_DATA = Path(__file__).resolve().parents[2] / "data"


def candidate_dirs(name: str, path=None) -> list[Path]:
    """Where the files of dataset ``name`` are looked for, in order."""
    dirs = []
    if path is not None:
        dirs.append(Path(path))
    if os.environ.get("MINICNN_DATA"):
        dirs.append(Path(os.environ["MINICNN_DATA"]) / name)
    dirs.append(Path.home() / ".cache" / "minicnn" / name)
    dirs.append(_PROJECT_DATA / name)
    dirs.append(Path("/usr/share/datasets") / name)
    return dirs


def _find(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def load_mnist(path=None):
    """MNIST as ``(x_train, y_train), (x_test, y_test), class_names``.

    Images are float32 of shape (N, 1, 28, 28) scaled to [0, 1]; labels int64 of shape (N,).
    Every file is verified against the published SHA-256 before use.
    """
    tried = []
    for folder in candidate_dirs("mnist", path):
        found = {stem: _find(folder, stem) for stem in MNIST_FILES}
        if all(found.values()):
            arrays = {stem: read_idx(found[stem], MNIST_FILES[stem]) for stem in MNIST_FILES}
            break
        tried.append(str(folder))
    else:
        raise FileNotFoundError(
            "MNIST files not found. Looked in: " + "; ".join(tried) + ". Put the four files "
            f"({', '.join(s + '.gz' for s in MNIST_FILES)}) in one of these folders or pass "
            "the folder explicitly (--data-dir)."
        )

    def images(stem):
        raw = arrays[stem]
        if raw.ndim != 3 or raw.shape[1:] != (28, 28):
            raise DatasetFileError(f"{stem}: expected images of shape (N, 28, 28), got {raw.shape}")
        return (raw.astype(np.float32) / 255.0)[:, None, :, :]

    x_train, x_test = images("train-images-idx3-ubyte"), images("t10k-images-idx3-ubyte")
    y_train = arrays["train-labels-idx1-ubyte"].astype(np.int64)
    y_test = arrays["t10k-labels-idx1-ubyte"].astype(np.int64)
    return (x_train, y_train), (x_test, y_test), list(CLASS_NAMES)
