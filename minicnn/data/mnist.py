"""MNIST and Fashion-MNIST from their four IDX files, verified by SHA-256.

Both datasets ship as the same four files (``train-images-idx3-ubyte`` ... ``t10k-labels-idx1-ubyte``,
usually gzip'd); the checksums below are of the *decompressed* content, so a re-compressed copy
(e.g. the ones in ``data/mnist`` or Debian's package) verifies as well as the published archives.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import cache as _cache
from .idx import DatasetFileError, read_idx
from .sources import cache_key, download_file, file_digest, find_dataset
from .utils import to_float01

TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"

MNIST_FILES = {
    # file name (without .gz): SHA-256 of the decompressed content (the published MNIST)
    TRAIN_IMAGES: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    TRAIN_LABELS: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    TEST_IMAGES: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    TEST_LABELS: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

FASHION_MNIST_FILES = {
    # SHA-256 of the decompressed content of Zalando's published files. Zalando publishes MD5s
    # (of the .gz: 8d4fb7e6..., 25c81989..., bef4ecab..., bb300cfd...; of the decompressed files:
    # f4a8712d7a061bf5bd6d2ca38dc4d50a, 9018921c3c673c538a1fc5bad174d6f9,
    # 8181f5470baa50b63fa0f6fddb340f0a, 15d484375f8d13e6eb1aabb0c3f46965). The SHA-256s were
    # computed from Debian's dataset-fashion-mnist files, whose decompressed MD5s match those.
    TRAIN_IMAGES: "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    TRAIN_LABELS: "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    TEST_IMAGES: "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    TEST_LABELS: "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}


@dataclass(frozen=True)
class IdxDataset:
    """An MNIST-like dataset: four IDX files, their checksums, mirrors and class names."""

    name: str  # folder name in every search location, e.g. "mnist"
    title: str
    files: dict  # file name without .gz -> SHA-256 of the decompressed content
    mirrors: tuple  # base URLs, each followed by "<file>.gz"
    class_names: tuple
    image_shape: tuple = (28, 28)


MNIST = IdxDataset(
    "mnist", "MNIST", MNIST_FILES,
    ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"),
    tuple(str(d) for d in range(10)),
)
FASHION_MNIST = IdxDataset(
    "fashion-mnist", "Fashion-MNIST", FASHION_MNIST_FILES,
    ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
     "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
)
CLASS_NAMES = list(MNIST.class_names)  # kept for code that imported it from here
_CACHE_ARRAYS = {"x_train": 4, "y_train": 1, "x_test": 4, "y_test": 1}


def load_mnist(path=None, *, download: bool = True, cache: bool = True, verbose: int = 1):
    """MNIST as ``(x_train, y_train), (x_test, y_test), class_names``.

    Images are float32 of shape (N, 1, 28, 28) scaled to [0, 1]; labels int64 of shape (N,);
    60,000 training and 10,000 test images; class names "0".."9".

    Args:
        path: a folder holding the four IDX files (gzip'd or not), or a folder with an
            ``mnist/`` sub-folder. Without it (or when it lacks the files) the usual locations
            are searched: ``$MINICNN_DATA/mnist``, the user cache, ``data/mnist`` of a source
            checkout, ``/usr/share/datasets/mnist`` (see ``minicnn.data.sources``).
        download: download from the public mirrors into the user cache when no location has the
            files. When that fails too, DatasetNotFoundError lists every place tried.
        cache: keep the parsed arrays as .npy in the user cache (second load: a fraction of a
            second) and use them when the source files are unchanged.
        verbose: 0 hides the download progress bar.

    Every file is verified against the published SHA-256 before use; a corrupt, truncated or
    foreign file raises DatasetFileError naming the file.
    """
    return _load_idx_dataset(MNIST, path, download=download, cache=cache, verbose=verbose)


def load_fashion_mnist(path=None, *, download: bool = True, cache: bool = True, verbose: int = 1):
    """Fashion-MNIST (Zalando) as ``(x_train, y_train), (x_test, y_test), class_names``.

    Same shapes, conventions and arguments as :func:`load_mnist`; the folder name is
    ``fashion-mnist`` (Debian's ``dataset-fashion-mnist`` package installs the files in
    ``/usr/share/datasets/fashion-mnist/``, which is searched). Class names: T-shirt/top,
    Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot.
    """
    return _load_idx_dataset(FASHION_MNIST, path, download=download, cache=cache, verbose=verbose)


def _find_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _probe(folder: Path, spec: IdxDataset):
    if not folder.is_dir():
        return "not a folder"
    found = {stem: _find_file(folder, stem) for stem in spec.files}
    missing = [stem for stem, file in found.items() if file is None]
    if missing:
        return "missing " + ", ".join(f"{stem}[.gz]" for stem in missing)
    return found


def _fetch(spec: IdxDataset, dest: Path, verbose: int) -> None:
    """Download the files missing from ``dest``, each verified before it is put in place."""
    for stem, expected in spec.files.items():
        if dest.is_dir() and _find_file(dest, stem) is not None:
            continue  # an earlier, partly successful download already brought this one

        def verify(tmp_path, stem=stem, expected=expected):
            read_idx(tmp_path, expected)  # decompresses, checks the SHA-256 and the IDX header

        download_file([base + stem + ".gz" for base in spec.mirrors], dest / f"{stem}.gz", verify,
                      verbose=verbose)


def _load_idx_dataset(spec: IdxDataset, path, *, download: bool, cache: bool, verbose: int):
    found = find_dataset(
        spec.title, spec.name, path, lambda folder: _probe(folder, spec),
        fetch=lambda dest: _fetch(spec, dest, verbose), download=download,
        how_to=f"the four {spec.title} files ({', '.join(s + '.gz' for s in spec.files)}; gzip'd or not).",
    )
    # The cache key covers the bytes on disk (cheap to hash: no decompression) and the expected
    # content checksums. An entry is only written after the full verification below, so a key
    # match means these very bytes were verified before.
    on_disk = {stem: file_digest(file) for stem, file in found.items()}
    key = cache_key("idx", 1, spec.name, on_disk, spec.files)
    hit = _cache.load_arrays(spec.name, key, _CACHE_ARRAYS) if cache else None
    if hit is not None:
        arrays = hit[0]
    else:
        raw = {stem: read_idx(found[stem], expected) for stem, expected in spec.files.items()}
        x_train, y_train = _check_pair(spec, found, raw, TRAIN_IMAGES, TRAIN_LABELS)
        x_test, y_test = _check_pair(spec, found, raw, TEST_IMAGES, TEST_LABELS)
        arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
        if cache:
            sources = {str(found[stem]): {"sha256": on_disk[stem], "content_sha256": spec.files[stem]}
                       for stem in spec.files}
            _cache.save_arrays(spec.name, key, arrays, sources=sources)
    return (
        (to_float01(arrays["x_train"]), arrays["y_train"].astype(np.int64)),
        (to_float01(arrays["x_test"]), arrays["y_test"].astype(np.int64)),
        list(spec.class_names),
    )


def _check_pair(spec: IdxDataset, found: dict, raw: dict, images_stem: str, labels_stem: str):
    """Validate one images/labels pair; returns uint8 images (N, 1, H, W) and uint8 labels (N,)."""
    images, labels = raw[images_stem], raw[labels_stem]
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != spec.image_shape:
        raise DatasetFileError(
            f"{found[images_stem]}: expected uint8 images of shape (N, {spec.image_shape[0]}, "
            f"{spec.image_shape[1]}), got {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DatasetFileError(f"{found[labels_stem]}: expected 1-D uint8 labels, got {labels.dtype} "
                               f"{labels.shape}")
    if len(labels) != len(images):
        raise DatasetFileError(
            f"{found[labels_stem]}: {len(labels)} labels for {len(images)} images in {found[images_stem]}"
        )
    if labels.size and labels.max() >= len(spec.class_names):
        raise DatasetFileError(
            f"{found[labels_stem]}: label {int(labels.max())} out of range 0..{len(spec.class_names) - 1}"
        )
    return images[:, None, :, :], labels
