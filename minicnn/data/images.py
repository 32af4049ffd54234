"""Reading image files: the one decoder behind the image-folder loader and ``minicnn predict``,
so that an image is seen exactly the same way in training and in prediction; and a drawing
prepared as MNIST prepared its digits (minicnn studio's canvas)."""

from __future__ import annotations

import os

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_PIL_FORMAT = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def decode_image(path, size, channels: int) -> np.ndarray:
    """The image file ``path`` as uint8 of shape (channels, height, width), ``size`` being
    (height, width): EXIF orientation applied (a phone photo stands upright), 16-bit and float
    images scaled to 8 bits, palette images expanded, alpha dropped, grey <-> RGB converted,
    then resized bilinearly. Raises ``OSError`` / ``PIL.UnidentifiedImageError`` for a file
    that is not a readable image."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    height, width = size
    mode = "L" if channels == 1 else "RGB"
    # Telling Pillow the format from the extension skips probing every other format (a good
    # part of the per-file cost for small images); a misnamed file is retried with probing.
    guess = _PIL_FORMAT.get(os.path.splitext(str(path))[1].lower())
    try:
        img = Image.open(path, formats=[guess] if guess else None)
    except UnidentifiedImageError:
        if guess is None:
            raise
        img = Image.open(path)
    with img:
        if img.format == "JPEG":
            img.draft(mode, (width, height))  # lets libjpeg decode big photos at 1/2..1/8 scale
        if img.getexif().get(0x0112, 1) != 1:  # EXIF orientation (photos); skip the copy otherwise
            img = ImageOps.exif_transpose(img)
        img = _convert(img, mode)
        if img.size != (width, height):
            img = img.resize((width, height), Image.Resampling.BILINEAR)
        array = np.asarray(img, dtype=np.uint8)
    return array[None, :, :] if channels == 1 else array.transpose(2, 0, 1)


def _convert(img, mode: str):
    """Convert to "L" or "RGB": alpha dropped, 16-bit and float images scaled to 8 bits."""
    from PIL import Image

    if img.mode.startswith("I;16") or img.mode == "I":
        # Pillow's own I -> L conversion clips at 255 instead of scaling 16-bit values.
        values = np.asarray(img).astype(np.int64)
        img = Image.fromarray(np.clip(values // 257, 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        img = Image.fromarray(np.clip(np.asarray(img), 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info:
        img = img.convert("RGBA")  # then dropped by the conversion below
    return img if img.mode == mode else img.convert(mode)


def read_image(path, input_shape) -> np.ndarray:
    """An image file as a model with ``input_shape`` (C, H, W) read its training images (the
    image-folder loader's decoder: EXIF orientation, 16-bit, palette, alpha, grey/RGB),
    float32 in [0, 1]."""
    from .utils import to_float01

    channels, height, width = input_shape
    return to_float01(decode_image(path, (height, width), channels))


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
