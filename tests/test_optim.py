"""Optimizer update rules and learning-rate schedules (PyTorch parity is in test_torch_parity.py)."""

import math

import numpy as np
import pytest

import minicnn as mc
from minicnn.optim import (
    SGD,
    Adam,
    AdamW,
    CosineAnnealingLR,
    LinearWarmup,
    OneCycleLR,
    StepLR,
)


def param(values):
    p = mc.Parameter(np.array(values, dtype=np.float64))
    return p


def test_sgd_plain_step():
    p = param([1.0, -2.0])
    p.grad = np.array([0.5, 0.5])
    SGD([p], lr=0.1).step()
    np.testing.assert_allclose(p.data, [0.95, -2.05])


def test_sgd_momentum_and_nesterov_by_hand():
    p, q = param([0.0]), param([0.0])
    plain, nesterov = SGD([p], lr=1.0, momentum=0.5), SGD([q], lr=1.0, momentum=0.5, nesterov=True)
    for _ in range(2):
        p.grad = q.grad = np.array([1.0])
        plain.step()
        nesterov.step()
    # buffers: 1, then 0.5*1 + 1 = 1.5; plain moves by 1 then 1.5
    np.testing.assert_allclose(p.data, [-2.5])
    # nesterov moves by g + 0.5*buf: 1 + 0.5 = 1.5, then 1 + 0.75 = 1.75
    np.testing.assert_allclose(q.data, [-3.25])


def test_adam_first_step_moves_by_lr_times_sign():
    p = param([1.0, 1.0, 1.0])
    p.grad = np.array([3.0, -0.01, 1e3])
    Adam([p], lr=0.1).step()
    np.testing.assert_allclose(p.data, [0.9, 1.1, 0.9], rtol=1e-6)


def test_adamw_decays_weights_even_with_zero_gradient():
    p = param([2.0])
    p.grad = np.array([0.0])
    AdamW([p], lr=0.1, weight_decay=0.5).step()
    np.testing.assert_allclose(p.data, [2.0 * (1 - 0.05)])


def test_zero_grad_and_state_arrays():
    p = param([1.0, 2.0])
    opt = Adam([p])
    p.grad = np.ones(2)
    opt.step()
    opt.zero_grad()
    assert not p.grad.any()
    state = opt.state_arrays()
    assert set(state) == {"0.exp_avg", "0.exp_avg_sq"}


def test_step_lr():
    opt = SGD([param([0.0])], lr=1.0)
    sched = StepLR(opt, step_size=2, gamma=0.5)
    assert [opt.lr] + [sched.step() for _ in range(5)] == [1, 1, 0.5, 0.5, 0.25, 0.25]


def test_cosine_annealing():
    opt = SGD([param([0.0])], lr=1.0)
    sched = CosineAnnealingLR(opt, T_max=4, eta_min=0.1)
    lrs = [opt.lr] + [sched.step() for _ in range(5)]
    assert lrs[0] == 1.0
    assert lrs[2] == pytest.approx(0.55)
    assert lrs[4] == pytest.approx(0.1) and lrs[5] == pytest.approx(0.1)


def test_linear_warmup_then_cosine():
    opt = SGD([param([0.0])], lr=1.0)
    cosine = CosineAnnealingLR(opt, T_max=10)
    opt.lr = 1.0
    sched = LinearWarmup(opt, warmup_steps=4, start_factor=0.2, after=cosine)
    lrs = [opt.lr] + [sched.step() for _ in range(14)]
    np.testing.assert_allclose(lrs[:5], [0.2, 0.4, 0.6, 0.8, 1.0])
    assert lrs[9] == pytest.approx((1 + math.cos(math.pi * 5 / 10)) / 2)
    assert lrs[14] == pytest.approx(0.0)


def test_one_cycle_rises_then_falls():
    opt = SGD([param([0.0])], lr=1.0)
    sched = OneCycleLR(opt, max_lr=0.1, total_steps=100, pct_start=0.25)
    lrs = [opt.lr] + [sched.step() for _ in range(99)]
    peak = int(np.argmax(lrs))
    assert lrs[0] == pytest.approx(0.1 / 25)
    assert 20 <= peak <= 26 and lrs[peak] == pytest.approx(0.1, rel=1e-3)
    assert lrs[-1] == pytest.approx(0.1 / 25 / 1e4, rel=1e-3)
    assert all(a <= b for a, b in zip(lrs[:peak], lrs[1:peak + 1]))
    assert all(a >= b for a, b in zip(lrs[peak:-1], lrs[peak + 1:]))


def test_optimizer_argument_errors():
    with pytest.raises(TypeError, match="expected a Parameter"):
        SGD([np.zeros(2)], lr=0.1)
    with pytest.raises(ValueError, match="empty parameter list"):
        Adam([])
    with pytest.raises(ValueError, match="nesterov=True needs momentum > 0"):
        SGD([param([0.0])], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="beta must be < 1"):
        Adam([param([0.0])], betas=(0.9, 1.0))


def test_restored_state_goes_to_each_parameters_own_backend(monkeypatch):
    """Two models on two backends share one optimizer; the process default is a third choice.
    A checkpoint's moments must land where their parameter lives (for a GPU model: the GPU),
    not on the default backend. On the CPU both backends hold numpy arrays, so the test watches
    which backend each array is sent to."""
    from minicnn import backend
    from minicnn.layers import Dense

    first = mc.Sequential([Dense(3, 2)], seed=0).to("numpy")
    second = mc.Sequential([Dense(2, 2)], seed=1).to("numba")
    opt = Adam(first.parameters() + second.parameters())
    for p in opt.params:
        p.grad = np.ones_like(p.data)
    opt.step()
    saved = opt.state_arrays()
    sent = {}
    real = backend.to_device
    monkeypatch.setattr(backend, "to_device", lambda array, name=None: sent.setdefault(
        id(array), name) and real(array, name))
    fresh = Adam(first.parameters() + second.parameters())
    fresh.load_state_arrays(saved, opt.step_count)
    owners = {key: opt.params[int(key.split(".")[0])].backend for key in saved}
    assert {key: sent[id(saved[key])] for key in saved} == owners
    assert set(owners.values()) == {"numpy", "numba"}
    for key, value in fresh.state_arrays().items():
        np.testing.assert_array_equal(value, saved[key])
