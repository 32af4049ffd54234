"""Every layer type a config (a model file) may name, and the checks of a layer config.

A layer class joins with ``@register`` where it is defined. Its config is
``{"type": <its name>, <constructor arguments>}``; :func:`layer_arguments` checks one against
the class before anything is built: the type must be registered, the arguments the
constructor's own (never ``dtype`` or ``rng``), plain JSON values of the right kind, inner layers
no deeper than ``MAX_NESTING`` levels. :func:`expected_arrays` asks the class which arrays a
layer built from the config would hold (``Layer.array_shapes``), so that a model file's tensors
are checked before anything is allocated (``minicnn.layers.build``).
"""

from __future__ import annotations

import inspect
import math

from ..io import ModelFileError

#: every layer type a config may name, by class name (filled by ``@register``)
LAYER_TYPES: dict[str, type] = {}


def register(cls):
    """Class decorator: ``cls`` may be named in configs and model files."""
    LAYER_TYPES[cls.__name__] = cls
    return cls


MAX_NESTING = 32  # a config cannot make the builder recurse without bound
MAX_LAYERS = 10_000  # per list of layers; real networks have tens
# Constructor arguments a config may not set: they are not architecture, and a hostile file could
# use them to make arrays of object dtype or hand in something that is not a random generator.
_FORBIDDEN_ARGUMENTS = ("dtype", "rng")


def layer_arguments(spec, where: str = "config", label: str = "layer", depth: int = 0):
    """``(layer class, arguments)`` of a layer config, every argument checked; the inner layers'
    configs (``cls.sublayer_fields``) are checked to be lists of at most MAX_LAYERS, no deeper
    than MAX_NESTING, but not built."""
    if depth >= MAX_NESTING:
        raise ModelFileError(f"{where}: {label} nests layers more than {MAX_NESTING} deep")
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
        raise ModelFileError(f"{where}: {label} has no 'type'")
    kind = spec["type"]
    if kind not in LAYER_TYPES:
        raise ModelFileError(f"{where}: {label} has unknown type {kind!r}; known types: "
                             f"{', '.join(sorted(LAYER_TYPES))}")
    cls = LAYER_TYPES[kind]
    params = {name: param for name, param in inspect.signature(cls.__init__).parameters.items()
              if name != "self" and name not in _FORBIDDEN_ARGUMENTS
              and param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY)}
    kwargs = {k: v for k, v in spec.items() if k != "type"}
    for name, value in kwargs.items():
        if name not in params:
            raise ModelFileError(f"{where}: {label} ({kind}) has invalid arguments: unknown "
                                 f"argument {name!r} (allowed: {', '.join(params) or 'none'})")
        if name in cls.sublayer_fields:
            if value is not None and not isinstance(value, list):
                raise ModelFileError(f"{where}: {label} ({kind}) field {name!r} must be a list "
                                     f"of layers, got {type(value).__name__}")
            if value is not None and len(value) > MAX_LAYERS:
                raise ModelFileError(f"{where}: {label} ({kind}) field {name!r} has more than "
                                     f"{MAX_LAYERS} layers")
            continue
        if not _is_plain(value) and not (isinstance(value, list) and len(value) <= 8
                                         and all(map(_is_plain, value))):
            raise ModelFileError(f"{where}: {label} ({kind}) has invalid arguments: {name} must "
                                 f"be a number, bool, string or a short list of them, got "
                                 f"{_short_repr(value)}")
        if isinstance(params[name].default, bool) and not isinstance(value, bool):
            raise ModelFileError(f"{where}: {label} ({kind}) has invalid arguments: {name} must "
                                 f"be true or false, got {_short_repr(value)}")
    return cls, kwargs


def expected_arrays(spec, where: str = "config", label: str = "layer",
                    depth: int = 0) -> dict[str, tuple]:
    """``{array name: shape}`` that the layer described by ``spec`` will hold, asked of its class
    (``Layer.array_shapes``) after its arguments are checked; nothing is allocated."""
    cls, kwargs = layer_arguments(spec, where, label, depth)
    try:
        return dict(cls.array_shapes(_Nested(kwargs, where, f"{label} ({spec['type']})",
                                             depth + 1)))
    except ModelFileError:
        raise
    except (TypeError, ValueError, KeyError) as err:
        raise ModelFileError(f"{where}: {label} ({spec['type']}) has invalid arguments: "
                             f"{err}") from None


class _Nested(dict):
    """A config handed to ``array_shapes``: its lists of inner layers report their problems
    with the right label and depth when a container asks ``expected_arrays`` about them."""

    def __init__(self, kwargs, where, label, depth):
        super().__init__(kwargs)
        self.where, self.label, self.depth = where, label, depth


def inner_arrays(config, field: str, prefix: str) -> dict[str, tuple]:
    """For containers' ``array_shapes``: the arrays of the layers in ``config[field]``, named
    ``<prefix><index>.<name>`` (e.g. ``body.0.weight``)."""
    where = getattr(config, "where", "config")
    label = getattr(config, "label", "layer")
    depth = getattr(config, "depth", 0)
    shapes = {}
    for j, spec in enumerate(config.get(field) or []):
        inner = expected_arrays(spec, where, f"{label} {field}[{j}]", depth)
        shapes.update({f"{prefix}{j}.{name}": shape for name, shape in inner.items()})
    return shapes


def _is_plain(value) -> bool:
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, int):
        return abs(value) < 2**62  # beyond this numpy itself overflows
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str) and len(value) <= 100


def _short_repr(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


