"""Looking inside a trained network: feature maps, CAM, Grad-CAM, saliency, filters.

Everything here uses minicnn's own forward and backward passes, split at a layer with
:meth:`Sequential.forward_to`, :meth:`Sequential.forward_from` and
:meth:`Sequential.backward_to`. Inputs are batches (N, C, H, W) of images *as the model sees
them* (normalized like its training data); the work is vectorized over the batch, runs in
inference mode (``training=False``: BatchNorm uses its running statistics, Dropout is the
identity) in chunks of ``batch_size`` images, and every result is a NumPy array.

The "class score" is the logit of the class (the model's output before the softmax), as in
the papers: the softmax would couple every class into each score.

- :func:`feature_maps` — the output of any layer.
- :func:`cam` — Class Activation Mapping (Zhou et al., 2016) for networks that end in
  ``GlobalAvgPool2D -> Dense``: the logit of class c is ``b_c + mean_{h,w} sum_f W[f, c] A_f``,
  so ``sum_f W[f, c] A_f[h, w]`` says how much each location adds to it.
- :func:`grad_cam` — Grad-CAM (Selvaraju et al., 2017) for any convolutional network: weigh
  the maps A_f of a convolutional layer by ``alpha_f = mean_{h,w} d score / d A_f[h, w]``,
  sum, keep the positive part. On a GlobalAvgPool2D -> Dense network, taken at the layer before
  the pooling, alpha_f is W[f, c] / (h*w), so Grad-CAM *is* CAM (up to the scale that the
  normalization removes).
- :func:`saliency` / :func:`class_score_gradient` — the gradient of the class score with
  respect to the input pixels (Simonyan et al., 2014).
- :func:`conv_filters` — the weights of a convolution as small images.

Heatmaps are resized to the input's height and width with bilinear interpolation, then
normalized to [0, 1] per image (divided by their maximum; an all-zero map stays zero).

The backward passes run here write the parameters' ``.grad`` as any backward pass does; these
functions put the previous gradients back afterwards, so calling them between a training
step's ``backward`` and ``optimizer.step()`` changes nothing.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from . import backend
from .validation import check_float_array, check_positive_int

__all__ = [
    "CAMResult", "bilinear_resize", "cam", "class_maps", "class_score_gradient",
    "conv_block_output", "conv_filters", "default_cam_layer", "feature_maps", "first_filters",
    "grad_cam", "has_convolution", "heatmaps", "saliency",
]

@dataclass(frozen=True)
class CAMResult:
    """What :func:`cam` and :func:`grad_cam` return (NumPy arrays).

    Attributes:
        heatmaps: (N, H, W) in [0, 1], at the input's resolution — what to overlay on the images.
        maps: (N, h, w), the weighted sums of the channel maps after the ReLU, at the layer's
            own resolution and scale (before normalization and resizing).
        weights: (N, F), the weight of each of the layer's F channels for each image's class
            (Grad-CAM: the spatial mean of d score / d A_f; CAM: the Dense weights W[:, c]).
        activations: (N, F, h, w), the layer's output A.
        classes: (N,), the class explained for each image.
        layer: the index in ``model.layers`` of the layer whose output was used.
    """

    heatmaps: np.ndarray
    maps: np.ndarray
    weights: np.ndarray
    activations: np.ndarray
    classes: np.ndarray
    layer: int


# -- helpers ------------------------------------------------------------------------------------

@contextmanager
def _gradients_preserved(model):
    """Put every parameter's ``.grad`` back after the block (backward replaces the arrays, so
    keeping references is enough)."""
    saved = [(p, p.grad) for p in model.parameters()]
    try:
        yield
    finally:
        for p, grad in saved:
            p.grad = grad


def _check_input(model, x, where: str) -> np.ndarray:
    check_float_array(x, where)
    if x.ndim != 4:
        raise ValueError(f"{where}: expected a batch of images of shape (N, C, H, W), got shape "
                         f"{tuple(x.shape)}")
    model.output_shapes(x.shape[1:])  # a clear error naming the layer for a wrong shape
    return x


def _check_classes(model, x, classes, where: str):
    """None (explain each image's predicted class), one int for all, or one int per image."""
    if classes is None:
        return None
    num_classes = model.output_shape(x.shape[1:])[0]
    array = np.asarray(classes)
    if array.ndim == 0:
        array = np.full(len(x), int(array))
    if array.dtype.kind not in "iu":
        raise TypeError(f"{where}: classes must be integers, got dtype {array.dtype}")
    if array.shape != (len(x),):
        raise ValueError(f"{where}: expected one class per image, shape ({len(x)},), got "
                         f"shape {array.shape}")
    if len(array) and (array.min() < 0 or array.max() >= num_classes):
        raise ValueError(f"{where}: classes must be in [0, {num_classes - 1}] for a model with "
                         f"{num_classes} outputs, got values from {array.min()} to {array.max()}")
    return array.astype(np.int64)


def _batches(n: int, batch_size: int):
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))


def _one_hot(classes, num_classes: int, dtype, xp):
    onehot = xp.zeros((len(classes), num_classes), dtype=dtype)
    onehot[xp.arange(len(classes)), xp.asarray(classes)] = 1
    return onehot


def _chosen(logits, classes):
    """The classes to explain in this batch: the given ones or the argmax of the logits."""
    if classes is not None:
        return classes
    return backend.to_numpy(logits.argmax(axis=1)).astype(np.int64)


def bilinear_resize(maps, size) -> np.ndarray:
    """Resize (N, h, w) maps to (N, H, W) by bilinear interpolation (vectorized NumPy).

    Pixel centres are aligned (the convention of PIL and of PyTorch's
    ``interpolate(mode="bilinear", align_corners=False)``): output pixel i samples the input at
    ``(i + 0.5) * h / H - 0.5``, clamped to the edge pixels.
    """
    maps = np.asarray(maps)
    if maps.ndim != 3:
        raise ValueError(f"bilinear_resize: expected maps of shape (N, h, w), got {maps.shape}")
    out_h, out_w = (int(s) for s in size)

    def axis_weights(n_in, n_out):
        pos = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
        low = np.floor(pos).astype(np.int64)
        high = np.minimum(low + 1, n_in - 1)
        return low, high, (pos - low).astype(maps.dtype if maps.dtype.kind == "f" else np.float64)

    r0, r1, fr = axis_weights(maps.shape[1], out_h)
    c0, c1, fc = axis_weights(maps.shape[2], out_w)
    rows = maps[:, r0, :] * (1 - fr)[None, :, None] + maps[:, r1, :] * fr[None, :, None]
    return rows[:, :, c0] * (1 - fc)[None, None, :] + rows[:, :, c1] * fc[None, None, :]


def _normalize_maps(maps) -> np.ndarray:
    """Divide each map by its maximum (maps are >= 0 after the ReLU); all-zero maps stay 0."""
    peak = maps.reshape(len(maps), -1).max(axis=1) if maps.size else np.zeros(0)
    scale = np.where(peak > 0, peak, 1.0)
    return maps / scale[:, None, None]


def _check_spatial_layer(model, index: int, input_shape, where: str) -> None:
    shape = model.output_shapes(input_shape)[index]
    if len(shape) != 3:
        try:
            suggestion = f", e.g. layer={default_cam_layer(model)}"
        except ValueError:
            suggestion = ""
        raise ValueError(
            f"{where}: layer {index} ({model.layers[index].describe()}) outputs per-sample "
            f"shape {shape}, not convolutional feature maps (C, H, W); choose a Conv2D layer "
            f"(or a BatchNorm2D/activation/pooling layer after one){suggestion}")


# -- public functions ---------------------------------------------------------------------------

def feature_maps(model, x, layer, batch_size: int = 64) -> np.ndarray:
    """The output of ``model.layers[layer]`` for the images x, as a NumPy array.

    ``layer`` is an index (negative counts from the end) or one of the model's Layer objects.
    For a convolutional layer the result is (N, F, h, w): one map per filter and image.
    """
    batch_size = check_positive_int(batch_size, "batch_size", "feature_maps")
    x = _check_input(model, x, "feature_maps")
    index = model.layer_index(layer)
    xp = backend.xp(model.backend)
    return np.concatenate([
        backend.to_numpy(model.forward_to(xp.asarray(x[s]), index, training=False))
        for s in _batches(len(x), batch_size)], axis=0)


def conv_block_output(model, block: int = -1) -> int:
    """The index of the layer that ends a convolutional block: the ``block``-th Conv2D (or
    residual block; negative counts from the end) extended through the BatchNorm2D /
    activation / Dropout layers right after it — the block's rectified maps at the finest
    resolution it has (before its pooling)."""
    convs = [i for i, layer in enumerate(model.layers) if layer.convolutional]
    if not convs:
        raise ValueError("the model has no Conv2D layer, so it has no convolutional feature "
                         "maps to explain (saliency() works for any model)")
    if not -len(convs) <= block < len(convs):
        raise ValueError(f"conv_block_output: block {block} is out of range; the model has "
                         f"{len(convs)} convolutional layers")
    index = convs[block]
    # the default Grad-CAM layer: the last convolution *including* the per-channel layers after
    # it (Layer.per_channel), i.e. the rectified maps of the last block
    while index + 1 < len(model.layers) and model.layers[index + 1].per_channel:
        index += 1
    return index


def has_convolution(model) -> bool:
    """Whether the model has a convolutional layer (Conv2D, or a residual block of them): what
    feature maps, filters, Grad-CAM and :func:`default_cam_layer` need."""
    return any(layer.convolutional for layer in model.layers)


def default_cam_layer(model) -> int:
    """The layer Grad-CAM uses by default: the end of the last convolutional block
    (:func:`conv_block_output`), e.g. the ReLU after the last Conv2D -> BatchNorm2D."""
    return conv_block_output(model, -1)


def grad_cam(model, x, classes=None, layer=None, batch_size: int = 64) -> CAMResult:
    """Grad-CAM heatmaps: where in each image the evidence for its class lies.

    For every image, with A (F, h, w) the output of ``model.layers[layer]`` and y_c the logit
    of the explained class c:

        alpha_f = mean_{h,w} d y_c / d A_f[h, w]         (the channel weights)
        map     = ReLU(sum_f alpha_f * A_f)              (h, w)
        heatmap = up / max(up), up = bilinear_resize(map, (H, W))

    ``classes``: None explains each image's predicted class; an int or one int per image
    explains those classes (e.g. the true labels). ``layer`` (index or Layer) must output
    convolutional maps (N, C, H, W); by default :func:`default_cam_layer`. Returns a
    :class:`CAMResult`.

    Averaging the gradient over the positions makes Grad-CAM show *which features* raise the
    score and where they are. Evidence that is purely positional ("a bright square in the
    top-left quadrant" read by a Flatten -> Dense head) averages out and is better seen with
    :func:`saliency`.
    """
    batch_size = check_positive_int(batch_size, "batch_size", "grad_cam")
    x = _check_input(model, x, "grad_cam")
    classes = _check_classes(model, x, classes, "grad_cam")
    index = default_cam_layer(model) if layer is None else model.layer_index(layer)
    _check_spatial_layer(model, index, x.shape[1:], "grad_cam")
    if index == len(model.layers) - 1:
        raise ValueError(f"grad_cam: layer {index} is the model's last layer; choose a "
                         "convolutional layer before the classifier")
    xp = backend.xp(model.backend)

    def mean_gradients(acts, logits, chosen):
        # sum over the batch of each image's class score: image n's score depends on image n
        # only (inference mode), so one backward pass gives every image's own gradient
        grads = model.backward_to(_one_hot(chosen, logits.shape[1], logits.dtype, xp), index)
        return grads.mean(axis=(2, 3))

    with _gradients_preserved(model):
        return _class_maps(model, x, classes, index, batch_size, mean_gradients)


def class_maps(weights, activations):
    """``ReLU(sum_f w_f A_f)``: weights (N, F), activations A (N, F, h, w) -> (N, h, w). With
    ``w`` the spatial mean of the class score's gradient at A, Grad-CAM's map (before it is
    resized to the image and scaled to [0, 1] with :func:`heatmaps`)."""
    xp = backend.array_module(activations)
    return xp.maximum(xp.einsum("nf,nfhw->nhw", weights, activations), 0)


def heatmaps(maps, size) -> np.ndarray:
    """Class maps (N, h, w) as heatmaps: resized to ``size`` (bilinear), each scaled to [0, 1]."""
    return _normalize_maps(bilinear_resize(maps, size))


def _class_maps(model, x, classes, index, batch_size, channel_weights) -> CAMResult:
    """ReLU(sum_f w_f A_f) for each image, a batch at a time: A the maps layer ``index``
    outputs, w = ``channel_weights(A, logits, chosen classes)`` of shape (n, F)."""
    xp = backend.xp(model.backend)
    parts = {"weights": [], "maps": [], "activations": [], "classes": []}
    for s in _batches(len(x), batch_size):
        acts = model.forward_to(xp.asarray(x[s]), index, training=False)
        logits = model.forward_from(acts, index, training=False)
        chosen = _chosen(logits, None if classes is None else classes[s])
        weights = channel_weights(acts, logits, chosen)
        maps = class_maps(weights, acts)
        parts["weights"].append(backend.to_numpy(weights))
        parts["maps"].append(backend.to_numpy(maps))
        parts["activations"].append(backend.to_numpy(acts))
        parts["classes"].append(chosen)
    maps = np.concatenate(parts["maps"], axis=0)
    return CAMResult(heatmaps=heatmaps(maps, x.shape[2:]), maps=maps,
                     weights=np.concatenate(parts["weights"], axis=0),
                     activations=np.concatenate(parts["activations"], axis=0),
                     classes=np.concatenate(parts["classes"], axis=0), layer=index)


def _cam_layers(model):
    """(index of the layer before GlobalAvgPool2D, the final Dense) or a clear error."""
    layers = model.layers
    dense = layers[-1]
    pool = len(layers) - 2
    while pool >= 0 and layers[pool].identity_at_inference:  # Dropout
        pool -= 1
    if not dense.linear_map or pool < 1 or not layers[pool].pools_globally:
        tail = " -> ".join(layer.name for layer in layers[-3:])
        raise ValueError(
            "cam: CAM needs a model that ends in GlobalAvgPool2D -> Dense (optionally with "
            f"Dropout between them), this one ends in {tail}; use grad_cam(), which works "
            "for any convolutional network")
    return pool - 1, dense


def cam(model, x, classes=None, batch_size: int = 64) -> CAMResult:
    """Class Activation Maps of a network ending in ``GlobalAvgPool2D -> Dense``.

    With A (F, h, w) the maps entering the global average pooling and W (F, K) the weights of
    the final Dense layer, the map of class c is ``ReLU(sum_f W[f, c] * A_f)``: the logit of c
    is its spatial mean plus the bias, so each location's value is its share of the evidence.
    Normalized and resized like Grad-CAM's (``classes`` likewise). Returns a :class:`CAMResult`.
    """
    batch_size = check_positive_int(batch_size, "batch_size", "cam")
    x = _check_input(model, x, "cam")
    index, dense = _cam_layers(model)
    classes = _check_classes(model, x, classes, "cam")
    xp = backend.xp(model.backend)

    def dense_weights(acts, logits, chosen):
        return dense.weight.data[:, xp.asarray(chosen)].T  # (n, F)

    return _class_maps(model, x, classes, index, batch_size, dense_weights)


def class_score_gradient(model, x, classes=None, batch_size: int = 64) -> np.ndarray:
    """d y_c / d x: the gradient of each image's class score (logit) with respect to its
    pixels, shape (N, C, H, W). ``classes`` as in :func:`grad_cam` (default: the prediction)."""
    batch_size = check_positive_int(batch_size, "batch_size", "class_score_gradient")
    x = _check_input(model, x, "class_score_gradient")
    classes = _check_classes(model, x, classes, "class_score_gradient")
    xp = backend.xp(model.backend)
    grads = []
    with _gradients_preserved(model):
        for s in _batches(len(x), batch_size):
            logits = model.forward(xp.asarray(x[s]), training=False)
            chosen = _chosen(logits, None if classes is None else classes[s])
            dy = _one_hot(chosen, logits.shape[1], logits.dtype, xp)
            grads.append(backend.to_numpy(model.backward(dy, input_grad=True)))
    return np.concatenate(grads, axis=0)


def saliency(model, x, classes=None, batch_size: int = 64) -> np.ndarray:
    """Saliency maps (N, H, W) in [0, 1]: the largest |d y_c / d x| over the colour channels at
    each pixel, divided by its maximum over the image — the pixels whose change would move the
    class score most (Simonyan et al., 2014)."""
    grads = class_score_gradient(model, x, classes, batch_size=batch_size)
    return _normalize_maps(np.abs(grads).max(axis=1))


def first_filters(model) -> int | None:
    """The index of the first layer whose weights are filters (``Layer.filters``: the first
    convolution), or None: the one way the report, the studio and conv_filters find it."""
    return next((i for i, layer in enumerate(model.layers) if layer.filters), None)


def conv_filters(model, layer=None) -> np.ndarray:
    """The filters of a Conv2D layer (default: the first) as images, shape (F, C, kh, kw),
    each filter scaled to [0, 1] on its own (min -> 0, max -> 1; a constant filter -> 0.5)."""
    if layer is None:
        index = first_filters(model)
        if index is None:
            raise ValueError("conv_filters: the model has no Conv2D layer")
    else:
        index = model.layer_index(layer)
    conv = model.layers[index]
    if not conv.filters:
        raise ValueError(f"conv_filters: layer {index} is {conv.describe()}, not a Conv2D")
    weights = np.asarray(backend.to_numpy(conv.weight.data), dtype=np.float64)
    low = weights.min(axis=(1, 2, 3), keepdims=True)
    span = weights.max(axis=(1, 2, 3), keepdims=True) - low
    return np.where(span > 0, (weights - low) / np.where(span > 0, span, 1), 0.5)
