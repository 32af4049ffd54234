"""Input builders and the gradient-check assertion shared by the tests."""

from __future__ import annotations

import importlib
import os

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

#: A correct backward pass lands around 1e-9 relative error (float64, the library's five-point
#: stencil); a wrong one is off by order 1. Every check's worst case over 50 draws must stay at
#: least 10x under this bound: ``python tests/gradcheck_margins.py`` measures it.
GRADCHECK_BOUND = 1e-6

# Filled while MINICNN_GRADCHECK_MARGINS is set (see conftest.py): the worst error per test.
worst_errors: dict[str, float] = {}
current_test: list[str] = [""]


def assert_gradients_match(errors, bound: float = GRADCHECK_BOUND) -> None:
    """``errors``: {name: relative error} from minicnn.gradcheck (or one float)."""
    if not isinstance(errors, dict):
        errors = {"gradient": float(errors)}
    worst = max(errors, key=errors.get)
    test = current_test[0]
    worst_errors[test] = max(worst_errors.get(test, 0.0), errors[worst] / bound * GRADCHECK_BOUND)
    assert errors[worst] < bound, f"gradient of {worst!r} is wrong: {errors}"


def require(module: str):
    """Import an optional test dependency (torch, optuna). Without it the test skips, with the
    reason; in CI (``CI`` set) it fails instead, since CI installs every test dependency
    (tests/mutation_check.py hides PyTorch on purpose: then it skips)."""
    import pytest

    try:
        return importlib.import_module(module)
    except ImportError as err:
        if os.environ.get("CI") and not os.environ.get("MINICNN_HIDE_TORCH"):
            pytest.fail(f"{module} is not installed, but CI must run these tests (see .ci/run): "
                        f"{err}", pytrace=False)
        pytest.skip(f"{module} is not installed: {err}", allow_module_level=True)


def draws(divisor: int, minimum: int) -> int:
    """A slow test's share of the hypothesis profile's examples (profile // divisor, at least
    ``minimum``); under the "margins" profile every gradient check draws the full 50."""
    from hypothesis import settings

    count = settings().max_examples
    if os.environ.get("HYPOTHESIS_PROFILE") == "margins":
        return count
    return max(minimum, count // divisor)


def away_from_kinks(x: np.ndarray, margin: float = 1e-2) -> np.ndarray:
    """Move values within ``margin`` of 0 away from it (ReLU's kink), keeping their sign."""
    sign = np.where(x >= 0, 1.0, -1.0)
    return np.where(np.abs(x) < margin, sign * (margin + np.abs(x)), x)


def distinct_values(rng: np.random.Generator, shape, spacing: float = 1e-2) -> np.ndarray:
    """Values that are pairwise at least ``spacing`` apart, in random order: no max-pool ties."""
    size = int(np.prod(shape))
    return (rng.permutation(size) * spacing - size * spacing / 2).reshape(shape).astype(np.float64)


def kinks_and_ties(model, x, margin: float, training: bool = True) -> bool:
    """True when some ReLU (or LeakyReLU) input of ``model`` (run on x, float64) lies within
    ``margin`` of 0, or some max-pool window's two largest inputs lie within ``margin`` of each
    other (unless both are exactly 0: the output of ReLUs that stay off under a small step)."""
    from minicnn.layers import LeakyReLU, MaxPool2D, ReLU

    h = np.asarray(x, dtype=np.float64)
    for layer in model.layers:
        if isinstance(layer, (ReLU, LeakyReLU)) and np.abs(h).min() < margin:
            return True
        if isinstance(layer, MaxPool2D):
            (kh, kw), (sh, sw) = layer.kernel_size, layer.stride
            windows = sliding_window_view(h, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
            windows = windows.reshape(*windows.shape[:4], kh * kw)
            if kh * kw > 1:
                top2 = np.sort(windows, axis=-1)[..., -2:]
                gap = top2[..., 1] - top2[..., 0]
                if np.any((gap < margin) & (top2[..., 1] != 0)):
                    return True
        h = layer.forward(h, training=training)
    return False


def clear_input(model, rng: np.random.Generator, shape, margin: float = 2e-3,
                training: bool = True) -> np.ndarray:
    """A standard-normal input on which ``model`` has no ReLU input within ``margin`` of its kink
    and no max-pool tie within ``margin`` (drawn again until that holds): a finite-difference step
    of 1e-4 then never crosses a kink."""
    for _ in range(1000):
        x = rng.standard_normal(shape)
        if not kinks_and_ties(model, x, margin, training):
            return x
    raise AssertionError(f"no input of shape {shape} clear of kinks by {margin} in 1000 draws")
