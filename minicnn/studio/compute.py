"""What the studio page shows, computed: one image through every layer and back.

:class:`Studio` holds a model (a float64 copy on the numpy backend, so that gradients checked on
the spot agree to ~1e-9) and answers three questions the page asks:

- :meth:`Studio.analyze`: for one image and a chosen scalar (a class score, or the loss for a
  label), every layer's output and the gradient of that scalar with respect to it, the input
  gradient and gradient x input, Grad-CAM, the first layer's weight gradient, the prediction,
  and for each layer its forward/backward formula with this input's shapes (``Layer.formula``);
- :meth:`Studio.check`: one entry of an analytic gradient (a pixel or a weight) next to a
  central difference, and the slopes on either side where the point sits on a kink;
- a drawn digit is prepared as MNIST's digits were
  (:func:`minicnn.data.images.preprocess_drawing`).

Arrays go to the page as bytes: each map quantized to uint8 (activations between the layer's
minimum and maximum, gradients symmetric around 128 so that 0 stays grey), base64-encoded.
"""

from __future__ import annotations

import base64
import copy
import time

import numpy as np

from .. import interpret
from ..data import class_names_of, normalize_as_trained
from ..data.images import preprocess_drawing
from ..gradcheck import Probe, check_entry
from ..losses import SoftmaxCrossEntropy


class StudioInputError(ValueError):
    """A request the studio cannot answer (the server turns it into a 400 with the message)."""


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
        self.class_names = class_names_of(self.metadata, self.num_classes, class_names or None)
        self.test_images = test_images
        self.test_labels = test_labels
        self.cam_layer = interpret.default_cam_layer(self.model) \
            if interpret.has_convolution(self.model) else None

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
        / d the first parameter of layer i, e.g. a Conv2D's W[f, c, i, j]). The check, and
        what its ``verdict`` (smooth, kink, switch, unresolved) claims, is
        :func:`minicnn.gradcheck.check_entry`; ``bends`` name the layers where units switch.
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

        def probe(offset: float) -> Probe:
            """The scalar, its analytic gradient and every layer's output at w + offset."""
            array[full_index] = original + offset
            try:
                outputs = self._forward(x)
                value, seed = self._scalar_gradient(outputs[-1], target)
                _, input_gradient = self._backward(seed)
                gradient = input_gradient if weight is None else weight.grad
                return Probe(value, float(gradient[full_index]), gradient, outputs)
            finally:
                array[full_index] = original

        report = check_entry(probe)
        for bend in report["bends"]:
            bend["name"] = self.model.layers[bend["layer"]].describe()
        return {"kind": kind, "index": list(index), "target": target, **report}


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
