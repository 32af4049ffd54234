"""Batch augmentation: identities, involutions, ranges, seeding, validation and the preview grid."""

from __future__ import annotations

import numpy as np
import pytest

from minicnn.data.transforms import (
    Compose,
    Normalize,
    RandomAffine,
    RandomCrop,
    RandomHorizontalFlip,
    RandomRotation,
    RandomScale,
    RandomTranslation,
    affine_matrices,
    preview,
    warp_affine,
)


def batch(n=6, c=3, h=9, w=11, low=0.2, high=0.7, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return (low + (high - low) * rng.random((n, c, h, w))).astype(dtype)


RANDOM_TRANSFORMS = [
    RandomRotation(30),
    RandomScale(0.3),
    RandomTranslation(3),
    RandomTranslation(0.25),
    RandomAffine(degrees=20, scale=(0.8, 1.2), translate=(2, 1)),
    RandomHorizontalFlip(),
    RandomCrop(padding=3),
    RandomCrop(padding=2, mode="edge"),
    Compose([RandomCrop(padding=2), RandomHorizontalFlip(), RandomAffine(degrees=10, scale=0.1)]),
]


@pytest.mark.parametrize(
    "transform",
    [RandomRotation(0), RandomScale((1.0, 1.0)), RandomTranslation(0), RandomAffine(0, (1, 1), 0, fill=0.0),
     RandomCrop(padding=0), RandomHorizontalFlip(p=0.0)],
    ids=repr,
)
def test_identity_settings(transform):
    x = batch()
    out = transform(x, np.random.default_rng(0))
    assert out.dtype == x.dtype and out.shape == x.shape
    np.testing.assert_allclose(out, x, atol=1e-6, rtol=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_flips_are_involutions(seed):
    x = batch()
    always = RandomHorizontalFlip(p=1.0)
    np.testing.assert_array_equal(always(x, np.random.default_rng(seed))[..., ::-1], x)
    np.testing.assert_array_equal(always(always(x, np.random.default_rng(0)), np.random.default_rng(1)), x)
    # a random flip applied twice with the same draws undoes itself
    half = RandomHorizontalFlip(p=0.5)
    once = half(x, np.random.default_rng(seed))
    assert not np.array_equal(once, x)
    np.testing.assert_array_equal(half(once, np.random.default_rng(seed)), x)


@pytest.mark.parametrize("transform", RANDOM_TRANSFORMS, ids=repr)
def test_outputs_stay_in_input_range(transform):
    x = batch(n=16)
    out = transform(x, np.random.default_rng(3))
    assert out.dtype == np.float32 and out.shape == x.shape
    assert out.min() >= x.min() - 1e-6 and out.max() <= x.max() + 1e-6


@pytest.mark.parametrize("transform", RANDOM_TRANSFORMS, ids=repr)
def test_seeding(transform):
    x = batch(n=16)
    copy = x.copy()
    a = transform(x, np.random.default_rng(42))
    b = transform(x, np.random.default_rng(42))
    c = transform(x, np.random.default_rng(43))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(x, copy)  # the input is never modified


def test_rotation_direction_and_quarter_turn():
    x = batch(n=2, h=7, w=7)
    out = RandomRotation((90, 90))(x, np.random.default_rng(0))
    # counter-clockwise on screen, like np.rot90 on the (row, column) axes
    np.testing.assert_allclose(out, np.rot90(x, k=1, axes=(2, 3)), atol=1e-5)


def test_translation_by_whole_pixels():
    x = batch(n=1, c=1, h=5, w=6)
    matrices = affine_matrices([0.0], [1.0], [[2.0, 1.0]], 5, 6)
    out = warp_affine(x, matrices, fill=0.0)
    np.testing.assert_allclose(out[0, 0, 1:, 2:], x[0, 0, :-1, :-2], atol=1e-6)  # moved right 2, down 1
    np.testing.assert_array_equal(out[0, 0, 0, :], 0.0)  # uncovered rows/columns get the fill value
    np.testing.assert_array_equal(out[0, 0, :, :2], 0.0)
    edge = warp_affine(x, matrices)  # default fill="edge" repeats the border instead
    np.testing.assert_allclose(edge[0, 0, 0, 2:], x[0, 0, 0, :-2], atol=1e-6)


def test_zoom_of_a_constant_image_is_constant():
    x = np.full((3, 2, 8, 8), 0.25, np.float32)
    out = RandomScale((0.5, 2.0))(x, np.random.default_rng(0))
    np.testing.assert_allclose(out, 0.25, atol=1e-6)


def test_float64_is_kept():
    x = batch(dtype=np.float64)
    for transform in RANDOM_TRANSFORMS:
        assert transform(x, np.random.default_rng(0)).dtype == np.float64


def test_random_crop_constant_padding_and_size():
    x = np.ones((20, 1, 4, 4), np.float32)
    out = RandomCrop(padding=2, mode="constant")(x, np.random.default_rng(0))
    assert out.shape == x.shape and out.min() == 0.0  # some windows include the zero border
    small = RandomCrop(padding=0, size=(2, 3))(x, np.random.default_rng(0))
    assert small.shape == (20, 1, 2, 3)
    with pytest.raises(ValueError, match="larger than the padded image"):
        RandomCrop(padding=0, size=9)(x, np.random.default_rng(0))


def test_crop_windows_are_shifted_copies():
    x = batch(n=8, c=2, h=6, w=6)
    out = RandomCrop(padding=2, mode="constant", fill=-1.0)(x, np.random.default_rng(1))
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)), constant_values=-1.0)
    for i in range(len(x)):  # each output is some 6x6 window of its padded input
        windows = np.lib.stride_tricks.sliding_window_view(padded[i], (6, 6), axis=(1, 2))
        assert np.any(np.all(windows == out[i][:, None, None], axis=(0, 3, 4)))


def test_normalize():
    x = batch(n=32)
    norm = Normalize.fit(x)
    out = norm(x)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), 1.0, atol=1e-4)
    assert out.dtype == np.float32
    np.testing.assert_allclose(Normalize([0.5], [0.25])(x), (x - 0.5) / 0.25, rtol=1e-6)
    with pytest.raises(ValueError, match="2 channel statistics for a batch with 3 channels"):
        Normalize([0.1, 0.2], [1.0, 1.0])(x)
    with pytest.raises(ValueError, match="std"):
        Normalize([0.0], [0.0])


def test_compose_with_normalize():
    x = batch()
    pipeline = Compose([RandomHorizontalFlip(p=1.0), Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])])
    np.testing.assert_allclose(pipeline(x, np.random.default_rng(0)), (x[..., ::-1] - 0.5) / 0.5, atol=1e-6)


def test_validation_errors():
    x = batch()
    with pytest.raises(TypeError, match="np.random.Generator"):
        RandomRotation(10)(x, 0)
    with pytest.raises(TypeError, match="float32/float64"):
        RandomRotation(10)((x * 255).astype(np.uint8), np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        RandomHorizontalFlip()(x[0], np.random.default_rng(0))
    with pytest.raises(ValueError, match="scale"):
        RandomScale((0.0, 1.0))
    with pytest.raises(ValueError, match="p must be"):
        RandomHorizontalFlip(p=2)
    with pytest.raises(ValueError, match="mode"):
        RandomCrop(mode="wrap")
    assert Normalize([0.0], [1.0])(x) is not None  # deterministic transforms need no rng


def test_augmentation_is_vectorized_over_the_batch():
    """A batch goes through the pipeline as whole-array operations: the number of Python
    function calls does not grow with the number of images (a per-image loop would). The
    garbage collector is paused while counting: a collection it starts runs finalizers, whose
    calls depend on what earlier tests left behind (CI once counted 138 against 140)."""
    import gc
    import sys

    pipeline = Compose([RandomCrop(padding=4), RandomHorizontalFlip(), RandomAffine(15, 0.1, 0.1)])

    def python_calls(n):
        x = batch(n=n, c=3, h=32, w=32)
        calls = [0]

        def count(frame, event, arg):
            if event == "call":
                calls[0] += 1

        gc.collect()
        gc.disable()
        sys.setprofile(count)
        try:
            pipeline(x, np.random.default_rng(1))
        finally:
            sys.setprofile(None)
            gc.enable()
        return calls[0]

    python_calls(8)  # the first call may set up what later calls reuse (numba's warp kernel)
    assert python_calls(8) == python_calls(256)


@pytest.mark.parametrize("channels", [1, 3])
def test_preview_writes_png(tmp_path, channels):
    x = batch(n=5, c=channels, h=12, w=12)
    path = preview(x, Compose([RandomRotation(20), Normalize([0.5] * channels, [0.2] * channels)]),
                   tmp_path / "grid.png", n=9, seed=1)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]  # no temporary file left


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fill", ["edge", 0.0, -0.42])
def test_the_numba_warp_samples_exactly_what_the_numpy_reference_does(dtype, fill):
    """warp_affine runs numba's kernel on the numba backend; minicnn.data.transforms._bilinear
    is what it must equal, bit for bit: points inside, on the border and far outside."""
    import minicnn
    from minicnn.data import transforms

    if not minicnn.backend.backend_available("numba"):
        pytest.skip("numba is not installed")
    from minicnn.kernels import numba_kernels

    rng = np.random.default_rng(7)
    x = rng.standard_normal((9, 3, 11, 13)).astype(dtype)
    sx = rng.uniform(-3, 16, (9, 10, 12))
    sy = rng.uniform(-3, 14, (9, 10, 12))
    sx[0], sy[1] = np.round(sx[0]), 40.0  # whole pixels; a row far below the image
    expected = transforms._bilinear(x, sx, sy, fill)
    np.testing.assert_array_equal(numba_kernels.bilinear(x, sx, sy, fill), expected)
    matrices = RandomAffine(degrees=30, scale=0.3, translate=0.2).matrices(9, 11, 13, rng)
    previous = minicnn.get_backend()
    try:
        minicnn.set_backend("numba")
        fast = warp_affine(x, matrices, fill=fill)
        minicnn.set_backend("numpy")  # the reference, as a learner switches to it
        np.testing.assert_array_equal(fast, warp_affine(x, matrices, fill=fill))
    finally:
        minicnn.set_backend(previous)
