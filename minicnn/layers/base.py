"""Layer, Parameter and Buffer: the small contract every layer follows.

A layer is two functions and their bookkeeping:

- ``forward(x, training=False) -> y`` computes the output and keeps what the backward pass
  will need (the "cache");
- ``backward(dy) -> dx`` receives dL/dy, the gradient of the loss with respect to the layer's
  output, writes dL/dparameter into every ``Parameter.grad``, and returns dL/dx for the layer
  below. By the chain rule, dL/dx only needs dL/dy and the local derivative dy/dx.

``backward`` *overwrites* ``.grad`` (one backward call describes one batch); call it after the
forward pass of the same batch.

Subclasses implement ``_forward(x, training)``, ``_backward(dy, input_grad)`` (``input_grad``
False: nobody needs dL/dx, return None if skipping it saves work) and ``output_shape``; the public
``forward``/``backward`` wrappers validate inputs so a mistake surfaces as a clear error that
names the layer instead of a traceback deep inside a kernel.

**Layers inside layers.** A container (``Sequential``, ``Residual``) is a layer whose
``children()`` are layers. Everything that walks a network, naming its arrays for a model file,
listing its parameters, seeding its dropout layers, moving it to another backend, does so through
``children()``, so a layer nested at any depth keeps all of its state.

**Backends.** A layer computes with the kernels of its own backend (``self.backend``, see
:mod:`minicnn.backend`): the default backend when it was created, or the one ``to()`` moved it to.
Two models on different backends can live side by side in one process.
"""

from __future__ import annotations

import inspect
import re

import numpy as np

from .. import backend
from ..validation import check_float_array, is_int
from .registry import inner_arrays


class Parameter:
    """A trainable array (``.data``) and the gradient of the loss with respect to it (``.grad``).

    ``backend`` names the backend whose kernels update it (an optimizer asks); the layer that owns
    the parameter keeps it in step with its own."""

    def __init__(self, data, name: str = ""):
        self.data = data
        self.grad = backend.array_module(data).zeros_like(data)
        self.name = name
        self.backend = backend.get_backend()

    @property
    def shape(self):
        return self.data.shape

    def zero_grad(self) -> None:
        self.grad = backend.array_module(self.data).zeros_like(self.data)

    def __array__(self, dtype=None, copy=None):
        return np.asarray(backend.to_numpy(self.data), dtype=dtype)

    def __repr__(self) -> str:
        return f"Parameter({self.name or 'unnamed'}, shape={tuple(self.data.shape)}, dtype={self.data.dtype})"


class Buffer:
    """A non-trainable array a layer keeps as state (e.g. BatchNorm's running statistics)."""

    def __init__(self, data, name: str = ""):
        self.data = data
        self.name = name

    @property
    def shape(self):
        return self.data.shape

    def __array__(self, dtype=None, copy=None):
        return np.asarray(backend.to_numpy(self.data), dtype=dtype)

    def __repr__(self) -> str:
        return f"Buffer({self.name or 'unnamed'}, shape={tuple(self.data.shape)}, dtype={self.data.dtype})"


def pair(value, what: str, layer: str, minimum: int) -> tuple[int, int]:
    """Turn an int or a pair of ints into a validated (height, width) pair."""
    if is_int(value):
        value = (int(value), int(value))
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(is_int(v) for v in value)
    ):
        raise TypeError(f"{layer}: {what} must be an int or a pair of ints, got {value!r}")
    if min(value) < minimum:
        raise ValueError(f"{layer}: {what} must be >= {minimum}, got {tuple(value)}")
    return int(value[0]), int(value[1])


def pair_of(value):
    """``(v, v)`` for a single value, a tuple for a pair (torch's way of saying a size)."""
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def check_output_gradient(dy, output_shape: tuple, where: str) -> None:
    """Refuse a dL/dy that cannot belong to the last forward pass, whose output had
    ``output_shape``: a TypeError/ValueError starting with ``where`` (the layer's name)."""
    if not backend.is_array(dy):
        raise TypeError(f"{where}: backward expects dL/dy as a float array, got "
                        f"{type(dy).__name__}")
    if dy.dtype not in (np.float32, np.float64):
        raise TypeError(f"{where}: backward expects a float32 or float64 gradient, got dtype "
                        f"{dy.dtype}")
    if tuple(dy.shape) != output_shape:
        raise ValueError(f"{where}: backward expects dL/dy shaped like the last output "
                         f"{output_shape}, got {tuple(dy.shape)}")


def shape_text(shape) -> str:
    """``(1, 32, 28, 28)``: a shape as the studio's formulas print it."""
    return str(tuple(int(d) for d in shape))


def _word(symbol: str) -> str:
    """A regular expression for ``symbol`` as a whole name (``W`` is not in ``W2``, ``b`` not
    in ``dL/db``)."""
    return rf"(?<![\w/]){re.escape(symbol)}(?!\w)"


def _with_only_present(equation: str, symbols: dict) -> str | None:
    """The equation without the added term of what the layer lacks (``+ b`` closing it or
    ``b[f] +`` opening its right side, for a layer without a bias), or None when it still names
    one (``dL/db = ...``; an equation of GELU's other form)."""
    absent = [_word(name) + r"(?:\[[^\]]*\])?" for name, value in symbols.items() if value is None]
    for term in absent:
        equation = re.sub(rf"\s*\+\s*{term}$", "", equation)
        equation = re.sub(rf" = {term}\s*\+\s*", " = ", equation)
    return None if any(re.search(term, equation) for term in absent) else equation


class Layer:
    """Base class of every layer. See the module docstring for the contract."""

    #: constructor arguments that hold lists of layers (containers): a config stores the inner
    #: layers' own configs there, and building from a config builds them first. Each is kept as
    #: a Sequential (or None) of that name, a child of this layer that sees its input (Residual's
    #: body and shortcut): children, config, array shapes and costs are then the children's
    sublayer_fields: tuple[str, ...] = ()
    #: the torch.nn module this layer is (``minicnn.interop``), when there is exactly one; the
    #: constructor arguments the two share (the same keyword on both sides); its arrays as
    #: torch names them, ``{this layer's: torch's}`` (those in ``torch_transposed`` travel
    #: transposed); and the torch settings it has a counterpart for only at one value,
    #: ``{attribute: that value}`` (a module with another is refused, naming it)
    torch_name: str | None = None
    torch_arguments: tuple[str, ...] = ()
    torch_arrays: dict[str, str] = {}
    torch_transposed: tuple[str, ...] = ()
    torch_requires: dict[str, object] = {}
    #: the ONNX operator this layer is, when it is one; its attributes, ``{ONNX name: this
    #: layer's attribute (numbers as floats, pairs as lists; ONNX's pads repeat them for the
    #: far side), or a constant}``; and the arrays that follow x as its inputs, in ONNX's order
    onnx_op: str | None = None
    onnx_attributes: dict[str, object] = {}
    onnx_inputs: tuple[str, ...] = ()
    #: keeps its input's (C, H, W) grid and computes each channel from that channel alone
    #: (activations, BatchNorm, Dropout): Grad-CAM's default layer extends a convolution
    #: through such layers
    per_channel: bool = False
    #: a convolution, or a block with one inside (a Residual): what Grad-CAM and the feature
    #: maps look for
    convolutional: bool = False
    #: its ``weight`` is (F, C, KH, KW) filters that read as images (a convolution): what the
    #: report, the studio and conv_filters show as "the first layer's filters"
    filters: bool = False
    #: returns its input unchanged at inference (Dropout): CAM looks through it, ONNX omits it
    identity_at_inference: bool = False
    #: outputs exact zeros wherever its input is negative (ReLU): a unit that is zero for every
    #: image is dead, and GradientFlow counts those
    rectifies: bool = False
    #: averages each channel over all positions, (N, C, H, W) -> (N, C): CAM needs one before
    #: the classifier
    pools_globally: bool = False
    #: ``y = x @ W + b`` on a flat input, ``weight`` (D, K): CAM weighs the maps by its W
    linear_map: bool = False

    #: ``(forward, backward, words)`` run instead of the layer's own passes (:meth:`use_passes`)
    _passes: tuple | None = None

    def __init__(self):
        self._cache = None
        self._output_shape = None
        self.backend = backend.get_backend()

    # -- the public contract ------------------------------------------------------------
    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def kernels(self):
        """The hot kernels (im2col, matmul, pooling, ...) of this layer's backend, see
        :mod:`minicnn.kernels`."""
        return backend.kernels(self.backend)

    def forward(self, x, training: bool = False):
        """Validate ``x`` (N, ...) and return the layer's output for it."""
        check_float_array(x, self.name)
        self.output_shape(tuple(x.shape[1:]))
        return self._run_forward(x, training)

    def _run_forward(self, x, training):
        """``_forward`` on an input already checked (containers check the whole chain at once).
        The previous batch's cache is dropped first, so that its arrays can be reused."""
        self._cache, self._output_shape = None, None
        passes = self._passes
        y = passes[0](self, x, training) if passes and passes[0] else self._forward(x, training)
        if self._output_shape is None:
            raise RuntimeError(
                f"{self.name}: _forward must return its output through "
                "self._remember(output, cache=...), which keeps what backward needs and the "
                "output shape backward checks dy against (see Layer._remember)")
        return y

    def backward(self, dy, input_grad: bool = True):
        """Given dL/dy (shaped like the last output), fill parameter grads and return dL/dx.

        With ``input_grad=False`` a layer may skip computing dL/dx and return None (the first
        layer of a network never needs it during training; Conv2D and Dense then save a
        matrix multiply and, for Conv2D, the whole col2im).
        """
        self._check_output_gradient(dy)
        passes = self._passes
        if passes and passes[1]:
            return passes[1](self, dy, input_grad)
        return self._backward(dy, input_grad)

    def use_passes(self, forward=None, backward=None, words: str = "") -> Layer:
        """Run ``forward(layer, x, training)`` and ``backward(layer, dy, input_grad)`` instead of
        this layer's own ``_forward`` and ``_backward`` (None keeps its own): the layer stays
        what it is, its class, parameters and config, and its passes are someone else's, e.g. a
        learner's answers (``minicnn exercises train``, ``minicnn studio --layers``). ``forward``
        keeps what ``backward`` needs with ``layer._remember(y, cache=...)``. ``words`` say so
        beside the layer (:attr:`passes_words`). Returns the layer."""
        self._passes = (forward, backward, words) if forward or backward else None
        return self

    @property
    def passes_words(self) -> str:
        """What :meth:`use_passes` said of the passes this layer runs ("" for its own)."""
        return self._passes[2] if self._passes else ""

    def _check_output_gradient(self, dy) -> None:
        if self._output_shape is None:
            raise RuntimeError(f"{self.name}: backward() called before forward()")
        check_output_gradient(dy, self._output_shape, self.name)

    def __call__(self, x, training: bool = False):
        return self.forward(x, training)

    # -- what the layer holds, its own and its children's ----------------------------------
    def children(self) -> list[tuple[str, Layer]]:
        """``(name, layer)`` for every layer inside this one, in a fixed order: the Sequentials
        of ``sublayer_fields`` that are not None."""
        return [(field, layer) for field, layer in self._fields() if layer is not None]

    def _fields(self) -> list[tuple[str, Layer | None]]:
        return [(field, getattr(self, field)) for field in self.sublayer_fields]

    def _own(self, kind) -> dict:
        return {k: v for k, v in vars(self).items() if isinstance(v, kind)}

    def named_arrays(self) -> dict[str, Parameter | Buffer]:
        """Every Parameter and Buffer, own ones by attribute name (``"weight"``) and those of
        inner layers prefixed with their path (``"body.0.weight"``): a model file's tensors."""
        arrays = self._own((Parameter, Buffer))
        for prefix, child in self.children():
            arrays.update({f"{prefix}.{name}": a for name, a in child.named_arrays().items()})
        return arrays

    def parameters(self) -> list[Parameter]:
        """The trainable parameters, in a fixed order."""
        return [a for a in self.named_arrays().values() if isinstance(a, Parameter)]

    def buffers(self) -> list[Buffer]:
        return [a for a in self.named_arrays().values() if isinstance(a, Buffer)]

    def named_generators(self) -> dict[str, np.random.Generator]:
        """The random generators of the stochastic layers (Dropout) at any depth, by path."""
        rng = getattr(self, "rng", None)
        found = {"": rng} if isinstance(rng, np.random.Generator) else {}
        for prefix, child in self.children():
            found.update({f"{prefix}.{path}".rstrip("."): generator
                          for path, generator in child.named_generators().items()})
        return found

    def random_layers(self) -> list[Layer]:
        """This layer and those inside it that draw random numbers in training (their own
        generator, ``rng``: Dropout)."""
        return [layer for layer in self._walk()
                if isinstance(getattr(layer, "rng", None), np.random.Generator)]

    def draw_for_replay(self) -> None:
        """Before each replay of a training step recorded as a CUDA graph
        (:mod:`minicnn.capture`): draw on the host what this layer's step would draw (Dropout's
        seed), where the replay reads it. A layer with a generator that does not override this
        keeps a step from being recorded."""

    # -- shapes and costs ---------------------------------------------------------------
    def output_shape(self, input_shape: tuple) -> tuple:
        """Per-sample output shape for a per-sample input shape; raises on a mismatch."""
        return tuple(input_shape)

    def flops(self, input_shape: tuple) -> int:
        """Floating-point operations of one forward pass for one sample (multiply-add = 2):
        here, the children's, each on the input."""
        return sum(child.flops(input_shape) for _, child in self.children())

    def algorithms(self, input_shape: tuple) -> list[str]:
        """How the convolutions in this layer are computed for a per-sample input shape, in
        order ("im2col", "winograd F(4x4,3x3)", ...: the kernels choose, see
        :func:`minicnn.kernels.choose_conv`); reported by ``Sequential.summary``. Here, the
        children's, in order."""
        return [name for _, child in self.children() for name in child.algorithms(input_shape)]

    def workspace_bytes(self, input_shape: tuple, itemsize: int) -> int:
        """Scratch memory of one forward pass for one sample, beyond the output itself (e.g.
        Conv2D's im2col columns); used to size inference batches (``Sequential.predict``).
        Here, the children's."""
        return sum(child.workspace_bytes(input_shape, itemsize) for _, child in self.children())

    # -- initialization, dtype and backend, for the layer and everything inside it --------
    def initialize(self, rng: np.random.Generator) -> None:
        """Draw fresh parameters from ``rng`` (inner layers in order; no parameters, no draw)."""
        for _, child in self.children():
            child.initialize(rng)

    def set_rng(self, rng: np.random.Generator) -> None:
        """Give every stochastic layer inside (Dropout) its own generator spawned from ``rng``;
        a layer that draws (its generator is ``self.rng``) takes ``rng`` itself."""
        if isinstance(getattr(self, "rng", None), np.random.Generator):
            self.rng = rng
        children = self.children()
        for (_, child), spawned in zip(children, rng.spawn(len(children))):
            child.set_rng(spawned)

    def astype(self, dtype) -> Layer:
        """Convert every parameter and buffer to ``dtype`` in place (e.g. float64 for gradchecks)."""
        for array in self.named_arrays().values():
            array.data = array.data.astype(dtype)
            if isinstance(array, Parameter):
                array.grad = array.grad.astype(dtype)
        return self

    def to(self, backend_name: str) -> Layer:
        """Move this layer (and the layers inside it) to backend ``backend_name``: its arrays go
        where that backend keeps them (the GPU for cupy) and it computes with that backend's
        kernels from now on. Other layers and the default backend are not affected."""
        backend.check_available(backend_name)
        for layer in self._walk():
            layer.backend = backend_name
            layer._cache = None
        for array in self.named_arrays().values():
            array.data = backend.to_device(array.data, backend_name)
            if isinstance(array, Parameter):
                array.grad = backend.to_device(array.grad, backend_name)
                array.backend = backend_name
        return self

    def _walk(self):
        yield self
        for _, child in self.children():
            yield from child._walk()

    # -- configs ------------------------------------------------------------------------
    def config(self) -> dict:
        """The constructor's arguments, as plain JSON values (what a model file stores), read
        from the attributes of the same names: a tuple as a list, and an optional array
        (``bias=True`` makes ``self.bias`` a Parameter, ``False`` leaves it None) as whether
        the layer has it, and a Sequential of ``sublayer_fields`` as its layers' configs.
        ``dtype`` and ``rng`` are not arguments of the architecture (the arrays carry their
        dtype). A layer whose attributes do not mirror its arguments overrides this
        (Sequential)."""
        config = {}
        for name, argument in inspect.signature(type(self).__init__).parameters.items():
            if name in ("self", "dtype", "rng"):
                continue
            value = getattr(self, name)
            if isinstance(argument.default, bool) and (value is None or isinstance(value, Parameter)):
                value = value is not None
            elif name in self.sublayer_fields and value is not None:
                value = value.config()["layers"]
            config[name] = list(value) if isinstance(value, tuple) else value
        return config

    @classmethod
    def array_shapes(cls, config: dict) -> dict[str, tuple]:
        """``{array name: shape}`` a layer built from ``config`` will hold, computed from the
        config alone (nothing is allocated): a model file's tensors are checked against it
        before anything is built. Layers with arrays override it; here, the arrays of the
        layers in ``sublayer_fields``, named ``<field>.<index>.<name>`` (``body.0.weight``)."""
        shapes = {}
        for field in cls.sublayer_fields:
            shapes.update(inner_arrays(config, field, f"{field}."))
        return shapes

    #: the one-line description :meth:`describe` gives, filled from :meth:`config` as
    #: ``explain`` is (e.g. ``"Dense({in_features}->{out_features})"``); empty: ``Name()``
    describe_as: str = ""

    def describe(self) -> str:
        """A short one-line description (used by ``Sequential.summary``)."""
        if not self.describe_as:
            return f"{self.name}()"
        return self.describe_as.format(name=self.name, **self.config())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{self.name}({args})"

    # -- what the tools built on the layers need to know ------------------------------------
    #
    # The studio shows a layer's formula, minicnn.interop turns it into PyTorch and ONNX and back.
    # Each layer answers for itself here, so a new layer is one file (and ``@register``): the
    # defaults below serve a layer that is one torch module and one ONNX operator, named by
    # the class attributes above.

    #: what the layer does, in plain words, for the studio's panel; ``{name}`` is filled from
    #: :meth:`config` (e.g. ``{out_channels}``)
    explain: str = ""

    #: the docstring's names of the layer's arrays, ``{"W": "weight", "b": "bias"}``: each
    #: stands for its array's shape, and so does its gradient's (``dL/dW``); None when the
    #: layer lacks the array (no bias)
    array_symbols: dict[str, str] = {}
    #: the docstring's other names of arrays shaped like x, and like y (Dropout's ``mask``)
    shaped_like_x: tuple[str, ...] = ()
    shaped_like_y: tuple[str, ...] = ()

    def symbols(self, input_shape: tuple, output_shape: tuple) -> dict:
        """What the docstring's symbols stand for in a pass on ``input_shape`` (batch
        included): an array's shape, a number's value, None for what this layer lacks (no
        bias: its equations are left out) or True for a name to keep and show nothing of.
        Here x, y and their gradients, the arrays by their names and the numbers of the config;
        a layer adds the symbols of its own derivation."""
        grads = {"x": input_shape, "y": output_shape}
        found = {**grads, **{f"d{k}": v for k, v in grads.items()},
                 **{f"dL/d{k}": v for k, v in grads.items()},
                 **dict.fromkeys(self.shaped_like_x, input_shape),
                 **dict.fromkeys(self.shaped_like_y, output_shape)}
        found.update({name: array.shape for name, array in self._own((Parameter, Buffer)).items()})
        found.update({k: v for k, v in self.config().items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool)})
        for symbol, attribute in self.array_symbols.items():
            array = getattr(self, attribute)
            found[symbol] = found[f"dL/d{symbol}"] = None if array is None else array.shape
        return found

    def formula(self, input_shape: tuple, output_shape: tuple) -> dict:
        """The studio's panel, read from the class docstring: its equations (the ``...``
        spans that assign; those after the word "Backward" are the backward pass), each with
        the shapes and values of the symbols it names (:meth:`symbols`), and :attr:`explain`.
        ``{"forward": [lines], "backward": [lines], "explain": text}``."""
        symbols = self.symbols(input_shape, output_shape)
        doc = inspect.getdoc(type(self)) or ""
        backward_from = re.search(r"\bBackward\b", doc)
        panel = {"forward": [], "backward": [], "explain": self.explain.format(**self.config())}
        for span in re.finditer(r"``(.+?)``", doc, re.S):
            equation = _with_only_present(" ".join(span.group(1).split()), symbols)
            if equation is None or not re.search(r" [-+*/]?= ", equation):
                continue
            if any(line.startswith(equation + "   ") or line == equation
                   for line in panel["forward"]):
                continue  # the backward derivation restating a forward equation
            named = sorted((found.start(), f"{name} = {value:g}" if isinstance(value, (int, float))
                            else f"{name} {shape_text(value)}")
                           for name, value in symbols.items() if isinstance(value, (tuple, int, float))
                           and not isinstance(value, bool)
                           for found in [re.search(_word(name), equation)] if found)
            side = "backward" if backward_from and span.start() > backward_from.start() else "forward"
            panel[side].append(equation + ("   " + ", ".join(t for _, t in named) if named else ""))
        if not panel["forward"]:
            panel["forward"] = [f"y = {self.name}(x)   x {shape_text(input_shape)}, "
                                f"y {shape_text(output_shape)}"]
        return panel

    def to_torch(self, bridge):
        """The equivalent ``torch.nn`` module, arrays copied (``bridge``: see
        :class:`minicnn.interop.TorchBridge`), from the ``torch_*`` declarations."""
        if self.torch_name is None:
            raise TypeError(f"to_torch: no PyTorch counterpart for {self.name}")
        if self.sublayer_fields:  # a container: torch_name's module made of its fields' modules
            return bridge.containers[self.torch_name](**{
                field: None if inner is None else inner.to_torch(bridge)
                for field, inner in self._fields()})
        config = self.config()
        arguments = {name: config[name] for name in self.torch_arguments}
        if self.torch_arrays:
            arguments["dtype"] = bridge.dtype(self)
        module = getattr(bridge.nn, self.torch_name)(**arguments)
        bridge.copy_weights(module, transposed={self.torch_arrays[name] for name in self.torch_transposed},
                            **{theirs: getattr(self, ours) for ours, theirs in self.torch_arrays.items()})
        return module

    @classmethod
    def from_torch(cls, module, bridge, path: str) -> Layer:
        """The layer equivalent to ``module``, a ``torch.nn`` module named ``torch_name``
        (``path`` names it in errors); raises TypeError when its settings have no counterpart."""
        for attribute, needed in cls.torch_requires.items():
            value = getattr(module, attribute, needed)
            if (pair_of(value) if isinstance(needed, tuple) else value) != needed:
                raise TypeError(f"from_torch: {path} ({module}): {attribute}={value!r} has no "
                                f"counterpart in minicnn's {cls.__name__} (it needs {needed!r})")
        if cls.sublayer_fields:
            return cls(**{field: bridge.sublayers(getattr(module, field), f"{path}.{field}")
                          for field in cls.sublayer_fields})
        arguments = {name: getattr(module, name) for name in cls.torch_arguments}
        if "bias" in arguments:
            arguments["bias"] = module.bias is not None
        arrays = {ours: bridge.array(getattr(module, theirs))
                  for ours, theirs in cls.torch_arrays.items() if getattr(module, theirs) is not None}
        if arrays:
            arguments["dtype"] = next(iter(arrays.values())).dtype
        try:
            layer = cls(**arguments)
        except (TypeError, ValueError) as err:
            raise TypeError(f"from_torch: {path} ({module}): {err}") from None
        for name, array in arrays.items():
            getattr(layer, name).data = array.T.copy() if name in cls.torch_transposed else array
        return layer

    def to_onnx(self, graph, x: str, name: str) -> str:
        """Add this layer to an ONNX graph (:class:`minicnn.interop.OnnxGraph`) reading tensor
        ``x``, from the ``onnx_*`` declarations (a layer that is the identity at inference
        adds nothing); returns the name of its output."""
        if self.identity_at_inference:
            return x
        if self.onnx_op is None:
            raise TypeError(f"to_onnx: no ONNX counterpart for {self.name}")
        if self.sublayer_fields:  # a container: onnx_op combines its fields' outputs (x for None)
            return graph.node(self.onnx_op, [x if inner is None else inner.to_onnx(
                graph, x, f"{name}.{field}") for field, inner in self._fields()], name)
        attributes = {}
        for key, value in self.onnx_attributes.items():
            if isinstance(value, str):
                value = getattr(self, value)
                value = [int(v) for v in value] * (2 if key == "pads" else 1) \
                    if isinstance(value, tuple) else float(value)
            attributes[key] = value
        inputs = [graph.weight(f"{name}.{array}", getattr(self, array))
                  for array in self.onnx_inputs if getattr(self, array) is not None]
        return graph.node(self.onnx_op, [x, *inputs], name, **attributes)

    # -- helpers for subclasses -----------------------------------------------------------
    def _remember(self, output, cache=None):
        """Keep what backward needs and the output shape it must check ``dy`` against."""
        self._cache = cache
        self._output_shape = tuple(output.shape)
        return output

    def _forward(self, x, training):  # pragma: no cover - abstract
        raise NotImplementedError

    def _backward(self, dy, input_grad):  # pragma: no cover - abstract
        raise NotImplementedError
