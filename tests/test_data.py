"""Dataset loaders, file lookup, downloads, the .npy cache, the safe pickle reader, DataLoader.

Every test runs with its own $XDG_CACHE_HOME, $HOME, project and system data folders under
tmp_path (see ``isolated``) and with the network replaced: nothing touches the real ~/.cache or
the internet. The files the loaders read are written here, small.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import threading
import time
import urllib.error
import warnings
from pathlib import Path

import numpy as np
import pytest

import minicnn.data as data
from minicnn.data import (
    DataLoader,
    DatasetFileError,
    DatasetNotFoundError,
    cifar,
    image_folder,
    load_cifar10,
    load_digits,
    load_fashion_mnist,
    load_image_folder,
    load_mnist,
    mnist,
    safe_pickle,
    sources,
)

REPO = Path(__file__).resolve().parents[1]
STEMS = list(mnist.MNIST_FILES)


def _offline_urlopen(request, timeout=None):
    raise urllib.error.URLError("network is unreachable (test)")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Private cache/home/project/system folders, and no network."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MINICNN_DATA", raising=False)
    monkeypatch.setattr(sources, "SYSTEM_DATASETS", tmp_path / "system")
    monkeypatch.setattr(sources, "project_data_dir", lambda: tmp_path / "project")
    monkeypatch.setattr(sources, "urlopen", _offline_urlopen)
    return tmp_path


# --------------------------------------------------------------------------- IDX helpers


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def make_idx_set(seed=0, n_train=12, n_test=6):
    rng = np.random.default_rng(seed)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def write_idx_set(folder: Path, arrays: dict, gz=True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        raw = idx_bytes(array)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / stem).write_bytes(raw)


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch):
    """Small MNIST-shaped IDX arrays whose SHA-256s are patched into the MNIST table."""
    arrays = make_idx_set()
    for stem, array in arrays.items():
        monkeypatch.setitem(mnist.MNIST.files, stem, hashlib.sha256(idx_bytes(array)).hexdigest())
    return arrays


def check_loaded(result, arrays, class_names):
    (x_train, y_train), (x_test, y_test), names = result
    assert x_train.dtype == np.float32 and x_test.dtype == np.float32
    assert y_train.dtype == np.int64 and y_test.dtype == np.int64
    assert x_train.shape == (len(arrays["train-images-idx3-ubyte"]), 1, 28, 28)
    np.testing.assert_allclose(x_train[:, 0], arrays["train-images-idx3-ubyte"] / 255.0, atol=1e-7)
    np.testing.assert_allclose(x_test[:, 0], arrays["t10k-images-idx3-ubyte"] / 255.0, atol=1e-7)
    np.testing.assert_array_equal(y_train, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(y_test, arrays["t10k-labels-idx1-ubyte"])
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0
    assert names == class_names


# --------------------------------------------------------------------------- MNIST / Fashion-MNIST


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_gz_and_raw(tmp_path, fake_mnist, gz):
    write_idx_set(tmp_path / "files", fake_mnist, gz=gz)
    check_loaded(load_mnist(tmp_path / "files", verbose=0), fake_mnist, [str(d) for d in range(10)])


def test_load_fashion_mnist_from_minicnn_data(tmp_path, monkeypatch):
    arrays = make_idx_set(seed=3)
    for stem, array in arrays.items():
        monkeypatch.setitem(mnist.FASHION_MNIST.files, stem, hashlib.sha256(idx_bytes(array)).hexdigest())
    write_idx_set(tmp_path / "datasets" / "fashion-mnist", arrays)
    monkeypatch.setenv("MINICNN_DATA", str(tmp_path / "datasets"))
    result = load_fashion_mnist(verbose=0)
    check_loaded(result, arrays, list(mnist.FASHION_MNIST.class_names))
    assert result[2][0] == "T-shirt/top" and result[2][9] == "Ankle boot"


def test_published_checksums_are_hard_coded():
    # Guards against an accidental edit of the tables (values from the published files).
    assert mnist.MNIST_FILES["train-images-idx3-ubyte"].startswith("ba891046")
    assert mnist.FASHION_MNIST_FILES["train-images-idx3-ubyte"].startswith("c59f468a")
    assert cifar.ARCHIVE_SHA256.startswith("6d958be0")
    assert all(len(h) == 64 for h in [*mnist.MNIST_FILES.values(), *mnist.FASHION_MNIST_FILES.values()])


def test_checksum_mismatch_names_the_file(tmp_path, fake_mnist, monkeypatch):
    write_idx_set(tmp_path / "files", fake_mnist)
    monkeypatch.setitem(mnist.MNIST.files, "t10k-labels-idx1-ubyte", "0" * 64)
    with pytest.raises(DatasetFileError, match=r"t10k-labels-idx1-ubyte\.gz.*checksum mismatch"):
        load_mnist(tmp_path / "files", verbose=0)


def test_truncated_gzip_names_the_file(tmp_path, fake_mnist):
    write_idx_set(tmp_path / "files", fake_mnist)
    path = tmp_path / "files" / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DatasetFileError, match=r"train-images-idx3-ubyte\.gz.*(corrupt|truncated)"):
        load_mnist(tmp_path / "files", verbose=0)


@pytest.mark.parametrize("damage", ["truncated", "bad magic", "wrong shape"])
def test_malformed_idx_with_matching_checksum(tmp_path, fake_mnist, monkeypatch, damage):
    # Even a file that passes the checksum (here: patched) is parsed defensively.
    arrays = dict(fake_mnist)
    raw = idx_bytes(arrays["train-images-idx3-ubyte"])
    if damage == "truncated":
        raw = raw[:-100]
    elif damage == "bad magic":
        raw = b"\x12\x34" + raw[2:]
    else:
        raw = idx_bytes(np.zeros((12, 14, 14), np.uint8))
    write_idx_set(tmp_path / "files", arrays)
    (tmp_path / "files" / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw))
    monkeypatch.setitem(mnist.MNIST.files, "train-images-idx3-ubyte", hashlib.sha256(raw).hexdigest())
    with pytest.raises(DatasetFileError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path / "files", verbose=0)


def test_label_count_mismatch(tmp_path, fake_mnist, monkeypatch):
    arrays = dict(fake_mnist)
    arrays["train-labels-idx1-ubyte"] = arrays["train-labels-idx1-ubyte"][:-1]
    monkeypatch.setitem(mnist.MNIST.files, "train-labels-idx1-ubyte",
                        hashlib.sha256(idx_bytes(arrays["train-labels-idx1-ubyte"])).hexdigest())
    write_idx_set(tmp_path / "files", arrays)
    with pytest.raises(DatasetFileError, match="11 labels for 12 images"):
        load_mnist(tmp_path / "files", verbose=0)


# --------------------------------------------------------------------------- lookup order


def test_user_cache_dir_respects_xdg_and_home(tmp_path, monkeypatch):
    assert sources.user_cache_dir() == tmp_path / "xdg" / "minicnn"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert sources.user_cache_dir() == tmp_path / "home" / ".cache" / "minicnn"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # ignored, as the XDG spec says
    assert sources.user_cache_dir() == tmp_path / "home" / ".cache" / "minicnn"


def test_search_locations_order(tmp_path, monkeypatch):
    monkeypatch.setenv("MINICNN_DATA", str(tmp_path / "env"))
    folders = [folder for folder, _ in sources.search_locations("mnist", tmp_path / "arg")]
    assert folders == [
        tmp_path / "arg", tmp_path / "arg" / "mnist", tmp_path / "env" / "mnist",
        tmp_path / "xdg" / "minicnn" / "mnist", tmp_path / "project" / "mnist", tmp_path / "system" / "mnist",
    ]


def test_lookup_order_end_to_end(tmp_path, fake_mnist, monkeypatch):
    """Put valid files in every location and remove them one by one, first to last."""
    monkeypatch.setenv("MINICNN_DATA", str(tmp_path / "env"))
    ordered = [tmp_path / "arg", tmp_path / "env" / "mnist", tmp_path / "xdg" / "minicnn" / "mnist",
               tmp_path / "project" / "mnist", tmp_path / "system" / "mnist"]
    for folder in ordered:
        write_idx_set(folder, fake_mnist)
    used = []
    real_read_idx = mnist.read_idx
    monkeypatch.setattr(mnist, "read_idx", lambda path, sha=None: used.append(Path(path).parent) or
                        real_read_idx(path, sha))
    for i, folder in enumerate(ordered):
        used.clear()
        load_mnist(tmp_path / "arg" if i == 0 else None, cache=False, verbose=0)
        assert set(used) == {folder}
        for file in folder.iterdir():
            file.unlink()


def test_explicit_path_may_hold_a_dataset_subfolder(tmp_path, fake_mnist):
    write_idx_set(tmp_path / "root" / "mnist", fake_mnist)
    check_loaded(load_mnist(tmp_path / "root", verbose=0), fake_mnist, [str(d) for d in range(10)])


def test_not_found_without_network_lists_every_place(tmp_path, monkeypatch):
    calls = []

    def offline(request, timeout=None):
        calls.append(request.full_url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(sources, "urlopen", offline)
    monkeypatch.setenv("MINICNN_DATA", str(tmp_path / "env"))
    (tmp_path / "arg").mkdir()
    write_idx_set(tmp_path / "system" / "mnist", {"train-images-idx3-ubyte": np.zeros((1, 28, 28), np.uint8)})
    monkeypatch.setattr(time, "sleep", lambda seconds: pytest.fail("no waiting between tries"))
    with pytest.raises(DatasetNotFoundError) as info:
        load_mnist(tmp_path / "arg", verbose=0)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    for place in [tmp_path / "arg", tmp_path / "env" / "mnist", tmp_path / "xdg" / "minicnn" / "mnist",
                  tmp_path / "project" / "mnist", tmp_path / "system" / "mnist"]:
        assert str(place) in message
    assert "missing train-labels-idx1-ubyte" in message  # the partly filled system folder
    assert "ossci-datasets" in message and "cvdf-datasets" in message and "name resolution" in message
    assert "--data-dir" in message and "MINICNN_DATA" in message
    assert len(calls) == 2  # both mirrors of the first file; no point trying the other files
    cache_folder = tmp_path / "xdg" / "minicnn" / "mnist"
    assert not cache_folder.exists() or not any(cache_folder.iterdir())


def test_download_false_does_not_touch_the_network(monkeypatch):
    monkeypatch.setattr(sources, "urlopen", lambda *a, **k: pytest.fail("urlopen called"))
    with pytest.raises(DatasetNotFoundError, match=r"download=False"):
        load_mnist(download=False, verbose=0)


class FakeResponse(io.BytesIO):
    """What urlopen returns: a readable context manager with headers, optionally failing."""

    def __init__(self, payload: bytes, fail_after: int | None = None):
        super().__init__(payload)
        self.headers = {"Content-Length": str(len(payload))}
        self.fail_after = fail_after

    def read(self, n=-1):
        if self.fail_after is not None:
            if self.tell() >= self.fail_after:
                raise ConnectionResetError("connection reset by peer")
            n = min(n if n > 0 else 1 << 30, self.fail_after - self.tell())
        return super().read(n)


def test_download_success_then_offline(tmp_path, fake_mnist, monkeypatch):
    served = {f"{stem}.gz": gzip.compress(idx_bytes(array)) for stem, array in fake_mnist.items()}
    urls = []

    def online(request, timeout=None):
        urls.append(request.full_url)
        if "ossci" in request.full_url:  # the first mirror is down: the second one is used
            raise urllib.error.HTTPError(request.full_url, 503, "Service Unavailable", {}, None)
        return FakeResponse(served[request.full_url.rsplit("/", 1)[1]])

    monkeypatch.setattr(sources, "urlopen", online)
    check_loaded(load_mnist(verbose=0), fake_mnist, [str(d) for d in range(10)])
    cache_folder = tmp_path / "xdg" / "minicnn" / "mnist"
    assert sorted(p.name for p in cache_folder.iterdir()) == sorted(served)
    assert len(urls) == 8
    monkeypatch.setattr(sources, "urlopen", _offline_urlopen)
    check_loaded(load_mnist(verbose=0), fake_mnist, [str(d) for d in range(10)])


@pytest.mark.parametrize("failure", ["connection reset", "wrong content", "short read"])
def test_failed_download_leaves_no_partial_file(tmp_path, fake_mnist, monkeypatch, failure):
    good = gzip.compress(idx_bytes(fake_mnist["train-images-idx3-ubyte"]))

    def flaky(request, timeout=None):
        if failure == "connection reset":
            return FakeResponse(good, fail_after=len(good) // 2)
        if failure == "wrong content":
            return FakeResponse(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x01\x07"))
        response = FakeResponse(good[: len(good) // 2])
        response.headers = {"Content-Length": str(len(good))}
        return response

    monkeypatch.setattr(sources, "urlopen", flaky)
    with pytest.raises(DatasetNotFoundError, match="download into") as info:
        load_mnist(verbose=0)
    expected = {"connection reset": "connection reset", "wrong content": "checksum mismatch",
                "short read": "incomplete download"}[failure]
    assert expected in str(info.value)
    cache_folder = tmp_path / "xdg" / "minicnn" / "mnist"
    assert cache_folder.is_dir() and list(cache_folder.iterdir()) == []  # not even a .part file


# --------------------------------------------------------------------------- .npy cache


def _entries(tmp_path, name):
    return sorted((tmp_path / "xdg" / "minicnn" / "arrays").glob(f"{name}-*"))


def test_npy_cache_round_trip_skips_parsing(tmp_path, fake_mnist, monkeypatch):
    write_idx_set(tmp_path / "files", fake_mnist)
    first = load_mnist(tmp_path / "files", verbose=0)
    (entry,) = _entries(tmp_path, "mnist")
    meta = json.loads((entry / "meta.json").read_text())
    info = meta["arrays"]["x_train"]
    assert info["dtype"] == "uint8" and info["shape"] == [12, 1, 28, 28]
    assert any("train-images" in source for source in meta["sources"])
    monkeypatch.setattr(mnist, "read_idx", lambda *a, **k: pytest.fail("cache not used"))
    second = load_mnist(tmp_path / "files", verbose=0)
    for a, b in zip(first[:2], second[:2]):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("damage", ["garbage npy", "truncated npy", "bad json", "wrong shape", "pickle npy"])
def test_corrupt_cache_is_rebuilt(tmp_path, fake_mnist, damage):
    write_idx_set(tmp_path / "files", fake_mnist)
    load_mnist(tmp_path / "files", verbose=0)
    (entry,) = _entries(tmp_path, "mnist")
    npy = entry / "x_train.npy"
    if damage == "garbage npy":
        npy.write_bytes(b"not a numpy file at all")
    elif damage == "truncated npy":
        npy.write_bytes(npy.read_bytes()[:-10])
    elif damage == "bad json":
        (entry / "meta.json").write_text("{ not json")
    elif damage == "wrong shape":
        # a consistent-looking file whose shape disagrees with meta.json: the hash check is
        # bypassed by updating it, the shape check must still catch it
        buffer = io.BytesIO()
        np.save(buffer, np.zeros((3, 1, 28, 28), np.uint8))
        npy.write_bytes(buffer.getvalue())
        meta = json.loads((entry / "meta.json").read_text())
        meta["arrays"]["x_train"]["sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
        (entry / "meta.json").write_text(json.dumps(meta))
    else:
        buffer = io.BytesIO()
        np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        npy.write_bytes(buffer.getvalue())
        meta = json.loads((entry / "meta.json").read_text())
        meta["arrays"]["x_train"]["sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
        (entry / "meta.json").write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="damaged dataset cache"):
        result = load_mnist(tmp_path / "files", verbose=0)
    check_loaded(result, fake_mnist, [str(d) for d in range(10)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rebuilt: the third load is clean
        check_loaded(load_mnist(tmp_path / "files", verbose=0), fake_mnist, [str(d) for d in range(10)])


def test_changed_source_gets_a_new_cache_entry(tmp_path, fake_mnist, monkeypatch):
    write_idx_set(tmp_path / "files", fake_mnist, gz=True)
    load_mnist(tmp_path / "files", verbose=0)
    write_idx_set(tmp_path / "raw", fake_mnist, gz=False)  # same content, other bytes on disk
    load_mnist(tmp_path / "raw", verbose=0)
    assert len(_entries(tmp_path, "mnist")) == 2


def test_unwritable_cache_only_warns(tmp_path, fake_mnist, monkeypatch):
    write_idx_set(tmp_path / "files", fake_mnist)
    (tmp_path / "xdg").write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match="could not write the dataset cache"):
        result = load_mnist(tmp_path / "files", verbose=0)
    check_loaded(result, fake_mnist, [str(d) for d in range(10)])


def test_vendored_mnist_loads(monkeypatch):
    (x_train, y_train), (x_test, y_test), names = load_mnist(REPO / "data" / "mnist", verbose=0)
    assert x_train.shape == (60000, 1, 28, 28) and x_test.shape == (10000, 1, 28, 28)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    assert set(np.unique(y_train)) == set(range(10)) and set(np.unique(y_test)) == set(range(10))
    assert y_train[:5].tolist() == [5, 0, 4, 1, 9]
    assert names == [str(d) for d in range(10)]


def test_import_loads_nothing_heavy():
    code = ("import sys, minicnn.data; heavy = [m for m in ('PIL', 'sklearn', 'matplotlib', 'tqdm') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- CIFAR-10


def make_batch(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n).tolist()


CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def py2_style_pickle(images: np.ndarray, labels: list[int]) -> bytes:
    """A batch as Python 2's cPickle wrote it: str (BINSTRING) keys and data, GLOBAL opcodes."""

    def string(b: bytes) -> bytes:
        return (b"U" + bytes([len(b)]) + b) if len(b) < 256 else (b"T" + struct.pack("<I", len(b)) + b)

    def integer(v: int) -> bytes:
        return b"J" + struct.pack("<i", v)

    parts = [
        b"\x80\x02}q\x00(", string(b"data"),
        b"cnumpy.core.multiarray\n_reconstruct\nq\x01cnumpy\nndarray\nq\x02K\x00\x85", string(b"b"),
        b"\x87Rq\x03(K\x01", integer(images.shape[0]), integer(images.shape[1]), b"\x86",
        b"cnumpy\ndtype\nq\x04", string(b"u1"), b"K\x00K\x01\x87Rq\x05(K\x03", string(b"|"),
        b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89", string(images.tobytes()), b"tb",
        string(b"labels"), b"]q\x06(", *[b"K" + bytes([v]) for v in labels], b"e",
        string(b"batch_label"), string(b"training batch 1 of 5"), b"u.",
    ]
    return b"".join(parts)


def write_cifar(folder: Path, monkeypatch, protocol=2, n=4, style="numpy") -> dict:
    """Write the seven files into folder/cifar-10-batches-py, patch their MD5s; return the data."""
    batch_dir = folder / cifar.BATCH_DIR
    batch_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for i, name in enumerate([*cifar.TRAIN_BATCHES, cifar.TEST_BATCH]):
        images, labels = make_batch(n, i)
        if style == "py2":
            payload = py2_style_pickle(images, labels)
        else:
            batch = {b"batch_label": b"batch", b"labels": labels, b"data": images,
                     b"filenames": [f"img_{j}.png".encode() for j in range(n)]}
            if style == "str keys":
                batch = {k.decode(): v for k, v in batch.items()}
            payload = pickle.dumps(batch, protocol=protocol)
        written[name] = (images, labels)
        (batch_dir / name).write_bytes(payload)
    meta = {b"num_cases_per_batch": n, b"label_names": [c.encode() for c in CIFAR_NAMES], b"num_vis": 3072}
    (batch_dir / cifar.META).write_bytes(pickle.dumps(meta, protocol=protocol))
    for name in cifar.FILES:
        monkeypatch.setitem(cifar.BATCH_MD5, name, hashlib.md5((batch_dir / name).read_bytes()).hexdigest())
    return written


def check_cifar(result, written, n=4):
    (x_train, y_train), (x_test, y_test), names = result
    assert x_train.shape == (5 * n, 3, 32, 32) and x_test.shape == (n, 3, 32, 32)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    expected = np.concatenate([written[name][0] for name in cifar.TRAIN_BATCHES]).reshape(-1, 3, 32, 32)
    np.testing.assert_allclose(x_train, expected / 255.0, atol=1e-7)
    np.testing.assert_array_equal(y_train, sum((written[name][1] for name in cifar.TRAIN_BATCHES), []))
    np.testing.assert_array_equal(y_test, written[cifar.TEST_BATCH][1])
    # the channel layout: the first 1024 values are the red plane
    red = written[cifar.TEST_BATCH][0][0, :1024] / 255.0
    np.testing.assert_allclose(x_test[0, 0].ravel(), red, atol=1e-7)
    assert names == CIFAR_NAMES


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL, pickle.HIGHEST_PROTOCOL])
def test_cifar_folder_any_protocol(tmp_path, monkeypatch, protocol):
    written = write_cifar(tmp_path / "c", monkeypatch, protocol=protocol)
    check_cifar(load_cifar10(tmp_path / "c", verbose=0), written)


def test_cifar_python2_style_and_str_keys(tmp_path, monkeypatch):
    written = write_cifar(tmp_path / "c", monkeypatch, style="py2")
    raw = (tmp_path / "c" / cifar.BATCH_DIR / "data_batch_1").read_bytes()
    reference = pickle.loads(raw, encoding="bytes")  # our hand-made file is a valid pickle...
    ours = safe_pickle.loads(raw)  # ...and the safe reader agrees with pickle on it
    assert ours.keys() == reference.keys() and ours[b"labels"] == reference[b"labels"]
    np.testing.assert_array_equal(ours[b"data"], reference[b"data"])
    check_cifar(load_cifar10(tmp_path / "c", verbose=0), written)
    written = write_cifar(tmp_path / "d", monkeypatch, style="str keys", protocol=4)
    check_cifar(load_cifar10(tmp_path / "d" / cifar.BATCH_DIR, verbose=0), written)


def test_cifar_archive(tmp_path, monkeypatch):
    written = write_cifar(tmp_path / "src", monkeypatch)
    archive = tmp_path / "dl" / cifar.ARCHIVE
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / cifar.BATCH_DIR, arcname=cifar.BATCH_DIR)
    monkeypatch.setattr(cifar, "ARCHIVE_SHA256", hashlib.sha256(archive.read_bytes()).hexdigest())
    check_cifar(load_cifar10(tmp_path / "dl", verbose=0), written)  # folder holding the archive
    check_cifar(load_cifar10(archive, cache=False, verbose=0), written)  # the archive itself
    # a checksum mismatch of the archive names it
    monkeypatch.setattr(cifar, "ARCHIVE_SHA256", "0" * 64)
    with pytest.raises(DatasetFileError, match=rf"{cifar.ARCHIVE}: checksum mismatch"):
        load_cifar10(archive, verbose=0)


def test_cifar_corrupt_archive(tmp_path, monkeypatch):
    archive = tmp_path / cifar.ARCHIVE
    archive.write_bytes(gzip.compress(b"this is not a tar file" * 100)[:-20])
    monkeypatch.setattr(cifar, "ARCHIVE_SHA256", hashlib.sha256(archive.read_bytes()).hexdigest())
    with pytest.raises(DatasetFileError, match=rf"{cifar.ARCHIVE}.*(corrupt|truncated)"):
        load_cifar10(tmp_path, verbose=0)


def test_cifar_md5_mismatch_and_truncated_batch(tmp_path, monkeypatch):
    write_cifar(tmp_path / "c", monkeypatch)
    batch = tmp_path / "c" / cifar.BATCH_DIR / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:-500])
    with pytest.raises(DatasetFileError, match=r"data_batch_3: checksum mismatch: MD5"):
        load_cifar10(tmp_path / "c", verbose=0)
    monkeypatch.setitem(cifar.BATCH_MD5, "data_batch_3", hashlib.md5(batch.read_bytes()).hexdigest())
    with pytest.raises(DatasetFileError, match=r"data_batch_3: not a valid pickle"):
        load_cifar10(tmp_path / "c", verbose=0)


def test_cifar_wrong_content(tmp_path, monkeypatch):
    write_cifar(tmp_path / "c", monkeypatch)
    batch = tmp_path / "c" / cifar.BATCH_DIR / "test_batch"
    batch.write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, protocol=2))
    monkeypatch.setitem(cifar.BATCH_MD5, "test_batch", hashlib.md5(batch.read_bytes()).hexdigest())
    with pytest.raises(DatasetFileError, match=r"test_batch: 'data' must be a uint8 array of shape"):
        load_cifar10(tmp_path / "c", verbose=0)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvilOpen:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("payload", [_Evil, _EvilOpen])
def test_malicious_pickle_is_refused(tmp_path, monkeypatch, protocol, payload):
    write_cifar(tmp_path / "c", monkeypatch)
    marker = tmp_path / "pwned"
    batch = tmp_path / "c" / cifar.BATCH_DIR / "data_batch_1"
    batch.write_bytes(pickle.dumps({b"data": payload(marker), b"labels": [1]}, protocol=protocol))
    monkeypatch.setitem(cifar.BATCH_MD5, "data_batch_1", hashlib.md5(batch.read_bytes()).hexdigest())
    with pytest.raises(DatasetFileError, match=r"data_batch_1: unsafe or unsupported pickle content: refus"):
        load_cifar10(tmp_path / "c", verbose=0)
    assert not marker.exists()


def test_safe_pickle_refuses_object_arrays_and_builds():
    with pytest.raises(DatasetFileError, match="not a plain numeric type|refusing"):
        safe_pickle.loads(pickle.dumps(np.array([{"a": 1}], dtype=object), protocol=2))
    with pytest.raises(DatasetFileError, match="unsafe"):
        safe_pickle.loads(pickle.dumps(threading.Event, protocol=2))  # a class reference
    with pytest.raises(DatasetFileError, match="not a valid pickle"):
        safe_pickle.loads(b"")


def test_safe_pickle_round_trips_plain_data():
    value = {b"a": [1, -2, 2**70, 1.5, None, True, "text", b"bytes", (1, 2)],
             "arr": np.arange(6, dtype=">i4").reshape(2, 3).T, "f": np.float32(0.5)}
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        out = safe_pickle.loads(pickle.dumps(value, protocol=protocol))
        assert out[b"a"] == value[b"a"] and out["f"] == value["f"]
        np.testing.assert_array_equal(out["arr"], value["arr"])


def test_cifar_not_found_mentions_archive_and_url(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_cifar10(verbose=0)
    assert cifar.ARCHIVE in str(info.value) and "cs.toronto.edu" in str(info.value)


# --------------------------------------------------------------------------- digits


def test_load_digits_stratified_and_seeded():
    (x_train, y_train), (x_test, y_test), names = load_digits(test_fraction=0.2, seed=0)
    assert x_train.shape[1:] == (1, 8, 8) and x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert len(x_train) + len(x_test) == 1797 and abs(len(x_test) - 0.2 * 1797) < 10
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    counts_all = np.bincount(np.concatenate([y_train, y_test]))
    np.testing.assert_array_equal(np.bincount(y_test), np.round(0.2 * counts_all).astype(int))
    again = load_digits(test_fraction=0.2, seed=0)
    np.testing.assert_array_equal(again[1][1], y_test)
    np.testing.assert_array_equal(again[1][0], x_test)
    other = load_digits(test_fraction=0.2, seed=1)
    assert not np.array_equal(other[1][0], x_test)
    assert names == [str(d) for d in range(10)]


def test_class_names_of_prefers_given_then_recorded_then_numbers():
    recorded = {"class_names": ["cat", 7]}
    assert data.class_names_of(recorded, 2) == ["cat", "7"]
    assert data.class_names_of(recorded, 2, given=("a", "b")) == ["a", "b"]
    assert data.class_names_of({}, 3) == ["0", "1", "2"]
    assert data.class_names_of(None, 2) == ["0", "1"]


def test_load_dataset_by_name():
    assert data.load_dataset("digits")[0][0].shape[1:] == (1, 8, 8)
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load_dataset("imagenet")


@pytest.mark.parametrize("name", ["digits", "mnist"])
def test_a_dataset_record_says_what_its_loader_returns(name):
    """The records the rest of minicnn reads instead of the dataset's name: classes, channels,
    a split drawn by the seed or given (the two with their files here: digits and the vendored
    MNIST)."""
    record = data.DATASETS[name]
    (x_train, y_train), (x_test, y_test), names = record.load(REPO / "data", seed=3, verbose=0)
    assert len(names) == record.classes and x_train.shape[1] == record.channels
    assert set(np.unique(y_test)) == set(range(record.classes))
    drawn_again = record.load(REPO / "data", seed=4, verbose=0)[1][1]
    assert record.split_is_drawn() == (not np.array_equal(drawn_again, y_test))
    assert data.DATASETS["folder"].split == "layout" and data.DATASETS["cifar10"].flips


# --------------------------------------------------------------------------- image folder


def _save(img, path: Path, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kwargs)


@pytest.fixture
def image_tree(tmp_path):
    """cat: 4 RGB PNG + 1 RGBA PNG + 1 JPEG; dog: 3 grayscale PNG + 1 palette PNG + 2 JPEG;
    plus one unreadable .png, a text file and a hidden file (both ignored)."""
    from PIL import Image

    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    pixels = {}
    for i in range(4):
        array = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        _save(Image.fromarray(array, "RGB"), root / "cat" / f"rgb{i}.png")
        pixels[f"cat/rgb{i}.png"] = array.transpose(2, 0, 1)
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 10, 200, 30, 0  # fully transparent
    _save(Image.fromarray(rgba, "RGBA"), root / "cat" / "alpha.png")
    photo = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    _save(Image.fromarray(photo, "RGB"), root / "cat" / "photo.jpg", quality=90)
    for i in range(3):
        gray = rng.integers(0, 256, (8, 8), dtype=np.uint8)
        _save(Image.fromarray(gray, "L"), root / "dog" / f"gray{i}.png")
        pixels[f"dog/gray{i}.png"] = gray
    _save(Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), "RGB").convert("P"),
          root / "dog" / "palette.png")
    for i in range(2):
        _save(Image.fromarray(np.full((12, 10, 3), 128, np.uint8), "RGB"), root / "dog" / f"snap{i}.JPEG")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but then garbage")
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "dog" / ".hidden.png").write_bytes(b"ignored")
    return root, pixels


def test_image_folder_skips_unreadable_with_warning(image_tree):
    root, pixels = image_tree
    with pytest.warns(UserWarning, match=r"(?s)skipped 1 unreadable image file.*broken\.png") as record:
        (x_train, y_train), (x_val, y_val), names = load_image_folder(root, size=(8, 8), val_fraction=0.25,
                                                                       verbose=0)
    assert any(str(root / "dog" / "broken.png") in str(w.message) for w in record)
    assert names == ["cat", "dog"]
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64 and x_train.shape[1:] == (3, 8, 8)
    assert len(x_train) + len(x_val) == 12
    # stratified: round(0.25 * 6) = 2 of each class in validation (the broken file is not counted)
    assert np.bincount(y_val, minlength=2).tolist() == [2, 2]
    x_all = np.concatenate([x_train, x_val])
    assert 0.0 <= x_all.min() and x_all.max() <= 1.0
    # exact PNG pixels: find each written RGB image among the loaded ones
    for key, expected in pixels.items():
        expected = np.broadcast_to(expected, (3, 8, 8)) / 255.0
        assert np.any(np.all(np.abs(x_all - expected) < 1e-6, axis=(1, 2, 3))), key
    # the transparent RGBA image keeps its colour; alpha dropped
    alpha = np.array([10, 200, 30])[:, None, None] / 255.0
    assert np.any(np.all(np.abs(x_all - alpha) < 1e-6, axis=(1, 2, 3)))


def test_image_folder_split_is_seeded(image_tree):
    root, _ = image_tree
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = load_image_folder(root, size=(8, 8), seed=0, verbose=0)
        b = load_image_folder(root, size=(8, 8), seed=0, verbose=0)
        c = load_image_folder(root, size=(8, 8), seed=5, verbose=0)
    np.testing.assert_array_equal(a[1][0], b[1][0])
    assert not np.array_equal(a[1][0], c[1][0])


def test_image_folder_grayscale_resize_and_strict(image_tree):
    root, pixels = image_tree
    with pytest.warns(UserWarning, match="broken.png"):
        (x_train, _), (x_val, _), _ = load_image_folder(root, size=(4, 6), channels=1, val_fraction=0.0,
                                                        verbose=0)
    assert x_train.shape == (12, 1, 4, 6) and len(x_val) == 0
    with pytest.raises(DatasetFileError, match=r"(?s)cannot be decoded.*broken\.png"):
        load_image_folder(root, size=(8, 8), strict=True, verbose=0)


def test_image_folder_cache(image_tree, tmp_path, monkeypatch):
    root, _ = image_tree
    with pytest.warns(UserWarning, match="broken.png"):
        first = load_image_folder(root, size=(8, 8), verbose=0)
    assert len(_entries(tmp_path, "image-folder")) == 1
    monkeypatch.setattr(image_folder, "decode_image", lambda *a: pytest.fail("cache not used"))
    with pytest.warns(UserWarning, match="broken.png"):  # still reported from the cache
        second = load_image_folder(root, size=(8, 8), verbose=0)
    np.testing.assert_array_equal(first[0][0], second[0][0])
    np.testing.assert_array_equal(first[1][1], second[1][1])
    with pytest.raises(DatasetFileError, match="broken.png"):
        load_image_folder(root, size=(8, 8), strict=True, verbose=0)


def test_image_folder_train_test_layout(tmp_path):
    from PIL import Image

    root = tmp_path / "split"
    for split, count in (("train", 3), ("test", 2)):
        for cls, value in (("a", 0), ("b", 255)):
            for i in range(count):
                _save(Image.new("RGB", (5, 5), (value, value, value)), root / split / cls / f"{i}.png")
    (x_train, y_train), (x_test, y_test), names = load_image_folder(root, size=5, verbose=0)
    assert names == ["a", "b"]
    assert x_train.shape == (6, 3, 5, 5) and x_test.shape == (4, 3, 5, 5)
    assert y_train.tolist() == [0, 0, 0, 1, 1, 1] and y_test.tolist() == [0, 0, 1, 1]
    np.testing.assert_array_equal(x_test[y_test == 1], 1.0)


def test_image_folder_applies_exif_orientation(tmp_path):
    from PIL import Image

    array = np.zeros((4, 8, 3), np.uint8)
    array[:, 4:] = 255  # left half black, right half white
    img = Image.fromarray(array, "RGB")
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    _save(img, tmp_path / "exif" / "a" / "photo.jpg", exif=exif.tobytes(), quality=95)
    (x, _), _, _ = load_image_folder(tmp_path / "exif", size=(8, 4), val_fraction=0.0, verbose=0)
    assert x[0, :, :3].mean() < 0.2 and x[0, :, -3:].mean() > 0.8  # black on top after turning


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetFileError, match="no class folders"):
        load_image_folder(tmp_path / "empty")
    (tmp_path / "empty" / "cls").mkdir()
    with pytest.raises(DatasetFileError, match=r"no image files in the class folder\(s\) \['cls'\]"):
        load_image_folder(tmp_path / "empty")
    with pytest.raises(ValueError, match="channels"):
        load_image_folder(tmp_path / "empty", channels=2)


# --------------------------------------------------------------------------- DataLoader


def _epoch(loader):
    return [(xb.copy(), yb.copy()) for xb, yb in loader]


def _noise(x, rng):
    return x + rng.random(x.shape).astype(x.dtype)


def test_loader_every_sample_once_and_orders():
    x = np.arange(23, dtype=np.float32)[:, None]
    y = np.arange(23)
    loader = DataLoader(x, y, batch_size=5, seed=1)
    assert len(loader) == 5
    epochs = [np.concatenate([yb for _, yb in _epoch(loader)]) for _ in range(3)]
    for order in epochs:
        assert sorted(order.tolist()) == list(range(23))
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    for xb, yb in DataLoader(x, y, batch_size=5, seed=1):
        np.testing.assert_array_equal(xb[:, 0], yb)  # x and y stay paired
    same = DataLoader(x, y, batch_size=5, seed=1)
    np.testing.assert_array_equal(np.concatenate([yb for _, yb in same]), epochs[0])
    other = DataLoader(x, y, batch_size=5, seed=2)
    assert not np.array_equal(np.concatenate([yb for _, yb in other]), epochs[0])
    plain = DataLoader(x, y, batch_size=5, shuffle=False)
    np.testing.assert_array_equal(np.concatenate([yb for _, yb in plain]), y)


def test_loader_drop_last():
    x, y = np.zeros((23, 2), np.float32), np.arange(23)
    loader = DataLoader(x, y, batch_size=5, drop_last=True)
    batches = _epoch(loader)
    assert len(loader) == len(batches) == 4 and all(len(yb) == 5 for _, yb in batches)
    assert len(DataLoader(x, y, batch_size=5)) == 5
    assert [len(yb) for _, yb in DataLoader(x, y, batch_size=5)] == [5, 5, 5, 5, 3]


def test_loader_prefetch_matches_inline():
    rng = np.random.default_rng(0)
    x, y = rng.random((50, 1, 4, 4), dtype=np.float32), np.arange(50)
    threaded = DataLoader(x, y, batch_size=8, transform=_noise, seed=3, prefetch=2)
    inline = DataLoader(x, y, batch_size=8, transform=_noise, seed=3, prefetch=0)
    for _ in range(2):
        for (xa, ya), (xb, yb) in zip(_epoch(threaded), _epoch(inline), strict=True):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)
    for xb, yb in DataLoader(x, y, batch_size=8, transform=_noise, seed=3):
        assert not np.array_equal(xb, x[yb])  # the transform was applied


def test_loader_resume_exactly():
    x, y = np.random.default_rng(0).random((30, 1, 2, 2), dtype=np.float32), np.arange(30)
    reference = DataLoader(x, y, batch_size=4, transform=_noise, seed=7)
    runs = [_epoch(reference) for _ in range(3)]
    # resume at epoch 2 with set_epoch
    resumed = DataLoader(x, y, batch_size=4, transform=_noise, seed=7)
    resumed.set_epoch(2)
    for (xa, ya), (xb, yb) in zip(_epoch(resumed), runs[2], strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    # resume in the middle of epoch 1 from a state_dict taken after 3 batches
    loader = DataLoader(x, y, batch_size=4, transform=_noise, seed=7)
    next(iter(loader))  # epoch 0, abandoned
    loader.set_epoch(1)
    iterator = iter(loader)
    for _ in range(3):
        next(iterator)
    state = loader.state_dict()
    assert state["epoch"] == 1 and state["start_batch"] == 3
    iterator.close()
    fresh = DataLoader(x, y, batch_size=4, transform=_noise, seed=7)
    fresh.load_state_dict(state)
    rest = _epoch(fresh)
    assert len(rest) == len(runs[1]) - 3
    for (xa, _), (xb, _) in zip(rest, runs[1][3:], strict=True):
        np.testing.assert_array_equal(xa, xb)
    assert fresh.state_dict()["epoch"] == 2 and fresh.state_dict()["start_batch"] == 0
    with pytest.raises(ValueError, match="seed"):
        DataLoader(x, y, batch_size=4, seed=8).load_state_dict(state)


def test_loader_thread_errors_and_early_exit():
    x, y = np.zeros((20, 1, 2, 2), np.float32), np.arange(20)

    def failing(batch, rng):
        raise RuntimeError("augmentation broke")

    with pytest.raises(RuntimeError, match="augmentation broke"):
        list(DataLoader(x, y, batch_size=4, transform=failing))
    before = threading.active_count()
    for _ in range(5):
        for _batch in DataLoader(x, y, batch_size=2, transform=_noise):
            break  # abandoning the loop must stop the prefetch thread
    time.sleep(0.2)
    assert threading.active_count() <= before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size must be a positive int"),
        ({"batch_size": 2.5}, "batch_size must be a positive int"),
        ({"batch_size": True}, "batch_size must be a positive int"),
        ({"y": np.arange(9)}, "x has 10 samples but y has 9 labels"),
        ({"y": np.zeros((10, 2))}, "y must be 1-D"),
        ({"seed": -1}, "seed must be a non-negative int"),
        ({"prefetch": -1}, "prefetch must be a non-negative int"),
    ],
)
def test_loader_validation(kwargs, message):
    args = {"x": np.zeros((10, 3), np.float32), "y": np.arange(10), "batch_size": 4}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        DataLoader(**args)
    with pytest.raises(TypeError, match="transform must be callable"):
        DataLoader(np.zeros((4, 1)), np.arange(4), transform="flip")
