"""Numerical gradient checks: the test every hand-written backward pass must pass.

For a layer f and a fixed random "upstream gradient" g (shaped like f's output), define the
scalar ``L(x, params) = sum(f(x) * g)``. Then dL/dy = g, so ``layer.backward(g)`` must return
dL/dx and fill dL/dparams. The central difference

    dL/dx_i  ~  (L(x + h e_i) - L(x - h e_i)) / (2 h)

has error O(h^2), so in float64 with h = 1e-6 it matches a correct analytic gradient to about
1e-8 or better; a wrong one is off by order 1. The error is measured as
``max |a - n| / max(1e-8, |a| + |n|)`` over all elements.

Use it on your own layers::

    from minicnn.gradcheck import check_layer
    errors = check_layer(MyLayer(...), x)      # {"x": 3e-10, "weight": 1e-9, ...}
    assert max(errors.values()) < 1e-6
"""

from __future__ import annotations

import copy

import numpy as np

from . import backend

DEFAULT_EPS = 1e-6


def relative_error(analytic, numeric) -> float:
    """``max |a - n| / max(1e-8, |a| + |n|)`` over all elements (0.0 for empty arrays)."""
    a = np.asarray(backend.to_numpy(analytic), dtype=np.float64)
    n = np.asarray(backend.to_numpy(numeric), dtype=np.float64)
    if a.shape != n.shape:
        raise ValueError(f"relative_error: shapes differ, {a.shape} vs {n.shape}")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - n) / np.maximum(1e-8, np.abs(a) + np.abs(n))))


def numerical_gradient(f, x: np.ndarray, eps: float = DEFAULT_EPS) -> np.ndarray:
    """Central-difference gradient of the scalar function ``f()`` with respect to array ``x``.

    ``x`` is perturbed in place, one element at a time, and restored afterwards; ``f`` must
    read ``x`` each time it is called.
    """
    grad = np.zeros(x.shape, dtype=np.float64)
    flat_x = x.reshape(-1)  # a view: writes reach x
    if not np.shares_memory(flat_x, x):
        raise ValueError("numerical_gradient: x must be a contiguous array")
    flat_grad = grad.reshape(-1)
    for i in range(flat_x.size):
        original = flat_x[i]
        flat_x[i] = original + eps
        f_plus = f()
        flat_x[i] = original - eps
        f_minus = f()
        flat_x[i] = original
        flat_grad[i] = (f_plus - f_minus) / (2 * eps)
    return grad


def check_layer(layer, x, dy=None, training: bool = True, eps: float = DEFAULT_EPS,
                seed: int = 0) -> dict[str, float]:
    """Compare a layer's analytic gradients with central differences, in float64.

    The layer is deep-copied and converted to float64 (the original is not touched). ``dy``
    is the upstream gradient (default: standard normal, drawn with ``seed``). Stochastic
    layers are re-seeded before every forward pass so they draw the same mask each time.

    Returns ``{"x": err, "<param name>": err, ...}``: the maximum relative error per input and
    per parameter (for a Sequential, parameters are named ``"<layer index>.<name>"``).
    """
    layer = copy.deepcopy(layer)
    layer.astype(np.float64)
    x = np.array(backend.to_numpy(x), dtype=np.float64, copy=True, order="C")

    def forward():
        layer.set_rng(np.random.default_rng(seed))
        return backend.to_numpy(layer.forward(x, training=training))

    y = forward()
    if dy is None:
        dy = np.random.default_rng(seed + 1).standard_normal(y.shape)
    dy = np.asarray(backend.to_numpy(dy), dtype=np.float64)

    def loss():
        return float(np.sum(forward() * dy))

    forward()
    dx = backend.to_numpy(layer.backward(dy))
    named = _named_parameters(layer)
    analytic = {name: backend.to_numpy(p.grad).copy() for name, p in named.items()}

    errors = {"x": relative_error(dx, numerical_gradient(loss, x, eps))}
    for name, p in named.items():
        data = np.ascontiguousarray(backend.to_numpy(p.data), dtype=np.float64)
        p.data = data
        errors[name] = relative_error(analytic[name], numerical_gradient(loss, data, eps))
    return errors


def check_loss(loss_fn, logits, labels, eps: float = DEFAULT_EPS) -> float:
    """Relative error of ``loss_fn.backward()`` against central differences of the loss."""
    logits = np.array(backend.to_numpy(logits), dtype=np.float64, copy=True, order="C")
    loss_fn.forward(logits, labels)
    analytic = backend.to_numpy(loss_fn.backward()).copy()
    numeric = numerical_gradient(lambda: loss_fn.forward(logits, labels), logits, eps)
    return relative_error(analytic, numeric)


def _named_parameters(layer) -> dict:
    if hasattr(layer, "layers"):
        return {f"{i}.{p.name or j}": p for i, sub in enumerate(layer.layers)
                for j, p in enumerate(sub.parameters())}
    return {p.name or str(j): p for j, p in enumerate(layer.parameters())}
