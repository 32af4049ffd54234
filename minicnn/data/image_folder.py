"""Your own images: one sub-folder per class of PNG/JPEG files, decoded with Pillow.

Two layouts are recognised::

    root/<class>/<image>                     split into train/validation by seed (stratified)
    root/train/<class>/<image>               used as they are: train and test (or val)
    root/test/<class>/<image>   (or root/val/<class>/<image>)

Decoded arrays are cached as .npy in the user cache (like the other datasets), keyed by the
chosen size and channels and by every file's name, size and modification time, so a second load
skips decoding; changing, adding or removing any image rebuilds the entry.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..validation import is_int
from . import cache as _cache
from .idx import DatasetFileError
from .images import IMAGE_EXTENSIONS, decode_image
from .sources import cache_key
from .utils import stratified_split, to_float01

_CACHE_NAME = "image-folder"
_FORMAT_VERSION = 1
_CHUNK = 256  # images per thread task: big enough to amortise scheduling, small for the progress bar


def load_image_folder(
    root,
    size=(32, 32),
    channels: int = 3,
    val_fraction: float = 0.2,
    seed: int = 0,
    *,
    strict: bool = False,
    cache: bool = True,
    workers: int | None = None,
    verbose: int = 1,
):
    """Images from class folders as ``(x_train, y_train), (x_val, y_val), class_names``.

    Images come back as float32 (N, channels, height, width) in [0, 1], labels as int64 indices
    into ``class_names`` (the class folder names, sorted).

    Args:
        root: a folder with one sub-folder per class, or with ``train/`` and ``test/`` (or
            ``val/``) sub-folders that each hold the class folders. In the second layout those
            are the two splits and ``val_fraction`` / ``seed`` are not used; a class may be
            absent from the test split but not from the training split.
        size: ``(height, width)`` (or one int) every image is resized to (bilinear, aspect ratio
            not kept: crop beforehand if that matters).
        channels: 3 converts to RGB, 1 to grayscale ("L"). An alpha channel is dropped (the
            colour values are kept as they are, not blended onto a background); palette, 1-bit,
            CMYK and 16-bit images are converted; EXIF orientation is applied.
        val_fraction: share of each class held out for validation (0 <= val_fraction < 1).
        seed: the validation split depends only on this seed (and the files).
        strict: what to do with files that cannot be decoded (corrupt, truncated, not an image
            although named .png/.jpg...). By default they are **skipped**, with one warning that
            names every such file and why; ``strict=True`` raises DatasetFileError listing them
            instead. Files whose names do not end in an image extension (``IMAGE_EXTENSIONS``)
            and hidden files are ignored silently; sub-folders inside a class folder are not
            searched.
        cache: keep the decoded arrays as .npy in the user cache.
        workers: decoding threads (default: the number of CPUs, at most 4). Pillow releases
            the GIL while decoding and resizing, which is most of the work for photos; for tiny
            images (32x32 JPEGs) its Python-level header parsing, which holds the GIL,
            dominates, so threads gain little there.
        verbose: 0 hides the progress bar.

    Raises FileNotFoundError when ``root`` is missing and DatasetFileError when it has no class
    folders, when a training class has no image files, or when no image could be decoded.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist or is not a folder")
    size = _check_size(size)
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    if not isinstance(val_fraction, (int, float)) or not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")

    splits = _find_layout(root)  # {"train": folder, ["test": folder]} or {"all": root}
    class_names = _class_dirs(splits.get("train", splits.get("all")))
    if not class_names:
        raise DatasetFileError(
            f"{root}: no class folders found; expected {root}/<class>/<image>.png|.jpg, or "
            f"{root}/train/<class>/... with {root}/test/<class>/..."
        )
    if "test" in splits:
        extra_classes = sorted(set(_class_dirs(splits["test"])) - set(class_names))
        if extra_classes:
            raise DatasetFileError(
                f"{splits['test']}: classes {extra_classes} have no folder in {splits['train']}"
            )

    listings = {split: _list_images(folder, class_names) for split, folder in splits.items()}
    # Names, sizes and modification times: hashing every image's bytes would cost about as much
    # as decoding them, and any edit changes the size or the mtime.
    fingerprint = {split: [str(splits[split]), listing[2]] for split, listing in listings.items()}
    main_split = "train" if "train" in listings else "all"
    empty = [name for i, name in enumerate(class_names) if not np.any(listings[main_split][1] == i)]
    if empty:
        raise DatasetFileError(f"{splits[main_split]}: no image files in the class folder(s) {empty}")

    key = cache_key(_CACHE_NAME, _FORMAT_VERSION, list(size), channels, class_names, fingerprint)
    required = {}
    for split in listings:
        required[f"x_{split}"], required[f"y_{split}"] = 4, 1
    hit = _cache.load_arrays(_CACHE_NAME, key, required) if cache else None
    if hit is not None:
        arrays, extra = hit
        bad = [tuple(item) for item in extra.get("bad_files", [])]
    else:
        arrays, bad = {}, []
        for split, (files, labels, _) in listings.items():
            images, ok, errors = _decode_all(files, size, channels, workers, verbose, split)
            if not ok.all():  # (indexing copies: skip it in the usual case)
                images, labels = images[ok], labels[ok]
            arrays[f"x_{split}"], arrays[f"y_{split}"] = images, labels
            bad += errors
        if sum(len(arrays[f"y_{split}"]) for split in listings) == 0:
            raise DatasetFileError(f"{root}: none of the image files could be decoded" + _bad_list(bad))
        if cache and not (strict and bad):
            _cache.save_arrays(_CACHE_NAME, key, arrays, sources={"root": str(root)},
                               extra={"class_names": class_names, "bad_files": [list(b) for b in bad]})
    if bad:
        if strict:
            raise DatasetFileError(f"{root}: {len(bad)} image file(s) cannot be decoded" + _bad_list(bad))
        warnings.warn(f"load_image_folder: skipped {len(bad)} unreadable image file(s)" + _bad_list(bad),
                      stacklevel=2)

    if "x_all" in arrays:
        x, y = arrays["x_all"], arrays["y_all"]
        train_idx, val_idx = stratified_split(y, val_fraction, seed)
        train, val = (x[train_idx], y[train_idx]), (x[val_idx], y[val_idx])
    else:
        train = (arrays["x_train"], arrays["y_train"])
        val = (arrays["x_test"], arrays["y_test"])
    return (
        (to_float01(train[0]), train[1].astype(np.int64)),
        (to_float01(val[0]), val[1].astype(np.int64)),
        list(class_names),
    )


def _check_size(size) -> tuple[int, int]:
    if is_int(size):
        size = (int(size), int(size))
    try:
        height, width = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (height, width) or one int, got {size!r}") from None
    if height <= 0 or width <= 0:
        raise ValueError(f"size must be positive, got {size!r}")
    return height, width


def split_is_drawn(root) -> bool:
    """Whether a folder's images are split into train and test by a seed (one folder per
    class), rather than given (``train/`` and ``test/`` or ``val/``)."""
    return "all" in _find_layout(Path(root))


def _find_layout(root: Path) -> dict[str, Path]:
    if (root / "train").is_dir():
        for test_name in ("test", "val"):
            if (root / test_name).is_dir():
                return {"train": root / "train", "test": root / test_name}
    return {"all": root}


def _class_dirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _list_images(folder: Path, class_names: list[str]) -> tuple[list[str], np.ndarray, list]:
    """Image files of ``folder/<class>/`` sorted by class then name: paths, labels, fingerprint.

    Works on ``os.scandir`` entries and plain strings: with 60,000 files, pathlib objects
    alone would cost seconds.
    """
    files, labels, fingerprint = [], [], []
    for label, name in enumerate(class_names):
        class_dir = os.path.join(folder, name)
        if not os.path.isdir(class_dir):
            continue
        entries = sorted(
            (e for e in os.scandir(class_dir)
             if not e.name.startswith(".") and e.name.lower().endswith(IMAGE_EXTENSIONS) and e.is_file()),
            key=lambda e: e.name,
        )
        for entry in entries:
            st = entry.stat()
            files.append(entry.path)
            fingerprint.append([name, entry.name, st.st_size, st.st_mtime_ns])
        labels += [label] * len(entries)
    return files, np.asarray(labels, dtype=np.int64), fingerprint


def _bad_list(bad) -> str:
    return ":\n" + "\n".join(f"  {path}: {reason}" for path, reason in bad)


def _decode_all(files, size, channels, workers, verbose, split):
    """Decode ``files`` in a thread pool: Pillow releases the GIL while decoding and resizing.

    Returns ``(images uint8 (N, C, H, W), ok mask, [(path, reason), ...])``.
    """
    from tqdm.auto import tqdm

    height, width = size
    n = len(files)
    images = np.zeros((n, channels, height, width), dtype=np.uint8)
    ok = np.zeros(n, dtype=bool)

    def work(start):
        errors = []
        for i in range(start, min(start + _CHUNK, n)):
            try:
                images[i] = decode_image(files[i], size, channels)  # distinct rows: no lock needed
                ok[i] = True
            except Exception as err:  # Pillow raises many types; any of them means "unreadable"
                errors.append((files[i], f"{type(err).__name__}: {err}"))
        return min(start + _CHUNK, n) - start, errors

    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    all_errors = []
    with ThreadPoolExecutor(max_workers=max(1, int(workers))) as pool, tqdm(
        total=n, unit="img", desc=f"decoding {split} images", disable=not verbose or n == 0, leave=False,
    ) as bar:
        for count, errors in pool.map(work, range(0, n, _CHUNK)):
            bar.update(count)
            all_errors += errors
    return images, ok, all_errors
