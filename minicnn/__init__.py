"""minicnn: a convolutional neural network library written from scratch in NumPy.

Every layer's forward and backward pass is hand-written and readable; the hot kernels run on
NumPy (the reference), numba (JIT-compiled CPU) or CuPy (GPU).
"""

from . import gradcheck, init, interpret, layers, losses, metrics, optim
from .backend import BACKENDS, available_backends, get_backend, set_backend
from .io import ModelFileError
from .kernels import CONV_ALGORITHMS, get_conv_algorithm, get_fusion, set_conv_algorithm, set_fusion
from .layers import Parameter, Sequential
from .layers.build import load_model
from .training import History, TrainingDivergedError, evaluate, fit

__version__ = "0.1.0"

# The other submodules load on first use, so ``import minicnn`` stays cheap and yet
# ``minicnn.models.mnist_cnn()`` works after it alone.
_LAZY_SUBMODULES = ("atomic", "backend", "benchmark", "callbacks", "capture", "checkpoints", "cli",
                    "data", "diagnostics", "exercises", "interop", "io", "kernels", "models",
                    "naive", "plots", "recipes", "report", "studio", "training", "tuning",
                    "validation")


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    if name == "tune":  # minicnn.tuning.tune, loaded (with the recipes and data) on first use
        from .tuning import tune

        return tune
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY_SUBMODULES))

__all__ = [
    "BACKENDS", "CONV_ALGORITHMS", "History", "ModelFileError", "Parameter", "Sequential",
    "TrainingDivergedError", "available_backends", "evaluate", "fit", "get_backend",
    "get_conv_algorithm", "get_fusion", "gradcheck", "init", "interpret", "layers", "load_model",
    "losses", "metrics", "optim", "set_backend", "set_conv_algorithm", "set_fusion", "tune",
]


