"""Neighbouring layers as one pass (minicnn.layers.fused): the fused kernels against the two
layers' own kernels, Sequential's passes with fusion on and off, and predict's Conv2D with the
BatchNorm2D after it folded into one convolution."""

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


def counting(monkeypatch, kernels, names):
    """The names of ``kernels``' functions in ``names``, in the order they are called."""
    calls = []
    for kernel in names:
        original = getattr(kernels, kernel)
        monkeypatch.setattr(kernels, kernel,
                            lambda *a, _f=original, _k=kernel, **kw: calls.append(_k) or _f(*a, **kw))
    return calls


def network(seed=0):
    return mc.Sequential([
        Conv2D(2, 4, 3, padding=1, bias=False), BatchNorm2D(4), ReLU(), MaxPool2D(2),
        Residual(mc.Sequential([Conv2D(4, 4, 3, padding=1, bias=False), BatchNorm2D(4), ReLU()])),
        BatchNorm2D(4), ReLU(), Flatten(), Dense(4 * 3 * 3, 3)], seed=seed)


@pytest.mark.parametrize("name", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_network_trains_the_same_with_fusion_on_and_off(name, dtype, fusion, monkeypatch):
    calls = counting(monkeypatch, backend.kernels(name),
                     ("batchnorm_relu_forward", "batchnorm_relu_backward"))
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
def test_add_is_the_sum_bit_for_bit_in_an_array_of_its_own(name, dtype):
    """A Residual's sum of its paths (and of their gradients); strided operands too."""
    rng = np.random.default_rng(2)
    a = rng.standard_normal((2, 3, 5, 4)).astype(dtype)
    b = rng.standard_normal((2, 3, 4, 5)).astype(dtype).transpose(0, 1, 3, 2)
    y = backend.kernels(name).add(a, b)
    assert y.dtype == dtype and np.array_equal(y, a + b)
    assert not np.shares_memory(y, a) and not np.shares_memory(y, b)


def test_numba_add_names_the_shapes_that_do_not_match():
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(3,\); they must match"):
        backend.kernels("numba").add(np.zeros((2, 3)), np.zeros(3))
    with pytest.raises(ValueError, match=r"residual of shape \(1, 2, 3, 3\).*shape \(1, 2, 3, 4\)"):
        backend.kernels("numba").cnhw_to_nchw(np.zeros((2, 12)), None, 1, 3, 4,
                                              residual=np.zeros((1, 2, 3, 3)))


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
        net = mc.Sequential([mc.models.basic_block(2, 4, stride=2), ReLU(),
                             mc.models.basic_block(4, 4), ReLU(), Flatten(), Dense(36, 3)],
                            seed=0).to(name).astype(dtype)
        y = net.forward(x, training=True)
        dx = net.backward(np.ones_like(y) / y.size)
        results[on] = (y, dx, [p.grad.copy() for p in net.parameters()])
        assert len(calls) == (2 if on else 0)
    for got, want in zip([*results[True][:2], *results[True][2]],
                         [*results[False][:2], *results[False][2]]):
        assert_close(got, want, dtype, "an output or gradient")


@pytest.mark.parametrize("name", CPU_BACKENDS)
@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 4), h=st.integers(2, 9), w=st.integers(2, 9),
       kernel=st.sampled_from([(2, 2), (3, 3), (2, 3), (1, 2)]),
       stride=st.sampled_from([None, (1, 1), (2, 1), (2, 2)]),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_maxpool_relu_backward_is_the_pools_backward_then_relus(name, n, c, h, w, kernel, stride,
                                                              dtype, seed):
    """Bit for bit, with windows that overlap or leave pixels out, ties, exact zeros and windows
    with nothing positive; the ReLU's mask given as its input or its output."""
    kh, kw = kernel
    stride = stride or kernel
    if h < kh or w < kw:
        return
    kernels, reference = backend.kernels(name), backend.kernels("numpy")
    rng = np.random.default_rng(seed)
    x = rng.integers(-3, 3, (n, c, h, w)).astype(dtype) / 2  # ties and exact zeros
    dy_shape = reference.maxpool_forward(x, kernel, stride)[0].shape
    dy = rng.standard_normal(dy_shape).astype(dtype)
    for relu_x in (x, reference.relu_forward(x)):
        _, argmax = reference.maxpool_forward(relu_x, kernel, stride)
        dx = kernels.maxpool_relu_backward(dy, argmax, relu_x, kernel, stride)
        expected = reference.relu_backward(
            reference.maxpool_backward(dy, argmax, x.shape, kernel, stride), relu_x)
        assert dx.dtype == dtype and dx.shape == x.shape
        np.testing.assert_array_equal(dx, expected)


def pooling_network(seed=0):
    return mc.Sequential([
        Conv2D(2, 4, 3, padding=1), ReLU(), MaxPool2D(2),
        Conv2D(4, 4, 3, padding=1), ReLU(), MaxPool2D(3, stride=2),  # windows that overlap
        Flatten(), Dense(4, 3)], seed=seed)



@pytest.mark.parametrize("name", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_then_maxpool_trains_the_same_with_fusion_on_and_off(name, dtype, fusion,
                                                                  monkeypatch):
    """The reference network's Conv, ReLU, MaxPool2D: the same outputs and gradients, bit for
    bit, fused or not, and a fused pass followed by the layers' own (and the other way round)."""
    kernels = backend.kernels(name)
    calls = counting(monkeypatch, kernels, ("maxpool_relu_backward", "relu_backward"))
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 2, 6, 6)).astype(dtype)
    x[0, 0] = 0  # a plane whose first layer outputs are the bias alone: ties

    def run(forward, backward):
        net = pooling_network().to(name).astype(dtype)
        y = forward(net, x)
        dx = backward(net, np.linspace(-1, 1, y.size).reshape(y.shape).astype(dtype))
        return [y, dx, *(p.grad.copy() for p in net.parameters())]

    def fused_forward(net, x):
        return net.forward(x, training=True)

    def own_forward(net, x):
        return [y for *_, y in net.forward_steps(x, training=True)][-1]

    def fused_backward(net, dy):
        return net.backward(dy)

    def own_backward(net, dy):
        return [dx for *_, dx in net.backward_steps(dy)][-1]

    calls.clear()
    fused = run(fused_forward, fused_backward)
    assert calls.count("maxpool_relu_backward") == 2
    mc.set_fusion(False)
    calls.clear()
    plain = run(fused_forward, fused_backward)
    assert calls == ["relu_backward"] * 2
    assert all((array != 0).mean() > 0.2 for array in plain)  # gradients reach every layer
    mc.set_fusion(True)
    mixed = [run(fused_forward, own_backward), run(own_forward, fused_backward)]
    for results in (fused, *mixed):
        for got, want in zip(results, plain):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_a_layer_joins_one_pair_and_backward_undoes_the_forward_pairs(name, fusion, monkeypatch):
    """BatchNorm2D, ReLU, MaxPool2D: BatchNorm and ReLU pair (read from the left) in both passes;
    the ReLU is not paired again with the pool."""
    from minicnn.layers import fused

    kernels = backend.kernels(name)
    calls = counting(monkeypatch, kernels, ("batchnorm_relu_forward", "batchnorm_relu_backward",
                                            "maxpool_relu_backward"))
    net = mc.Sequential([Conv2D(1, 2, 3, padding=1), BatchNorm2D(2), ReLU(), MaxPool2D(2),
                         ReLU(), MaxPool2D(2)], seed=0).to(name)
    assert fused.fused_runs(net.layers) == {1: 2, 4: 2}
    x = np.random.default_rng(6).standard_normal((2, 1, 8, 8)).astype(np.float32)
    y = net.forward(x, training=True)
    net.backward(np.ones_like(y))
    assert calls == ["batchnorm_relu_forward", "maxpool_relu_backward", "batchnorm_relu_backward"]


# -- predict: a Conv2D and the BatchNorm2D after it as one convolution --------------------------

FOLD_TOLERANCE = {np.float32: 2e-5, np.float64: 1e-12}  # W' = W * s rounds before the products


def folding_network(bias: bool, seed=0):
    """Conv-BN pairs followed by a ReLU, by nothing, inside a Residual's body and shortcut, with
    and without the convolution's bias; BatchNorm's statistics and affine map drawn away from
    their initial 0 and 1, so that a fold that drops any of them changes the output."""
    net = mc.Sequential([
        Conv2D(3, 8, 3, padding=1, bias=bias), BatchNorm2D(8), ReLU(), MaxPool2D(2),
        mc.models.basic_block(8, 16, stride=2), mc.models.basic_block(16, 16), ReLU(),
        Conv2D(16, 8, 3, padding=1, bias=bias), BatchNorm2D(8),
        Flatten(), Dense(8 * 2 * 2, 3)], seed=seed)
    rng = np.random.default_rng(seed + 1)
    for name, array in net.named_arrays().items():
        size = array.data.shape
        if name.endswith("running_mean") or name.endswith("beta") or name.endswith("bias"):
            array.data = rng.standard_normal(size) * 0.5
        elif name.endswith("running_var") or name.endswith("gamma"):
            array.data = rng.uniform(0.3, 3, size)
    last = net.layers[-1].weight  # small logits: probabilities far from 0 and 1 show any change
    last.data = last.data * 0.02
    return net


@pytest.mark.parametrize("name", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("algorithm", ["auto", "im2col", "winograd", "winograd2", "direct"])
@pytest.mark.parametrize("bias", [True, False])
def test_predict_folds_each_batchnorm_into_its_convolution(name, dtype, algorithm, bias, fusion,
                                                          monkeypatch):
    from minicnn.kernels import set_conv_algorithm

    previous = set_conv_algorithm(algorithm)
    try:
        net = folding_network(bias).astype(dtype).to(name)
        x = np.random.default_rng(3).standard_normal((6, 3, 8, 8)).astype(dtype)
        calls = counting(monkeypatch, backend.kernels(name),
                         ("batchnorm_forward", "batchnorm_relu_forward", "relu_forward", "add",
                          "add_relu"))
        folded = net.predict(x, batch_size=4)  # two batches, the second smaller
        # no BatchNorm pass: every one folded; no pass of the ReLUs after a folded pair, nor of
        # the Residual + ReLU pair's sum: its body's last convolution adds the shortcut
        assert calls == ["add"] * 2  # the first block's sum, with no ReLU after it
        mc.set_fusion(False)
        plain = net.predict(x, batch_size=4)
        assert calls.count("batchnorm_forward") == 2 * 7  # 7 BatchNorm2D layers, 2 batches
        assert calls.count("relu_forward") == 2 * 4  # 4 ReLU layers
    finally:
        set_conv_algorithm(previous)
    assert folded.dtype == plain.dtype and folded.shape == (6, 3)
    np.testing.assert_allclose(folded, plain, rtol=0, atol=FOLD_TOLERANCE[dtype])


@pytest.mark.parametrize("name", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("algorithm", ["im2col", "winograd", "winograd2", "direct"])
def test_a_convolution_ending_in_a_relu_or_a_residual_sum_gives_their_values_bit_for_bit(
        name, dtype, algorithm):
    """Predict's Conv2D + BatchNorm2D + ReLU, and a Residual body's last Conv2D + BatchNorm2D
    with the block's sum and ReLU: the convolution's last write of y takes them."""
    from minicnn.kernels import set_conv_algorithm

    previous = set_conv_algorithm(algorithm)
    try:
        for c, f in ((3, 8), (8, 8)):  # the direct sum takes the first, Winograd both
            conv = Conv2D(c, f, 3, padding=1).astype(dtype).to(name)
            rng = np.random.default_rng(c)
            x = rng.standard_normal((3, c, 9, 7)).astype(dtype)
            x[0, 0, 0, 0] = np.nan  # NaN and its neighbours: the backend's relu_forward decides
            residual = rng.standard_normal((3, f, 9, 7)).astype(dtype)
            W, b, ops = conv.weight.data, conv.bias.data, conv.kernels
            y, _ = conv._convolve(x, W, b)
            rectified, _ = conv._convolve(x, W, b, rectify=True)
            summed, _ = conv._convolve(x, W, b, residual=residual)
            both, _ = conv._convolve(x, W, b, rectify=True, residual=residual)
            for got in (rectified, summed, both):
                assert got.dtype == dtype and not np.shares_memory(got, residual)
            np.testing.assert_array_equal(rectified, ops.relu_forward(y))
            np.testing.assert_array_equal(summed, ops.add(y, residual))
            np.testing.assert_array_equal(both, ops.add_relu(y, residual))
            assert (both > 0).any() and (both == 0).any()
    finally:
        set_conv_algorithm(previous)


def test_only_predict_folds_and_a_backward_pass_after_predict_asks_for_forward(fusion,
                                                                              monkeypatch):
    from minicnn.interpret import class_score_gradient
    from minicnn.layers import fused

    net = folding_network(bias=False).astype(np.float64).to("numpy")
    x = np.random.default_rng(4).standard_normal((3, 3, 8, 8))
    calls = counting(monkeypatch, backend.kernels("numpy"), ("batchnorm_forward",))
    # a saliency map: forward(training=False), then backward, which needs BatchNorm's input
    gradient = class_score_gradient(net, x)
    assert calls  # BatchNorm ran its own pass
    mc.set_fusion(False)
    np.testing.assert_array_equal(class_score_gradient(net, x), gradient)
    mc.set_fusion(True)
    net.predict(x)
    assert not getattr(fused._predict, "on", False)  # predict's setting does not outlive it
    with pytest.raises(RuntimeError, match=r"BatchNorm2D: backward\(\) called before forward"):
        net.backward(np.ones((3, 3)))
    with pytest.raises(ValueError), fused.predicting():
        raise ValueError("inside")
    assert not getattr(fused._predict, "on", False)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_evaluate_folds_as_predict_does(dtype, fusion, monkeypatch):
    from minicnn.losses import SoftmaxCrossEntropy

    net = folding_network(bias=True).astype(dtype).to("numpy")
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((7, 3, 8, 8)).astype(dtype), rng.integers(0, 3, 7)
    calls = counting(monkeypatch, backend.kernels("numpy"),
                     ("batchnorm_forward", "batchnorm_relu_forward"))
    folded = mc.evaluate(net, SoftmaxCrossEntropy(), x, y, batch_size=4, shifts=1)
    assert calls == []
    mc.set_fusion(False)
    plain = mc.evaluate(net, SoftmaxCrossEntropy(), x, y, batch_size=4, shifts=1)
    assert calls
    assert folded.keys() == plain.keys()
    for key in plain:
        np.testing.assert_allclose(folded[key], plain[key], rtol=FOLD_TOLERANCE[dtype], err_msg=key)
