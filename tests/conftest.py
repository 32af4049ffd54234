import os

import pytest
from hypothesis import HealthCheck, settings

import minicnn

# Property tests are derandomized in CI so a run is reproducible; locally they explore.
settings.register_profile(
    "default", deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=bool(os.environ.get("CI")),
)
settings.register_profile(
    "explore", deadline=None, max_examples=500,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(autouse=True)
def _numpy_backend_by_default():
    """Every test starts on the numpy reference backend and leaves the backend as it found it."""
    previous = minicnn.get_backend()
    minicnn.set_backend("numpy")
    yield
    minicnn.set_backend(previous)


CPU_BACKENDS = [name for name in ("numpy", "numba") if minicnn.backend.backend_available(name)]


@pytest.fixture(params=CPU_BACKENDS)
def cpu_backend(request):
    """Run a test once per available CPU backend."""
    minicnn.set_backend(request.param)
    return request.param
