"""minicnn: a convolutional neural network library written from scratch in NumPy.

Every layer's forward and backward pass is hand-written and readable; the hot kernels run on
NumPy (the reference), numba (JIT-compiled CPU) or CuPy (GPU).
"""

from . import gradcheck, init, interpret, layers, losses, metrics, optim
from .backend import BACKENDS, available_backends, get_backend, set_backend
from .io import ModelFileError
from .layers import Parameter, Sequential
from .layers.sequential import load_model
from .training import History, TrainingDivergedError, evaluate, fit

__version__ = "0.1.0"

__all__ = [
    "BACKENDS", "History", "ModelFileError", "Parameter", "Sequential", "TrainingDivergedError",
    "available_backends", "evaluate", "fit", "get_backend", "gradcheck", "init", "interpret",
    "layers", "load_model", "losses", "metrics", "optim", "set_backend",
]


def __getattr__(name):
    # ``minicnn.tune`` (the hyperparameter search) is imported on first use: it needs the
    # optional Optuna, and ``import minicnn`` must not pay for (or require) it.
    if name == "tune":
        from .tune import tune

        globals()["tune"] = tune  # replaces the submodule attribute the import just set
        return tune
    raise AttributeError(f"module 'minicnn' has no attribute {name!r}")
