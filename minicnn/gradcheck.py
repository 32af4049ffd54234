"""Numerical gradient checks: the test every hand-written backward pass must pass.

For a layer f and a fixed random "upstream gradient" g (shaped like f's output), define the
scalar ``L(x, params) = sum(f(x) * g)``. Then dL/dy = g, so ``layer.backward(g)`` must return
dL/dx and fill dL/dparams. The central difference

    dL/dx_i  ~  (L(x + h e_i) - L(x - h e_i)) / (2 h)

has truncation error O(h^2) and rounding noise O(machine epsilon / h). minicnn uses the
five-point central stencil (see :func:`numerical_gradient`), whose truncation error is O(h^4),
with h = 1e-4: the truncation error is then negligible for the smooth layers (sigmoid, tanh,
batch norm, softmax), there is none for the piecewise-linear ones (conv, dense, pooling, ReLU)
away from their kinks, and the rounding noise stays near 1e-12. A correct analytic gradient
then matches to about 1e-9 or better; a wrong one is off by order 1. The error is measured
as ``max |a - n| / max(floor, |a| + |n|)`` over all elements, with ``floor`` = 1e-8, or in
:func:`check_layer` what rounding can leave in a central difference where that is larger (see
:data:`ROUNDING_FLOOR`). (Inputs must stay 2h away from kinks such as ReLU's 0 or a max-pool
tie.)

Use it on your own layers::

    from minicnn.gradcheck import check_layer
    errors = check_layer(MyLayer(...), x)      # {"x": 3e-10, "weight": 1e-9, ...}
    assert max(errors.values()) < 1e-6

**Scalars of a whole network.** :func:`check_layer` checks every element, and can: each output
is differenced on its own before the weighted sum, so the noise stays that of one output. The
gradient of one scalar (a loss, a class score) of a whole network is different: every finite
difference carries the rounding noise of the full scalar (~1e-16 of its size), while single
entries of the gradient can be arbitrarily close to zero (contributions that cancel), where
that noise is a large *relative* error. :func:`check_gradient` and :func:`check_model` therefore
compare *directional derivatives*: for a direction v, ``d f(x + t v)/dt`` at t = 0 (the
five-point stencil along v) against ``analytic . v``. Each v is the unit analytic gradient plus a
random unit vector: the derivative along it is about as large as the whole gradient, never
accidentally tiny (as it can be along a purely random direction nearly orthogonal to the
gradient), and the random part still sees any wrong entry of the analytic gradient (PyTorch's
"fast" gradcheck uses projections the same way).
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import numpy as np

from . import backend
from .layers.base import Parameter

DEFAULT_EPS = 1e-4

#: The floor of :func:`check_layer`'s relative error, in units of the rounding noise of its
#: central differences, ``machine epsilon * sum |dy * y| / h``. An entry whose true gradient is
#: 0 gets a central difference of pure rounding noise, and the analytic one rounding too: with
#: im2col a weight that only ever meets padding multiplies exact zeros and both are exactly 0,
#: but Winograd's transforms mix every value of a tile, so both are ~1e-17 and ~1e-13, which the
#: floor of 1e-8 alone would call a relative error of 1e-5. With this floor, noise of even a
#: hundred rounding units stays 10x under the 1e-6 bound, and what it lets pass is an absolute
#: error under 2e-9 of ``sum |dy * y|``: no wrong formula is that small.
ROUNDING_FLOOR = 1e9


def relative_error(analytic, numeric, floor: float = 1e-8) -> float:
    """``max |a - n| / max(floor, |a| + |n|)`` over all elements (0.0 for empty arrays)."""
    a = np.asarray(backend.to_numpy(analytic), dtype=np.float64)
    n = np.asarray(backend.to_numpy(numeric), dtype=np.float64)
    if a.shape != n.shape:
        raise ValueError(f"relative_error: shapes differ, {a.shape} vs {n.shape}")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - n) / np.maximum(floor, np.abs(a) + np.abs(n))))


def numerical_gradient(f, x: np.ndarray, eps: float = DEFAULT_EPS, weights=None) -> np.ndarray:
    """Central-difference gradient with respect to array ``x`` (perturbed in place, restored).

    Uses the five-point central stencil
    ``(8 (f(x+h) - f(x-h)) - (f(x+2h) - f(x-2h))) / 12h``, exact for polynomials up to degree
    four: its truncation error is O(h^4) instead of O(h^2), so smooth layers need no tiny step.

    Without ``weights``, ``f()`` returns a scalar and this is d f / d x. With ``weights``,
    ``f()`` returns an array shaped like ``weights`` and this is d sum(f() * weights) / d x; the
    outputs are subtracted *before* summing, which keeps the rounding noise of the many
    unaffected outputs out of the difference.
    """
    grad = np.zeros(x.shape, dtype=np.float64)
    flat_x = _flat_view(x, "numerical_gradient")
    flat_grad = grad.reshape(-1)
    for i in range(flat_x.size):
        difference = _stencil(f, flat_x, i, eps)
        if weights is not None:
            difference = np.sum(difference * weights)
        flat_grad[i] = difference / (12 * eps)
    return grad


def partial_derivative(f, x: np.ndarray, index, eps: float = DEFAULT_EPS) -> float:
    """``d f / d x[index]`` of a scalar ``f()`` by the same five-point stencil (``x`` is
    perturbed in place and restored): one entry of :func:`numerical_gradient`."""
    flat_x = _flat_view(x, "partial_derivative")
    i = int(np.ravel_multi_index(tuple(index), x.shape))
    return float(_stencil(f, flat_x, i, eps)) / (12 * eps)


def _flat_view(x: np.ndarray, where: str) -> np.ndarray:
    flat_x = x.reshape(-1)  # a view: writes reach x
    if not np.shares_memory(flat_x, x):
        raise ValueError(f"{where}: x must be a contiguous array")
    return flat_x


def _stencil(f, flat_x: np.ndarray, i: int, eps: float):
    """``8 (f(x+h) - f(x-h)) - (f(x+2h) - f(x-2h))`` for a step h in entry ``i``."""
    original = flat_x[i]
    values = []
    for step in (eps, -eps, 2 * eps, -2 * eps):
        flat_x[i] = original + step
        values.append(np.asarray(f(), dtype=np.float64))
    flat_x[i] = original
    plus, minus, plus2, minus2 = values
    return 8 * (plus - minus) - (plus2 - minus2)


def check_layer(layer, x, dy=None, training: bool = True, eps: float = DEFAULT_EPS,
                seed: int = 0) -> dict[str, float]:
    """Compare a layer's analytic gradients with central differences, in float64.

    The layer is deep-copied and converted to float64 (the original is not touched). ``dy``
    is the upstream gradient (default: standard normal, drawn with ``seed``). Stochastic
    layers are re-seeded before every forward pass so they draw the same mask each time.

    Returns ``{"x": err, "<param name>": err, ...}``: the maximum relative error per input and
    per parameter (inside a Sequential, parameters are named ``"<layer index>.<name>"``).
    """
    layer = copy.deepcopy(layer)
    layer.astype(np.float64)
    x = np.array(backend.to_numpy(x), dtype=np.float64, copy=True, order="C")

    def forward():
        layer.set_rng(np.random.default_rng(seed))
        # a copy: layers such as Flatten return a view of x, which the perturbation would move
        return np.array(backend.to_numpy(layer.forward(x, training=training)), copy=True)

    y = forward()
    if dy is None:
        dy = np.random.default_rng(seed + 1).standard_normal(y.shape)
    dy = np.asarray(backend.to_numpy(dy), dtype=np.float64)

    forward()
    dx = backend.to_numpy(layer.backward(dy))
    named = _named_parameters(layer)
    analytic = {name: backend.to_numpy(p.grad).copy() for name, p in named.items()}

    rounding = np.finfo(np.float64).eps * float(np.sum(np.abs(dy * y))) / eps
    floor = max(1e-8, ROUNDING_FLOOR * rounding)
    errors = {"x": relative_error(dx, numerical_gradient(forward, x, eps, weights=dy), floor)}
    for name, p in named.items():
        data = np.ascontiguousarray(backend.to_numpy(p.data), dtype=np.float64)
        p.data = data
        numeric = numerical_gradient(forward, data, eps, weights=dy)
        errors[name] = relative_error(analytic[name], numeric, floor)
    return errors


def check_loss(loss_fn, logits, labels, eps: float = DEFAULT_EPS) -> float:
    """Relative error of ``loss_fn.backward()`` against the numerical gradient of the scalar
    ``loss_fn.forward(logits, labels)`` returns: the loss exactly as defined, every logit
    perturbed in turn. (A forward that summed over the batch while backward divided by N would
    be off by a factor of N here.)"""
    logits = np.array(backend.to_numpy(logits), dtype=np.float64, copy=True, order="C")
    labels = np.asarray(backend.to_numpy(labels))
    loss_fn.forward(logits, labels)
    analytic = backend.to_numpy(loss_fn.backward()).copy()
    numeric = numerical_gradient(lambda: loss_fn.forward(logits, labels), logits, eps)
    return relative_error(analytic, numeric)


def directional_derivative(f, x: np.ndarray, direction: np.ndarray, eps: float = DEFAULT_EPS) -> float:
    """``d f(x + t * direction) / dt`` at t = 0 for a scalar ``f()``, by the five-point stencil
    along ``direction`` (x is moved in place and restored)."""
    original = x.copy()
    values = []
    for step in (eps, -eps, 2 * eps, -2 * eps):
        np.add(original, step * direction, out=x)
        values.append(float(f()))
    x[...] = original
    plus, minus, plus2, minus2 = values
    return (8 * (plus - minus) - (plus2 - minus2)) / (12 * eps)


def check_gradient(f, x: np.ndarray, analytic, eps: float = DEFAULT_EPS, directions: int = 4,
                   seed: int = 0) -> float:
    """Relative error of ``analytic`` as the gradient of the scalar ``f()`` with respect to x.

    Compares ``analytic . v`` with the directional derivative of f along ``directions``
    directions v, each the unit analytic gradient plus a random unit vector (see the module
    docstring for why a whole network's scalar is checked along directions rather than entry by
    entry); returns the largest relative error. ``x`` must be a
    float64 array that ``f`` reads (it is perturbed in place and restored).
    """
    analytic = np.asarray(backend.to_numpy(analytic), dtype=np.float64)
    if analytic.shape != x.shape:
        raise ValueError(f"check_gradient: analytic gradient has shape {analytic.shape}, x has "
                         f"shape {x.shape}")
    rng = np.random.default_rng(seed)
    norm = np.linalg.norm(analytic)
    worst = 0.0
    for _ in range(directions):
        v = rng.standard_normal(x.shape)
        v /= np.linalg.norm(v)
        if norm > 0:
            v += analytic / norm  # see the module docstring
        worst = max(worst, relative_error(np.sum(analytic * v),
                                          directional_derivative(f, x, v, eps)))
    return worst


def check_model(model, loss_fn, x, labels, training: bool = True, eps: float = DEFAULT_EPS,
                directions: int = 4, seed: int = 0) -> dict[str, float]:
    """The whole chain, network and loss, in float64: ``model.backward(loss_fn.backward())``
    against the derivatives of the scalar ``loss_fn.forward(model.forward(x), labels)``.

    Returns ``{"x": err, "<layer index>.<name>": err, ...}`` for the input and every parameter,
    each the worst over ``directions`` random directions (:func:`check_gradient`). The model is
    deep-copied first; stochastic layers are re-seeded before every forward pass. Keep x and
    the weights away from kinks (a pre-activation within ~eps of ReLU's 0, a max-pool tie),
    where no finite difference measures a derivative.
    """
    model = copy.deepcopy(model)
    model.astype(np.float64)
    x = np.array(backend.to_numpy(x), dtype=np.float64, copy=True, order="C")

    def loss():
        model.set_rng(np.random.default_rng(seed))
        return loss_fn.forward(model.forward(x, training=training), labels)

    loss()
    dx = backend.to_numpy(model.backward(loss_fn.backward()))
    named = _named_parameters(model)
    errors = {"x": check_gradient(loss, x, dx, eps, directions, seed)}
    for name, p in named.items():
        analytic = backend.to_numpy(p.grad).copy()
        p.data = np.ascontiguousarray(backend.to_numpy(p.data), dtype=np.float64)
        errors[name] = check_gradient(loss, p.data, analytic, eps, directions, seed)
    return errors


def _named_parameters(layer) -> dict:
    """A layer's parameters under unique names: the keys of ``named_arrays()`` ("weight";
    "0.weight" in a Sequential, "body.0.weight" in a Residual); for a layer whose
    ``named_arrays`` does not list its parameters, their own names or positions."""
    params = layer.parameters()
    named = {name: a for name, a in layer.named_arrays().items() if isinstance(a, Parameter)}
    if sorted(map(id, named.values())) == sorted(map(id, params)):
        return named
    names = [p.name or str(j) for j, p in enumerate(params)]
    if len(set(names)) < len(names):  # keep every parameter: prefix the position
        names = [f"{j}.{name}" for j, name in enumerate(names)]
    return dict(zip(names, params))


# -- one entry, where the network may bend (minicnn studio's check) -----------------------------

ENTRY_STEP = 1e-6  # small enough to cross only the switches at the point itself, as a rule
ENTRY_HALVINGS = 12  # down to 2.4e-10, where float64 rounding still leaves slopes to ~1e-4


class Probe(NamedTuple):
    """What :func:`check_entry`'s ``probe(offset)`` returns: one forward and backward pass with
    the checked entry moved by ``offset``."""

    value: float            # the scalar
    analytic: float         # the backward pass's entry for the checked pixel or weight
    gradient: np.ndarray    # the whole gradient it belongs to
    outputs: list           # every layer's output


class _Side:
    """One side of the point: the slope over [w, w + side * h] and the backward pass at
    w + side * h. ``verified``: the two agree, so one piece of the network spans the step (a
    second switch strictly between w and w + side * h would make the slope an average of two
    pieces' slopes, and the backward pass at the far end gives only the last one)."""

    def __init__(self, far: Probe, point: Probe, side: int, step: float, scale: float):
        self.value, self.analytic, self.outputs = far.value, far.analytic, far.outputs
        self.slope = side * (far.value - point.value) / step
        self.verified = _close(far.analytic, self.slope, scale, self.tolerance(point, step))

    @staticmethod
    def tolerance(point: Probe, step: float) -> float:
        """What float64 rounding can leave in a slope over ``step``: a few ulps of the scalar
        (and of the largest output, whose rounding reaches it), divided by the step."""
        magnitude = max(abs(point.value), max(float(np.abs(o).max()) for o in point.outputs))
        return float(64 * np.finfo(np.float64).eps * magnitude / step)


def _close(a: float, b: float, scale: float, noise: float = 0.0) -> bool:
    """Equal up to finite-difference noise: ``noise`` is what rounding leaves in a slope (see
    :meth:`_Side.tolerance`); curvature over a step of 1e-6 changes a slope by ~1e-9 of the
    gradient's scale (its largest entry); 1e-5 relative covers a smooth but curved scalar."""
    return bool(abs(a - b) <= 1e-5 * (abs(a) + abs(b)) + 1e-7 * scale + noise + 1e-12)


def _bending_units(below: np.ndarray, here: np.ndarray, above: np.ndarray) -> int:
    """How many outputs bend at this point: their change over the step up differs from their
    change over the step down by more than smooth curvature (~1e-6 of it over a 1e-6 step) and
    rounding (a convolution's sums, Winograd's transforms above all, leave some hundreds of
    ulps of the layer's largest output in each) explain."""
    up, down = above - here, here - below
    rounding = 1024 * np.finfo(np.float64).eps * float(np.abs(here).max())
    return int(np.count_nonzero(np.abs(up - down) > 1e-3 * (np.abs(up) + np.abs(down)) + rounding))


def check_entry(probe) -> dict:
    """One entry of the gradient of a network's scalar, analytic against numerical, where the
    network may bend there: ``probe(offset)`` moves the entry (an input pixel or a weight) by
    ``offset``, runs the forward and backward pass and returns a :class:`Probe` (``outputs``:
    every layer's output, in order).

    The network is piecewise smooth: every ReLU and every max-pooling window switches
    between pieces, where a ReLU input crosses 0 or two values of a window swap places. A
    pixel can sit exactly on such a switch (in a flat background, a window of equal values
    is a tie), and the scalar f then has a *left slope* ``(f(w) - f(w - h)) / h`` and a
    different *right slope* ``(f(w + h) - f(w)) / h``; the central difference
    ``(f(w + h) - f(w - h)) / (2 h)`` is their mean. The backward pass at w itself breaks
    every tie by a fixed rule (a window's first maximum wins; ReLU's slope at 0 is 0), each
    tie on its own, so its value can be either slope or neither.

    The backward pass at ``w - h`` gives the left slope, and at ``w + h`` the right one,
    only when no *other* switch lies between w and w -+ h. The check verifies that instead
    of assuming it: on each side the backward pass at h must agree with that side's slope;
    where it does not, a second switch lies within the step, and the step is halved (for
    both sides, so that the central difference stays the mean of the two slopes) until they
    do, at most :data:`ENTRY_HALVINGS` times. The reply says only what was verified, in
    ``verdict``:

    - ``"smooth"``: nothing switches within ±h; the analytic and the numerical derivative
      are the same number (``agrees``).
    - ``"kink"``: units switch at the point itself (``bends``: the first layer listed is
      where, the later ones carry the bend on to the scalar) and the slopes differ;
      ``analytic_left`` / ``analytic_right`` equal them, and ``at_point`` says which of
      them the backward pass at w gives ("left", "right", "both" or "neither").
    - ``"switch"``: units switch at the point, but the scalar's two slopes are equal.
    - ``"unresolved"``: switches lie so close to the point that even the smallest step
      crosses them; nothing is claimed about the slopes.

    ``step`` is the step finally used; ``nearby`` names the sides ("left", "right") on which
    a second switch was found within the first step, between ``step`` and ``2 * step``.
    """
    step, nearby, point = ENTRY_STEP, [], None
    for halving in range(ENTRY_HALVINGS + 1):
        far = {side: probe(side * step) for side in (-1, 1)}
        point = point or probe(0.0)  # after the first step's passes: the layers keep it
        scale = float(np.abs(point.gradient).max())
        sides = {side: _Side(far[side], point, side, step, scale) for side in (-1, 1)}
        if all(s.verified for s in sides.values()):
            break
        if halving == 0:
            nearby = [name for side, name in ((-1, "left"), (1, "right"))
                      if not sides[side].verified]
        if halving < ENTRY_HALVINGS:
            step /= 2
    if halving:
        point = probe(0.0)  # again, last: the layers keep the pass at the point
    resolved = all(s.verified for s in sides.values())
    left, right = sides[-1], sides[1]
    numeric = (right.value - left.value) / (2 * step)
    bends = [{"layer": i, "units": units} for i in range(len(point.outputs))
             if (units := _bending_units(left.outputs[i], point.outputs[i], right.outputs[i]))]
    tolerance = _Side.tolerance(point, step)
    slopes_differ = not _close(left.slope, right.slope, scale, tolerance)
    if not resolved:
        verdict = "unresolved"
    elif slopes_differ:
        verdict = "kink"
    else:
        verdict = "switch" if bends else "smooth"
    on_left = _close(point.analytic, left.slope, scale, tolerance)
    on_right = _close(point.analytic, right.slope, scale, tolerance)
    at_point = {(True, True): "both", (True, False): "left", (False, True): "right",
                (False, False): "neither"}[on_left, on_right]
    return {"verdict": verdict,
            "kink": verdict == "kink", "step": step, "first_step": ENTRY_STEP,
            "halvings": halving, "nearby": nearby if resolved else [],
            "analytic": point.analytic, "numeric": numeric, "left_slope": left.slope,
            "right_slope": right.slope, "analytic_left": left.analytic,
            "analytic_right": right.analytic, "at_point": at_point, "bends": bends,
            "agrees": _close(point.analytic, numeric, scale, tolerance),
            "gradient_scale": scale, "tolerance": tolerance,
            "relative_error": relative_error(np.array([point.analytic]), np.array([numeric]))}
