"""Residual connection: ``y = f(x) + g(x)``, with g the identity or a projection (He et al., 2016)."""

from __future__ import annotations

import math

from .activations import ReLU
from .base import Buffer, Layer, Parameter
from .conv import Conv2D
from .normalization import BatchNorm2D


def _layer_list(layers, what: str) -> list[Layer]:
    if isinstance(layers, Layer):
        layers = [layers]
    if not isinstance(layers, (list, tuple)):
        raise TypeError(f"Residual: {what} must be a list of minicnn layers, got "
                        f"{type(layers).__name__}")
    layers = list(layers)
    if not layers:
        raise ValueError(f"Residual: {what} must hold at least one layer")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(f"Residual: {what} item {i} is a {type(layer).__name__}, expected a "
                            "minicnn Layer")
    return layers


class Residual(Layer):
    """A block that adds its input back to what its layers make of it: ``y = f(x) + g(x)``.

    ``f`` is ``body``, a list of layers applied in order (typically Conv-BN-ReLU-Conv-BN).
    ``g`` is the *shortcut*: the identity when ``shortcut`` is None, otherwise a list of layers
    (a *projection*, typically a 1x1 Conv2D with the body's stride, optionally followed by
    BatchNorm2D) for when the body changes the number of channels or the resolution, since
    the sum needs two tensors of one shape. The usual ReLU after the sum is a separate layer
    placed after the block.

    Shapes, for an input x of shape (N, C, H, W) and a body ending in F channels at stride S:
    ``a = f(x)`` and ``b = g(x)`` both have shape (N, F, H', W') with H' = ceil(H / S) for
    3x3 "same" convolutions; the identity shortcut needs F = C and S = 1.

    **Backward.** The sum copies dL/dy to both of its operands: ``dL/da = dL/db = dy``, shape
    (N, F, H', W'). x reaches the loss along two paths, so its gradient is the sum of what
    each path sends back (the same rule that makes col2im add overlapping windows):

    - ``dx_body = f.backward(dy)``: the body's layers in reverse order, each filling its
      parameters' gradients; shape (N, C, H, W);
    - ``dx_short = dy`` for the identity, else ``g.backward(dy)`` (the projection's layers in
      reverse; a 1x1 stride-S convolution spreads dy back to the pixels it sampled);
    - ``dL/dx = dx_body + dx_short``, shape (N, C, H, W).

    The identity path is why deep residual networks train: whatever the body's gradients do,
    ``dy`` reaches the input unchanged.

    **Bookkeeping.** ``parameters()`` lists the body's parameters in order, then the
    shortcut's; ``named_arrays()`` names them ``"body.<i>.<name>"`` and
    ``"shortcut.<i>.<name>"`` (unique keys in a model file); ``config()`` stores the inner
    layers' own configs, so a model file or ``from_config`` rebuilds the block. A Dropout
    inside the block is seeded by ``set_rng`` like any other, but training checkpoints record
    the random state of top-level layers only: keep Dropout outside residual blocks (as the
    presets do) when a resumed run must repeat an uninterrupted one exactly.
    """

    #: constructor arguments that hold layers (``io.build_from_config`` builds them from
    #: their configs, recursively)
    sublayer_fields = ("body", "shortcut")

    def __init__(self, body, shortcut=None):
        super().__init__()
        self.body = _layer_list(body, "body")
        self.shortcut = None if shortcut is None else _layer_list(shortcut, "shortcut")

    @classmethod
    def basic_block(cls, in_channels: int, out_channels: int, stride: int = 1,
                    kernel_size: int = 3) -> Residual:
        """The ResNet "basic block": Conv-BN-ReLU-Conv-BN plus the shortcut.

        The first convolution has the stride; a projection shortcut (1x1 Conv2D with the same
        stride, then BatchNorm2D) is added when the stride or the channel count changes.
        Convolutions have no bias: the BatchNorm after each one would cancel it.
        """
        pad = kernel_size // 2
        body = [Conv2D(in_channels, out_channels, kernel_size, stride=stride, padding=pad,
                       bias=False),
                BatchNorm2D(out_channels), ReLU(),
                Conv2D(out_channels, out_channels, kernel_size, padding=pad, bias=False),
                BatchNorm2D(out_channels)]
        shortcut = None
        if stride != 1 or in_channels != out_channels:
            shortcut = [Conv2D(in_channels, out_channels, 1, stride=stride, bias=False),
                        BatchNorm2D(out_channels)]
        return cls(body, shortcut)

    # -- structure ------------------------------------------------------------------------
    def sublayers(self) -> list[tuple[str, Layer]]:
        """``(prefix, layer)`` for every inner layer, in a fixed order: body, then shortcut."""
        named = [(f"body.{i}", layer) for i, layer in enumerate(self.body)]
        named += [(f"shortcut.{i}", layer) for i, layer in enumerate(self.shortcut or [])]
        return named

    def parameters(self) -> list[Parameter]:
        return [p for _, layer in self.sublayers() for p in layer.parameters()]

    def buffers(self) -> list[Buffer]:
        return [b for _, layer in self.sublayers() for b in layer.buffers()]

    def named_arrays(self) -> dict[str, Parameter | Buffer]:
        return {f"{prefix}.{name}": array for prefix, layer in self.sublayers()
                for name, array in layer.named_arrays().items()}

    def initialize(self, rng):
        for _, layer in self.sublayers():
            layer.initialize(rng)

    def set_rng(self, rng):
        layers = self.sublayers()
        for (_, layer), child in zip(layers, rng.spawn(len(layers))):
            layer.set_rng(child)

    def astype(self, dtype) -> Residual:
        for _, layer in self.sublayers():
            layer.astype(dtype)
        return self

    def to(self, backend_name: str) -> Residual:
        for _, layer in self.sublayers():
            layer.to(backend_name)
        self._cache = None
        return self

    def config(self):
        return {"body": [{"type": layer.name, **layer.config()} for layer in self.body],
                "shortcut": None if self.shortcut is None
                else [{"type": layer.name, **layer.config()} for layer in self.shortcut]}

    def describe(self):
        body = " ".join(layer.describe() for layer in self.body)
        short = ("identity" if self.shortcut is None
                 else " ".join(layer.describe() for layer in self.shortcut))
        return f"Residual[{body} | {short}]"

    # -- shapes ---------------------------------------------------------------------------
    @staticmethod
    def _chain(layers, shape, what):
        for i, layer in enumerate(layers):
            try:
                shape = layer.output_shape(shape)
            except ValueError as err:
                raise ValueError(f"Residual: {what} layer {i} ({layer.name}): {err}") from None
        return tuple(shape)

    def output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        out = self._chain(self.body, input_shape, "body")
        short = input_shape if self.shortcut is None else \
            self._chain(self.shortcut, input_shape, "shortcut")
        if out != short:
            fix = (" (add a projection shortcut, e.g. a 1x1 Conv2D with the body's stride)"
                   if self.shortcut is None else "")
            raise ValueError(
                f"Residual: the body maps input (N, {', '.join(map(str, input_shape))}) to "
                f"(N, {', '.join(map(str, out))}) but the shortcut gives "
                f"(N, {', '.join(map(str, short))}); they must match to be added{fix}"
            )
        return out

    def flops(self, input_shape):
        total, shape = 0, tuple(input_shape)
        for layer in self.body:
            total += layer.flops(shape)
            shape = layer.output_shape(shape)
        short = tuple(input_shape)
        for layer in self.shortcut or []:
            total += layer.flops(short)
            short = layer.output_shape(short)
        return total + math.prod(shape)  # one addition per output element

    def workspace_bytes(self, input_shape, itemsize):
        # The inner layers' outputs stay alive in their caches, and each inner Conv2D keeps its
        # own im2col rows: count both, as Sequential does for its own layers (on the high side).
        total = 0
        for layers in (self.body, self.shortcut or []):
            shape = tuple(input_shape)
            for layer in layers:
                total += layer.workspace_bytes(shape, itemsize)
                shape = layer.output_shape(shape)
                total += 3 * itemsize * math.prod(shape)
        return total

    # -- forward / backward ---------------------------------------------------------------
    def _forward(self, x, training):
        # forward() (or Sequential) has checked x and every inner shape through output_shape,
        # so the inner layers run without re-validating
        a = x
        for layer in self.body:
            a = layer._run_forward(a, training)
        b = x
        for layer in self.shortcut or []:
            b = layer._run_forward(b, training)
        return self._remember(a + b)  # a new array: inner layers may cache their outputs

    def _backward(self, dy):
        need_dx = self._input_grad
        dx_body = dy
        for layer in reversed(self.body):
            # the first inner layer need not compute dL/dx when no one needs ours
            dx_body = layer.backward(dx_body, input_grad=need_dx or layer is not self.body[0])
        dx_short = dy
        for layer in reversed(self.shortcut or []):
            dx_short = layer.backward(dx_short, input_grad=need_dx or layer is not self.shortcut[0])
        if not need_dx:
            return None
        # out of place: dx_body may be a view of an inner array (e.g. Flatten's reshape of dy)
        return dx_body + dx_short


__all__ = ["Residual"]
