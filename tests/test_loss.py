import numpy as np
import pytest

from minicnn.losses import SoftmaxCrossEntropy


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("magnitude", [1e4, 1e6, 1e30])
def test_finite_loss_and_gradient_for_huge_logits(dtype, magnitude):
    logits = np.array([[magnitude, -magnitude, 0.0], [0.0, magnitude, magnitude]], dtype=dtype)
    loss_fn = SoftmaxCrossEntropy()
    loss = loss_fn.forward(logits, np.array([1, 0]))
    grad = loss_fn.backward()
    assert np.isfinite(loss) and np.isfinite(grad).all()
    # sample 0: log p(class 1) = -2 * magnitude; sample 1: -(magnitude + log 2)
    assert loss == pytest.approx((2 * magnitude + magnitude + np.log(2)) / 2, rel=1e-6)
    np.testing.assert_allclose(grad, np.array([[1, -1, 0], [-1, 0.5, 0.5]]) / 2, atol=1e-7)
    assert grad.dtype == dtype


def test_gradient_is_softmax_minus_onehot_over_n():
    logits = np.array([[1.0, 2.0, 3.0]])
    loss_fn = SoftmaxCrossEntropy()
    loss = loss_fn.forward(logits, np.array([2]))
    p = np.exp(logits) / np.exp(logits).sum()
    assert loss == pytest.approx(-np.log(p[0, 2]))
    np.testing.assert_allclose(loss_fn.backward(), p - [[0, 0, 1]])


def test_uniform_logits_give_log_num_classes():
    assert SoftmaxCrossEntropy().forward(np.zeros((5, 10)), np.arange(5)) == pytest.approx(np.log(10))
