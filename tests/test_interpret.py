"""Interpretation: split forward/backward passes, saliency, Grad-CAM, CAM, feature maps.

Correctness is checked two ways: against central differences on tiny float64 models (the
saliency is d score / d x, the Grad-CAM weights are the mean of d score / d A), and on a
synthetic task where the right answer is known: the class of a 16x16 image is the colour of a
small bright square at a random place (noise everywhere else), so a trained network's
heatmap must peak inside that square.

(Why not "the class is the quadrant of the square"? Then the evidence is purely *where* the
square is. Grad-CAM averages the gradient over all positions, so for a Flatten -> Dense head
those per-position weights cancel out and the map says nothing; that is a limitation of
Grad-CAM, not something a correct implementation can fix.)
"""

import numpy as np
import pytest
from helpers import assert_gradients_match, clear_input, distinct_values, draws, require
from hypothesis import given, settings
from hypothesis import strategies as st

import minicnn as mc
from minicnn import interpret
from minicnn.gradcheck import check_gradient, directional_derivative
from minicnn.layers import (
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    LeakyReLU,
    MaxPool2D,
    ReLU,
    Tanh,
)


def tiny_model(head="gap", seed=0):
    """A float64 model with every kind of layer on the path (BatchNorm with non-trivial
    running statistics, so inference mode matters)."""
    rng = np.random.default_rng(seed)
    body = [Conv2D(2, 3, 3, padding=1), BatchNorm2D(3), LeakyReLU(0.1), MaxPool2D(2),
            Conv2D(3, 4, 3, padding=1), Tanh()]
    if head == "gap":
        tail = [GlobalAvgPool2D(), Dropout(0.5), Dense(4, 3)]
    else:
        tail = [Flatten(), Dense(4 * 4 * 4, 3)]
    model = mc.Sequential(body + tail, seed=seed).astype(np.float64)
    bn = model.layers[1]
    bn.running_mean.data = rng.normal(size=3)
    bn.running_var.data = rng.uniform(0.5, 2.0, size=3)
    # |gamma| >= 0.5: a channel scaled towards 0 would crowd every value next to LeakyReLU's kink
    bn.gamma.data = rng.uniform(0.5, 2.0, size=3) * rng.choice([-1.0, 1.0], size=3)
    bn.beta.data = rng.normal(size=3)
    return model


def tiny_input(n=3, seed=1):
    return distinct_values(np.random.default_rng(seed), (n, 2, 8, 8), spacing=1e-2)


# -- the split passes ---------------------------------------------------------------------------

def test_forward_to_and_forward_from_compose_to_forward():
    model, x = tiny_model(), tiny_input()
    logits = model.forward(x)
    for k in range(len(model.layers)):
        h = model.forward_to(x, k)
        assert h.shape == (3,) + model.output_shapes(x.shape[1:])[k]
        np.testing.assert_allclose(model.forward_from(h, k), logits, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(model.forward_to(x, -1), logits)
    assert model.forward_to(x, model.layers[3]).shape == (3, 3, 4, 4)  # a Layer object


def test_backward_to_is_the_upper_part_of_backward():
    model, x = tiny_model(head="flat"), tiny_input()
    dy = np.random.default_rng(2).normal(size=(3, 3))
    model.forward(x)
    dx = model.backward(dy)
    grads = [p.grad.copy() for p in model.parameters()]
    k = 4  # the second Conv2D: dL/d(its output), then the rest of backward by hand
    model.forward(x)
    g = model.backward_to(dy, k)
    assert g.shape == (3, 4, 4, 4)
    for layer in reversed(model.layers[:k + 1]):
        g = layer.backward(g)
    np.testing.assert_allclose(g, dx, rtol=1e-12, atol=1e-14)
    for p, expected in zip(model.parameters(), grads):
        np.testing.assert_allclose(p.grad, expected, rtol=1e-12, atol=1e-14)
    assert model.backward_to(dy, -1) is dy


def test_layer_index_errors_name_the_problem():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"layer index 9 is out of range; this model has 9 layers"):
        model.forward_to(tiny_input(), 9)
    with pytest.raises(ValueError, match="out of range"):
        model.backward_to(np.zeros((3, 3)), -10)
    with pytest.raises(TypeError, match="must be an int or a Layer"):
        model.layer_index("conv")
    with pytest.raises(ValueError, match="not one of this model's layers"):
        model.layer_index(ReLU())
    with pytest.raises(ValueError, match=r"layer 8 \(Dense\) cannot take per-sample shape \(5,\)"):
        model.forward_from(np.zeros((1, 5, 4, 4)), 4)


# -- gradients against central differences --------------------------------------------------------

@pytest.mark.parametrize("head", ["gap", "flat"])
@settings(max_examples=draws(20, minimum=3))
@given(seed=st.integers(0, 2**32 - 1))
def test_saliency_equals_the_numerical_gradient_of_the_class_score(head, seed):
    model = tiny_model(head, seed % 1000)
    # no finite-difference step may cross a LeakyReLU kink or a max-pool tie
    x = clear_input(model, np.random.default_rng(seed), (3, 2, 8, 8), training=False)
    classes = np.array([0, 2, 1])
    grads = interpret.class_score_gradient(model, x, classes)
    assert grads.shape == x.shape and grads.dtype == np.float64
    for n, c in enumerate(classes):
        xn = x[n:n + 1].copy()
        assert_gradients_match(
            check_gradient(lambda xn=xn, c=c: model.forward(xn)[0, c], xn, grads[n:n + 1]))
    # the saliency map: largest |gradient| over the channels, divided by its maximum
    expected = np.abs(grads).max(axis=1)
    expected /= expected.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(interpret.saliency(model, x, classes), expected)


def test_default_classes_are_the_predictions():
    model, x = tiny_model(), tiny_input(5)
    predicted = model.predict(x).argmax(axis=1)
    np.testing.assert_array_equal(interpret.class_score_gradient(model, x),
                                  interpret.class_score_gradient(model, x, predicted))
    np.testing.assert_array_equal(interpret.grad_cam(model, x).classes, predicted)


@pytest.mark.parametrize("head, layer", [("gap", 5), ("gap", 4), ("flat", 2), ("flat", 5)])
@settings(max_examples=draws(20, minimum=3))
@given(seed=st.integers(0, 2**32 - 1))
def test_grad_cam_weights_equal_the_numerical_gradient(head, layer, seed):
    model = tiny_model(head, seed % 1000)
    x = clear_input(model, np.random.default_rng(seed), (3, 2, 8, 8), training=False)
    classes = np.array([1, 0, 2])
    result = interpret.grad_cam(model, x, classes, layer=layer)
    acts = model.forward_to(x, layer)
    np.testing.assert_allclose(result.activations, acts)
    for n, c in enumerate(classes):
        a = acts[n:n + 1].copy()
        # alpha_f = mean over the positions of d score / d A_f: the gradient of the score along
        # a direction that moves every position of map f alike, one map at a time
        # (compared as a vector: one weight alone may be a near-zero sum of +- gradients)
        score = lambda a=a, c=c: model.forward_from(a, layer)[0, c]  # noqa: E731
        numeric = np.zeros(a.shape[1])
        for f in range(a.shape[1]):
            direction = np.zeros_like(a)
            direction[0, f] = 1 / a[0, f].size
            numeric[f] = directional_derivative(score, a, direction)
        error = np.linalg.norm(result.weights[n] - numeric) / np.linalg.norm(numeric)
        assert_gradients_match({"weights": error})
    # the map is ReLU(sum_f alpha_f A_f); the heatmap its bilinear upsampling, scaled to [0, 1]
    maps = np.maximum(np.einsum("nf,nfhw->nhw", result.weights, acts), 0)
    np.testing.assert_allclose(result.maps, maps, atol=1e-12)
    assert result.heatmaps.shape == (3, 8, 8) and result.layer == layer
    assert result.heatmaps.min() >= 0 and result.heatmaps.max() <= 1
    for heat, m in zip(result.heatmaps, maps):
        assert heat.max() == (1.0 if m.max() > 0 else 0.0)
    np.testing.assert_array_equal(result.classes, classes)


def test_cam_is_grad_cam_on_a_global_average_pooling_network():
    model, x = tiny_model("gap"), tiny_input()
    classes = np.array([2, 2, 0])
    cam = interpret.cam(model, x, classes)
    assert cam.layer == 5  # the maps entering GlobalAvgPool2D (Dropout in between is skipped)
    np.testing.assert_allclose(cam.weights, model.layers[-1].weight.data[:, classes].T)
    grad = interpret.grad_cam(model, x, classes, layer=5)
    # Grad-CAM's weights there are W[:, c] / (h*w): the same maps up to the scale
    np.testing.assert_allclose(grad.weights * 16, cam.weights, rtol=1e-10)
    np.testing.assert_allclose(grad.heatmaps, cam.heatmaps, atol=1e-12)
    # CAM decomposes the logit: its spatial mean (before the ReLU) plus the bias
    raw = np.einsum("nf,nfhw->nhw", cam.weights, cam.activations).mean(axis=(1, 2))
    logits = model.forward(x)[np.arange(3), classes]
    np.testing.assert_allclose(raw + model.layers[-1].bias.data[classes], logits, rtol=1e-10)


def test_bilinear_resize_matches_pixel_centre_interpolation():
    maps = np.arange(4.0).reshape(1, 2, 2)  # [[0, 1], [2, 3]]
    out = interpret.bilinear_resize(maps, (4, 4))
    # output pixel i samples (i + 0.5) / 2 - 0.5: -0.25 (clamped to 0), 0.25, 0.75, 1.25 (-> 1)
    np.testing.assert_allclose(out[0, 0], [0, 0.25, 0.75, 1])
    np.testing.assert_allclose(out[0, :, 0], [0, 0.5, 1.5, 2])
    np.testing.assert_array_equal(interpret.bilinear_resize(maps, (2, 2)), maps)
    torch = require("torch")
    maps = np.random.default_rng(0).random((3, 5, 7))
    expected = torch.nn.functional.interpolate(torch.from_numpy(maps)[:, None], size=(16, 9),
                                               mode="bilinear", align_corners=False)[:, 0]
    np.testing.assert_allclose(interpret.bilinear_resize(maps, (16, 9)), expected.numpy(),
                               atol=1e-12)


# -- behaviour -------------------------------------------------------------------------------------

def test_results_do_not_depend_on_the_batch_size_and_gradients_are_kept():
    model, x = tiny_model(), tiny_input(5)
    model.forward(x, training=True)
    model.backward(np.ones((5, 3)))
    grads = [p.grad.copy() for p in model.parameters()]
    full = interpret.grad_cam(model, x)
    parts = interpret.grad_cam(model, x, batch_size=2)
    np.testing.assert_allclose(parts.heatmaps, full.heatmaps, atol=1e-12)
    np.testing.assert_allclose(interpret.saliency(model, x, batch_size=2),
                               interpret.saliency(model, x), atol=1e-12)
    np.testing.assert_allclose(interpret.feature_maps(model, x, 2, batch_size=2),
                               model.forward_to(x, 2), atol=1e-12)
    for p, before in zip(model.parameters(), grads):  # training gradients untouched
        np.testing.assert_array_equal(p.grad, before)


def test_default_layer_and_filters():
    model = tiny_model()
    assert interpret.default_cam_layer(model) == 5  # last Conv2D, through its Tanh
    assert interpret.has_convolution(model)
    dense_only = mc.Sequential([Flatten(), Dense(4, 2)], seed=0)
    assert not interpret.has_convolution(dense_only)
    with pytest.raises(ValueError, match="no Conv2D layer"):
        interpret.default_cam_layer(dense_only)
    assert interpret.conv_block_output(model, 0) == 2  # Conv2D -> BatchNorm2D -> LeakyReLU
    filters = interpret.conv_filters(model)
    assert filters.shape == (3, 2, 3, 3)
    assert filters.min(axis=(1, 2, 3)).tolist() == [0, 0, 0]
    assert filters.max(axis=(1, 2, 3)).tolist() == [1, 1, 1]
    assert interpret.conv_filters(model, 4).shape == (4, 3, 3, 3)


def test_clear_errors():
    x = tiny_input()
    flat = tiny_model("flat")
    with pytest.raises(ValueError, match="CAM needs a model that ends in GlobalAvgPool2D -> Dense"):
        interpret.cam(flat, x)
    with pytest.raises(ValueError, match=r"layer 7 \(Dense\(64->3\)\) outputs .* not "
                                         r"convolutional feature maps.*layer=5"):
        interpret.grad_cam(flat, x, layer=7)
    with pytest.raises(ValueError, match="out of range"):
        interpret.grad_cam(flat, x, layer=20)
    with pytest.raises(ValueError, match=r"classes must be in \[0, 2\]"):
        interpret.saliency(flat, x, classes=[0, 1, 3])
    with pytest.raises(ValueError, match="one class per image"):
        interpret.grad_cam(flat, x, classes=[0, 1])
    with pytest.raises(ValueError, match="not a Conv2D"):
        interpret.conv_filters(flat, 1)
    with pytest.raises(ValueError, match="Conv2D: expected input with 2 channels"):
        interpret.grad_cam(flat, np.zeros((1, 3, 8, 8)))
    dense_only = mc.Sequential([Flatten(), Dense(4, 2)], seed=0)
    with pytest.raises(ValueError, match="no Conv2D layer"):
        interpret.grad_cam(dense_only, np.zeros((1, 1, 2, 2), np.float32))
    assert interpret.saliency(dense_only, np.ones((1, 1, 2, 2), np.float32)).shape == (1, 2, 2)


# -- a trained network looks at the right place ------------------------------------------------------

COLOURS = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], np.float32)


def coloured_squares(n, rng, size=16, patch=4):
    """Noise images with one bright square whose colour is the class; returns its boxes."""
    x = rng.normal(0, 0.3, (n, 3, size, size)).astype(np.float32)
    y = rng.integers(0, 4, n)
    rows = rng.integers(0, size - patch + 1, n)
    cols = rng.integers(0, size - patch + 1, n)
    for i in range(n):
        x[i, :, rows[i]:rows[i] + patch, cols[i]:cols[i] + patch] += 1.5 * COLOURS[y[i], :, None, None]
    return x, y, np.stack([rows, rows + patch, cols, cols + patch], axis=1)


def share_peaking_inside(heatmaps, boxes) -> float:
    hits = 0
    for heat, (r0, r1, c0, c1) in zip(heatmaps, boxes):
        r, c = np.unravel_index(heat.argmax(), heat.shape)
        hits += bool(r0 <= r < r1 and c0 <= c < c1)
    return hits / len(heatmaps)


@pytest.fixture(scope="module")
def squares():
    rng = np.random.default_rng(0)
    return coloured_squares(1024, rng), coloured_squares(100, rng)


def trained(head, train):
    """A small CNN trained for two epochs on the numpy backend (a few seconds)."""
    tail = ([GlobalAvgPool2D(), Dense(16, 4)] if head == "gap" else
            [MaxPool2D(2), Flatten(), Dense(16 * 4 * 4, 4)])
    model = mc.Sequential([Conv2D(3, 8, 3, padding=1), ReLU(), MaxPool2D(2),
                           Conv2D(8, 16, 3, padding=1), ReLU()] + tail, seed=0)
    mc.fit(model, mc.losses.SoftmaxCrossEntropy(), mc.optim.Adam(model.parameters(), lr=1e-2),
           train[:2], epochs=2, batch_size=32, verbose=0, seed=0)
    return model


def test_cam_grad_cam_and_saliency_point_at_the_square(squares):
    train, (x, y, boxes) = squares
    model = trained("gap", train)
    assert (model.predict(x).argmax(axis=1) == y).mean() >= 0.95
    grad = interpret.grad_cam(model, x, y)
    cam = interpret.cam(model, x, y)
    assert grad.layer == 4 and grad.heatmaps.shape == (100, 16, 16)
    assert share_peaking_inside(grad.heatmaps, boxes) >= 0.9
    assert share_peaking_inside(cam.heatmaps, boxes) >= 0.9
    np.testing.assert_allclose(grad.heatmaps, cam.heatmaps, atol=1e-5)
    # saliency is noisy pixel by pixel (the noise pixels matter too); on average it is larger
    # on the square than elsewhere
    sal = interpret.saliency(model, x, y)
    inside = np.zeros(sal.shape, bool)
    for mask, (r0, r1, c0, c1) in zip(inside, boxes):
        mask[r0:r1, c0:c1] = True
    ratios = np.array([s[m].mean() / s[~m].mean() for s, m in zip(sal, inside)])
    assert np.mean(ratios > 1) >= 0.9 and np.median(ratios) > 1.5


def test_grad_cam_with_a_dense_head_points_at_the_square(squares):
    train, (x, y, boxes) = squares
    model = trained("flat", train)
    assert (model.predict(x).argmax(axis=1) == y).mean() >= 0.95
    assert share_peaking_inside(interpret.grad_cam(model, x, y).heatmaps, boxes) >= 0.75


# -- layer facts as declarations (Layer.per_channel, Layer.convolutional) --------------------------

def _registered_layers():
    from minicnn.layers.registry import LAYER_TYPES

    return sorted(LAYER_TYPES.items())


@pytest.mark.parametrize("name, cls", _registered_layers())
def test_every_layer_that_says_it_is_per_channel_is(name, cls):
    """A layer declaring per_channel keeps the (C, H, W) grid and computes each channel from that
    channel alone: changing input channel 0 changes output channel 0 only. A layer that does not
    declare it is not checked (it may or may not mix channels)."""
    if not cls.per_channel:
        return
    layer = cls(3) if name == "BatchNorm2D" else cls()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    y = layer.forward(x, training=False)
    changed = x.copy()
    changed[:, 0] += rng.standard_normal((2, 5, 5)).astype(np.float32)
    y_changed = layer.forward(changed, training=False)
    assert y.shape == x.shape
    np.testing.assert_array_equal(y_changed[:, 1:], y[:, 1:])
    assert not np.array_equal(y_changed[:, 0], y[:, 0])


def test_every_activation_declares_itself_per_channel():
    from minicnn.layers import activations

    classes = [cls for _, cls in _registered_layers() if cls.__module__ == activations.__name__]
    assert len(classes) >= 5 and all(cls.per_channel for cls in classes)


@pytest.mark.parametrize("activation", ["ReLU", "LeakyReLU", "ELU", "GELU", "Tanh", "Sigmoid"])
def test_the_default_grad_cam_layer_ends_after_any_activation(activation):
    from minicnn.layers.registry import LAYER_TYPES

    model = mc.Sequential([Conv2D(1, 4, 3, padding=1), BatchNorm2D(4), LAYER_TYPES[activation](),
                           MaxPool2D(2), mc.models.basic_block(4, 4), LAYER_TYPES[activation](),
                           GlobalAvgPool2D(), Dense(4, 3)], seed=0)
    assert interpret.conv_block_output(model, 0) == 2  # conv, BatchNorm, the activation
    assert interpret.conv_block_output(model, -1) == 5  # the residual block and its activation


def _layer_for_facts(name, cls):
    """An instance of every registered layer, for the facts' tests (None: a container)."""
    from minicnn.layers import Conv2D as Conv

    arguments = {"BatchNorm2D": (3,), "Conv2D": (3, 4, 3), "Dense": (6, 4), "MaxPool2D": (2,),
                 "AvgPool2D": (2,), "Residual": ([Conv(3, 3, 3, padding=1)],)}
    if name == "Sequential":
        return None
    return cls(*arguments.get(name, ()))


@pytest.mark.parametrize("name, cls", _registered_layers())
def test_every_layer_fact_holds_where_it_is_declared(name, cls):
    """Layer.filters, identity_at_inference, rectifies, pools_globally, linear_map: checked on the
    layer's own output where declared, and seen false where a same-shaped layer does not
    declare it (interpret, report, studio and diagnostics read these, not the layer's class)."""
    layer = _layer_for_facts(name, cls)
    if layer is None:
        return
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 6) if name == "Dense" else (2, 3, 6, 6)).astype(np.float32)
    if name == "Flatten":
        x = x[:, :1, :2, :3]
    y = layer.forward(x, training=False)
    if cls.filters:
        assert layer.weight.data.ndim == 4 and layer.weight.data.shape[1] == x.shape[1]
    if cls.linear_map:
        np.testing.assert_allclose(y, x @ layer.weight.data + layer.bias.data, rtol=1e-5)
    if cls.pools_globally:
        np.testing.assert_allclose(y, x.mean(axis=(2, 3)), rtol=1e-5)
    same_shape = y.shape == x.shape
    if cls.identity_at_inference or (same_shape and cls.per_channel):
        assert np.array_equal(y, x) == cls.identity_at_inference
    if cls.rectifies or (same_shape and cls.per_channel):
        assert (bool(np.all(y[x < 0] == 0)) and bool(np.all(y[x > 0] > 0))) == cls.rectifies


def test_no_module_outside_layers_asks_a_layer_its_class():
    """Facts about layers are declared by the layers (the tests above hold them): a module
    outside minicnn/layers/ that tests isinstance(x, SomeLayer) or type(x) is SomeLayer would
    miss the next layer added (as interpret.py once missed ELU)."""
    import ast
    from pathlib import Path

    from minicnn.layers.registry import LAYER_TYPES

    package = Path(mc.__file__).parent
    asked = []
    for path in sorted(package.rglob("*.py")):
        if path.parent.name == "layers":
            continue
        tree = ast.parse(path.read_text())
        layer_names = {alias.asname or alias.name for node in ast.walk(tree)
                       if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("layers")
                       for alias in node.names if alias.name in LAYER_TYPES}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance":
                kinds = node.args[1].elts if isinstance(node.args[1], ast.Tuple) else [node.args[1]]
                names = {getattr(kind, "id", None) for kind in kinds}
            elif isinstance(node, ast.Compare) and isinstance(node.ops[0], (ast.Is, ast.Eq)) and \
                    getattr(getattr(node.left, "func", None), "id", None) == "type":
                names = {getattr(node.comparators[0], "id", None)}
            else:
                continue
            if names & layer_names - {"Sequential", "Layer"}:
                asked.append(f"{path.relative_to(package)}:{node.lineno}")
    assert not asked, asked
