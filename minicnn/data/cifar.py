"""CIFAR-10 from the canonical python-pickle batches, read by a restricted unpickler.

The official distribution is ``cifar-10-python.tar.gz``, holding ``cifar-10-batches-py/`` with
``data_batch_1`` .. ``data_batch_5`` (10,000 training images each), ``test_batch`` and
``batches.meta`` (the class names). Each batch is a Python 2 cPickle (protocol 2) of a dict with
bytes keys: ``b"data"`` a uint8 array (10000, 3072) (the 1024 red, then green, then blue values
of a 32x32 image, row-major), ``b"labels"`` a list of ints 0..9.

Either form works: the extracted folder (or a folder holding ``cifar-10-batches-py/``) or the
archive itself, which is read in memory (nothing extracted to disk). The pickles are decoded by
:mod:`minicnn.data.safe_pickle`, whose unpickler resolves only numpy's array constructors
(to checking stand-ins): nothing from the file is executed.
"""

from __future__ import annotations

import tarfile
import zlib
from pathlib import Path

import numpy as np

from ..validation import is_int
from . import cache as _cache
from . import safe_pickle
from .idx import DatasetFileError
from .sources import cache_key, check_digest, download_file, file_digest, find_dataset
from .utils import to_float01

NAME = "cifar10"
ARCHIVE = "cifar-10-python.tar.gz"
BATCH_DIR = "cifar-10-batches-py"
URLS = ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",)
# Published checksums of the archive: MD5 on the CIFAR page, SHA-256 as used by Keras/TF datasets.
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
# MD5 of each file inside the archive (as published with torchvision's CIFAR10 dataset); only
# MD5s are published for the individual files, so these are what the extracted folder is checked with.
BATCH_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
FILES = (*TRAIN_BATCHES, TEST_BATCH, META)
_CACHE_ARRAYS = {"x_train": 4, "y_train": 1, "x_test": 4, "y_test": 1}


def load_cifar10(path=None, *, download: bool = True, cache: bool = True, verbose: int = 1):
    """CIFAR-10 as ``(x_train, y_train), (x_test, y_test), class_names``.

    Images are float32 of shape (N, 3, 32, 32) in [0, 1] (50,000 train, 10,000 test); labels
    int64 in 0..9; class names from ``batches.meta`` (airplane, automobile, bird, ...).

    Args:
        path: the ``cifar-10-batches-py`` folder, a folder holding it or the archive
            ``cifar-10-python.tar.gz``, or the archive file itself. Then the usual locations
            (``$MINICNN_DATA/cifar10``, the user cache, ``data/cifar10``,
            ``/usr/share/datasets/cifar10``) are searched.
        download: fetch the archive (~163 MiB) from the CIFAR site into the user cache when no
            location has the files.
        cache: keep the decoded arrays as .npy in the user cache.
        verbose: 0 hides the download progress bar.

    The archive is checked against its published SHA-256, the extracted files against their
    published MD5s; a mismatch, a damaged file or unexpected pickle content raises
    DatasetFileError naming the file. The batches are decoded by a restricted reader that never
    executes code from the file (``pickle.load`` would).
    """
    kind, location = find_dataset(
        "CIFAR-10", NAME, path, _probe, fetch=lambda dest: _fetch(dest, verbose), download=download,
        how_to=f"the archive {ARCHIVE}, or its extracted folder {BATCH_DIR}/ "
               f"({', '.join(FILES)}).",
    )
    if kind == "archive":
        digest = file_digest(location)
        if digest != ARCHIVE_SHA256:
            raise DatasetFileError(
                f"{location}: checksum mismatch: SHA-256 is {digest}, expected {ARCHIVE_SHA256}; "
                "the archive is corrupt, truncated or not the official one"
            )
        sources = {str(location): digest}
    else:
        sources = {str(location / name): file_digest(location / name) for name in FILES}
    key = cache_key("cifar10", 1, sorted(sources.values()), BATCH_MD5)
    hit = _cache.load_arrays(NAME, key, _CACHE_ARRAYS) if cache else None
    if hit is not None:
        arrays, extra = hit
        class_names = extra.get("class_names")
        if not (isinstance(class_names, list) and len(class_names) == 10):
            hit = None  # meta.json without usable class names: rebuild
    if hit is None:
        files = _read_archive(location) if kind == "archive" else _read_folder(location)
        arrays, class_names = _decode(files)
        if cache:
            _cache.save_arrays(NAME, key, arrays, sources=sources, extra={"class_names": class_names})
    return (
        (to_float01(arrays["x_train"]), arrays["y_train"].astype(np.int64)),
        (to_float01(arrays["x_test"]), arrays["y_test"].astype(np.int64)),
        list(class_names),
    )


def _probe(folder: Path):
    if folder.is_file():
        if folder.name.endswith((".tar.gz", ".tgz")):
            return ("archive", folder)
        return "not a folder nor a .tar.gz archive"
    for candidate in (folder / BATCH_DIR, folder):
        if all((candidate / name).is_file() for name in FILES):
            return ("folder", candidate)
    if (folder / ARCHIVE).is_file():
        return ("archive", folder / ARCHIVE)
    partial = folder / BATCH_DIR if (folder / BATCH_DIR).is_dir() else folder
    missing = [name for name in FILES if not (partial / name).is_file()]
    return f"no {ARCHIVE} and no complete {BATCH_DIR}/ (missing {', '.join(missing)})"


def _fetch(dest: Path, verbose: int) -> None:
    def verify(tmp_path):
        digest = file_digest(tmp_path)
        if digest != ARCHIVE_SHA256:
            raise DatasetFileError(f"checksum mismatch: SHA-256 is {digest}, expected {ARCHIVE_SHA256}")

    download_file(URLS, dest / ARCHIVE, verify, verbose=verbose)


def _read_folder(folder: Path) -> dict[str, tuple[bytes, str]]:
    """Each file's bytes (checked against its MD5) and the name to use in error messages."""
    files = {}
    for name in FILES:
        path = folder / name
        data = path.read_bytes()
        check_digest(data, "md5", BATCH_MD5[name], path)
        files[name] = (data, str(path))
    return files


def _read_archive(archive: Path) -> dict[str, tuple[bytes, str]]:
    """The batch files read from the archive in memory (never extracted: no path tricks)."""
    files = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if base in FILES and member.isfile() and base not in files:
                    where = f"{archive}:{member.name}"
                    data = tar.extractfile(member).read()
                    check_digest(data, "md5", BATCH_MD5[base], where)
                    files[base] = (data, where)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise DatasetFileError(f"{archive}: corrupt or truncated archive ({err})") from None
    missing = [name for name in FILES if name not in files]
    if missing:
        raise DatasetFileError(f"{archive}: the archive lacks {', '.join(missing)}")
    return files


def _decode(files: dict[str, tuple[bytes, str]]) -> tuple[dict[str, np.ndarray], list[str]]:
    meta_bytes, meta_where = files[META]
    meta = _as_str_keys(safe_pickle.loads(meta_bytes, meta_where), meta_where)
    names = meta.get("label_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, (bytes, str)) for n in names):
        raise DatasetFileError(f"{meta_where}: expected 'label_names', a list of strings")
    class_names = [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]
    if len(class_names) != 10:
        raise DatasetFileError(f"{meta_where}: expected 10 class names, got {len(class_names)}")

    train = [_decode_batch(*files[name], len(class_names)) for name in TRAIN_BATCHES]
    x_test, y_test = _decode_batch(*files[TEST_BATCH], len(class_names))
    arrays = {
        "x_train": np.concatenate([x for x, _ in train]),
        "y_train": np.concatenate([y for _, y in train]),
        "x_test": x_test,
        "y_test": y_test,
    }
    return arrays, class_names


def _decode_batch(data: bytes, where: str, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = _as_str_keys(safe_pickle.loads(data, where), where)
    if "data" not in batch or "labels" not in batch:
        raise DatasetFileError(f"{where}: expected the keys 'data' and 'labels', found {sorted(batch)}")
    images = batch["data"]
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 2 \
            or images.shape[1] != 3 * 32 * 32:
        shape = getattr(images, "shape", None)
        raise DatasetFileError(f"{where}: 'data' must be a uint8 array of shape (N, 3072), got "
                               f"{getattr(images, 'dtype', type(images).__name__)} {shape}")
    labels = batch["labels"]
    if isinstance(labels, np.ndarray):
        ok = labels.ndim == 1 and labels.dtype.kind in "iu"
    else:
        ok = isinstance(labels, list) and all(is_int(v) for v in labels)
    if not ok:
        raise DatasetFileError(f"{where}: 'labels' must be a list of integers")
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(images):
        raise DatasetFileError(f"{where}: {len(labels)} labels for {len(images)} images")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise DatasetFileError(f"{where}: labels must be in 0..{n_classes - 1}, found "
                               f"{int(labels.min())}..{int(labels.max())}")
    return images.reshape(-1, 3, 32, 32), labels.astype(np.uint8)


def _as_str_keys(obj, where: str) -> dict:
    """The batch dict with its keys as str (Python 2 files have bytes keys, new ones may have str)."""
    if not isinstance(obj, dict):
        raise DatasetFileError(f"{where}: expected a dict, got {type(obj).__name__}")
    out = {}
    for key, value in obj.items():
        if isinstance(key, bytes):
            key = key.decode("latin-1")
        if isinstance(key, str):
            out[key] = value
    return out
