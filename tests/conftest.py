import importlib.abc
import os
import sys

import pytest
from hypothesis import HealthCheck, Phase, settings

import minicnn


class _HiddenModule(importlib.abc.MetaPathFinder):
    """Makes ``import torch`` fail as if PyTorch were not installed."""

    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden: MINICNN_HIDE_TORCH)",
                                      name=name)
        return None


if os.environ.get("MINICNN_HIDE_TORCH"):
    # tests/mutation_check.py: the cross-checks against PyTorch skip, so every planted bug
    # must be caught by the tests that need no PyTorch
    sys.meta_path.insert(0, _HiddenModule())

# Property tests are derandomized: every run (CI or not) draws the same examples, so a failure
# reproduces. "explore" draws fresh random examples, 500 per test, to look for new failures;
# "margins" draws 50 per test for tests/gradcheck_margins.py; "mutants" draws as the default
# does but stops at the first failing example (tests/mutation_check.py: that a planted bug is
# caught is all it asks, and shrinking the example runs the failing test over and over).
_COMMON = dict(deadline=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("default", derandomize=True, **_COMMON)
settings.register_profile("mutants", derandomize=True, phases=[Phase.explicit, Phase.generate],
                          **_COMMON)
settings.register_profile("explore", max_examples=500, **_COMMON)
settings.register_profile("margins", max_examples=50, derandomize=True, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(autouse=True)
def _numpy_backend_by_default():
    """Every test starts on the numpy reference backend and leaves the backend as it found it."""
    previous = minicnn.get_backend()
    minicnn.set_backend("numpy")
    yield
    minicnn.set_backend(previous)


@pytest.fixture(autouse=True)
def _conv_algorithm_of_the_run():
    """Every test starts with the convolution algorithm $MINICNN_CONV_ALGO forces ("auto" when
    unset: the kernels choose), so that the whole suite can be run with each algorithm forced,
    and leaves the setting as it found it. A test about the choice itself sets it."""
    from minicnn import kernels

    previous = kernels.get_conv_algorithm()
    kernels.set_conv_algorithm(os.environ.get("MINICNN_CONV_ALGO") or "auto")
    yield
    kernels.set_conv_algorithm(previous)


CPU_BACKENDS = [name for name in ("numpy", "numba") if minicnn.backend.backend_available(name)]


@pytest.fixture(params=CPU_BACKENDS)
def cpu_backend(request):
    """Run a test once per available CPU backend."""
    minicnn.set_backend(request.param)
    return request.param


# --- gradient-check margins (tests/gradcheck_margins.py) ------------------------------------
@pytest.fixture(autouse=True)
def _name_the_running_test(request):
    """Lets helpers.assert_gradients_match file each check's error under its test."""
    import helpers

    helpers.current_test[0] = request.node.nodeid
    yield


def pytest_sessionfinish(session):
    path = os.environ.get("MINICNN_GRADCHECK_MARGINS")
    if path:
        import json

        import helpers

        with open(path, "w") as handle:
            json.dump(helpers.worst_errors, handle, indent=1)
