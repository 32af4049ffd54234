"""Model files: exact round trip, atomic replacement, clear errors for bad files."""

import json
import os
import pickle
import struct

import numpy as np
import pytest
from safetensors.numpy import save as save_safetensors

import minicnn as mc
from minicnn.layers import BatchNorm2D, Conv2D, Dense, Dropout, Flatten, LeakyReLU, MaxPool2D


def trained_model():
    model = mc.Sequential([
        Conv2D(1, 4, (3, 2), stride=(1, 2), padding=(1, 0)), BatchNorm2D(4), LeakyReLU(0.2),
        MaxPool2D(2, stride=1), Flatten(), Dropout(0.25), Dense(4 * 7 * 3, 3, bias=False),
    ], seed=0, input_shape=(1, 8, 8))
    x = np.random.default_rng(0).random((16, 1, 8, 8)).astype(np.float32)
    model.forward(x, training=True)  # moves BatchNorm's running statistics
    return model, x


def test_round_trip_is_exact(tmp_path):
    model, x = trained_model()
    model.metadata = {"class_names": ["a", "b", "c"]}
    path = tmp_path / "model.safetensors"
    model.save(path)
    loaded = mc.load_model(path)
    assert loaded.config() == model.config()
    assert loaded.metadata == {"class_names": ["a", "b", "c"]}
    for a, b in zip(model.layers, loaded.layers):
        for name, array in a.named_arrays().items():
            other = b.named_arrays()[name]
            assert other.data.dtype == array.data.dtype
            np.testing.assert_array_equal(other.data, array.data)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_float64_models_round_trip(tmp_path):
    model = mc.Sequential([Dense(3, 2)], seed=1).astype(np.float64)
    model.save(tmp_path / "m.safetensors")
    assert mc.load_model(tmp_path / "m.safetensors").layers[0].weight.data.dtype == np.float64


def test_saving_replaces_atomically_and_a_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    model, _ = trained_model()
    path = tmp_path / "model.safetensors"
    model.save(path)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # e.g. Ctrl-C between writing and renaming

    monkeypatch.setattr(os, "replace", crash)
    other = mc.Sequential([Dense(2, 2)], seed=5)
    with pytest.raises(KeyboardInterrupt):
        other.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.safetensors"]  # no temporary file left behind
    mc.load_model(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="model file not found"):
        mc.load_model(tmp_path / "nope.safetensors")


def rewrite(tmp_path, tensors, metadata):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(save_safetensors(tensors, metadata=metadata))
    return path


def good_parts():
    model = mc.Sequential([Dense(3, 2)], seed=0)
    tensors = {"layers.0.weight": model.layers[0].weight.data, "layers.0.bias": model.layers[0].bias.data}
    meta = {"format": "minicnn", "format_version": "1", "architecture": json.dumps(model.config()),
            "user": "{}"}
    return tensors, meta


@pytest.mark.parametrize("damage, message", [
    (lambda t, m: t.pop("layers.0.bias"), "missing tensor layers.0.bias"),
    (lambda t, m: t.update({"layers.0.weight": np.zeros((2, 3), np.float32)}), "has shape"),
    (lambda t, m: t.update({"layers.0.weight": np.zeros((3, 2), np.int32)}), "dtype int32"),
    (lambda t, m: t.update({"layers.0.weight": np.full((3, 2), np.nan, np.float32)}), "NaN"),
    (lambda t, m: t.update({"layers.9.weight": np.zeros(1, np.float32)}), "unexpected tensor layers.9"),
    (lambda t, m: m.update({"format_version": "99"}), "format version 99 is not supported"),
    (lambda t, m: m.update({"format": "other"}), "not a minicnn model"),
    (lambda t, m: m.update({"architecture": "{not json"}), "not valid JSON"),
    (lambda t, m: m.update({"architecture": json.dumps({"layers": [{"type": "Lambda"}]})}),
     "unknown type 'Lambda'"),
    (lambda t, m: m.update({"architecture": json.dumps(
        {"layers": [{"type": "Dense", "in_features": -3, "out_features": 2}]})}),
     "invalid arguments"),
])
def test_inconsistent_files_raise_model_file_error(tmp_path, damage, message):
    tensors, meta = good_parts()
    damage(tensors, meta)
    with pytest.raises(mc.ModelFileError, match=message):
        mc.load_model(rewrite(tmp_path, tensors, meta))


def test_truncated_and_garbage_files(tmp_path):
    model, _ = trained_model()
    path = tmp_path / "model.safetensors"
    model.save(path)
    data = path.read_bytes()
    for cut in (0, 5, 8, 100, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(mc.ModelFileError):
            mc.load_model(path)
    path.write_bytes(struct.pack("<Q", 2**60) + b"{}")
    with pytest.raises(mc.ModelFileError, match="not a safetensors model file .*header too large"):
        mc.load_model(path)
    assert issubclass(mc.ModelFileError, ValueError)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/minicnn-pwned",))


def test_pickle_files_are_refused_without_running_them(tmp_path):
    marker = "/tmp/minicnn-pwned"
    if os.path.exists(marker):
        os.remove(marker)
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"weights": _Exploit()}))
    with pytest.raises(mc.ModelFileError):
        mc.load_model(path)
    assert not os.path.exists(marker)
