"""Optimizers (SGD, Adam, AdamW) and learning-rate schedules, with PyTorch's update rules.

An optimizer holds a list of Parameters and, on ``step()``, moves each ``p.data`` against its
``p.grad``. State (momentum buffers, Adam moments) is kept per parameter in ``self.state``.
"""

from __future__ import annotations

import math

from . import backend
from .layers.base import Parameter
from .validation import check_learning_rate, check_positive_int
from .validation import check_number as _check_number


class Optimizer:
    def __init__(self, params, lr):
        self.params = list(params)
        for i, p in enumerate(self.params):
            if not isinstance(p, Parameter):
                raise TypeError(
                    f"{type(self).__name__}: item {i} of params is a {type(p).__name__}, "
                    "expected a Parameter (pass model.parameters())"
                )
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        self._on_device = None  # [lr, step count] as 0-d arrays on the GPU (see rate, count)
        self.lr = lr
        self.step_count = 0
        self.state: list[dict] = [{} for _ in self.params]

    @property
    def lr(self) -> float:
        return self._lr

    @lr.setter
    def lr(self, value) -> None:
        self._lr = check_learning_rate(value, type(self).__name__)
        if self._on_device is not None:
            self._on_device[0].fill(self._lr)

    @property
    def rate(self):
        """The learning rate as the update reads it: ``lr``, or on a GPU a 0-d array there (in
        the parameters' dtype) that the ``lr`` setter keeps equal to it. A training step
        recorded once as a CUDA graph and replayed (:mod:`minicnn.capture`) then reads the rate
        a schedule set after the recording, not the number it was recorded with."""
        return self._lr if self._on_device is None else self._on_device[0]

    @property
    def count(self):
        """``step_count`` as the update reads it (Adam's bias correction): the number, or on a
        GPU a 0-d float64 array there that each ``step()`` counts up on the GPU."""
        return self.step_count if self._on_device is None else self._on_device[1]

    def zero_grad(self) -> None:
        for p in self.params:
            p.zero_grad()

    def step(self) -> None:
        self.step_count += 1
        if self.params[0].backend != "cupy":
            self._on_device = None  # (the model may have come back from the GPU)
        elif self._on_device is None:
            xp = backend.xp("cupy")
            self._on_device = [xp.asarray(self._lr, self.params[0].data.dtype),
                               xp.asarray(self.step_count, xp.float64)]
        else:
            self._on_device[1] += 1  # on the GPU: a recorded step counts its replays itself
        for p, state in zip(self.params, self.state):
            self._update(p, p.grad, state)

    def _update(self, p, grad, state):  # pragma: no cover - abstract
        raise NotImplementedError

    def state_arrays(self) -> dict:
        """Optimizer state as {name: array} (for checkpoints)."""
        return {f"{i}.{k}": v for i, s in enumerate(self.state) for k, v in s.items()}

    def check_state_arrays(self, arrays: dict) -> None:
        """Refuse (ValueError) ``state_arrays()`` from elsewhere that do not fit this optimizer: a
        key naming no parameter, an array of another shape than its parameter."""
        for key, value in arrays.items():
            index, _, name = key.partition(".")
            if not (index.isdigit() and int(index) < len(self.params) and name):
                raise ValueError(f"optimizer tensor {key!r} names no parameter of the optimizer "
                                 f"({len(self.params)} parameters)")
            shape = tuple(self.params[int(index)].data.shape)
            if tuple(value.shape) != shape:
                raise ValueError(f"optimizer tensor {key!r} has shape {tuple(value.shape)}, but "
                                 f"parameter {index} has {shape}")

    def load_state_arrays(self, arrays: dict, step_count: int) -> None:
        """Put back ``state_arrays()`` (from a checkpoint), each array on the backend of the
        parameter it belongs to (a model on the GPU gets its moments on the GPU, whatever the
        process's default backend)."""
        self.state = [{} for _ in self.params]
        for key, value in arrays.items():
            index, name = key.split(".", 1)
            owner = self.params[int(index)]
            self.state[int(index)][name] = backend.to_device(value, owner.backend)
        self.step_count = int(step_count)
        self._on_device = None  # made again from the numbers at the next step


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov momentum and L2 decay.

    As in PyTorch (dampening 0): ``g = grad + weight_decay * p``;
    with momentum, ``buf = g`` on the first step, then ``buf = momentum * buf + g``, and
    ``g = g + momentum * buf`` (Nesterov) or ``g = buf``; finally ``p -= lr * g``.
    """

    def __init__(self, params, lr: float, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0):
        super().__init__(params, lr)
        self.momentum = _check_number(momentum, "momentum", "SGD", low=0)
        self.weight_decay = _check_number(weight_decay, "weight_decay", "SGD", low=0)
        if nesterov and self.momentum == 0:
            raise ValueError("SGD: nesterov=True needs momentum > 0")
        self.nesterov = bool(nesterov)

    def _update(self, p, grad, state):
        if self.weight_decay:
            grad = grad + self.weight_decay * p.data
        if self.momentum:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = grad.copy()
            else:
                buf = state["momentum_buffer"]
                buf *= self.momentum
                buf += grad
            buf = state["momentum_buffer"]
            grad = grad + self.momentum * buf if self.nesterov else buf
        p.data -= self.rate * grad


class Adam(Optimizer):
    """Adam (Kingma & Ba), with PyTorch's bias correction and L2 ``weight_decay``.

    ``g = grad + weight_decay * p``; ``m = b1*m + (1-b1)*g``; ``v = b2*v + (1-b2)*g*g``;
    ``p -= lr / (1 - b1**t) * m / (sqrt(v) / sqrt(1 - b2**t) + eps)``.
    """

    decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, lr)
        name = type(self).__name__
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"{name}: betas must be a pair (beta1, beta2), got {betas!r}")
        self.betas = tuple(_check_number(b, "beta", name, low=0, high=1, high_open=True)
                           for b in betas)
        self.eps = _check_number(eps, "eps", name, low=0)
        self.weight_decay = _check_number(weight_decay, "weight_decay", name, low=0)

    def _update(self, p, grad, state):
        if "exp_avg" not in state:
            xp = backend.array_module(p.data)
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
        # the update itself is a kernel (kernels/numpy_kernels.adam_update is the readable
        # version) so that the numba and cupy backends do it in one fused pass
        backend.kernels(p.backend).adam_update(
            p.data, grad, state["exp_avg"], state["exp_avg_sq"], self.rate, *self.betas, self.eps,
            self.count, self.weight_decay, self.decoupled)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as PyTorch's AdamW:
    ``p *= 1 - lr * weight_decay`` before the Adam step, instead of adding ``wd * p`` to the
    gradient. The default ``weight_decay`` is 0.01, as in PyTorch."""

    decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)


def check_training_lr(optimizer: Optimizer, schedules=(), where: str = "fit") -> float:
    """Refuse to train with a learning rate of 0 (or less); returns the rate training peaks at.

    The optimizers accept ``lr=0`` (it freezes the weights, and schedules such as cosine
    annealing legitimately decay to 0), but *starting* a training run whose learning rate is 0
    everywhere learns nothing: it is a mistake (``--lr 0``, a typo), not a request. The peak is
    the optimizer's rate or the largest rate the ``schedules`` (:class:`LRScheduler`, stepped by
    the run) start from, so a warm-up that begins at 0 is fine.
    """
    rates = [optimizer.lr] + [getattr(schedule, name, 0.0) for schedule in schedules
                              for name in ("base_lr", "max_lr")]
    peak = max(rates)
    if not peak > 0:
        raise ValueError(f"{where}: the learning rate is {optimizer.lr}; training needs a "
                         "learning rate > 0 (lr=0 would leave every weight unchanged)")
    return peak


# -- learning-rate schedules ------------------------------------------------------------------

class LRScheduler:
    """Sets ``optimizer.lr`` from a formula of the step count (call ``step()`` once per epoch or
    once per batch, consistently). Like PyTorch, the constructor applies step 0."""

    def __init__(self, optimizer: Optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: expected an Optimizer, got "
                            f"{type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_step = 0
        optimizer.lr = self.lr_at(0)

    def lr_at(self, step: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def step(self) -> float:
        self.last_step += 1
        self.optimizer.lr = self.lr_at(self.last_step)
        return self.optimizer.lr


class StepLR(LRScheduler):
    """``lr = base_lr * gamma ** (step // step_size)``."""

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1):
        self.step_size = check_positive_int(step_size, "step_size", "StepLR")
        self.gamma = _check_number(gamma, "gamma", "StepLR", low=0)
        super().__init__(optimizer)

    def lr_at(self, step):
        return self.base_lr * self.gamma ** (step // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * step / T_max)) / 2``; stays at
    eta_min after T_max steps."""

    def __init__(self, optimizer, T_max: int, eta_min: float = 0.0):  # noqa: N803 (PyTorch name)
        self.T_max = check_positive_int(T_max, "T_max", "CosineAnnealingLR")
        self.eta_min = _check_number(eta_min, "eta_min", "CosineAnnealingLR", low=0)
        super().__init__(optimizer)

    def lr_at(self, step):
        step = min(step, self.T_max)
        return self.eta_min + (self.base_lr - self.eta_min) * (
            1 + math.cos(math.pi * step / self.T_max)) / 2


class LinearWarmup(LRScheduler):
    """Linear warm-up from ``start_factor * base_lr`` to ``base_lr`` over ``warmup_steps``
    (PyTorch's LinearLR), then hands over to ``after`` (another schedule's formula) if given."""

    def __init__(self, optimizer, warmup_steps: int, start_factor: float = 0.1,
                 after: LRScheduler | None = None):
        self.warmup_steps = check_positive_int(warmup_steps, "warmup_steps", "LinearWarmup")
        self.start_factor = _check_number(start_factor, "start_factor", "LinearWarmup",
                                          low=0, high=1)
        self.after = after
        super().__init__(optimizer)

    def lr_at(self, step):
        if step < self.warmup_steps:
            factor = self.start_factor + (1 - self.start_factor) * step / self.warmup_steps
            return self.base_lr * factor
        if self.after is not None:
            return self.after.lr_at(step - self.warmup_steps)
        return self.base_lr


class OneCycleLR(LRScheduler):
    """One-cycle policy (Smith): cosine warm-up from ``max_lr / div_factor`` to ``max_lr``
    over ``pct_start * total_steps``, then cosine annealing to
    ``max_lr / (div_factor * final_div_factor)``. Step it once per batch. The optimizer's lr
    at construction is ignored (``max_lr`` sets the scale), as in PyTorch."""

    def __init__(self, optimizer, max_lr: float, total_steps: int, pct_start: float = 0.3,
                 div_factor: float = 25.0, final_div_factor: float = 1e4):
        self.total_steps = check_positive_int(total_steps, "total_steps", "OneCycleLR", minimum=2)
        self.max_lr = check_learning_rate(max_lr, "OneCycleLR")
        self.pct_start = _check_number(pct_start, "pct_start", "OneCycleLR", low=0, high=1)
        for what, value in (("div_factor", div_factor), ("final_div_factor", final_div_factor)):
            # they divide the peak rate: 0 or less would give an infinite or negative rate
            if _check_number(value, what, "OneCycleLR") <= 0:
                raise ValueError(f"OneCycleLR: {what} must be > 0, got {value}")
        self.initial_lr = self.max_lr / div_factor
        self.min_lr = self.initial_lr / final_div_factor
        super().__init__(optimizer)

    @staticmethod
    def _cos(start, end, fraction):
        return end + (start - end) * (1 + math.cos(math.pi * fraction)) / 2

    def lr_at(self, step):
        step = min(step, self.total_steps - 1)
        warm_end = max(1.0, self.pct_start * self.total_steps - 1)
        if step <= warm_end:
            return self._cos(self.initial_lr, self.max_lr, step / warm_end)
        rest = max(1.0, self.total_steps - 1 - warm_end)
        return self._cos(self.max_lr, self.min_lr, (step - warm_end) / rest)
