"""Cross-checks against PyTorch's autograd and optimizers in float64 (skipped without torch)."""

import numpy as np
import pytest
from helpers import require
from hypothesis import given, settings
from hypothesis import strategies as st

import minicnn as mc
from minicnn.layers import (
    ELU,
    GELU,
    AvgPool2D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    LeakyReLU,
    MaxPool2D,
    ReLU,
    Sigmoid,
    Tanh,
)
from minicnn.losses import SoftmaxCrossEntropy

torch = require("torch")
pytestmark = pytest.mark.torch
TOL = dict(rtol=1e-7, atol=1e-10)
seeds = st.integers(0, 2**32 - 1)


def run_both(layer, torch_fn, x, torch_params=(), training=False, rng=None):
    """Forward + backward through minicnn and torch with the same upstream gradient."""
    xt = torch.tensor(x, requires_grad=True)
    yt = torch_fn(xt)
    y = layer.forward(x, training=training)
    dy = (rng or np.random.default_rng(0)).standard_normal(y.shape)
    yt.backward(torch.tensor(dy))
    dx = layer.backward(dy)
    np.testing.assert_allclose(y, yt.detach().numpy(), **TOL)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **TOL)
    return [tp.grad.numpy() for tp in torch_params]


@settings(max_examples=30)
@given(c=st.integers(1, 3), f=st.integers(1, 4), kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       padding=st.tuples(st.integers(0, 2), st.integers(0, 2)), seed=seeds)
def test_conv2d_matches_torch(cpu_backend, c, f, kernel, stride, padding, seed):
    rng = np.random.default_rng(seed)
    layer = Conv2D(c, f, kernel, stride=stride, padding=padding).astype(np.float64)
    layer.bias.data = rng.standard_normal(f)
    tconv = torch.nn.Conv2d(c, f, kernel, stride=stride, padding=padding, dtype=torch.float64)
    tconv.weight.data = torch.tensor(layer.weight.data)
    tconv.bias.data = torch.tensor(layer.bias.data)
    x = rng.standard_normal((2, c, kernel[0] + 4, kernel[1] + 3))
    dw, db = run_both(layer, tconv, x, (tconv.weight, tconv.bias), rng=rng)
    np.testing.assert_allclose(layer.weight.grad, dw, **TOL)
    np.testing.assert_allclose(layer.bias.grad, db, **TOL)


@settings(max_examples=30)
@given(kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       stride=st.tuples(st.integers(1, 3), st.integers(1, 3)), seed=seeds)
def test_pools_match_torch(cpu_backend, kernel, stride, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, 7, 6))
    run_both(MaxPool2D(kernel, stride), lambda t: torch.nn.functional.max_pool2d(t, kernel, stride),
             x, rng=rng)
    run_both(AvgPool2D(kernel, stride), lambda t: torch.nn.functional.avg_pool2d(t, kernel, stride),
             x, rng=rng)


def test_simple_layers_match_torch():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 5, 6))
    F = torch.nn.functional
    run_both(ReLU(), F.relu, x)
    run_both(LeakyReLU(0.2), lambda t: F.leaky_relu(t, 0.2), x)
    run_both(ELU(0.7), lambda t: F.elu(t, 0.7), x)
    run_both(GELU(), F.gelu, x)
    run_both(GELU("tanh"), lambda t: F.gelu(t, approximate="tanh"), x)
    run_both(Sigmoid(), torch.sigmoid, x)
    run_both(Tanh(), torch.tanh, x)
    run_both(Flatten(), lambda t: t.flatten(1), x)
    run_both(GlobalAvgPool2D(), lambda t: t.mean(dim=(2, 3)), x)
    run_both(Dropout(0.3), lambda t: F.dropout(t, 0.3, training=False), x)

    dense = Dense(6, 3).astype(np.float64)
    tl = torch.nn.Linear(6, 3, dtype=torch.float64)
    tl.weight.data = torch.tensor(dense.weight.data.T.copy())
    tl.bias.data = torch.tensor(rng.standard_normal(3))
    dense.bias.data = tl.bias.data.numpy().copy()
    dw, db = run_both(dense, tl, rng.standard_normal((4, 6)), (tl.weight, tl.bias))
    np.testing.assert_allclose(dense.weight.grad, dw.T, **TOL)
    np.testing.assert_allclose(dense.bias.grad, db, **TOL)


def test_dropout_is_inverted_dropout():
    x = np.ones((200, 500))
    layer = Dropout(0.25)
    y = layer.forward(x, training=True)
    assert set(np.unique(y)) == {0.0, 1 / 0.75}
    assert abs((y == 0).mean() - 0.25) < 0.01
    np.testing.assert_array_equal(layer.backward(np.ones_like(x)), y)


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_matches_torch_including_running_stats(training):
    rng = np.random.default_rng(0)
    bn = BatchNorm2D(3, momentum=0.2, eps=1e-3).astype(np.float64)
    tbn = torch.nn.BatchNorm2d(3, momentum=0.2, eps=1e-3, dtype=torch.float64)
    bn.gamma.data = rng.uniform(0.5, 2, 3)
    bn.beta.data = rng.standard_normal(3)
    tbn.weight.data, tbn.bias.data = torch.tensor(bn.gamma.data), torch.tensor(bn.beta.data)
    tbn.train(training)
    for step in range(3):
        x = rng.standard_normal((4, 3, 5, 2)) * 3 + step
        tbn.weight.grad = tbn.bias.grad = None
        dg, db = run_both(bn, tbn, x, (tbn.weight, tbn.bias), training=training, rng=rng)
        np.testing.assert_allclose(bn.gamma.grad, dg, **TOL)
        np.testing.assert_allclose(bn.beta.grad, db, **TOL)
        np.testing.assert_allclose(bn.running_mean, tbn.running_mean.numpy(), **TOL)
        np.testing.assert_allclose(bn.running_var, tbn.running_var.numpy(), **TOL)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy_matches_torch(smoothing):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((7, 5)) * 4
    labels = rng.integers(0, 5, 7)
    loss_fn = SoftmaxCrossEntropy(smoothing)
    loss = loss_fn.forward(logits, labels)
    lt = torch.tensor(logits, requires_grad=True)
    tloss = torch.nn.functional.cross_entropy(lt, torch.tensor(labels), label_smoothing=smoothing)
    tloss.backward()
    assert loss == pytest.approx(tloss.item(), rel=1e-12)
    np.testing.assert_allclose(loss_fn.backward(), lt.grad.numpy(), **TOL)


OPTIMIZERS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.03, betas=(0.5, 0.9), weight_decay=0.3)),
]


@pytest.mark.parametrize("name, kwargs", OPTIMIZERS)
def test_optimizers_match_torch_over_several_steps(name, kwargs):
    rng = np.random.default_rng(0)
    params = [mc.Parameter(rng.standard_normal(s)) for s in [(3, 4), (5,)]]
    tparams = [torch.tensor(p.data.copy(), requires_grad=True) for p in params]
    opt = getattr(mc.optim, name)(params, **kwargs)
    topt = getattr(torch.optim, name)(tparams, **kwargs)
    for _ in range(10):
        for p, tp in zip(params, tparams):
            g = rng.standard_normal(p.data.shape)
            p.grad, tp.grad = g.copy(), torch.tensor(g)
        opt.step()
        topt.step()
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_schedules_match_torch():
    def lrs(make_ours, make_torch, steps=12):
        p = mc.Parameter(np.zeros(1))
        opt = mc.optim.SGD([p], lr=0.5)
        sched = make_ours(opt)
        tp = torch.zeros(1, requires_grad=True)
        topt = torch.optim.SGD([tp], lr=0.5)
        tsched = make_torch(topt)
        ours, theirs = [opt.lr], [topt.param_groups[0]["lr"]]
        for _ in range(steps):
            topt.step()
            ours.append(sched.step())
            tsched.step()
            theirs.append(topt.param_groups[0]["lr"])
        np.testing.assert_allclose(ours, theirs, rtol=1e-10)

    S = torch.optim.lr_scheduler
    lrs(lambda o: mc.optim.StepLR(o, 3, 0.5), lambda o: S.StepLR(o, 3, 0.5))
    lrs(lambda o: mc.optim.CosineAnnealingLR(o, 10, 0.01), lambda o: S.CosineAnnealingLR(o, 10, 0.01), 10)
    lrs(lambda o: mc.optim.LinearWarmup(o, 5, 0.1), lambda o: S.LinearLR(o, 0.1, 1.0, 5))
    lrs(lambda o: mc.optim.OneCycleLR(o, 0.3, 20, pct_start=0.3),
        lambda o: S.OneCycleLR(o, 0.3, total_steps=20, pct_start=0.3), 19)
