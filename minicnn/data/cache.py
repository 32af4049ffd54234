"""Cache of parsed datasets as .npy files, so that a second load skips decompressing and parsing.

An entry lives in ``<user cache>/arrays/<name>-<key>/``: one ``.npy`` per array (the raw uint8
images and the labels, written with ``allow_pickle=False``) and a ``meta.json`` that records the
key, the checksums of the source files, and the dtype, shape and SHA-256 of every array file.
The key is derived from the source files' checksums, so changed sources never hit a stale entry.

Nothing in the cache is trusted blindly: on load every array file is hashed and compared with
``meta.json`` and its dtype and shape are checked; anything that does not match (a truncated
write, a damaged disk, a hand-edited file) is reported with a warning and the entry is rebuilt.
Every file is written atomically, ``meta.json`` last, so an interrupted write leaves no entry
that looks complete.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_bytes
from .sources import user_cache_dir

CACHE_FORMAT = 1


def entry_dir(name: str, key: str) -> Path:
    return user_cache_dir() / "arrays" / f"{name}-{key[:24]}"


def load_arrays(name: str, key: str, required: dict[str, int]) -> tuple[dict[str, np.ndarray], dict] | None:
    """The cached arrays for ``key`` and the entry's extra metadata, or None on a miss.

    ``required`` maps each array name to its expected number of dimensions. A damaged entry
    (bad JSON, missing file, hash/dtype/shape mismatch) gives a warning and None, so the caller
    rebuilds it from the source files.
    """
    folder = entry_dir(name, key)
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != CACHE_FORMAT or meta.get("key") != key:
            raise ValueError("meta.json belongs to another cache format or key")
        infos = meta["arrays"]
        arrays = {}
        for array_name, ndim in required.items():
            info = infos[array_name]
            path = folder / f"{array_name}.npy"
            raw = path.read_bytes()
            if hashlib.sha256(raw).hexdigest() != info["sha256"]:
                raise ValueError(f"{path.name} does not match its SHA-256 in meta.json")
            array = np.load(io.BytesIO(raw), allow_pickle=False)
            if not isinstance(array, np.ndarray) or array.ndim != ndim:
                raise ValueError(f"{path.name}: expected a {ndim}-D array")
            if str(array.dtype) != info["dtype"] or list(array.shape) != list(info["shape"]):
                raise ValueError(
                    f"{path.name}: dtype/shape {array.dtype}{array.shape} differ from meta.json "
                    f"({info['dtype']}{tuple(info['shape'])})"
                )
            arrays[array_name] = array
        return arrays, meta.get("extra", {})
    except (OSError, ValueError, KeyError, TypeError) as err:
        warnings.warn(f"ignoring damaged dataset cache {folder} ({err}); rebuilding it", stacklevel=3)
        return None


def save_arrays(name: str, key: str, arrays: dict[str, np.ndarray], *,
                sources=None, extra=None) -> Path | None:
    """Write a cache entry; returns its folder, or None (with a warning) when it cannot be written.

    A cache that cannot be written (read-only home, full disk) must not stop the load itself.
    """
    folder = entry_dir(name, key)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        infos = {}
        for array_name, array in arrays.items():
            buffer = io.BytesIO()
            np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
            data = buffer.getbuffer()
            atomic_write_bytes(folder / f"{array_name}.npy", data)
            infos[array_name] = {
                "dtype": str(array.dtype),
                "shape": list(array.shape),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        meta = {"format": CACHE_FORMAT, "key": key, "dataset": name, "sources": sources or {},
                "arrays": infos, "extra": extra or {}}
        # meta.json last: an entry without it is never read, so a crash above leaves no half entry.
        atomic_write_bytes(folder / "meta.json", json.dumps(meta, indent=1).encode())
        return folder
    except OSError as err:
        warnings.warn(f"could not write the dataset cache {folder} ({err}); loading goes on without it",
                      stacklevel=3)
        return None
