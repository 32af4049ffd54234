"""Layer semantics that a gradient check cannot see: running statistics, inference mode."""

import numpy as np
import pytest

from minicnn.layers import BatchNorm2D


@pytest.mark.parametrize("momentum", [0.1, 0.5, 1.0])
def test_batchnorm_running_statistics_use_the_unbiased_batch_variance(cpu_backend, momentum):
    """PyTorch's rule: running = (1 - momentum) * running + momentum * batch statistic, with the
    batch variance computed with M - 1 in the denominator (M = N*H*W values per channel), while
    the normalization itself divides by M."""
    rng = np.random.default_rng(0)
    layer = BatchNorm2D(3, momentum=momentum, dtype=np.float64)
    start_mean, start_var = rng.standard_normal(3), rng.uniform(0.5, 2.0, 3)
    layer.running_mean.data, layer.running_var.data = start_mean.copy(), start_var.copy()
    x = rng.standard_normal((4, 3, 2, 3)) * [[[[1.0]], [[3.0]], [[0.5]]]] + 2.0
    y = layer.forward(x, training=True)
    m = x.shape[0] * x.shape[2] * x.shape[3]
    batch_mean = x.mean(axis=(0, 2, 3))
    unbiased = ((x - batch_mean[None, :, None, None]) ** 2).sum(axis=(0, 2, 3)) / (m - 1)
    np.testing.assert_allclose(layer.running_mean.data,
                               (1 - momentum) * start_mean + momentum * batch_mean, rtol=1e-12)
    np.testing.assert_allclose(layer.running_var.data,
                               (1 - momentum) * start_var + momentum * unbiased, rtol=1e-12)
    biased = unbiased * (m - 1) / m  # what training normalizes with
    expected = (x - batch_mean[None, :, None, None]) / np.sqrt(biased[None, :, None, None] + 1e-5)
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-12)
    # inference uses the running statistics, and does not move them
    y = layer.forward(x, training=False)
    running_var = layer.running_var.data.copy()
    expected = (x - layer.running_mean.data[None, :, None, None]) / np.sqrt(
        running_var[None, :, None, None] + 1e-5)
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(layer.running_var.data, running_var)


def test_batchnorm_formula_shows_the_training_backward_too():
    """The studio's panel: the inference pass it computes, and the training pass a step runs
    (x also reaches the loss through the batch's mean and variance)."""
    panel = BatchNorm2D(4).formula((2, 4, 3, 3), (2, 4, 3, 3))
    assert any(line.startswith("xhat = (x - mu) / sqrt(var + eps)   xhat (2, 4, 3, 3)")
               for line in panel["forward"])
    assert any(line.startswith("dx = gamma / (M * sigma) * (M*dy - sum(dy) - xhat * "
                               "sum(dy * xhat))") and "M = 18" in line for line in panel["backward"])
    assert any(line.startswith("dx = dy * gamma / sqrt(running_var + eps)")
               for line in panel["backward"])


def test_the_panels_give_the_shapes_of_the_arrays_a_derivation_names():
    """Arrays shaped like x or y that only the docstring names (Dropout's mask, a Residual's
    two operands and the gradients of its two paths) are shown with their shapes."""
    from minicnn.layers import Dropout
    from minicnn.models import basic_block

    dropout = Dropout(0.5).formula((2, 6), (2, 6))
    assert any("mask (2, 6)" in line for line in dropout["forward"])
    block = basic_block(3, 4, stride=2)
    panel = block.formula((2, 3, 8, 8), (2, 4, 4, 4))
    assert any("a (2, 4, 4, 4)" in line for line in panel["forward"])
    assert any("dx_short (2, 3, 8, 8)" in line for line in panel["backward"])
