"""Reliability: safe, validated model files; atomic checkpoints that survive SIGKILL and Ctrl-C of
a real training process; the numerical guard; the inference memory budget; determinism.

Everything here runs in the default suite in about 30 s on 2 cores; the process-killing tests
start real Python subprocesses (numpy backend) and kill them with SIGKILL / SIGINT.
"""

from __future__ import annotations

import ast
import io
import json
import math
import os
import pickle
import random
import signal
import subprocess
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save as save_safetensors

import minicnn as mc
from minicnn import backend
from minicnn import io as mio
from minicnn.checkpoints import load_checkpoint
from minicnn.data import cache as data_cache
from minicnn.data import safe_pickle
from minicnn.data.idx import DatasetFileError
from minicnn.layers import (
    LAYER_TYPES,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    Layer,
    MaxPool2D,
    ReLU,
    build,
)
from minicnn.losses import SoftmaxCrossEntropy
from minicnn.training import Trainer, TrainingDivergedError, evaluate, fit

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "minicnn").rglob("*.py"))


# --------------------------------------------------------------------------- static audits

def _dotted(node) -> str:
    """``np.load`` for the call target ``np.load``; '' when it is not a plain dotted name."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else f"?.{node.attr}"
    return ""


def _calls(path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            yield node, _dotted(node.func)


# The one module that may import pickle: its Unpickler's find_class resolves only numpy's array
# constructors (to checking stand-ins) and refuses every other name (see its docstring).
_RESTRICTED_UNPICKLER = "minicnn/data/safe_pickle.py"


def test_nothing_in_minicnn_unpickles_or_evaluates_file_content():
    """No pickle except the restricted Unpickler, every np.load with allow_pickle=False, no
    eval/exec/marshal."""
    forbidden = {"pickle.load", "pickle.loads", "pickle.Unpickler", "marshal.load", "marshal.loads",
                 "eval", "exec", "joblib.load", "dill.load", "torch.load", "shelve.open"}
    found = []
    for path in SOURCES:
        rel = path.relative_to(ROOT)
        for node in ast.walk(ast.parse(path.read_text())):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) else []
            if any(m in ("pickle", "cPickle", "marshal", "dill", "joblib", "shelve") for m in modules) \
                    and rel.as_posix() != _RESTRICTED_UNPICKLER:
                found.append(f"{rel}:{node.lineno}: imports {modules}")
        for node, name in _calls(path):
            if name in forbidden:
                found.append(f"{rel}:{node.lineno}: {name}")
            if name in ("np.load", "numpy.load"):
                safe = [k for k in node.keywords if k.arg == "allow_pickle"
                        and isinstance(k.value, ast.Constant) and k.value.value is False]
                if not safe:
                    found.append(f"{rel}:{node.lineno}: np.load without allow_pickle=False")
    assert not found, "unsafe loading in minicnn/:\n" + "\n".join(found)


# Writers that are atomic by construction: the implementation itself, and downloads (a
# temporary file renamed over the target only after its checksum was verified).
_ATOMIC_BY_CONSTRUCTION = {"minicnn/atomic.py", "minicnn/data/sources.py"}


def _writes_a_file(node, name) -> bool:
    last = name.rsplit(".", 1)[-1]
    if last in ("write_text", "write_bytes", "tofile") or name == "json.dump":
        return True
    if last == "open" or name == "os.fdopen":
        mode = None
        args = node.args[1:] if name in ("open", "os.fdopen") else node.args[:1]
        if args and isinstance(args[0], ast.Constant):
            mode = args[0].value
        for keyword in node.keywords:
            if keyword.arg == "mode" and isinstance(keyword.value, ast.Constant):
                mode = keyword.value.value
        return isinstance(mode, str) and any(c in mode for c in "wax+")
    if last in ("save", "savez", "savez_compressed") and name.split(".")[0] in ("np", "numpy") \
            or last == "savefig":
        # fine into an in-memory buffer whose bytes then go to atomic_write_bytes
        target = ast.unparse(node.args[0]) if node.args else ""
        return "buffer" not in target and "buf" not in target
    return False


def test_every_file_minicnn_writes_is_written_atomically():
    found = []
    for path in SOURCES:
        rel = str(path.relative_to(ROOT))
        if rel in _ATOMIC_BY_CONSTRUCTION:
            continue
        for node, name in _calls(path):
            if _writes_a_file(node, name):
                found.append(f"{rel}:{node.lineno}: {ast.unparse(node)[:80]}")
    assert not found, ("non-atomic file writes (use minicnn.atomic.atomic_write_bytes, or render "
                       "into an io.BytesIO named buffer first):\n" + "\n".join(found))


# --------------------------------------------------------------------------- model files

def small_model():
    model = mc.Sequential([Conv2D(1, 2, 3, padding=1), BatchNorm2D(2), ReLU(), MaxPool2D(2),
                           Flatten(), Dense(2 * 4 * 4, 3)], seed=0, input_shape=(1, 8, 8))
    return model


def write_file(path, architecture, tensors=None, user="{}", **meta):
    if tensors is None:
        tensors = {"layers.0.weight": np.zeros((3, 2), np.float32),
                   "layers.0.bias": np.zeros(2, np.float32)}
    metadata = {"format": "minicnn", "format_version": "1", "user": user,
                "architecture": architecture if isinstance(architecture, str)
                else json.dumps(architecture)}
    metadata.update(meta)
    path.write_bytes(save_safetensors(tensors, metadata=metadata))
    return path


DENSE = {"layers": [{"type": "Dense", "in_features": 3, "out_features": 2}]}


def test_format_version_1_loads_and_other_versions_say_why_not(tmp_path):
    assert mc.load_model(write_file(tmp_path / "v1.safetensors", DENSE)).layers[0].out_features == 2
    cases = {
        "0": r"format version 0 is older than any minicnn model file: version 1 is the first",
        "2": r"format version 2 is not supported by this minicnn \(supports 1\); upgrade minicnn",
        "1.0": r"malformed format_version '1.0'",
        "\u0661": r"malformed format_version",  # an Arabic-Indic digit one: isdigit() but not ASCII
        "9" * 5000: r"malformed format_version '9999",  # int() would refuse > 4300 digits
    }
    for version, message in cases.items():
        path = write_file(tmp_path / "v.safetensors", DENSE, format_version=version)
        with pytest.raises(mc.ModelFileError, match=message):
            mc.load_model(path)
    path = tmp_path / "none.safetensors"
    path.write_bytes(save_safetensors({"layers.0.weight": np.zeros((3, 2), np.float32),
                                       "layers.0.bias": np.zeros(2, np.float32)},
                                      metadata={"format": "minicnn",
                                                "architecture": json.dumps(DENSE)}))
    with pytest.raises(mc.ModelFileError, match="no format_version in the metadata"):
        mc.load_model(path)


def test_hostile_sizes_are_refused_before_anything_is_allocated(tmp_path):
    """A Dense(10**9, 10**9) would be 4 EB of float32: refused by comparing the shapes the
    arguments imply with the tensors present in the file, before any layer is built."""
    hostile = [
        ({"layers": [{"type": "Dense", "in_features": 10**9, "out_features": 10**9}]},
         r"layers.0.weight has shape \(3, 2\), but layer 0 \(Dense\) needs \(1000000000, 1000000000\)"),
        ({"layers": [{"type": "Conv2D", "in_channels": 10**6, "out_channels": 10**6,
                      "kernel_size": [10**4, 10**4]}]}, r"needs \(1000000, 1000000, 10000, 10000\)"),
        ({"layers": [{"type": "Residual", "body": [
            {"type": "Dense", "in_features": 10**9, "out_features": 10**9}]}]},
         r"missing tensor layers.0.body.0.weight"),
        ({"layers": [{"type": "BatchNorm2D", "num_features": 2**40}]}, "missing tensor"),
        ({"layers": [{"type": "Dense", "in_features": 3, "out_features": 2}],
          "input_shape": [3, 10**9, 10**9]}, "input_shape must be a list of 1 to 3 positive ints"),
    ]
    for architecture, message in hostile:
        path = write_file(tmp_path / "hostile.safetensors", architecture)
        tracemalloc.start()
        try:
            with pytest.raises(mc.ModelFileError, match=message):
                mc.load_model(path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 5 * 2**20  # refused before anything of the claimed size exists
    # without a file (from_config) the total is capped instead
    with pytest.raises(mc.ModelFileError, match="more than the 2,147,483,648 minicnn builds"):
        build.build_model({"layers": [{"type": "Dense", "in_features": 10**9,
                                           "out_features": 10**9}]})


@pytest.mark.parametrize("spec, message", [
    ({"type": "Conv2D", "in_channels": 1, "out_channels": 2, "kernel_size": "abc"},
     "kernel_size must be an int or a pair of ints, got 'abc'"),
    ({"type": "Conv2D", "in_channels": 1, "out_channels": 2, "kernel_size": [3, -3]},
     "kernel_size must be >= 1"),
    ({"type": "Dense", "in_features": -3, "out_features": 2}, "in_features must be >= 1"),
    ({"type": "Dense", "in_features": 3.5, "out_features": 2}, "in_features must be a positive int"),
    ({"type": "Dense", "in_features": True, "out_features": 2}, "in_features must be a positive int"),
    ({"type": "Dense", "in_features": 10**40, "out_features": 2}, "must be a number, bool, string"),
    ({"type": "Dense", "in_features": 3, "out_features": 2, "dtype": "object"},
     "unknown argument 'dtype'"),
    ({"type": "Dense", "in_features": 3, "out_features": 2, "rng": 5}, "unknown argument 'rng'"),
    ({"type": "Dense", "in_features": 3, "out_features": 2, "__class__": "x"}, "unknown argument"),
    ({"type": "Dense", "in_features": 3, "out_features": 2, "bias": "no"}, "bias must be true or false"),
    ({"type": "Dense", "in_features": 3, "out_features": 2, "init": {"a": [[1]]}},
     "init must be a number, bool, string or a short list"),
    ({"type": "Dense", "in_features": 3, "out_features": 2, "init": "zeros"}, "init must be one of"),
    ({"type": "Dropout", "p": float("nan")}, "p must be a number"),
    ({"type": "LeakyReLU", "negative_slope": [1, [2]]}, "negative_slope must be a number"),
    ({"type": "BatchNorm2D", "num_features": 2, "eps": -1.0}, "eps must be > 0"),
    ({"type": "Residual", "body": "garbage"}, "field 'body' must be a list of layers"),
    ({"type": "Residual", "body": [{"type": "Lambda"}]}, "unknown type 'Lambda'"),
    ({"type": 5}, "layer 0 has no 'type'"),
    ({"type": "__import__"}, "unknown type '__import__'"),
])
def test_malformed_layer_arguments(tmp_path, spec, message):
    try:  # give the file the tensors the arguments imply, so the arguments are what fails
        tensors = {f"layers.0.{name}": np.zeros(shape, np.float32)
                   for name, shape in build.expected_arrays(spec).items()}
    except mc.ModelFileError:
        tensors = {}
    path = write_file(tmp_path / "bad.safetensors", {"layers": [spec]}, tensors=tensors)
    with pytest.raises(mc.ModelFileError, match=message):
        mc.load_model(path)


def test_malformed_headers_and_metadata(tmp_path):
    """The container (header length, JSON, tensor entries, offsets) is checked by the
    safetensors library, whose own words the message carries; minicnn's metadata by minicnn."""
    good = small_model()
    good.save(tmp_path / "good.safetensors")
    data = (tmp_path / "good.safetensors").read_bytes()
    (header_len,) = np.frombuffer(data[:8], "<u8")
    header = json.loads(data[8:8 + int(header_len)])

    def with_header(changed):
        raw = json.dumps(changed).encode()
        raw += b" " * ((-len(raw)) % 8)
        return len(raw).to_bytes(8, "little") + raw + data[8 + int(header_len):]

    def edited(**meta):
        changed = json.loads(json.dumps(header))
        changed["__metadata__"].update(meta)
        return with_header(changed)

    cases = [
        (with_header({**header, "__metadata__": {"format": 5}}), "integer `5`, expected a string"),
        (with_header({**header, "__metadata__": ["format", "minicnn"]}), "sequence, expected a map"),
        (with_header({**header, "layers.0.weight": "nonsense"}), "expected struct TensorInfo"),
        (with_header({**header, "layers.0.weight": {**header["layers.0.weight"], "dtype": "F128"}}),
         "unknown variant `F128`"),
        (with_header({**header, "layers.0.weight": {**header["layers.0.weight"], "shape": [-1, 2]}}),
         "integer `-1`, expected usize"),
        (with_header({**header, "layers.0.weight": {**header["layers.0.weight"],
                                                     "data_offsets": [0, 2**62]}}),
         "invalid offset for tensor `layers.0.weight`"),
        (with_header({**header, "layers.0.weight": {**header["layers.0.weight"],
                                                     "shape": [2, 1, 3, 30]}}),
         "invalid shape, data type, or offset"),
        (with_header([1, 2, 3]), "not a safetensors model file .*invalid JSON in header"),
        (b"\x10\x00\x00\x00\x00\x00\x00\x00" + b"[" * 16, "not a safetensors model file"),
        (edited(architecture="[" * 50_000 + "]" * 50_000), "not valid JSON"),  # RecursionError
        (edited(architecture='{"layers": [{"type": "ReLU", "x": ' + "9" * 5000 + "}]}"),
         "not valid JSON"),
        (edited(architecture='{"layers": []}'), "non-empty 'layers' list"),
        (edited(architecture=json.dumps({"layers": [{"type": "ReLU"}] * 10_001})),
         "more than the 10000"),
        (edited(architecture=json.dumps({"layers": [{"type": "ReLU"}], "input_shape": "abc"})),
         "input_shape must be a list"),
        (edited(architecture=json.dumps({"layers": [{"type": "ReLU"}], "input_shape": [0, 1]})),
         "input_shape must be a list"),
        (edited(user="[1, 2]"), "user metadata must be a JSON object"),
        (edited(user='{"class_names": 7}'), "class_names must be a non-empty list of strings"),
        (edited(user='{"class_names": ["a", "b"]}'), r"2 class_names but the model outputs shape \(3,\)"),
        (edited(user='{"input_shape": [1, 9, 9]}'), "differs from the architecture's"),
        (edited(user='{"normalization": {"mean": [0.5], "std": [0.0]}}'), "std > 0"),
        (edited(user='{"normalization": {"mean": [0.5, 1, 2], "std": [1, 1, 1]}}'),
         "normalization has 3 values, the input has 1 channels"),
        (edited(training_state="{oops"), "training state is not valid JSON"),
        (edited(training_state="[]"), "training state must be a JSON object"),
    ]
    path = tmp_path / "bad.safetensors"
    for raw, message in cases:
        path.write_bytes(raw)
        with pytest.raises(mc.ModelFileError, match=message):
            mc.load_model(path)


def test_every_layer_type_declares_its_array_shapes():
    """Every layer class computes its arrays from its config (``Layer.array_shapes``, so that
    sizes are checked before building); it must agree with what the built layer really holds,
    for every type."""
    examples = {
        "Conv2D": {"in_channels": 2, "out_channels": 3, "kernel_size": [3, 2], "bias": False},
        "Dense": {"in_features": 4, "out_features": 5},
        "BatchNorm2D": {"num_features": 3},
        "Dropout": {"p": 0.5}, "LeakyReLU": {"negative_slope": 0.1}, "ELU": {"alpha": 0.5},
        "GELU": {"approximate": "tanh"},
        "MaxPool2D": {"kernel_size": 2}, "AvgPool2D": {"kernel_size": 2},
        "GlobalAvgPool2D": {}, "Flatten": {}, "ReLU": {}, "Sigmoid": {}, "Tanh": {},
        "Residual": {"body": [{"type": "Conv2D", "in_channels": 3, "out_channels": 3,
                               "kernel_size": 3, "padding": 1}, {"type": "BatchNorm2D",
                                                                 "num_features": 3}],
                     "shortcut": [{"type": "Conv2D", "in_channels": 3, "out_channels": 3,
                                   "kernel_size": 1}]},
        "Sequential": {"layers": [{"type": "Dense", "in_features": 2, "out_features": 3},
                                  {"type": "Sequential", "layers": [{"type": "BatchNorm2D",
                                                                     "num_features": 2}]}]},
    }
    missing = sorted(set(LAYER_TYPES) - set(examples))
    assert not missing, f"add an example for {missing} here (give it array_shapes if it has arrays)"
    for kind in LAYER_TYPES:
        spec = {"type": kind, **examples[kind]}
        layer = build.build_layer(spec)
        actual = {name: tuple(a.data.shape) for name, a in layer.named_arrays().items()}
        assert build.expected_arrays(spec) == actual, kind


def test_save_model_records_the_input_shape_and_refuses_unloadable_models(tmp_path):
    model = mc.Sequential([Conv2D(1, 2, 3), Flatten(), Dense(2 * 6 * 6, 3)], seed=0)
    model.forward(np.zeros((1, 1, 8, 8), np.float32))  # no metadata, shape learnt from the data
    model.save(tmp_path / "m.safetensors")
    loaded = mc.load_model(tmp_path / "m.safetensors")
    assert loaded.input_shape == (1, 8, 8) and loaded.metadata == {}
    model.layers[0].weight.data[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="layers.0.weight contains NaN"):
        model.save(tmp_path / "nan.safetensors")
    assert not (tmp_path / "nan.safetensors").exists()
    with pytest.raises(TypeError, match="metadata must be a dict"):
        small_model().save(tmp_path / "x.safetensors", metadata=["a"])


# --------------------------------------------------------------------------- code execution

class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_checkpoint_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "ckpt.safetensors"
    ckpt.write_bytes(pickle.dumps({"model": _Exploit(marker), "optimizer": _Exploit(marker)}))
    with pytest.raises(mc.ModelFileError):
        load_checkpoint(ckpt)
    model = small_model()
    x = np.zeros((8, 1, 8, 8), np.float32)
    with pytest.raises(mc.ModelFileError):  # resume reads the checkpoint first
        fit(model, SoftmaxCrossEntropy(), mc.optim.SGD(model.parameters(), lr=0.1),
            (x, np.zeros(8, np.int64)), verbose=0, checkpoint=ckpt, resume=True)
    assert not marker.exists()


def test_dataset_cache_with_a_pickled_object_array_is_refused(tmp_path, monkeypatch):
    """A .npy holding an object array unpickles on np.load(allow_pickle=True); the cache's
    np.load(allow_pickle=False) refuses it, warns, and the entry is rebuilt from the source."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    marker = tmp_path / "pwned"
    key = "k" * 64
    folder = data_cache.save_arrays("evil", key, {"x": np.zeros((2, 1, 2, 2), np.uint8)})
    buffer = io.BytesIO()
    np.save(buffer, np.array([_Exploit(marker), 1], dtype=object), allow_pickle=True)
    evil = buffer.getvalue()
    (folder / "x.npy").write_bytes(evil)
    meta = json.loads((folder / "meta.json").read_text())  # a consistent entry: hash updated
    meta["arrays"]["x"].update(sha256=__import__("hashlib").sha256(evil).hexdigest(),
                               dtype="object", shape=[2])
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="ignoring damaged dataset cache.*Object arrays cannot"):
        assert data_cache.load_arrays("evil", key, {"x": 1}) is None
    assert not marker.exists()


def test_safe_pickle_survives_reference_bombs():
    """A 300-byte pickle can describe a structure with 2**40 paths through shared memo entries;
    the reader resolves each container once and bounds its total work by the file size."""
    nested = []
    for _ in range(40):
        nested = [nested, nested]
    out = safe_pickle.loads(pickle.dumps(nested, protocol=2))
    assert out[0] is out[1]  # shared, not expanded into 2**40 copies
    # the same big list handed again and again to 20,000 REDUCEs (as ignored arguments of
    # numpy's _reconstruct): memo 0 = the list, 1 = _reconstruct, 2 = numpy.ndarray
    bomb = b"".join([
        b"\x80\x02]q\x00(" + b"K\x01" * 20_000 + b"e0",  # PROTO 2, list, MARK, ints, APPENDS, POP
        b"cnumpy.core.multiarray\n_reconstruct\nq\x010",
        b"cnumpy\nndarray\nq\x020",
        b"h\x01h\x02h\x00h\x00\x87R0" * 20_000,  # _reconstruct(ndarray, list, list), POP
        b"N.",
    ])
    with pytest.raises(DatasetFileError, match="refusing array shape"):
        safe_pickle.loads(bomb)
    # REDUCE called on numpy.ndarray((2**31,)) or bytes(2**31) would allocate gigabytes from
    # a 30-byte file: neither name resolves to something callable with a size
    for allocation in (b"\x80\x02cnumpy\nndarray\nJ\x00\x00\x00\x7f\x85R.",
                       b"\x80\x02c__builtin__\nbytes\nJ\x00\x00\x00\x7f\x85R."):
        tracemalloc.start()
        try:
            with pytest.raises(DatasetFileError):
                safe_pickle.loads(allocation)
            assert tracemalloc.get_traced_memory()[1] < 2**20
        finally:
            tracemalloc.stop()
    looped = []
    looped.append(looped)
    with pytest.raises(DatasetFileError, match="contains itself"):
        safe_pickle.loads(pickle.dumps(looped, protocol=2))


# --------------------------------------------------------------------------- checkpoints

def toy_data(n=96):
    rng = np.random.default_rng(0)
    x = rng.random((n, 1, 8, 8), dtype=np.float32)
    y = rng.integers(0, 2, n)
    x[y == 1, :, :4] += 0.5
    return x, y


def toy_model():
    return mc.Sequential([Conv2D(1, 2, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(),
                          Dense(32, 8), ReLU(), Dropout(0.2), Dense(8, 2)], seed=0)


def weights(model):
    return [np.array(a.data) for layer in model.layers for a in layer.named_arrays().values()]


def one_epoch_checkpoint(tmp_path):
    """A toy model trained one epoch with a checkpoint: (its path, what load_checkpoint reads)."""
    x, y = toy_data()
    ckpt = tmp_path / "ckpt.safetensors"
    model = toy_model()
    fit(model, SoftmaxCrossEntropy(), mc.optim.Adam(model.parameters()), (x, y), epochs=1,
        batch_size=32, verbose=0, checkpoint=ckpt)
    return ckpt, load_checkpoint(ckpt)


def test_tampered_training_state_is_refused_and_changes_nothing(tmp_path):
    x, y = toy_data()
    ckpt, (model_file, opt_tensors, state) = one_epoch_checkpoint(tmp_path)

    def rewrite(state=state, opt_tensors=opt_tensors):
        extra = {f"optimizer.{k}": v for k, v in opt_tensors.items()}
        mio.write_model_file(ckpt, model_file.config(), model_file.named_arrays(), model_file.metadata,
                             extra_tensors=extra, training_state=state)

    def changed(**updates):
        new = json.loads(json.dumps(state))
        for dotted_key, value in updates.items():
            *parents, last = dotted_key.split("__")
            target = new
            for parent in parents:
                target = target[parent]
            target[last] = value
        return new

    bad_shape = dict(opt_tensors, **{"0.exp_avg": np.zeros(7, np.float32)})
    no_owner = dict(opt_tensors, **{"99.exp_avg": np.zeros(3, np.float32)})
    cases = [
        (dict(state=changed(version=99)), "training state version 99 is not supported"),
        (dict(state=changed(optimizer__type="SGD")), "trained with SGD, not Adam"),
        (dict(state=changed(optimizer__lr=-1.0)), "learning rate must be finite and >= 0"),
        (dict(state=changed(global_step=-5)), "step counts must be non-negative integers"),
        (dict(opt_tensors=bad_shape), r"optimizer tensor '0.exp_avg' has shape \(7,\)"),
        (dict(opt_tensors=no_owner, state=changed(optimizer__state_keys=sorted(no_owner))),
         "optimizer tensor '99.exp_avg' names no parameter of the optimizer"),
        (dict(state=changed(rng={"6": {"bit_generator": "MT19937", "state": 3}})),
         "malformed training state"),
        (dict(state=changed(rng={"0": {}})), "random state for layer 0, which has no generator"),
        (dict(state=changed(epoch_totals__correct="x")), "epoch totals must be"),
        (dict(state=changed(epoch_totals={"seen": 3})), "epoch totals must be"),
        (dict(state=changed(version=1, epoch_sums=[0, "x"])), "epoch totals must be"),
        (dict(state=changed(history=5)), "malformed training state"),
        (dict(state=changed(loader=[])), "loader"),
    ]
    for kwargs, message in cases:
        rewrite(**kwargs)
        victim = toy_model()
        opt = mc.optim.Adam(victim.parameters())
        before = weights(victim)
        with pytest.raises(mc.ModelFileError, match=message):
            fit(victim, SoftmaxCrossEntropy(), opt, (x, y), epochs=2, batch_size=32, verbose=0,
                checkpoint=ckpt, resume=True)
        for a, b in zip(before, weights(victim)):
            np.testing.assert_array_equal(a, b)
        assert opt.step_count == 0


def test_a_version_1_checkpoint_keeps_its_epoch_totals_as_a_list_and_is_still_read(tmp_path):
    x, y = toy_data()
    ckpt, (saved, opt_tensors, state) = one_epoch_checkpoint(tmp_path)
    assert state["version"] == 2 and set(state["epoch_totals"]) == {"loss_sum", "correct", "seen",
                                                                  "seconds"}
    old = {k: v for k, v in state.items() if k != "epoch_totals"}
    old.update(version=1, epoch_sums=[1.5, 10, 32, 2.25])  # loss * n, correct, seen, seconds
    mio.write_model_file(ckpt, saved.config(), saved.named_arrays(), saved.metadata,
                         extra_tensors={f"optimizer.{k}": v for k, v in opt_tensors.items()},
                         training_state=old)
    fresh = toy_model()
    trainer = Trainer(fresh, SoftmaxCrossEntropy(), mc.optim.Adam(fresh.parameters()),
                      mc.data.DataLoader(x, y, batch_size=32))
    trainer.restore_checkpoint(ckpt)
    assert trainer.totals == mc.training.EpochTotals(loss_sum=1.5, correct=10, seen=32,
                                                     seconds=2.25)
    assert trainer.global_step == state["global_step"]


# The training run the subprocess tests start, kill and resume. The parent imports it too
# (runpy) to compute the uninterrupted reference in-process. The faults are planted by the child
# itself at exact points (a SIGKILL in the middle of the k-th checkpoint write, a SIGINT at step
# k), so what each test exercises does not depend on timing or on how busy the machine is.
CHILD = r'''
import os
import signal
import sys

import numpy as np

import minicnn as mc
from minicnn.data import DataLoader, RandomHorizontalFlip
from minicnn.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from minicnn.training import Callback, LRSchedule, fit


class Beacon(Callback):
    # reports progress to the parent; sends itself a real SIGINT at step ``interrupt_at``

    def __init__(self, interrupt_at=None):
        self.interrupt_at = interrupt_at

    def on_batch_end(self, trainer, step, logs):
        print(f"step {step}", flush=True)
        if step == self.interrupt_at:
            os.kill(os.getpid(), signal.SIGINT)


def kill_during_checkpoint_write(k, phase):
    # SIGKILL this process during its k-th checkpoint write: halfway through writing the
    # temporary file ("write"), after fsync and before the rename ("rename"), or right after
    # the rename, before the folder is fsync'ed ("after")
    import minicnn.atomic as atomic

    writes = [0]
    real_fdopen, real_replace = os.fdopen, os.replace

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    class HalfWriter:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.handle.__exit__(*exc)

        def write(self, data):
            self.handle.write(data[:len(data) // 2])
            self.handle.flush()
            die()

    def fdopen(fd, *args, **kwargs):
        writes[0] += 1
        handle = real_fdopen(fd, *args, **kwargs)
        return HalfWriter(handle) if writes[0] == k and phase == "write" else handle

    def replace(source, target):
        if writes[0] == k and phase == "rename":
            die()
        real_replace(source, target)
        if writes[0] == k and phase == "after":
            die()

    atomic.os = type(os)("os_with_a_fault")
    atomic.os.__dict__.update(os.__dict__, fdopen=fdopen, replace=replace)


def train(checkpoint=None, epochs=6, checkpoint_every=None, callbacks=()):
    rng = np.random.default_rng(0)
    x = rng.random((240, 1, 8, 8), dtype=np.float32)
    y = rng.integers(0, 2, 240)
    x[y == 1, :, :4] += 0.5
    model = mc.Sequential([Conv2D(1, 4, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(),
                           Dense(64, 16), ReLU(), Dropout(0.2), Dense(16, 2)], seed=0)
    opt = mc.optim.Adam(model.parameters(), lr=1e-2)
    schedule = mc.optim.CosineAnnealingLR(opt, T_max=200)
    loader = DataLoader(x, y, batch_size=8, seed=3, transform=RandomHorizontalFlip())
    fit(model, mc.losses.SoftmaxCrossEntropy(), opt, loader, epochs=epochs, verbose=0,
        callbacks=[LRSchedule(schedule, per="batch"), *callbacks], checkpoint=checkpoint,
        checkpoint_every=checkpoint_every, resume=True)
    return model


if __name__ == "__main__":
    mc.set_backend("numpy")
    checkpoint, every, fault = sys.argv[1], int(sys.argv[2]) or None, sys.argv[3]
    interrupt_at = None
    if fault.startswith("kill:"):
        _, k, phase = fault.split(":")
        kill_during_checkpoint_write(int(k), phase)
    elif fault.startswith("interrupt:"):
        interrupt_at = int(fault.split(":")[1])
    try:
        train(checkpoint, checkpoint_every=every, callbacks=[Beacon(interrupt_at)])
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(130)
    print("done", flush=True)
'''
CHILD_STEPS = 6 * 30  # epochs * batches per epoch


@pytest.fixture(scope="module")
def child_script(tmp_path_factory):
    path = tmp_path_factory.mktemp("child") / "train_child.py"
    path.write_text(CHILD)
    return path


@pytest.fixture(scope="module")
def reference_weights(child_script):
    import runpy

    previous = mc.set_backend("numpy")
    try:
        return weights(runpy.run_path(str(child_script), run_name="reference")["train"]())
    finally:
        mc.set_backend(previous)


def run_child(script, ckpt, checkpoint_every, fault="none", timeout=300):
    env = dict(os.environ, MINICNN_BACKEND="numpy", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(script), str(ckpt), str(checkpoint_every), fault],
                          capture_output=True, env=env, timeout=timeout)


def checkpoint_writes(start: int) -> list[int]:
    """The global step each checkpoint write of a run resumed at step ``start`` records: one
    after every step, and a second one at each epoch's end (30 steps)."""
    steps = []
    for step in range(start + 1, CHILD_STEPS + 1):
        steps += [step, step] if step % 30 == 0 else [step]
    return steps


def stray_temporaries(ckpt: Path) -> list:
    return sorted(ckpt.parent.glob(f".{ckpt.name}.*.tmp"))


def test_sigkill_while_checkpointing_never_corrupts_the_checkpoint(tmp_path, child_script,
                                                                  reference_weights):
    # A training process that checkpoints after every step is SIGKILLed inside a checkpoint
    # write 10 times, at each of the three dangerous moments: halfway through writing the
    # temporary file, between fsync and rename, and just after the rename. After every kill the
    # checkpoint is absent or loadable and no progress is lost; the last run resumes to the end
    # with bit-identical weights, and the temporaries the killed writers left are removed.
    ckpt = tmp_path / "ckpt.safetensors"
    rng = random.Random(6)
    phases = ["write", "rename", "after"] * 4
    steps, left_behind = [], 0
    for phase in phases[:10]:
        k = rng.randint(1, 25)  # the k-th checkpoint write of this run (one per step)
        proc = run_child(child_script, ckpt, 1, f"kill:{k}:{phase}")
        assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
        left_behind += len(stray_temporaries(ckpt))
        if not ckpt.exists():  # killed before the first write of the first run was renamed
            assert not steps and (k, phase) in ((1, "write"), (1, "rename"))
            continue
        _, _, state = load_checkpoint(ckpt)  # never damaged
        # the kill came during the k-th write since the restart: the k-1 before it are on disk,
        # and the k-th too once its rename happened
        start = steps[-1] if steps else 0
        completed = k if phase == "after" else k - 1
        expected = checkpoint_writes(start)[completed - 1] if completed else start
        assert state["global_step"] == expected, (phase, k, state["global_step"], expected)
        steps.append(state["global_step"])
    assert left_behind >= 3  # the "write" and "rename" kills really left temporaries behind
    assert steps[-1] < CHILD_STEPS
    proc = run_child(child_script, ckpt, 1)
    assert proc.returncode == 0 and b"done" in proc.stdout, proc.stderr.decode()[-2000:]
    final, _, state = load_checkpoint(ckpt)
    assert state["global_step"] == CHILD_STEPS
    for a, b in zip(reference_weights, weights(final), strict=True):
        np.testing.assert_array_equal(a, b)
    assert stray_temporaries(ckpt) == []  # fit removed what the killed writers left
    print(f"checkpoint steps after each kill: {steps}")


def test_ctrl_c_saves_a_resumable_checkpoint_and_exits_cleanly(tmp_path, child_script,
                                                               reference_weights):
    # A real SIGINT to a training process (checkpoints only at epoch ends and on Ctrl-C),
    # delivered at step 40, in the second epoch.
    import runpy

    ckpt = tmp_path / "ckpt.safetensors"
    proc = run_child(child_script, ckpt, 0, "interrupt:40")
    assert proc.returncode == 130, (proc.stdout, proc.stderr)
    assert b"interrupted" in proc.stdout and b"Traceback" not in proc.stderr, proc.stderr.decode()
    _, _, state = load_checkpoint(ckpt)
    assert state["global_step"] == 40  # the step in progress finished, not the epoch
    train = runpy.run_path(str(child_script), run_name="resume")["train"]
    for a, b in zip(reference_weights, weights(train(ckpt)), strict=True):
        np.testing.assert_array_equal(a, b)


def wait_for(proc, token: bytes, timeout=120.0) -> bytes:
    """Read the child's stdout until ``token`` appears (or it exits, or time runs out)."""
    import selectors

    seen = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while token not in seen:
            left = deadline - time.monotonic()
            if left <= 0:
                proc.kill()
                raise AssertionError(f"child did not print {token!r} in {timeout} s: {seen[-300:]!r}")
            if selector.select(left):
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break  # the child exited
                seen += chunk
    return seen


def test_ctrl_c_in_the_cli_exits_with_130_and_no_traceback(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, MINICNN_BACKEND="numpy", PYTHONPATH=str(ROOT),
               XDG_CACHE_HOME=str(tmp_path / "cache"))
    proc = subprocess.Popen([sys.executable, "-m", "minicnn.cli", "train", "--dataset", "digits",
                             "--epochs", "500", "--limit", "64", "--batch-size", "16", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, bufsize=0)
    wait_for(proc, b"output in")  # the recipe's last line before fit
    deadline = time.monotonic() + 60
    while not (out / "checkpoint.safetensors").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # the first epoch's checkpoint: training is under way
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()[-2000:]
    assert b"Traceback" not in err and b"--resume" in err
    _, _, state = load_checkpoint(out / "checkpoint.safetensors")
    assert state["global_step"] > 0


# --------------------------------------------------------------------------- numerical faults

class InfGrad(Layer):
    """Identity; once ``broken``, its backward turns every gradient into inf."""

    broken = False

    def _forward(self, x, training):
        return self._remember(x)

    def _backward(self, dy, input_grad):
        return dy * np.inf if self.broken else dy


def test_non_finite_gradient_names_the_step_and_the_layer_and_keeps_the_checkpoint(tmp_path):
    x, y = toy_data()
    ckpt = tmp_path / "ckpt.safetensors"
    model = mc.Sequential([Flatten(), Dense(64, 8), InfGrad(), ReLU(), Dense(8, 2)], seed=0)
    fit(model, SoftmaxCrossEntropy(), mc.optim.SGD(model.parameters(), lr=0.01),
        (x, y), epochs=1, batch_size=32, verbose=0, checkpoint=ckpt)
    good = ckpt.read_bytes()
    model.layers[2].broken = True
    before = weights(model)
    with pytest.raises(TrainingDivergedError,
                       match=r"epoch 1, batch 1 \(step 1\): the gradient is not finite; layer 2 "
                             r"\(InfGrad\) is the first to produce a non-finite gradient, for "
                             r"its input.*last good checkpoint"):
        fit(model, SoftmaxCrossEntropy(), mc.optim.SGD(model.parameters(), lr=0.01),
            (x, y), epochs=1, batch_size=32, verbose=0, checkpoint=ckpt)
    assert ckpt.read_bytes() == good
    for a, b in zip(before, weights(model)):  # the bad gradient was never applied
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- memory

def test_predict_and_evaluate_stay_within_the_memory_budget():
    model = mc.Sequential([Conv2D(1, 4, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(),
                           Dense(4 * 4 * 4, 10)], seed=0)
    rng = np.random.default_rng(0)
    x = rng.random((60_000, 1, 8, 8), dtype=np.float32)
    y = rng.integers(0, 10, 60_000)
    per_sample = model.inference_bytes_per_sample((1, 8, 8))
    budget = 32 * 2**20
    # Traced but not activation memory: the kernels' modules, imported by the first call, and
    # the interpreter's one-time allocations (a large dict's table growing: 1.9 MB seen in a
    # pytest process, wherever the run happens to be when it grows).
    model.predict(x[:10])
    one_time = 2 * 2**20
    sizes = []
    forward = model.forward

    def spy(batch, training=False, **options):
        sizes.append(len(batch))
        return forward(batch, training, **options)

    model.forward = spy
    previous = backend.set_memory_budget(budget)
    try:
        tracemalloc.start()
        probs = model.predict(x, batch_size=60_000)
        predict_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]  # probs, and predict's last-batch caches
        scores = evaluate(model, SoftmaxCrossEntropy(), x, y, batch_size=10**6)
        evaluate_peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
        backend.set_memory_budget(previous)
    assert probs.shape == (60_000, 10) and 0 <= scores["acc"] <= 1
    assert max(sizes) == budget // per_sample < 60_000 and sum(sizes) == 2 * 60_000
    # the result itself (kept per batch, then concatenated) is not activation memory
    assert predict_peak <= budget + 2 * probs.nbytes + one_time
    assert evaluate_peak <= budget + one_time
    with pytest.raises(backend.MemoryBudgetError, match=r"one sample of shape \(1, 8, 8\) needs "
                                                        r"about .* MiB.*set_memory_budget"):
        backend.set_memory_budget(1000)
        try:
            model.predict(x[:1])
        finally:
            backend.set_memory_budget(previous)
    assert issubclass(backend.MemoryBudgetError, MemoryError)
    assert issubclass(backend.MemoryBudgetError, ValueError)


@pytest.mark.parametrize("algorithm", ["auto", "im2col", "winograd", "winograd2", "direct"])
def test_the_inference_memory_estimate_is_not_low_for_any_convolution_algorithm(cpu_backend,
                                                                              algorithm):
    """What predict's pass allocates for each further sample (the traced peak's growth from 32
    to 96 images) stays within ``inference_bytes_per_sample``, whichever algorithm the
    convolutions run with (each declares its own workspace; the numba Winograd's is none)."""
    from minicnn import kernels
    from minicnn.kernels.cpu_runtime import recycler
    from minicnn.layers import Residual

    kernels.set_conv_algorithm(algorithm)
    model = mc.Sequential([
        Conv2D(3, 8, 3, padding=1), BatchNorm2D(8), ReLU(),
        Residual([Conv2D(8, 8, 3, padding=1), BatchNorm2D(8), ReLU(), Conv2D(8, 8, 3, padding=1),
                  BatchNorm2D(8)]), ReLU(),
        Conv2D(8, 16, 3, stride=2, padding=1), ReLU(), MaxPool2D(2), Flatten(),
        Dense(16 * 4 * 4, 10)], seed=0)
    x = np.random.default_rng(0).random((96, 3, 16, 16), dtype=np.float32)
    model.predict(x[:4])  # the kernels' first call (imports, compiled code) is not per sample
    peaks = {}
    for n in (32, 96):
        recycler.clear()  # arrays kept from the smaller batch would hide the larger's
        tracemalloc.start()
        try:
            probs = model.predict(x[:n], batch_size=n)
            peaks[n] = tracemalloc.get_traced_memory()[1] - probs.nbytes
        finally:
            tracemalloc.stop()
    per_sample = (peaks[96] - peaks[32]) / 64
    assert 0 < per_sample <= model.inference_bytes_per_sample((3, 16, 16))


@pytest.mark.parametrize("algorithm", ["auto", "im2col", "winograd", "winograd2", "direct"])
@pytest.mark.parametrize("in_channels, out_channels, stride", [(3, 8, 1), (16, 16, 1), (16, 32, 2)])
def test_a_convolution_allocates_per_sample_no_more_than_its_workspace_and_output(
        cpu_backend, algorithm, in_channels, out_channels, stride):
    """Conv2D.workspace_bytes, which sizes predict's batches, for the algorithm that runs: the
    traced peak of an inference forward pass grows from 256 to 1,024 samples by at most the
    workspace and the output of 768 samples (the numba Winograd's blocks are as large at both:
    with an L2 cache of up to 4 MiB a core, a block holds at most 128 of these samples, a core's
    share at 256; the two cores' blocks, whose kernels allocate up to about 0.5 MB each while
    they run, overlap in time more or less: 1 MiB is allowed for that)."""
    from minicnn import kernels
    from minicnn.kernels.cpu_runtime import recycler

    kernels.set_conv_algorithm(algorithm)
    layer = Conv2D(in_channels, out_channels, 3, stride=stride, padding=1)
    layer.initialize(np.random.default_rng(0))
    shape = (in_channels, 16, 16)
    x = np.random.default_rng(1).random((1024, *shape), dtype=np.float32)
    # not per sample: the kernels' first call (imports, compiled code), and what a kernel keeps
    # from one call to the next, sized by the layer (the numba Winograd's blocks, at most a
    # core's L2 cache each)
    layer.forward(x)
    peaks = {}
    for n in (256, 1024):
        layer._cache = None
        recycler.clear()
        tracemalloc.start()
        try:
            layer.forward(x[:n])
            peaks[n] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    allowed = layer.workspace_bytes(shape, 4) + 4 * math.prod(layer.output_shape(shape))
    assert 0 < peaks[1024] - peaks[256] <= 768 * allowed + 2**20


def test_memory_budget_from_the_environment(monkeypatch):
    monkeypatch.setattr(backend, "_memory_budget_bytes", None)
    monkeypatch.setenv("MINICNN_MEMORY_BUDGET_MB", "3.5")
    assert backend.memory_budget() == int(3.5 * 2**20)
    monkeypatch.setattr(backend, "_memory_budget_bytes", None)
    monkeypatch.delenv("MINICNN_MEMORY_BUDGET_MB")
    assert backend.memory_budget() == 2**30  # 1 GiB by default
    for bad in ("lots", "0", "-1", "inf", "nan"):
        monkeypatch.setattr(backend, "_memory_budget_bytes", None)
        monkeypatch.setenv("MINICNN_MEMORY_BUDGET_MB", bad)
        with pytest.raises(ValueError, match="MINICNN_MEMORY_BUDGET_MB must be a positive number"):
            backend.memory_budget()


# --------------------------------------------------------------------------- determinism

def test_same_seed_gives_bit_identical_weights_twice():
    x, y = toy_data(160)

    def run():
        model = toy_model()  # Dropout, shuffling: every random draw comes from the seeds
        opt = mc.optim.AdamW(model.parameters(), lr=1e-2)
        fit(model, SoftmaxCrossEntropy(), opt, (x, y), epochs=2, batch_size=16, seed=7,
            transform=mc.data.RandomHorizontalFlip(), verbose=0)
        return weights(model)

    first, second = run(), run()
    for a, b in zip(first, second, strict=True):
        assert a.tobytes() == b.tobytes()
    assert not all(np.array_equal(a, b) for a, b in zip(first, weights(toy_model())))


def test_optimizer_accepts_lr_zero_but_training_refuses_it():
    model = toy_model()
    frozen = mc.optim.SGD(model.parameters(), lr=0.0)  # a legitimate way to freeze weights
    frozen.step()
    x, y = toy_data()
    with pytest.raises(ValueError, match="training needs a learning rate > 0"):
        fit(model, SoftmaxCrossEntropy(), frozen, (x, y), verbose=0)
    # a schedule that starts at 0 but warms up is fine
    opt = mc.optim.SGD(model.parameters(), lr=0.1)
    warmup = mc.optim.LinearWarmup(opt, warmup_steps=3, start_factor=0.0)
    assert opt.lr == 0.0
    fit(model, SoftmaxCrossEntropy(), opt, (x, y), epochs=1, batch_size=48, verbose=0,
        callbacks=[mc.training.LRSchedule(warmup, per="batch")])


def test_trainer_restores_nothing_from_a_plain_model_file(tmp_path):
    model = toy_model()
    model.save(tmp_path / "m.safetensors")
    x, y = toy_data()
    trainer = Trainer(model, SoftmaxCrossEntropy(), mc.optim.SGD(model.parameters(), lr=0.1),
                      mc.data.DataLoader(x, y))
    with pytest.raises(mc.ModelFileError, match="a model file, not a training checkpoint"):
        trainer.restore_checkpoint(tmp_path / "m.safetensors")


@pytest.fixture(autouse=True)
def _no_numpy_warnings_leak():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # overflow in the divergence tests
        yield


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_get_the_umask_permissions_or_keep_their_own(tmp_path, umask):
    """Atomic writes go through a private temporary file; the result must still be readable as
    the user's umask says (a report in a shared folder), or keep the mode of the file it
    replaces."""
    import stat

    from minicnn.atomic import atomic_write_bytes

    previous = os.umask(umask)
    try:
        model = mc.Sequential([mc.layers.Flatten(), mc.layers.Dense(4, 2)], seed=0)
        model.save(tmp_path / "model.safetensors")
        atomic_write_bytes(tmp_path / "notes.txt", b"x")
    finally:
        os.umask(previous)
    for name in ("model.safetensors", "notes.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name
    (tmp_path / "notes.txt").chmod(0o640)
    atomic_write_bytes(tmp_path / "notes.txt", b"y")
    assert stat.S_IMODE((tmp_path / "notes.txt").stat().st_mode) == 0o640
