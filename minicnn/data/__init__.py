"""Datasets: float32 NCHW images in [0, 1] and int64 labels."""

from .idx import DatasetFileError, parse_idx, read_idx
from .mnist import load_mnist

__all__ = ["DatasetFileError", "load_mnist", "parse_idx", "read_idx"]
