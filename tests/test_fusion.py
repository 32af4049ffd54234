"""BatchNorm2D + ReLU as one pass (minicnn.layers.fused): the fused kernels against the two
layers' own kernels, and Sequential's passes with fusion on and off."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minicnn as mc
from minicnn import backend
from minicnn.layers import BatchNorm2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU, Residual

CPU_BACKENDS = ["numpy"] + (["numba"] if backend.backend_available("numba") else [])
# the fused sums may add in another order than the unfused ones (numba reassociates sums)
TOLERANCE = {np.float32: 2e-6, np.float64: 1e-13}


@pytest.fixture
def fusion():
    previous = mc.set_fusion(True)
    yield
    mc.set_fusion(previous)


def assert_close(actual, expected, dtype, what):
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=TOLERANCE[dtype] * scale,
                               err_msg=what)


@pytest.mark.parametrize("name", CPU_BACKENDS)
@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 4), c=st.integers(1, 5), h=st.integers(1, 7), w=st.integers(1, 7),
       dtype=st.sampled_from([np.float32, np.float64]), training=st.booleans(),
       seed=st.integers(0, 2**16))
def test_the_fused_kernels_compute_what_the_two_layers_kernels_do(name, n, c, h, w, dtype,
                                                                 training, seed):
    kernels, reference = backend.kernels(name), backend.kernels("numpy")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    dy = rng.standard_normal((n, c, h, w)).astype(dtype)
    mean = rng.standard_normal(c).astype(dtype)
    inv_std = rng.uniform(0.5, 2, c).astype(dtype)
    gamma, beta = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    x[:, 0, 0], beta[0] = mean[0], 0  # BatchNorm's output exactly 0 there: ReLU passes nothing
    y_bn = reference.batchnorm_forward(x, mean, inv_std, gamma, beta)
    y = kernels.batchnorm_relu_forward(x, mean, inv_std, gamma, beta)
    assert y.dtype == dtype and y.shape == x.shape
    assert_close(y, reference.relu_forward(y_bn), dtype, "forward")
    assert ((y > 0) == (y_bn > 0)).all()  # the mask itself, not only values near 0
    dx, dgamma, dbeta = kernels.batchnorm_relu_backward(dy, x, mean, inv_std, gamma, beta,
                                                        batch_statistics=training)
    expected = reference.batchnorm_backward(reference.relu_backward(dy, y_bn), x, mean, inv_std,
                                            gamma, batch_statistics=training)
    for got, want, what in zip((dx, dgamma, dbeta), expected, ("dx", "dgamma", "dbeta")):
        assert got.dtype == dtype, what
        assert_close(got, want, dtype, what)


def network(seed=0):
    return mc.Sequential([
        Conv2D(2, 4, 3, padding=1, bias=False), BatchNorm2D(4), ReLU(), MaxPool2D(2),
        Residual(mc.Sequential([Conv2D(4, 4, 3, padding=1, bias=False), BatchNorm2D(4), ReLU()])),
        BatchNorm2D(4), ReLU(), Flatten(), Dense(4 * 3 * 3, 3)], seed=seed)


@pytest.mark.parametrize("name", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_network_trains_the_same_with_fusion_on_and_off(name, dtype, fusion, monkeypatch):
    kernels = backend.kernels(name)
    calls = []
    for kernel in ("batchnorm_relu_forward", "batchnorm_relu_backward"):
        original = getattr(kernels, kernel)
        monkeypatch.setattr(kernels, kernel,
                            lambda *a, _f=original, _k=kernel, **kw: calls.append(_k) or _f(*a, **kw))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 2, 6, 6)).astype(dtype)
    results = {}
    for on in (True, False):
        mc.set_fusion(on)
        calls.clear()
        net = network().to(name).astype(dtype)
        for training in (True, False):
            y = net.forward(x, training=training)
            dx = net.backward(np.ones_like(y) / y.size)
            results[on, training] = (y, dx, [p.grad.copy() for p in net.parameters()],
                                     [b.data.copy() for b in net.buffers()])
        # three pairs, forward and backward, in training and inference
        assert calls.count("batchnorm_relu_forward") == (6 if on else 0)
        assert calls.count("batchnorm_relu_backward") == (6 if on else 0)
    for training in (True, False):
        fused, plain = results[True, training], results[False, training]
        for got, want, what in zip(fused[:2], plain[:2], ("y", "dx")):
            assert_close(got, want, dtype, f"{what}, training={training}")
        for got, want in zip(fused[2] + fused[3], plain[2] + plain[3]):
            assert_close(got, want, dtype, f"a gradient or statistic, training={training}")


def test_the_observed_passes_and_a_learners_relu_run_each_layers_own_code(fusion, monkeypatch):
    kernels = backend.kernels("numpy")
    monkeypatch.setattr(kernels, "batchnorm_relu_forward",
                        lambda *a, **kw: pytest.fail("fused in an observed pass"))
    monkeypatch.setattr(kernels, "batchnorm_relu_backward",
                        lambda *a, **kw: pytest.fail("fused in an observed pass"))
    # (a Residual's body is one step of the outer pass: inside it, pairs may fuse)
    net = mc.Sequential([Conv2D(2, 4, 3, padding=1), BatchNorm2D(4), ReLU(), Flatten(),
                         Dense(144, 3)], seed=0).to("numpy")
    x = np.random.default_rng(2).standard_normal((3, 2, 6, 6)).astype(np.float32)
    outputs = [y for _, _, y in net.forward_steps(x, training=True)]
    assert len(outputs) == len(net.layers)  # BatchNorm's own output is shown, before ReLU's
    assert (outputs[1] < 0).any() and not (outputs[2] < 0).any()
    steps = list(net.backward_steps(np.ones_like(outputs[-1])))
    assert [index for index, *_ in steps] == list(reversed(range(len(net.layers))))

    class MyReLU(ReLU):  # as the exercises make a learner's layer: a subclass runs its own code
        pass

    mine = mc.Sequential([BatchNorm2D(2), MyReLU()], seed=0).to("numpy")
    mine.forward(x, training=True)
    mine.backward(np.ones_like(x))


def test_the_fusion_setting(monkeypatch):
    from minicnn import kernels

    monkeypatch.setattr(kernels, "_fusion", kernels.get_fusion())  # restored after the test
    mc.set_fusion(False)
    assert mc.get_fusion() is False and mc.set_fusion(True) is False and mc.get_fusion()
    with pytest.raises(TypeError, match="expected True or False, got 'off'"):
        mc.set_fusion("off")
    monkeypatch.setattr(kernels, "_fusion", None)
    monkeypatch.setenv("MINICNN_FUSION", "0")
    assert kernels.get_fusion() is False
    monkeypatch.setattr(kernels, "_fusion", None)
    monkeypatch.setenv("MINICNN_FUSION", "maybe")
    with pytest.raises(ValueError, match="MINICNN_FUSION must be 0 or 1, got 'maybe'"):
        kernels.get_fusion()


def test_a_layer_running_other_passes_keeps_them_and_is_not_fused():
    """Layer.use_passes (how a learner's answers run in minicnn's layers): the pair BatchNorm2D
    + ReLU is not fused when either runs passes of its own, so those passes run."""
    model = mc.Sequential([Conv2D(1, 4, 3, padding=1), BatchNorm2D(4), ReLU()], seed=0)
    calls = []

    def backward(layer, dy, input_grad):
        calls.append(input_grad)
        return dy * (layer._cache > 0)  # ReLU's own forward keeps y

    relu = model.layers[2].use_passes(backward=backward, words="[mine]")
    assert relu.passes_words == "[mine]" and type(relu) is ReLU
    x = np.random.default_rng(0).standard_normal((2, 1, 5, 5)).astype(np.float32)
    y = model.forward(x, training=True)
    model.backward(np.ones_like(y))
    assert calls == [True]
    relu.use_passes()  # its own again
    model.forward(x, training=True)
    model.backward(np.ones_like(y))
    assert calls == [True] and relu.passes_words == ""


@pytest.mark.parametrize("name", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_add_relu_is_relu_of_the_sum_bit_for_bit(name, dtype):
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((2, 3, 5, 4)).astype(dtype), rng.standard_normal((2, 3, 5, 4))
    b = b.astype(dtype)
    b[0, 0] = -a[0, 0]  # sums exactly 0: ReLU passes nothing there
    y = backend.kernels(name).add_relu(a, b)
    reference = backend.kernels("numpy")
    assert y.dtype == dtype and np.array_equal(y, reference.relu_forward(a + b))


@pytest.mark.parametrize("name", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_residual_network_trains_the_same_with_fusion_on_and_off(name, dtype, fusion,
                                                                    monkeypatch):
    """Residual + ReLU (cifar_resnet's blocks) as one pass: the same outputs, gradients and
    statistics as each layer's own passes, with and without a projection shortcut."""
    kernels = backend.kernels(name)
    calls = []
    original = kernels.add_relu
    monkeypatch.setattr(kernels, "add_relu", lambda *a: calls.append(1) or original(*a))
    x = np.random.default_rng(4).standard_normal((3, 2, 6, 6)).astype(dtype)
    results = {}
    for on in (True, False):
        mc.set_fusion(on)
        calls.clear()
        net = mc.Sequential([Residual.basic_block(2, 4, stride=2), ReLU(),
                             Residual.basic_block(4, 4), ReLU(), Flatten(), Dense(36, 3)],
                            seed=0).to(name).astype(dtype)
        y = net.forward(x, training=True)
        dx = net.backward(np.ones_like(y) / y.size)
        results[on] = (y, dx, [p.grad.copy() for p in net.parameters()])
        assert len(calls) == (2 if on else 0)
    for got, want in zip([*results[True][:2], *results[True][2]],
                         [*results[False][:2], *results[False][2]]):
        assert_close(got, want, dtype, "an output or gradient")
