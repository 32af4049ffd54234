"""Fuzzing (hypothesis) of every file parser: model files and checkpoints, IDX (MNIST), CIFAR
pickle batches, image folders.

Inputs are random bytes, and truncations, bit flips and spliced-in garbage of valid files. Every
case must either load (and then be usable) or raise the documented exception: ModelFileError,
DatasetFileError, or for image folders the documented skip-with-a-warning (``strict=True``:
DatasetFileError). Nothing may crash the interpreter or hang: each example runs under a SIGALRM
guard that raises an exception no parser can catch. Nothing in these files can execute: the
parsers never import or call anything a file names (tests/test_reliability.py checks that
statically and with pickles that would run code).

The number of cases scales with the hypothesis profile (``HYPOTHESIS_PROFILE=explore`` runs 5x
more); the total is printed at the end of the run ("fuzz cases run: ...").
"""

from __future__ import annotations

import collections
import contextlib
import functools
import gzip
import io
import json
import pickle
import shutil
import signal
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import minicnn as mc
from minicnn.checkpoints import load_checkpoint
from minicnn.data import (
    DataLoader,
    DatasetFileError,
    cifar,
    load_image_folder,
    parse_idx,
    read_idx,
    safe_pickle,
)
from minicnn.layers import (
    LAYER_TYPES,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    LeakyReLU,
    MaxPool2D,
    ReLU,
    build,
)
from minicnn.losses import SoftmaxCrossEntropy
from minicnn.models import from_config
from minicnn.training import Trainer, fit

CASES: collections.Counter = collections.Counter()
BASE = settings().max_examples  # 100 by default, 500 with HYPOTHESIS_PROFILE=explore


@pytest.fixture(scope="module", autouse=True)
def _report_case_count(request):
    yield
    total = sum(CASES.values())
    detail = ", ".join(f"{name} {count}" for name, count in sorted(CASES.items()))
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if total and capture is not None:
        with capture.global_and_fixture_disabled():  # shown even when the tests pass
            print(f"\nfuzz cases run: {total} ({detail})")


class Hang(BaseException):
    """Raised by the alarm: a BaseException, so a parser's ``except Exception`` cannot hide it."""


@contextlib.contextmanager
def no_hang(seconds: float = 20.0):
    def on_alarm(signum, frame):
        raise Hang(f"a parser ran for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def mutated(valid: bytes):
    """Truncations, 1-16 bit flips, and stretches replaced by random bytes, of ``valid``."""
    n = len(valid)

    def flip(positions):
        data = bytearray(valid)
        for index, bit in positions:
            data[index] ^= 1 << bit
        return bytes(data)

    return st.one_of(
        st.integers(0, n - 1).map(lambda k: valid[:k]),
        st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 7)), min_size=1,
                 max_size=16).map(flip),
        st.tuples(st.integers(0, n), st.binary(min_size=1, max_size=64), st.integers(0, 64)).map(
            lambda t: valid[:t[0]] + t[1] + valid[t[0] + t[2]:]),
        st.tuples(st.integers(0, n), st.binary(max_size=256)).map(lambda t: valid[:t[0]] + t[1]),
    )


RANDOM_BYTES = st.binary(max_size=2048)


# --------------------------------------------------------------------------- model files

def fuzz_model():
    layers = [Conv2D(1, 2, (3, 2), padding=(1, 0)), BatchNorm2D(2), LeakyReLU(0.1), MaxPool2D(2),
              Flatten(), Dropout(0.25), Dense(2 * 4 * 3, 3)]
    if "Residual" in LAYER_TYPES:  # a layer holding layers: nested specs and tensor names
        layers.insert(3, LAYER_TYPES["Residual"]([Conv2D(2, 2, 1, bias=False), ReLU()]))
    model = mc.Sequential(layers, seed=0, input_shape=(1, 8, 7))
    model.metadata = {"class_names": ["a", "b", "c"], "input_shape": [1, 8, 7],
                      "normalization": {"mean": [0.5], "std": [0.25]}}
    return model


def fuzz_data():
    rng = np.random.default_rng(0)
    return rng.random((12, 1, 8, 7), dtype=np.float32), rng.integers(0, 3, 12)


@functools.cache
def valid_files() -> dict:
    """The bytes of a model file and of a mid-epoch training checkpoint."""
    import tempfile
    from pathlib import Path

    previous = mc.set_backend("numpy")
    try:
        with tempfile.TemporaryDirectory() as folder:
            model = fuzz_model()
            model.save(Path(folder) / "model.safetensors")
            x, y = fuzz_data()
            ckpt = Path(folder) / "ckpt.safetensors"
            fit(model, SoftmaxCrossEntropy(), mc.optim.Adam(model.parameters()),
                DataLoader(x, y, batch_size=4, seed=1), epochs=1, verbose=0, checkpoint=ckpt,
                checkpoint_every=2)
            return {"model": (Path(folder) / "model.safetensors").read_bytes(),
                    "checkpoint": ckpt.read_bytes()}
    finally:
        mc.set_backend(previous)


def check_model_file(path):
    """load_checkpoint accepts the file or raises ModelFileError; what it accepts is usable."""
    try:
        model, _, state = load_checkpoint(path)
    except mc.ModelFileError:
        return
    if model.input_shape is not None:
        probs = model.predict(np.zeros((2, *model.input_shape), np.float32))
        assert probs.shape[0] == 2
    if state is not None:  # a checkpoint: resuming validates the training state too
        x, y = fuzz_data()
        fresh = fuzz_model()
        trainer = Trainer(fresh, SoftmaxCrossEntropy(), mc.optim.Adam(fresh.parameters()),
                          DataLoader(x, y, batch_size=4, seed=1))
        try:
            trainer.restore_checkpoint(path)
        except mc.ModelFileError:
            pass
        except ValueError as err:  # the one documented ValueError: another data loader's state
            assert "DataLoader" in str(err), err


@settings(max_examples=4 * BASE)
@given(data=st.one_of(RANDOM_BYTES, st.sampled_from(["model", "checkpoint"]).flatmap(
    lambda kind: mutated(valid_files()[kind]))))
def test_fuzz_load_model(tmp_path, data):
    CASES["model file bytes"] += 1
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(data)
    with no_hang():
        check_model_file(path)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)
ARGUMENT_NAMES = st.sampled_from(["in_channels", "out_channels", "kernel_size", "stride",
                                  "padding", "bias", "init", "in_features", "out_features",
                                  "num_features", "momentum", "eps", "p", "negative_slope",
                                  "body", "shortcut", "dtype", "rng", "junk"])
LAYER_SPEC = st.builds(
    lambda kind, kwargs: {"type": kind, **kwargs},
    st.sampled_from(sorted(LAYER_TYPES)) | st.text(max_size=6),
    st.dictionaries(ARGUMENT_NAMES, JSON | st.integers(-3, 40) | st.lists(st.integers(-1, 9),
                                                                          max_size=3), max_size=4),
)


@settings(max_examples=2 * BASE)
@given(architecture=st.one_of(
           JSON,
           st.fixed_dictionaries({"layers": st.lists(LAYER_SPEC, max_size=4)},
                                 optional={"input_shape": JSON | st.lists(st.integers(-1, 40),
                                                                          max_size=4)})),
       user=JSON, training_state=st.none() | JSON, where=st.sampled_from(["file", "config"]))
def test_fuzz_model_metadata(tmp_path, architecture, user, training_state, where):
    """Structured garbage in every JSON field of a model file, and in from_config."""
    CASES["model metadata JSON"] += 1
    with no_hang():
        if where == "config":
            try:
                from_config(architecture)
            except (mc.ModelFileError, ValueError):  # from_config: ValueError for a non-dict
                pass
            return
        shapes = {}
        try:  # give the file the tensors its layers imply, so that parsing goes further
            for i, spec in enumerate(architecture["layers"]):
                for name, shape in build.expected_arrays(spec).items():
                    if np.prod(shape) <= 10_000:
                        shapes[f"layers.{i}.{name}"] = np.ones(shape, np.float32)
        except (mc.ModelFileError, TypeError, KeyError, IndexError):
            pass
        meta = {"format": "minicnn", "format_version": "1",
                "architecture": json.dumps(architecture), "user": json.dumps(user)}
        if training_state is not None:
            meta["training_state"] = json.dumps(training_state)
        from safetensors.numpy import save

        path = tmp_path / "fuzz.safetensors"
        path.write_bytes(save(shapes, metadata=meta))
        check_model_file(path)


# --------------------------------------------------------------------------- IDX (MNIST)

def idx_bytes(array: np.ndarray, code=0x08) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


VALID_IDX = [
    idx_bytes(np.random.default_rng(0).integers(0, 256, (3, 5, 4), dtype=np.uint8)),
    idx_bytes(np.arange(7, dtype=np.uint8)),
    idx_bytes(np.linspace(-1, 1, 12).astype(np.float32).reshape(3, 4), code=0x0D),
]


@settings(max_examples=3 * BASE)
@given(data=st.one_of(RANDOM_BYTES, st.sampled_from(VALID_IDX).flatmap(mutated),
                      st.binary(max_size=64).map(lambda b: b"\x00\x00" + b)))
def test_fuzz_parse_idx(data):
    CASES["IDX bytes"] += 1
    with no_hang():
        try:
            array = parse_idx(data, "fuzz")
        except DatasetFileError:
            return
    assert isinstance(array, np.ndarray) and 1 <= array.ndim <= 4
    assert len(data) == 4 + 4 * array.ndim + array.nbytes  # exactly the declared content


@settings(max_examples=2 * BASE)
@given(data=st.sampled_from([gzip.compress(v) for v in VALID_IDX]).flatmap(mutated))
def test_fuzz_read_idx_gzip(tmp_path, data):
    CASES["gzip'd IDX files"] += 1
    path = tmp_path / "fuzz-idx1-ubyte.gz"
    path.write_bytes(data)
    with no_hang():
        try:
            read_idx(path)
        except DatasetFileError:
            pass


# --------------------------------------------------------------------------- CIFAR pickles

def cifar_batch(protocol, str_keys=False):
    rng = np.random.default_rng(protocol)
    batch = {b"batch_label": b"fuzz", b"labels": [int(v) for v in rng.integers(0, 10, 3)],
             b"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8),
             b"filenames": [b"a.png", b"b.png", b"c.png"]}
    if str_keys:
        batch = {k.decode(): v for k, v in batch.items()}
    return pickle.dumps(batch, protocol=protocol)


def py2_batch() -> bytes:
    from test_data import py2_style_pickle  # tests/ is on sys.path, as for helpers.py

    return py2_style_pickle(np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072) % 251, [3, 7])


def _valid_pickles():
    found = [cifar_batch(p) for p in (0, 2, 4, 5)] + [cifar_batch(4, str_keys=True)]
    try:
        found.append(py2_batch())
    except ImportError:  # run from another folder: the Python 2 style case is left out
        pass
    return found


VALID_PICKLES = _valid_pickles()


@settings(max_examples=4 * BASE)
@given(data=st.one_of(RANDOM_BYTES, st.sampled_from(VALID_PICKLES).flatmap(mutated),
                      st.binary(max_size=256).map(lambda b: b"\x80\x02" + b)))
def test_fuzz_cifar_batches(data):
    CASES["CIFAR pickle bytes"] += 1
    with no_hang():
        try:
            images, labels = cifar._decode_batch(data, "fuzz", 10)
        except DatasetFileError:
            return
    assert images.dtype == np.uint8 and images.shape[1:] == (3, 32, 32)
    assert len(labels) == len(images) and (labels < 10).all()


PLAIN = st.recursive(
    st.none() | st.booleans() | st.integers(-2**80, 2**80) | st.floats(allow_nan=False)
    | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=4) | st.integers(), inner, max_size=4),
    max_leaves=10,
)


@settings(max_examples=BASE)
@given(value=PLAIN, protocol=st.integers(0, pickle.HIGHEST_PROTOCOL))
def test_safe_pickle_reads_plain_data_like_pickle(value, protocol):
    """The safe reader is not only safe: on the data it supports it agrees with pickle."""
    CASES["safe_pickle round trips"] += 1
    with no_hang():
        assert safe_pickle.loads(pickle.dumps(value, protocol=protocol)) == value


# --------------------------------------------------------------------------- image folders

def _encoded(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8), "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


VALID_IMAGES = {"png": _encoded("PNG"), "jpg": _encoded("JPEG"), "bmp": _encoded("BMP"),
                "gif": _encoded("GIF")}


@settings(max_examples=int(1.5 * BASE))
@given(ext=st.sampled_from(sorted(VALID_IMAGES)), how=st.sampled_from(["mutated", "random"]),
       data=st.data(), strict=st.booleans())
def test_fuzz_image_folder(tmp_path, ext, how, data, strict):
    CASES["image files"] += 1
    content = data.draw(mutated(VALID_IMAGES[ext]) if how == "mutated" else RANDOM_BYTES)
    shutil.rmtree(tmp_path / "images", ignore_errors=True)  # tmp_path is shared by the examples
    cls = tmp_path / "images" / "cats"
    cls.mkdir(parents=True)
    (cls / "good.png").write_bytes(VALID_IMAGES["png"])
    fuzzed = cls / f"fuzzed.{ext}"
    fuzzed.write_bytes(content)
    with no_hang(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            (x, y), _, names = load_image_folder(tmp_path / "images", size=(4, 4), channels=3,
                                                 val_fraction=0.0, strict=strict, cache=False,
                                                 workers=1, verbose=0)
        except DatasetFileError as err:
            assert strict and str(fuzzed) in str(err), err
            return
    assert names == ["cats"] and x.shape[1:] == (3, 4, 4) and x.dtype == np.float32
    skipped = [w for w in caught if "skipped" in str(w.message)]
    if len(x) == 1:  # the fuzzed file was skipped: with one warning that names it
        assert not strict and len(skipped) == 1 and str(fuzzed) in str(skipped[0].message)
    else:
        assert len(x) == 2 and not skipped
