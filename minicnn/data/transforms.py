"""Data augmentation on whole batches: every transform works on a float NCHW batch at once.

Each transform is a callable ``t(x, rng) -> x``: ``x`` a float32 (or float64) array of shape
(N, C, H, W), ``rng`` a ``np.random.Generator`` that supplies all the randomness, so the same
seed gives the same batch. Inputs are never modified; the result has the input's dtype and shape
(except RandomCrop with an explicit smaller ``size``).

Geometric transforms (rotation, scaling, translation) build one 2x3 affine matrix per image and
sample the batch through vectorized bilinear interpolation (numpy gathers; no per-image Python
loop). Bilinear weights are a convex combination of source pixels, so with the default
``fill="edge"`` the outputs stay within the input's [min, max].

Typical use::

    augment = Compose([RandomCrop(padding=4), RandomHorizontalFlip(),
                       Normalize(mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))])
    loader = DataLoader(x_train, y_train, batch_size=128, transform=augment, seed=0)
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_bytes
from ..kernels import array_module

__all__ = [
    "Transform", "Compose", "RandomAffine", "RandomRotation", "RandomScale", "RandomTranslation",
    "RandomHorizontalFlip", "RandomCrop", "Normalize", "warp_affine", "preview",
]


def _check_batch(x, who) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{who}: expected a numpy array of shape (N, C, H, W), got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{who}: expected a batch of shape (N, C, H, W), got shape {x.shape}")
    if x.dtype.kind != "f":
        raise TypeError(f"{who}: expected a float32/float64 batch, got dtype {x.dtype} "
                        "(convert images to float in [0, 1] first)")
    return x


class Transform:
    """Base class: ``t(x, rng)`` checks the batch and the generator, then calls ``apply``."""

    #: whether the transform draws random numbers (then ``rng`` must be a Generator)
    random = True

    def __call__(self, x, rng=None):
        x = _check_batch(x, type(self).__name__)
        if self.random and not isinstance(rng, np.random.Generator):
            raise TypeError(f"{type(self).__name__}: pass a np.random.Generator as rng "
                            f"(e.g. np.random.default_rng(seed)), got {type(rng).__name__}")
        return self.apply(x, rng)

    def apply(self, x: np.ndarray, rng) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class Compose(Transform):
    """Apply transforms in order, all drawing from the same generator."""

    def __init__(self, transforms):
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise TypeError(f"Compose: {t!r} is not callable as t(x, rng)")
        self.random = any(getattr(t, "random", True) for t in self.transforms)

    def apply(self, x, rng):
        for t in self.transforms:
            x = t(x, rng)
        return x

    def __repr__(self):
        return "Compose([" + ", ".join(repr(t) for t in self.transforms) + "])"


# --------------------------------------------------------------------------- affine warps


def _range(value, name, centre, *, positive=False) -> tuple[float, float]:
    """A number v means (centre - v, centre + v); a pair is taken as (low, high)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name}: expected a number or a (low, high) pair, got {value!r}")
        low, high = float(value[0]), float(value[1])
    else:
        low, high = centre - abs(float(value)), centre + abs(float(value))
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise ValueError(f"{name}: invalid range ({low}, {high})")
    if positive and low <= 0:
        raise ValueError(f"{name}: the range must stay positive, got ({low}, {high})")
    return low, high


class RandomAffine(Transform):
    """Random rotation, scaling and translation, one affine matrix per image.

    Args:
        degrees: rotation angle drawn uniformly from (-degrees, degrees), or from a
            ``(low, high)`` pair; positive angles turn the content counter-clockwise.
        scale: zoom factor drawn from (1 - scale, 1 + scale) for a number, or a ``(low, high)``
            pair of positive factors; None keeps the size. Factors > 1 enlarge the content.
        translate: maximal shift, drawn uniformly from (-t, t) per axis: one value for both axes
            or ``(tx, ty)``. As in Keras, a float below 1 is a fraction of the width/height, any
            other value a number of pixels (sub-pixel shifts are interpolated).
        fill: "edge" repeats the border pixels for points sampled outside the image (keeps the
            output within the input's range); a number fills them with that constant.

    Rotation and scaling are about the image centre. An angle of 0, a scale of 1 and a shift
    of 0 reproduce the input exactly.
    """

    def __init__(self, degrees=0.0, scale=None, translate=None, fill="edge"):
        self.degrees = _range(degrees, "degrees", 0.0)
        self.scale = None if scale is None else _range(scale, "scale", 1.0, positive=True)
        if translate is None:
            self.translate = None
        else:
            pair = tuple(translate) if isinstance(translate, (tuple, list)) else (translate, translate)
            if len(pair) != 2 or not all(math.isfinite(float(v)) and float(v) >= 0 for v in pair):
                raise ValueError(f"translate: expected a non-negative number or (tx, ty), got {translate!r}")
            self.translate = pair
        if not (fill == "edge" or (isinstance(fill, (int, float)) and math.isfinite(fill))):
            raise ValueError(f"fill must be 'edge' or a number, got {fill!r}")
        self.fill = fill

    @staticmethod
    def _max_shift(value, extent: int) -> float:
        if isinstance(value, float) and value < 1:
            return value * extent  # a fraction of the width or height
        return float(value)

    def matrices(self, n: int, height: int, width: int, rng) -> np.ndarray:
        """Draw ``n`` inverse affine maps (N, 2, 3): output (col, row, 1) -> source (x, y)."""
        angle = np.deg2rad(rng.uniform(*self.degrees, size=n))
        zoom = rng.uniform(*self.scale, size=n) if self.scale is not None else np.ones(n)
        if self.translate is not None:
            mx, my = self._max_shift(self.translate[0], width), self._max_shift(self.translate[1], height)
            shift = np.stack([rng.uniform(-mx, mx, size=n), rng.uniform(-my, my, size=n)], axis=1)
        else:
            shift = np.zeros((n, 2))
        return affine_matrices(angle, zoom, shift, height, width)

    def apply(self, x, rng):
        n, _, h, w = x.shape
        return warp_affine(x, self.matrices(n, h, w, rng), fill=self.fill)


class RandomRotation(RandomAffine):
    """Rotation by an angle drawn from (-degrees, degrees) (or a (low, high) pair)."""

    def __init__(self, degrees, fill="edge"):
        super().__init__(degrees=degrees, fill=fill)


class RandomScale(RandomAffine):
    """Zoom by a factor from (1 - scale, 1 + scale) (or a (low, high) pair) about the centre."""

    def __init__(self, scale, fill="edge"):
        super().__init__(scale=scale, fill=fill)


class RandomTranslation(RandomAffine):
    """Shift by up to ``shift`` (pixels, or a fraction of the size when a float < 1) per axis."""

    def __init__(self, shift, fill="edge"):
        super().__init__(translate=shift, fill=fill)


def affine_matrices(angle, zoom, shift, height: int, width: int) -> np.ndarray:
    """Inverse maps (N, 2, 3) for rotations ``angle`` (radians), zooms and shifts (N, 2) in pixels.

    The forward map is ``dst = c + shift + zoom * R(angle) (src - c)`` about the centre ``c``;
    sampling needs its inverse, ``src = c + R(angle)^T (dst - c - shift) / zoom``.
    """
    angle, zoom, shift = np.asarray(angle, float), np.asarray(zoom, float), np.asarray(shift, float)
    cos, sin = np.cos(angle), np.sin(angle)
    # R in (x, y-down) coordinates for a counter-clockwise turn on screen is [[cos, sin], [-sin, cos]];
    # its transpose divided by the zoom is the inverse's linear part.
    inv = np.empty((len(angle), 2, 3))
    inv[:, 0, 0], inv[:, 0, 1] = cos / zoom, -sin / zoom
    inv[:, 1, 0], inv[:, 1, 1] = sin / zoom, cos / zoom
    centre = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
    moved = centre[None, :] + shift  # where the centre lands
    inv[:, :, 2] = centre[None, :] - np.einsum("nij,nj->ni", inv[:, :, :2], moved)
    return inv


def warp_affine(x: np.ndarray, matrices: np.ndarray, fill="edge") -> np.ndarray:
    """Sample each image ``x[i]`` at ``matrices[i] @ (col, row, 1)`` with bilinear interpolation.

    ``matrices`` has shape (N, 2, 3) and maps output pixel coordinates to source coordinates
    (x = column, y = row). ``fill="edge"`` clamps source points to the border, a number fills
    the part of each output pixel that falls outside the image with that value.
    """
    x = _check_batch(x, "warp_affine")
    n, c, h, w = x.shape
    m = np.asarray(matrices, dtype=np.float64)
    if m.shape != (n, 2, 3):
        raise ValueError(f"warp_affine: expected matrices of shape ({n}, 2, 3), got {m.shape}")
    cols = np.arange(w, dtype=np.float64)[None, None, :]
    rows = np.arange(h, dtype=np.float64)[None, :, None]
    sx = m[:, 0, 0, None, None] * cols + m[:, 0, 1, None, None] * rows + m[:, 0, 2, None, None]
    sy = m[:, 1, 0, None, None] * cols + m[:, 1, 1, None, None] * rows + m[:, 1, 2, None, None]
    return _fast_bilinear()(x, sx, sy, fill)


def _fast_bilinear():
    """The numba kernel of :func:`_bilinear` (equal to it, bit for bit, and ~20x faster: the
    warp would otherwise take a fifth of a small network's training step), unless the numpy
    backend is chosen (then what runs is the code below) or numba is missing."""
    from .. import backend

    if backend.get_backend() == "numpy" or not backend.backend_available("numba"):
        return _bilinear
    from ..kernels import numba_kernels

    return numba_kernels.bilinear


def _bilinear(x, sx, sy, fill):
    """Bilinear samples of every image at (sx, sy) (each (N, H', W')); returns (N, C, H', W')."""
    if fill != "edge":
        # A constant fill is the "edge" rule applied to the image framed by one pixel of ``fill``:
        # points outside then blend towards (and far outside equal) the fill value.
        x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=fill)
        sx, sy = sx + 1.0, sy + 1.0
    n, c, h, w = x.shape
    x0f, y0f = np.floor(sx), np.floor(sy)
    wx = (sx - x0f).astype(x.dtype)[:, None]  # (N, 1, H', W'): shared by the channels
    wy = (sy - y0f).astype(x.dtype)[:, None]
    x0 = np.clip(x0f, 0, w - 1).astype(np.intp)
    x1 = np.clip(x0f + 1, 0, w - 1).astype(np.intp)
    y0 = np.clip(y0f, 0, h - 1).astype(np.intp) * w
    y1 = np.clip(y0f + 1, 0, h - 1).astype(np.intp) * w
    # One flat gather per corner: offsets of each (image, channel) plane plus the pixel index.
    # (np.take on flat indices: cheaper than take_along_axis, which broadcasts over channels.)
    src = np.ascontiguousarray(x).reshape(-1)
    plane = (np.arange(n)[:, None] * (c * h * w) + np.arange(c)[None, :] * (h * w))[:, :, None, None]

    def corner(yy, xx):
        return np.take(src, plane + (yy + xx)[:, None])

    top = corner(y0, x0)
    top += (corner(y0, x1) - top) * wx
    bottom = corner(y1, x0)
    bottom += (corner(y1, x1) - bottom) * wx
    top += (bottom - top) * wy
    return top


# --------------------------------------------------------------------------- flips, crops


class RandomHorizontalFlip(Transform):
    """Mirror each image left-right with probability ``p`` (drawn per image)."""

    def __init__(self, p: float = 0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: p must be in [0, 1], got {p}")
        self.p = float(p)

    def apply(self, x, rng):
        flip = rng.random(len(x)) < self.p
        return np.where(flip[:, None, None, None], x[..., ::-1], x)


def shift_images(x, dy: int, dx: int):
    """(N, C, H, W) images with their content moved ``dy`` pixels down and ``dx`` right (negative:
    up, left); the uncovered border repeats the edge pixels. NumPy or CuPy arrays alike."""
    xp = array_module(x)
    n, c, h, w = x.shape
    py, px = abs(int(dy)), abs(int(dx))
    padded = xp.pad(x, ((0, 0), (0, 0), (py, py), (px, px)), mode="edge")
    top, left = py - int(dy), px - int(dx)
    return xp.ascontiguousarray(padded[:, :, top:top + h, left:left + w])


class RandomCrop(Transform):
    """Pad each image by ``padding`` pixels, then cut a random window (CIFAR-style jitter).

    Args:
        padding: pixels added on every side: one int, or ``(pad_y, pad_x)``.
        size: ``(height, width)`` of the window; default: the input's size.
        mode: how the border is filled: "reflect" (default: mirrored content, so the output
            stays within the input's range), "edge" (repeat the border) or "constant" (``fill``).
        fill: the constant for ``mode="constant"``.
    """

    def __init__(self, padding=4, size=None, mode: str = "reflect", fill: float = 0.0):
        pad = tuple(padding) if isinstance(padding, (tuple, list)) else (padding, padding)
        if len(pad) != 2 or not all(isinstance(p, (int, np.integer)) and p >= 0 for p in pad):
            raise ValueError(
                f"RandomCrop: padding must be a non-negative int or (pad_y, pad_x), got {padding!r}"
            )
        if mode not in ("reflect", "edge", "constant"):
            raise ValueError(f"RandomCrop: mode must be 'reflect', 'edge' or 'constant', got {mode!r}")
        if size is not None:
            size = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
            if len(size) != 2 or min(size) <= 0:
                raise ValueError(f"RandomCrop: size must be positive (height, width), got {size!r}")
        self.padding, self.size, self.mode, self.fill = (int(pad[0]), int(pad[1])), size, mode, float(fill)

    def apply(self, x, rng):
        n, c, h, w = x.shape
        py, px = self.padding
        out_h, out_w = self.size if self.size is not None else (h, w)
        if out_h > h + 2 * py or out_w > w + 2 * px:
            raise ValueError(f"RandomCrop: window {out_h}x{out_w} larger than the padded image "
                             f"{h + 2 * py}x{w + 2 * px}")
        widths = ((0, 0), (0, 0), (py, py), (px, px))
        if self.mode == "constant":
            padded = np.pad(x, widths, mode="constant", constant_values=self.fill)
        else:
            padded = np.pad(x, widths, mode=self.mode)
        oy = rng.integers(0, h + 2 * py - out_h + 1, size=n)
        ox = rng.integers(0, w + 2 * px - out_w + 1, size=n)
        windows = np.lib.stride_tricks.sliding_window_view(padded, (out_h, out_w), axis=(2, 3))
        # windows: (N, C, positions_y, positions_x, out_h, out_w); pick one position per image.
        return np.ascontiguousarray(windows[np.arange(n), :, oy, ox])


# --------------------------------------------------------------------------- normalization


class Normalize(Transform):
    """``(x - mean) / std`` per channel (deterministic: ``rng`` is not used)."""

    random = False

    def __init__(self, mean, std):
        self.mean = np.atleast_1d(np.asarray(mean, dtype=np.float64))
        self.std = np.atleast_1d(np.asarray(std, dtype=np.float64))
        if self.mean.ndim != 1 or self.mean.shape != self.std.shape:
            raise ValueError(f"Normalize: mean and std must be 1-D of the same length, got "
                             f"{self.mean.shape} and {self.std.shape}")
        if not (np.all(np.isfinite(self.mean)) and np.all(np.isfinite(self.std)) and np.all(self.std > 0)):
            raise ValueError("Normalize: mean must be finite and std finite and > 0")

    @classmethod
    def fit(cls, x: np.ndarray) -> Normalize:
        """The per-channel mean and std of a dataset ``x`` (N, C, H, W), accumulated in float64."""
        x = _check_batch(x, "Normalize.fit")
        mean = x.mean(axis=(0, 2, 3), dtype=np.float64)
        std = x.std(axis=(0, 2, 3), dtype=np.float64)
        return cls(mean, np.where(std > 0, std, 1.0))

    def apply(self, x, rng):
        c = x.shape[1]
        if len(self.mean) not in (1, c):
            raise ValueError(f"Normalize: {len(self.mean)} channel statistics for a batch with {c} channels")
        mean = self.mean.astype(x.dtype)[None, :, None, None]
        std = self.std.astype(x.dtype)[None, :, None, None]
        return (x - mean) / std

    def __repr__(self):
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()})"


# --------------------------------------------------------------------------- preview


def preview(images, transform, path, n: int = 16, seed: int = 0, ncols: int | None = None) -> Path:
    """Save a grid PNG of ``n`` augmented samples: ``transform(images[:n], default_rng(seed))``.

    Uses ``n`` images spread evenly over ``images`` (repeated when there are fewer), so calling
    it again with another seed shows other augmentations of the same images. Images outside [0, 1] (after
    Normalize) are rescaled per image for display. The figure is drawn with matplotlib's Agg
    canvas (no window, no pyplot state) and written atomically. Returns the path.
    """
    images = _check_batch(np.asarray(images), "preview")
    if len(images) == 0 or n <= 0:
        raise ValueError("preview: need at least one image and n >= 1")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if len(images) >= n:
        batch = images[np.linspace(0, len(images) - 1, n).astype(int)]  # across classes if sorted
    else:
        batch = images[np.arange(n) % len(images)]
    if transform is not None:
        batch = transform(batch, np.random.default_rng(seed))
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(1.3 * ncols, 1.3 * nrows + 0.4))
    FigureCanvasAgg(fig)
    for i, image in enumerate(batch):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        image = np.asarray(image, dtype=np.float64)
        if image.min() < 0 or image.max() > 1:
            low, high = image.min(), image.max()
            image = (image - low) / (high - low) if high > low else np.zeros_like(image)
        if image.shape[0] == 3:
            ax.imshow(image.transpose(1, 2, 0), interpolation="nearest")
        else:
            ax.imshow(image[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_axis_off()
    fig.suptitle(f"{transform!r}"[:90] + f"  (seed {seed})", fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue())
    return path
