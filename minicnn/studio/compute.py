"""What the studio page shows, computed: one image through every layer and back.

:class:`Studio` holds a model (a float64 copy on the numpy backend, so that gradients checked on
the spot agree to ~1e-9) and answers three questions the page asks:

- :meth:`Studio.analyze`: for one image and a chosen scalar (a class score, or the loss for a
  label), every layer's output and the gradient of that scalar with respect to it, the input
  gradient and gradient x input, Grad-CAM, the first layer's weight gradient, the prediction,
  and for each layer its forward/backward formula with this input's shapes (``Layer.formula``);
- :meth:`Studio.check`: one entry of an analytic gradient (a pixel or a weight) next to a
  central difference, and the slopes on either side where the point sits on a kink;
- :func:`preprocess_drawing`: a drawn digit prepared as MNIST's digits were (the ink's bounding
  box scaled into 20x20, then centred by its centre of mass in 28x28).

Arrays go to the page as bytes: each map quantized to uint8 (activations between the layer's
minimum and maximum, gradients symmetric around 128 so that 0 stays grey), base64-encoded.
"""

from __future__ import annotations

import base64
import copy
import time
from typing import NamedTuple

import numpy as np

from .. import interpret
from ..gradcheck import relative_error
from ..losses import SoftmaxCrossEntropy
from ..recipes import normalize_as_trained


class StudioInputError(ValueError):
    """A request the studio cannot answer (the server turns it into a 400 with the message)."""


# -- MNIST-style preprocessing --------------------------------------------------------------------

def preprocess_drawing(ink: np.ndarray, size: int = 28, box: int = 20) -> np.ndarray:
    """A drawing (H, W) with ink in [0, 1] (bright strokes on black) as MNIST prepared its
    digits: the ink's bounding box scaled so its longer side is ``box`` pixels (anti-aliased),
    then placed in a ``size`` x ``size`` image so that its centre of mass is the centre.
    Returns float32 (size, size) in [0, 1]; an empty drawing gives zeros."""
    from PIL import Image

    ink = np.clip(np.asarray(ink, dtype=np.float32), 0.0, 1.0)
    rows, cols = np.nonzero(ink > 0.05)
    out = np.zeros((size, size), dtype=np.float32)
    if rows.size == 0:
        return out
    crop = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    scale = box / max(crop.shape)
    height, width = (max(1, round(d * scale)) for d in crop.shape)
    small = np.asarray(Image.fromarray((crop * 255).astype(np.uint8)).resize(
        (width, height), Image.Resampling.LANCZOS), dtype=np.float32) / 255.0
    total = small.sum()
    if total <= 0:
        return out
    ys, xs = np.indices(small.shape)
    centre_y, centre_x = (ys * small).sum() / total, (xs * small).sum() / total
    top = int(round(size / 2 - centre_y))
    left = int(round(size / 2 - centre_x))
    top, left = min(max(top, 0), size - height), min(max(left, 0), size - width)
    out[top:top + height, left:left + width] = small
    return np.clip(out, 0.0, 1.0)


# -- encoding for the page ------------------------------------------------------------------------

def _bytes(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype=np.uint8).tobytes()).decode()


def encode_maps(array, signed: bool = False) -> dict:
    """``array`` as maps (C, H, W) of uint8: a 1-D output (a Dense layer's) becomes one row.
    Unsigned: the layer's range [min, max] onto 0..255. Signed (gradients): [-m, m] onto
    1..255 with m the largest magnitude, so that an exact 0 is 128 (white) and reads back as 0,
    and the sign is the colour."""
    a = np.asarray(array, dtype=np.float64)
    if a.ndim == 1:
        a = a[None, None, :]
    elif a.ndim == 2:
        a = a[None]
    if signed:
        bound = float(np.abs(a).max()) or 1.0
        low, high = -bound, bound
        quantized = 128 + np.rint(a / bound * 127)
    else:
        low, high = float(a.min()), float(a.max())
        quantized = np.rint((a - low) / ((high - low) or 1.0) * 255.0)
    return {"shape": list(a.shape), "min": low, "max": high, "signed": signed,
            "data": _bytes(quantized)}


# -- the studio ----------------------------------------------------------------------------------

class Studio:
    """A model ready to be looked into. ``test_images`` (N, C, H, W) in [0, 1] and
    ``test_labels`` feed the page's picker (un-normalized: what a person sees)."""

    def __init__(self, model, class_names=None, test_images=None, test_labels=None):
        self.model = copy.deepcopy(model).to("numpy").astype(np.float64)
        self.metadata = dict(model.metadata or {})
        self.input_shape = tuple(self.metadata.get("input_shape") or model.input_shape or ())
        if len(self.input_shape) != 3:
            raise ValueError("studio: the model does not record its input shape")
        self.num_classes = self.model.output_shape(self.input_shape)[0]
        names = class_names or self.metadata.get("class_names")
        self.class_names = [str(c) for c in names] if names else \
            [str(i) for i in range(self.num_classes)]
        self.test_images = test_images
        self.test_labels = test_labels
        self.cam_layer = self._cam_layer()

    def _cam_layer(self):
        try:
            return interpret.default_cam_layer(self.model)
        except ValueError:
            return None

    # -- inputs ----------------------------------------------------------------------------
    def image_from_request(self, request: dict) -> tuple[np.ndarray, dict]:
        """The image a request names: ``test_index``, ``image`` (a list of lists in [0, 1] of
        the model's input size) or ``drawing`` (ink, any size up to 1024x1024, preprocessed
        MNIST-style). Returns (image (C, H, W) in [0, 1], a description)."""
        if "test_index" in request:
            index = request["test_index"]
            count = 0 if self.test_images is None else len(self.test_images)
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < count:
                raise StudioInputError(f"test_index must be an int in [0, {count}), got {index!r}")
            return np.asarray(self.test_images[index], dtype=np.float64), \
                {"source": "test", "label": int(self.test_labels[index])}
        if "drawing" in request:
            ink = _float_grid(request["drawing"], "drawing", max_side=1024, dimensions=(2,))
            if self.input_shape[0] != 1:
                raise StudioInputError("drawing needs a model of one-channel images")
            image = preprocess_drawing(ink, self.input_shape[1])
            if image.shape != self.input_shape[1:]:
                raise StudioInputError(f"drawing: this model takes {self.input_shape[1:]} images")
            return image[None].astype(np.float64), {"source": "drawing"}
        if "image" in request:
            image = _float_grid(request["image"], "image", max_side=1024, dimensions=(2, 3))
            if image.ndim == 2:
                image = image[None]
            if image.shape != self.input_shape:
                raise StudioInputError(f"image must have shape {self.input_shape}, got "
                                       f"{image.shape}")
            return image, {"source": "image"}
        raise StudioInputError("the request names no image: give test_index, image or drawing")

    def target_from_request(self, request: dict, logits: np.ndarray) -> dict:
        """``{"kind": "class", "class": c}`` (default: the prediction) or
        ``{"kind": "loss", "label": l}``."""
        kind = request.get("target", "class")
        if kind not in ("class", "loss"):
            raise StudioInputError(f"target must be 'class' or 'loss', got {kind!r}")
        key = "class" if kind == "class" else "label"
        value = request.get(key)
        if value is None:
            value = int(np.argmax(logits))
        if not isinstance(value, int) or isinstance(value, bool) or \
                not 0 <= value < self.num_classes:
            raise StudioInputError(f"{key} must be an int in [0, {self.num_classes}), got "
                                   f"{value!r}")
        return {"kind": kind, key: value}

    # -- the passes ------------------------------------------------------------------------
    def _normalized(self, image: np.ndarray) -> np.ndarray:
        return np.asarray(normalize_as_trained(image[None].astype(np.float64), self.metadata),
                          dtype=np.float64)

    def _scalar_gradient(self, logits: np.ndarray, target: dict) -> tuple[float, np.ndarray]:
        """The chosen scalar and its gradient with respect to the logits (1, K)."""
        if target["kind"] == "class":
            seed = np.zeros_like(logits)
            seed[0, target["class"]] = 1.0
            return float(logits[0, target["class"]]), seed
        loss_fn = SoftmaxCrossEntropy()  # the library's loss: softmax(z) - onehot(label) back
        loss = loss_fn.forward(logits, [target["label"]])
        return loss, loss_fn.backward()

    def _forward(self, x):
        return [y for _, _, y in self.model.forward_steps(x)]

    def _backward(self, seed):
        """dL/d(output) of every layer, in layer order, and dL/d(input)."""
        gradients, input_gradient = [None] * len(self.model.layers), None
        for index, _, dy, dx in self.model.backward_steps(seed):
            gradients[index], input_gradient = dy, dx
        return gradients, input_gradient

    def _grad_cam(self, x, target, outputs, gradients) -> np.ndarray:
        """Grad-CAM of the explained class (H, W). For a class score the pass just made holds
        what it needs (the maps A and dS_c/dA); for the loss, Grad-CAM still explains the
        label's score, which takes its own backward pass."""
        if target["kind"] == "loss":
            cam = interpret.grad_cam(self.model, x, classes=[target["label"]],
                                     layer=self.cam_layer)
            return cam.heatmaps[0]
        weights = gradients[self.cam_layer].mean(axis=(2, 3))
        maps = interpret.class_maps(weights, outputs[self.cam_layer])
        return interpret.heatmaps(maps, x.shape[2:])[0]

    def _gradient_times_input(self, x, input_gradient) -> np.ndarray:
        """Gradient x input, (H, W): each pixel's first-order contribution to the scalar against
        a black image, ``sum_c d value/d x[c] * (x[c] - x_black[c])`` (in the normalized input,
        where a black pixel is not 0). Unlike the raw gradient, which also lights up the
        background (where adding ink would change the score), it shows what the ink there does."""
        black = self._normalized(np.zeros(self.input_shape))
        return (input_gradient[0] * (x[0] - black[0])).sum(axis=0)

    def analyze(self, request: dict) -> dict:
        start = time.perf_counter()
        image, source = self.image_from_request(request)
        x = self._normalized(image)
        outputs = self._forward(x)
        logits = outputs[-1]
        target = self.target_from_request(request, logits[0])
        value, seed = self._scalar_gradient(logits, target)
        gradients, input_gradient = self._backward(seed)
        shifted = logits[0] - logits[0].max()
        probabilities = np.exp(shifted) / np.exp(shifted).sum()

        layers, shape = [], (1, *self.input_shape)
        for index, layer in enumerate(self.model.layers):
            out_shape = outputs[index].shape
            layers.append({
                "index": index, "name": layer.name,
                "describe": " ".join(filter(None, [layer.describe(), layer.passes_words])),
                "input_shape": list(shape), "output_shape": list(out_shape),
                "forward": encode_maps(outputs[index][0]),
                "backward": encode_maps(gradients[index][0], signed=True),
                "formula": layer.formula(shape, out_shape), "source": layer.name,
            })
            shape = out_shape
        result = {
            "input": encode_maps(image), "source": source,
            "probabilities": probabilities.tolist(), "predicted": int(np.argmax(probabilities)),
            "class_names": self.class_names, "target": target, "value": value,
            "layers": layers,
            "input_gradient": encode_maps(input_gradient[0], signed=True),
            "gradient_times_input": encode_maps(self._gradient_times_input(x, input_gradient),
                                                signed=True),
        }
        first = self.model.layers[0]
        if first.filters:  # the first convolution's weights and their gradient, as images
            result["first_weight_gradient"] = encode_maps(
                first.weight.grad.reshape(-1, *first.kernel_size), signed=True)
            result["first_weights"] = encode_maps(
                first.weight.data.reshape(-1, *first.kernel_size), signed=True)
        if self.cam_layer is not None:
            result["grad_cam"] = {**encode_maps(self._grad_cam(x, target, outputs, gradients)),
                                  "layer": self.cam_layer}
        result["server_ms"] = (time.perf_counter() - start) * 1e3
        return result

    def check(self, request: dict) -> dict:
        """One gradient entry, analytic and numerical, and what the network does around it:
        ``{"kind": "pixel", "index": [c, h, w]}`` (d scalar / d input pixel, in the normalized
        input the network sees) or ``{"kind": "weight", "layer": i, "index": [...]}`` (d scalar
        / d the first parameter of layer i, e.g. a Conv2D's W[f, c, i, j]).

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
        do, at most :data:`CHECK_HALVINGS` times. The reply says only what was verified, in
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
        image, _ = self.image_from_request(request)
        x = self._normalized(image)
        logits = self._forward(x)[-1]
        target = self.target_from_request(request, logits[0])
        kind = request.get("kind")
        if kind == "pixel":
            array, weight = x, None
            index = _index(request.get("index"), x.shape[1:], "index")
            full_index = (0, *index)
        elif kind == "weight":
            layer_index = request.get("layer", 0)
            if not isinstance(layer_index, int) or isinstance(layer_index, bool) or \
                    not 0 <= layer_index < len(self.model.layers):
                raise StudioInputError(f"layer must be an int in [0, {len(self.model.layers)})")
            params = self.model.layers[layer_index].parameters()
            if not params:
                raise StudioInputError(f"layer {layer_index} has no weights")
            weight = params[0]
            array = weight.data
            full_index = index = _index(request.get("index"), array.shape, "index")
        else:
            raise StudioInputError(f"kind must be 'pixel' or 'weight', got {kind!r}")

        original = array[full_index]

        def probe(offset: float) -> _Probe:
            """The scalar, its analytic gradient and every layer's output at w + offset."""
            array[full_index] = original + offset
            try:
                outputs = self._forward(x)
                value, seed = self._scalar_gradient(outputs[-1], target)
                _, input_gradient = self._backward(seed)
                gradient = input_gradient if weight is None else weight.grad
                return _Probe(value, float(gradient[full_index]), gradient, outputs)
            finally:
                array[full_index] = original

        step, nearby, point = CHECK_STEP, [], None
        for halving in range(CHECK_HALVINGS + 1):
            far = {side: probe(side * step) for side in (-1, 1)}
            point = point or probe(0.0)  # after the first step's passes: the layers keep it
            scale = float(np.abs(point.gradient).max())
            sides = {side: _Side(far[side], point, side, step, scale) for side in (-1, 1)}
            if all(s.verified for s in sides.values()):
                break
            if halving == 0:
                nearby = [name for side, name in ((-1, "left"), (1, "right"))
                          if not sides[side].verified]
            if halving < CHECK_HALVINGS:
                step /= 2
        if halving:
            point = probe(0.0)  # again, last: the layers keep the pass at the point
        resolved = all(s.verified for s in sides.values())
        left, right = sides[-1], sides[1]
        numeric = (right.value - left.value) / (2 * step)
        bends = [{"layer": i, "name": layer.describe(), "units": units}
                 for i, layer in enumerate(self.model.layers)
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
        return {"kind": kind, "index": list(index), "target": target, "verdict": verdict,
                "kink": verdict == "kink", "step": step, "first_step": CHECK_STEP,
                "halvings": halving, "nearby": nearby if resolved else [],
                "analytic": point.analytic, "numeric": numeric, "left_slope": left.slope,
                "right_slope": right.slope, "analytic_left": left.analytic,
                "analytic_right": right.analytic, "at_point": at_point, "bends": bends,
                "agrees": _close(point.analytic, numeric, scale, tolerance),
                "gradient_scale": scale, "tolerance": tolerance,
                "relative_error": relative_error(np.array([point.analytic]), np.array([numeric]))}


CHECK_STEP = 1e-6  # small enough to cross only the switches at the point itself, as a rule
CHECK_HALVINGS = 12  # down to 2.4e-10, where float64 rounding still leaves slopes to ~1e-4


class _Probe(NamedTuple):
    """One forward and backward pass with the checked entry moved by some offset."""

    value: float            # the scalar
    analytic: float         # the backward pass's entry for the checked pixel or weight
    gradient: np.ndarray    # the whole gradient it belongs to
    outputs: list           # every layer's output


class _Side:
    """One side of the point: the slope over [w, w + side * h] and the backward pass at
    w + side * h. ``verified``: the two agree, so one piece of the network spans the step (a
    second switch strictly between w and w + side * h would make the slope an average of two
    pieces' slopes, and the backward pass at the far end gives only the last one)."""

    def __init__(self, far: _Probe, point: _Probe, side: int, step: float, scale: float):
        self.value, self.analytic, self.outputs = far.value, far.analytic, far.outputs
        self.slope = side * (far.value - point.value) / step
        self.verified = _close(far.analytic, self.slope, scale, self.tolerance(point, step))

    @staticmethod
    def tolerance(point: _Probe, step: float) -> float:
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


def _float_grid(value, what: str, max_side: int, dimensions: tuple[int, ...]) -> np.ndarray:
    rows = "rows" if dimensions == (2,) else "rows (or channels of rows)"
    if not isinstance(value, list) or not value:
        raise StudioInputError(f"{what} must be a non-empty list of {rows} of numbers")
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, RecursionError):
        raise StudioInputError(f"{what} must hold numbers only, in {rows} of equal length") \
            from None
    if array.ndim not in dimensions or max(array.shape) > max_side or array.size == 0:
        shape = " or ".join(f"{d}-D" for d in dimensions)
        raise StudioInputError(f"{what} must be {shape}, at most {max_side} a side, got shape "
                               f"{array.shape}")
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
        raise StudioInputError(f"{what} values must be finite and in [0, 1]")
    return array


def _index(value, shape, what: str) -> tuple:
    if not isinstance(value, list) or len(value) != len(shape) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise StudioInputError(f"{what} must be a list of {len(shape)} ints (shape {shape})")
    if not all(0 <= v < s for v, s in zip(value, shape)):
        raise StudioInputError(f"{what} {value} is outside the shape {list(shape)}")
    return tuple(value)
