"""Sequential: a stack of layers, run forward in order and backward in reverse; itself a layer."""

from __future__ import annotations

import math

import numpy as np

from .. import backend
from ..cuda_graphs import RecordedLoop
from ..validation import check_float_array, check_positive_int, is_int
from . import fused
from .base import Layer, check_output_gradient
from .registry import inner_arrays, register


@register
class Sequential(Layer):
    """Layers applied one after another: ``y = layer_k(...layer_2(layer_1(x)))``.

    Backward applies the chain rule in reverse: each layer turns dL/d(its output) into
    dL/d(its input) (filling its parameters' gradients on the way) and hands it down.

    A Sequential is itself a :class:`Layer` (its ``children()`` are its layers, named "0", "1",
    ...), so it can sit inside another container: ``Residual`` is built from two of them.

    ``seed`` re-draws every layer's initial weights from ``np.random.default_rng(seed)``, in
    order, and gives each stochastic layer (Dropout) its own generator derived from the same
    seed, so one seed means one model and one training run.
    """

    sublayer_fields = ("layers",)

    def __init__(self, layers, seed: int | None = None, input_shape=None):
        super().__init__()
        if isinstance(layers, Layer) or not hasattr(layers, "__iter__"):
            raise TypeError(f"Sequential: expected a list of minicnn layers, got "
                            f"{type(layers).__name__}")
        layers = list(layers)
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(
                    f"Sequential: item {i} is a {type(layer).__name__}, expected a minicnn Layer"
                )
        if not layers:
            raise ValueError("Sequential: expected at least one layer")
        _check_each_layer_once(layers)
        self.layers = layers
        self.seed = seed
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self._shape_cache: dict[tuple, list[tuple]] = {}
        self.metadata: dict = {}  # free-form JSON saved with the model (class names, ...)
        if seed is not None:
            self.initialize(seed)

    def children(self):
        return [(str(i), layer) for i, layer in enumerate(self.layers)]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __getitem__(self, index):
        return self.layers[index]  # a layer, or a list of layers for a slice

    # -- construction -------------------------------------------------------------------
    def initialize(self, seed) -> None:
        """Re-draw all weights. Given an int seed, also re-seed every stochastic layer from it
        (as ``Sequential(..., seed=...)`` does); given a Generator, draw the weights from it."""
        if isinstance(seed, np.random.Generator):
            super().initialize(seed)
            return
        weights_seq, noise_seq = np.random.SeedSequence(seed).spawn(2)
        super().initialize(np.random.default_rng(weights_seq))
        self.set_rng(np.random.default_rng(noise_seq))

    # -- shapes ---------------------------------------------------------------------------
    def output_shapes(self, input_shape) -> list[tuple]:
        """Per-sample output shape of every layer for a per-sample ``input_shape``.

        Raises ValueError naming the first layer that cannot take its input (wrong channel
        count, image too small for the network, ...).
        """
        input_shape = tuple(int(d) for d in input_shape)
        if input_shape not in self._shape_cache:
            shapes, shape = [], input_shape
            for i, layer in enumerate(self.layers):
                try:
                    shape = layer.output_shape(shape)
                except ValueError as err:
                    raise ValueError(
                        f"layer {i} ({layer.name}) cannot take input of per-sample shape "
                        f"{shape} (model input {input_shape}): {err}"
                    ) from None
                shapes.append(tuple(shape))
            self._shape_cache[input_shape] = shapes
        return self._shape_cache[input_shape]

    def output_shape(self, input_shape) -> tuple:
        return self.output_shapes(input_shape)[-1]

    def algorithms(self, input_shape) -> list[str]:
        shapes = [tuple(input_shape), *self.output_shapes(input_shape)[:-1]]
        return [name for layer, shape in zip(self.layers, shapes) for name in layer.algorithms(shape)]

    def flops(self, input_shape) -> int:
        shapes = [tuple(input_shape), *self.output_shapes(input_shape)[:-1]]
        return sum(layer.flops(shape) for layer, shape in zip(self.layers, shapes))

    def workspace_bytes(self, input_shape, itemsize: int) -> int:
        """Every layer's workspace, plus its output, which stays alive in its cache until the
        next call, and a temporary as large as an output (max pooling's indices, a
        normalization's intermediate): 2 outputs' worth, on the high side (a pass that runs
        layers as one, see layers/fused.py, writes one output for several)."""
        input_shape = tuple(int(d) for d in input_shape)
        shapes = self.output_shapes(input_shape)
        total = itemsize * 2 * sum(math.prod(s) for s in shapes)
        for layer, shape in zip(self.layers, [input_shape, *shapes[:-1]]):
            total += layer.workspace_bytes(shape, itemsize)
        return int(total)

    def inference_bytes_per_sample(self, input_shape, dtype=np.float32) -> int:
        """Estimated memory of one sample's inference forward pass, in bytes (on the high side).

        Every layer's output stays alive in its cache until the next call, a kernel may build a
        temporary as large as an output (max pooling's indices), and a Conv2D adds what its
        algorithm allocates per sample (``Layer.workspace_bytes``: im2col's columns and
        product; Winograd's blocks are sized to the cache, not to the batch). So:
        ``itemsize * (input + 2 * sum of the outputs) + sum of the workspaces``.
        """
        input_shape = tuple(int(d) for d in input_shape)
        itemsize = np.dtype(dtype).itemsize
        return itemsize * math.prod(input_shape) + self.workspace_bytes(input_shape, itemsize)

    def inference_batch_size(self, input_shape, dtype, requested: int, where: str) -> int:
        """The largest batch size <= ``requested`` whose forward pass fits the memory budget
        (``minicnn.backend.memory_budget()``); raises MemoryBudgetError when one sample does not."""
        per_sample = self.inference_bytes_per_sample(input_shape, dtype)
        budget = backend.memory_budget()
        if per_sample > budget:
            raise backend.MemoryBudgetError(
                f"{where}: one sample of shape {tuple(input_shape)} needs about "
                f"{per_sample / 2**20:,.1f} MiB of activations, more than the memory budget of "
                f"{budget / 2**20:,.1f} MiB; use smaller images or raise the budget with "
                "minicnn.backend.set_memory_budget(bytes) or $MINICNN_MEMORY_BUDGET_MB"
            )
        return max(1, min(int(requested), budget // max(1, per_sample)))

    # -- forward / backward: one pass, which can be watched layer by layer ------------------
    #
    # forward_steps and backward_steps are *the* pass: forward() and backward() run them to the
    # end, and everything that looks between the layers (gradient-flow diagnostics, the studio,
    # the trainer's search for the layer that diverged, Grad-CAM's forward_to/backward_to) reads
    # the values they hand out. A generator rather than hooks: the loop that watches is plain
    # code at the call site, it can stop at any layer, and nothing is left registered on the
    # layers. A Residual's body and shortcut are Sequentials, so the same steps open it up.

    def forward(self, x, training: bool = False, check_finite: bool = True):
        """Run x (N, C, H, W) through every layer; returns the last layer's output (logits).
        ``check_finite=False`` skips the scan of x for NaN and infinities (its type and shape
        are still checked): for a loop that checked its data once, as ``fit`` does, so that a
        GPU is not made to wait for the host at each step."""
        self._check_input(x, check_finite)
        return self._run_forward(x, training)

    def _check_input(self, x, check_finite: bool = True) -> None:
        check_float_array(x, f"Sequential (first layer {self.layers[0].name})", check_finite)
        self.output_shapes(x.shape[1:])  # validates the whole chain before any work
        if self.input_shape is None:
            self.input_shape = tuple(x.shape[1:])

    def forward_steps(self, x, training: bool = False, check_finite: bool = True):
        """The forward pass one layer at a time: yields ``(index, layer, y)`` right after
        ``layers[index]`` computed its output y from the previous one (x for the first).
        Running it to the end is ``forward(x, training)`` (without the pairs it fuses)."""
        self._check_input(x, check_finite)
        return self._steps_forward(x, training, 0)

    def _steps_forward(self, x, training, start):
        for index in range(start, len(self.layers)):
            layer = self.layers[index]
            x = layer._run_forward(x, training)
            yield index, layer, x

    def _forward(self, x, training):
        return self._remember(self._forward_layers(x, training, len(self.layers)))

    def _forward_layers(self, x, training, stop):
        # layers[:stop] as _steps_forward, but a BatchNorm2D or Residual + ReLU or a ReLU +
        # MaxPool2D pair (predicting: Conv2D + BatchNorm2D, + ReLU) may run as one pass
        # (layers.fused)
        runs = fused.fused_runs(self.layers[:stop])
        index = 0
        while index < stop:
            if index in runs:
                x = fused.forward(self.layers[index:index + runs[index]], x, training)
                index += runs[index]
            else:
                x = self.layers[index]._run_forward(x, training)
                index += 1
        return x

    def backward_steps(self, dy, input_grad: bool = True):
        """The backward pass one layer at a time, from the output down: yields
        ``(index, layer, dy, dx)`` once ``layers[index]`` has turned dy = dL/d(its output) into
        dx = dL/d(its input) and filled its parameters' ``.grad``; dx is the next dy. Running it
        to the end is ``backward(dy, input_grad)`` (the first layer's dx is None when
        ``input_grad`` is False: training never needs the gradient with respect to the images,
        and for a first Conv2D it is the most expensive part of its backward pass)."""
        self._check_output_gradient(dy)
        return self._steps_backward(dy, input_grad)

    def _steps_backward(self, dy, input_grad):
        for index in reversed(range(len(self.layers))):
            layer = self.layers[index]
            dx = layer.backward(dy, input_grad=input_grad or index > 0)
            yield index, layer, dy, dx
            dy = dx

    def _backward(self, dy, input_grad):
        # as _steps_backward, with the runs _forward fused run as one pass again
        starts = {start + length - 1: start for start, length in fused.fused_runs(self.layers).items()}
        index = len(self.layers) - 1
        while index >= 0:
            if index in starts:
                start = starts[index]
                dy = fused.backward(self.layers[start:index + 1], dy,
                                    input_grad=input_grad or start > 0)
                index = start - 1
            else:
                dy = self.layers[index].backward(dy, input_grad=input_grad or index > 0)
                index -= 1
        return dy

    def _check_output_gradient(self, dy) -> None:
        # against the last layer's output: forward_to/forward_from run the steps without forward
        last = self.layers[-1]
        if last._output_shape is None:
            raise RuntimeError("Sequential: backward() called before forward()")
        check_output_gradient(dy, last._output_shape,
                              f"{last.name} (layer {len(self.layers) - 1}, the model's last)")

    __call__ = forward

    # -- part of a pass (for interpretation: feature maps, Grad-CAM) -------------------------
    #
    # forward() == forward_from(forward_to(x, k), k) for every k, and backward_to(dy, k) is the
    # part of backward() that runs through the layers after k: the same steps, stopped or
    # started at layer k. Each layer still caches its own last forward, so call forward_to and
    # forward_from (in that order) before backward_to, exactly as for backward.

    def layer_index(self, layer) -> int:
        """The position of ``layer`` in ``self.layers``: an int (negative counts from the end,
        as for lists) or one of the model's Layer objects. Raises ValueError/TypeError naming
        the valid range when the index is out of range or the layer is not in this model."""
        count = len(self.layers)
        if isinstance(layer, Layer):
            for i, candidate in enumerate(self.layers):
                if candidate is layer:
                    return i
            raise ValueError(f"Sequential: {layer.describe()} is not one of this model's layers")
        if not is_int(layer):
            raise TypeError(f"Sequential: a layer index must be an int or a Layer, got {layer!r}")
        if not -count <= layer < count:
            raise ValueError(f"Sequential: layer index {layer} is out of range; this model has "
                             f"{count} layers (valid indices 0..{count - 1}, or -{count}..-1)")
        return int(layer) % count

    def forward_to(self, x, layer_index, training: bool = False):
        """The output of ``layers[layer_index]`` for x: runs layers 0..layer_index only."""
        stop = self.layer_index(layer_index)
        for index, _, y in self.forward_steps(x, training):
            if index == stop:
                return y

    def forward_from(self, h, layer_index, training: bool = False):
        """Finish a forward pass: run the layers *after* ``layers[layer_index]`` on h, which is
        that layer's output (e.g. from :meth:`forward_to`); returns the model's output."""
        start = self.layer_index(layer_index)
        where = f"Sequential.forward_from (output of layer {start}, {self.layers[start].name})"
        check_float_array(h, where)
        shape = tuple(h.shape[1:])
        for i in range(start + 1, len(self.layers)):  # validate the rest of the chain first
            try:
                shape = self.layers[i].output_shape(shape)
            except ValueError as err:
                raise ValueError(f"{where}: layer {i} ({self.layers[i].name}) cannot take "
                                 f"per-sample shape {shape}: {err}") from None
        return _last_value(self._steps_forward(h, training, start + 1), h)

    def backward_to(self, dy, layer_index):
        """dL/d(output of ``layers[layer_index]``) from dy = dL/d(model output).

        Back-propagates through the layers after ``layer_index`` only (their parameters'
        ``.grad`` are written, as by :meth:`backward`); the layers up to ``layer_index`` are not
        touched. ``backward_to(dy, -1)`` returns dy itself.
        """
        stop = self.layer_index(layer_index)
        if stop == len(self.layers) - 1:
            return dy
        for index, _, _, dx in self.backward_steps(dy):
            if index == stop + 1:
                return dx

    def first_not_finite(self, x, dy=None) -> str:
        """Where a non-finite value first appears, in words: a layer whose parameters are not
        finite; with ``dy`` (the gradient of the last training pass's output, which the layers'
        caches still hold) the first layer, from the output down, whose backward pass gives a
        non-finite gradient; else the first layer whose output for ``x`` is not finite in
        inference mode (which replaces the caches). The training loop's guard says it."""
        xp = backend.xp(self.backend)

        def finite(array):
            return bool(xp.isfinite(array).all())

        for i, layer in enumerate(self.layers):
            for p in layer.parameters():
                if not finite(p.data):
                    return f"layer {i} ({layer.name}) has non-finite {p.name} values"
        if dy is not None:
            for i, layer, _, dx in self.backward_steps(dy):
                for p in layer.parameters():
                    if not finite(p.grad):
                        return (f"layer {i} ({layer.name}) is the first to produce a non-finite "
                                f"gradient, for its {p.name} (backward pass)")
                if not finite(dx):
                    return (f"layer {i} ({layer.name}) is the first to produce a non-finite "
                            "gradient, for its input (backward pass)")
        for i, layer, y in self.forward_steps(x, training=False):
            if not finite(y):
                return f"layer {i} ({layer.name}) is the first to output a non-finite value"
        return "every layer's output is finite in inference mode (the loss itself overflowed?)"

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.zero_grad()

    # -- inference ----------------------------------------------------------------------------
    def predict(self, x, batch_size: int = 256, record: bool | None = None) -> np.ndarray:
        """Class probabilities (softmax of the logits) as a numpy array of shape (N, classes).

        Runs in batches of at most ``batch_size`` images, fewer when a batch would need more
        activation memory than ``minicnn.backend.memory_budget()`` (default 1 GiB), so a large
        dataset never builds one giant buffer; raises MemoryBudgetError when even one sample
        does not fit. On the cupy backend the pass is recorded as a CUDA graph and replayed for
        the later batches of a size (:class:`minicnn.cuda_graphs.RecordedLoop`; ``record=False``
        runs every batch as written). A Conv2D and the BatchNorm2D after it run as one
        convolution, the normalization folded into its filters (:mod:`minicnn.layers.fused`;
        equal to the two layers' output to rounding, off with ``minicnn.set_fusion(False)``).
        """
        batch_size = check_positive_int(batch_size, "batch_size", "Sequential.predict")
        check_float_array(x, f"Sequential.predict (first layer {self.layers[0].name})")
        batch_size = self.inference_batch_size(x.shape[1:], x.dtype, batch_size,
                                               "Sequential.predict")
        xp = backend.xp(self.backend)
        probabilities = RecordedLoop(self, self._probabilities, record, "Sequential.predict")
        with fused.predicting():  # no backward pass follows: a BatchNorm2D folds into its Conv2D
            return np.concatenate([backend.to_numpy(probabilities(xp.asarray(x[i:i + batch_size]))[0])
                                   for i in range(0, x.shape[0], batch_size)], axis=0)

    def _probabilities(self, batch) -> tuple:
        logits = self.forward(batch, training=False, check_finite=False)  # predict checked x
        xp = backend.array_module(logits)
        probs = xp.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        return (probs,)

    # -- description ----------------------------------------------------------------------------
    def summary(self, input_shape=None, print_fn=print) -> str:
        """A table of every layer's output shape, parameter count and FLOPs per sample, and the
        algorithm its convolutions run with on this model's backend (im2col or Winograd).

        ``input_shape`` is the per-sample shape (C, H, W); it defaults to the shape given at
        construction or seen by the first forward pass.
        """
        input_shape = tuple(input_shape) if input_shape is not None else self.input_shape
        if input_shape is None:
            raise ValueError(
                "Sequential.summary: input shape unknown; pass summary(input_shape=(C, H, W)) "
                "or build the model with Sequential(..., input_shape=(C, H, W))"
            )
        shapes = self.output_shapes(input_shape)
        rows = [("#", "layer", "output shape", "params", "FLOPs", "algorithm")]
        total_params = total_flops = 0
        shape = input_shape
        for i, (layer, out) in enumerate(zip(self.layers, shapes)):
            params = sum(int(math.prod(p.data.shape)) for p in layer.parameters())
            flops = layer.flops(shape)
            total_params += params
            total_flops += flops
            rows.append((str(i), layer.describe(), str(("N",) + out).replace("'", ""),
                         f"{params:,}", f"{flops:,}", " + ".join(layer.algorithms(shape))))
            shape = out
        widths = [max(len(r[k]) for r in rows) for k in range(6)]
        fmt = "  ".join(f"{{:{'>' if k in (0, 3, 4) else '<'}{w}}}" for k, w in enumerate(widths))
        rule = "-" * (sum(widths) + 10)
        lines = [fmt.format(*rows[0]).rstrip(), rule]
        lines += [fmt.format(*r).rstrip() for r in rows[1:]]
        lines.append(rule)
        lines.append(f"input (N, {', '.join(map(str, input_shape))}); "
                     f"{total_params:,} parameters; {total_flops:,} FLOPs per sample (forward)")
        text = "\n".join(lines)
        if print_fn is not None:
            print_fn(text)
        return text

    def num_parameters(self) -> int:
        return sum(int(math.prod(p.data.shape)) for p in self.parameters())

    def config(self) -> dict:
        """The architecture as plain JSON values: ``{"layers": [{"type": ..., ...}], ...}``."""
        return {
            "layers": [{"type": layer.name, **layer.config()} for layer in self.layers],
            "input_shape": list(self.input_shape) if self.input_shape is not None else None,
        }

    @classmethod
    def array_shapes(cls, config):
        return inner_arrays(config, "layers", prefix="")  # the inner layers', one by one

    def to_torch(self, bridge):
        return bridge.nn.Sequential(*[layer.to_torch(bridge) for layer in self.layers])

    def to_onnx(self, graph, x, name):
        for index, layer in enumerate(self.layers):
            x = layer.to_onnx(graph, x, f"{name}.{index}" if name else str(index))
        return x

    def describe(self):
        return f"Sequential[{' '.join(layer.describe() for layer in self.layers)}]"

    # -- files -------------------------------------------------------------------------------
    def save(self, path, metadata: dict | None = None) -> None:
        """Write the model (weights + architecture) to one safetensors file, atomically."""
        from .. import io

        io.write_model_file(path, self.config(), self.named_arrays(),
                            self.metadata if metadata is None else metadata)

    def __repr__(self) -> str:
        inner = ",\n".join(f"  {layer!r}" for layer in self.layers)
        return f"Sequential([\n{inner}\n])"


def as_sequential(layers, where: str) -> Sequential:
    """A container's field (``where``: ``"Residual: body"``) as a Sequential: the one given, or
    one made of a layer or a list of layers; its errors name the field."""
    if isinstance(layers, Sequential):
        return layers
    try:
        return Sequential([layers] if isinstance(layers, Layer) else layers)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{where}: {str(err).removeprefix('Sequential: ')}") from None


def field_output_shape(layers: Sequential, input_shape, where: str) -> tuple:
    """``layers.output_shape(input_shape)`` for a container's field; its errors name the field."""
    try:
        return layers.output_shape(input_shape)
    except ValueError as err:
        raise ValueError(f"{where} {err}") from None


def _last_value(steps, value):
    """Run a pass's steps to the end; returns the value the last step handed on (the output, or
    dL/dx), or ``value`` when there are no steps."""
    for step in steps:
        value = step[-1]
    return value


def _check_each_layer_once(layers) -> None:
    """Refuse a layer object that appears twice (directly or inside a Residual).

    A layer keeps what its last forward pass saw (its input, mask or winners) for its backward
    pass. Used twice, its backward would run on the second use's input for both uses, and its
    weight gradient would hold one use's share where the two must add up: every gradient would
    be silently wrong, so such a model is refused here, where it is built."""
    seen: dict[int, str] = {}

    def visit(layer, path: str) -> None:
        if id(layer) in seen:
            raise ValueError(
                f"Sequential: layer {path} ({layer.describe()}) is the same object as layer "
                f"{seen[id(layer)]}. A layer keeps what its last forward pass saw for its "
                "backward pass, so one object used in two places would get wrong gradients "
                "(each use's share must add up). Use a new layer for each place "
                "(copy.deepcopy(layer) copies one, weights included); sharing weights between "
                "two places is not supported.")
        seen[id(layer)] = path
        for name, child in layer.children():
            visit(child, f"{path}.{name}")

    for index, layer in enumerate(layers):
        visit(layer, str(index))
