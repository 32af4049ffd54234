"""Bad input gets a clear error naming the layer and the expected vs actual shape or value."""

import numpy as np
import pytest

import minicnn as mc
from minicnn.layers import (
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPool2D,
    ReLU,
)
from minicnn.losses import SoftmaxCrossEntropy


def mnist_like_model():
    return mc.Sequential([Conv2D(1, 4, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(),
                          Dense(4 * 14 * 14, 10)], seed=0)


def test_wrong_number_of_channels():
    with pytest.raises(ValueError, match=r"Conv2D.*1 channels.*\(N, 1, H, W\).*got 3 channels"):
        Conv2D(1, 4, 3).forward(np.zeros((2, 3, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"layer 0 \(Conv2D\).*expected input with 1 channels"):
        mnist_like_model().forward(np.zeros((2, 3, 28, 28), np.float32))


def test_wrong_rank():
    with pytest.raises(ValueError, match=r"Conv2D: expected input of shape \(N, 1, H, W\), got a 3-D"):
        Conv2D(1, 4, 3).forward(np.zeros((2, 28, 28), np.float32))
    with pytest.raises(ValueError, match=r"Dense: expected a 2-D input of shape \(N, 5\).*Flatten"):
        Dense(5, 2).forward(np.zeros((2, 5, 1, 1), np.float32))
    with pytest.raises(ValueError, match=r"BatchNorm2D: expected input of shape \(N, 3, H, W\)"):
        BatchNorm2D(3).forward(np.zeros((2, 3), np.float32))


def test_kernel_larger_than_padded_input():
    with pytest.raises(ValueError, match=r"Conv2D: kernel 5x5 is larger than the padded input 4x4"):
        Conv2D(1, 1, 5, padding=1).forward(np.zeros((1, 1, 2, 2), np.float32))
    with pytest.raises(ValueError, match=r"MaxPool2D: pooling window 2x2 is larger than the input 1x1"):
        MaxPool2D(2).forward(np.zeros((1, 1, 1, 1), np.float32))


def test_image_too_small_for_the_network_names_the_layer():
    model = mc.Sequential([Conv2D(1, 2, 3), MaxPool2D(2), Conv2D(2, 2, 3)], seed=0)
    with pytest.raises(ValueError, match=r"layer 2 \(Conv2D\).*kernel 3x3 is larger"):
        model.forward(np.zeros((1, 1, 6, 6), np.float32))


def test_spatial_size_mismatch_before_dense():
    with pytest.raises(ValueError, match=r"layer 4 \(Dense\).*expected input of shape \(N, 784\), "
                                         r"got \(N, 1024\)"):
        mnist_like_model().forward(np.zeros((1, 1, 32, 32), np.float32))


def test_mismatched_label_count():
    with pytest.raises(ValueError, match=r"SoftmaxCrossEntropy: expected 4 labels of shape \(4,\)"):
        SoftmaxCrossEntropy().forward(np.zeros((4, 3), np.float32), np.array([0, 1, 2]))


def test_labels_out_of_range_or_not_integers():
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\] for 3 classes.*to 3"):
        SoftmaxCrossEntropy().forward(np.zeros((2, 3), np.float32), np.array([0, 3]))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\].*from -1"):
        SoftmaxCrossEntropy().forward(np.zeros((2, 3), np.float32), np.array([0, -1]))
    with pytest.raises(TypeError, match="labels must be integers, got dtype float"):
        SoftmaxCrossEntropy().forward(np.zeros((2, 3), np.float32), np.array([0.0, 1.0]))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_infinite_input(bad):
    x = np.zeros((2, 1, 28, 28), np.float32)
    x[1, 0, 3, 4] = bad
    with pytest.raises(ValueError, match=r"Conv2D: input contains NaN or infinite values"):
        Conv2D(1, 2, 3).forward(x)
    with pytest.raises(ValueError, match=r"Sequential \(first layer Conv2D\): input contains NaN"):
        mnist_like_model().forward(x)
    with pytest.raises(ValueError, match="NaN or infinite"):
        SoftmaxCrossEntropy().forward(np.array([[0.0, bad]]), np.array([0]))


@pytest.mark.parametrize("x", [np.zeros((2, 1, 4, 4), np.int64), np.zeros((2, 1, 4, 4), bool),
                               np.zeros((2, 1, 4, 4), np.float16),
                               np.zeros((2, 1, 4, 4), object)])
def test_non_float_dtypes_are_refused(x):
    with pytest.raises(TypeError, match=r"Conv2D: expected a float32 or float64 array, got dtype"):
        Conv2D(1, 1, 3).forward(x)


def test_non_array_input():
    with pytest.raises(TypeError, match="expected a float32 or float64 array, got list"):
        ReLU().forward([[1.0, 2.0]])


def test_backward_errors():
    conv = Conv2D(1, 2, 3)
    with pytest.raises(RuntimeError, match="Conv2D: backward\\(\\) called before forward\\(\\)"):
        conv.backward(np.zeros((1, 2, 2, 2), np.float32))
    conv.forward(np.zeros((1, 1, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"shaped like the last output \(1, 2, 2, 2\), got \(1, 2, 2\)"):
        conv.backward(np.zeros((1, 2, 2), np.float32))


def test_constructor_arguments_are_validated():
    with pytest.raises(ValueError, match="Conv2D: stride must be >= 1"):
        Conv2D(1, 1, 3, stride=0)
    with pytest.raises(TypeError, match="Conv2D: kernel_size must be an int or a pair"):
        Conv2D(1, 1, (3, 3, 3))
    with pytest.raises(ValueError, match="Conv2D: padding must be >= 0"):
        Conv2D(1, 1, 3, padding=-1)
    with pytest.raises(ValueError, match=r"Dropout: p must be a probability in \[0, 1\)"):
        Dropout(1.0)
    with pytest.raises(TypeError, match="item 1 is a str"):
        mc.Sequential([ReLU(), "relu"])


@pytest.mark.parametrize("lr", [-1.0, float("nan"), float("inf")])
def test_bad_learning_rates(lr):
    params = mc.Sequential([Dense(2, 2)], seed=0).parameters()
    with pytest.raises(ValueError, match="learning rate must be finite and >= 0"):
        mc.optim.SGD(params, lr=lr)
    opt = mc.optim.Adam(params)
    with pytest.raises(ValueError, match="learning rate must be finite and >= 0"):
        opt.lr = lr


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend 'tpu'; expected one of 'numpy', 'numba', 'cupy'"):
        mc.set_backend("tpu")


# --------------------------------------------------------------------------- every entry point
# One test per validation rule of the public entry points (predict, evaluate, fit, DataLoader,
# Sequential.backward, layers, optimizers, schedules, set_backend, load_model, data loaders, the
# CLI): each names what was expected, and none surfaces as a numpy error inside a kernel.

def _toy():
    model = mc.Sequential([Conv2D(1, 2, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(),
                           Dense(2 * 4 * 4, 3)], seed=0)
    x = np.random.default_rng(0).random((6, 1, 8, 8)).astype(np.float32)
    return model, x, np.array([0, 1, 2, 0, 1, 2])


@pytest.mark.parametrize("x, error, message", [
    (np.zeros((2, 1, 8, 8), np.int32), TypeError, "expected a float32 or float64 array, got dtype int32"),
    (np.zeros((2, 1, 8, 8), bool), TypeError, "got dtype bool"),
    (np.empty((2, 1, 8, 8), object), TypeError, "got dtype object"),
    ([[0.0]], TypeError, "got list"),
    (np.zeros(8, np.float32), ValueError, r"expected a batch of shape \(N, ...\)"),
    (np.zeros((0, 1, 8, 8), np.float32), ValueError, "expected at least one sample"),
    (np.full((2, 1, 8, 8), np.inf, np.float32), ValueError, "NaN or infinite"),
    (np.zeros((2, 3, 8, 8), np.float32), ValueError, r"layer 0 \(Conv2D\).*1 channels"),
    (np.zeros((2, 8, 8), np.float32), ValueError, r"expected input of shape \(N, 1, H, W\)"),
    (np.zeros((2, 1, 1, 1), np.float32), ValueError, r"layer 2 \(MaxPool2D\).*larger than the input"),
])
def test_predict_validates_its_input(x, error, message):
    with pytest.raises(error, match=message):
        _toy()[0].predict(x)


@pytest.mark.parametrize("batch_size", [0, -3, 2.5, True])
def test_predict_and_evaluate_batch_size(batch_size):
    model, x, y = _toy()
    with pytest.raises((ValueError, TypeError), match="batch_size must be"):
        model.predict(x, batch_size=batch_size)
    with pytest.raises((ValueError, TypeError), match="batch_size must be"):
        mc.evaluate(model, SoftmaxCrossEntropy(), x, y, batch_size=batch_size)


@pytest.mark.parametrize("labels, error, message", [
    (np.array([0, 1, 2]), ValueError, r"expected 6 labels of shape \(6,\)"),
    (np.array([0, 1, 2, 0, 1, 3]), ValueError, r"labels must be in \[0, 2\] for 3 classes"),
    (np.array([0, 1, 2, 0, 1, -1]), ValueError, r"labels must be in \[0, 2\]"),
    (np.zeros(6, np.float32), TypeError, "labels must be integers, got dtype float32"),
    (np.zeros((6, 1), np.int64), ValueError, "expected 6 labels"),
    ("abc", TypeError, "labels must be an integer array, got str"),
])
def test_evaluate_validates_labels(labels, error, message):
    model, x, _ = _toy()
    with pytest.raises(error, match=message):
        mc.evaluate(model, SoftmaxCrossEntropy(), x, labels)


def test_fit_refuses_a_learning_rate_of_zero():
    model, x, y = _toy()
    with pytest.raises(ValueError, match="training needs a learning rate > 0"):
        mc.fit(model, SoftmaxCrossEntropy(), mc.optim.SGD(model.parameters(), lr=0.0), (x, y),
               verbose=0)
    warming = mc.optim.SGD(model.parameters(), lr=0.1)  # a warm-up from 0 starts at lr 0: fine
    schedule = mc.optim.LinearWarmup(warming, warmup_steps=4, start_factor=0.0)
    assert warming.lr == 0.0
    mc.fit(model, SoftmaxCrossEntropy(), warming, (x, y), verbose=0,
           callbacks=[mc.training.LRSchedule(schedule, per="batch")])


def test_fit_refuses_an_optimizer_of_another_model():
    model, x, y = _toy()
    other = mc.optim.SGD(_toy()[0].parameters(), lr=0.1)
    with pytest.raises(ValueError, match="the optimizer holds none of this model's parameters"):
        mc.fit(model, SoftmaxCrossEntropy(), other, (x, y), verbose=0)
    with pytest.raises(TypeError, match="optimizer must be a minicnn.optim optimizer"):
        mc.fit(model, SoftmaxCrossEntropy(), "adam", (x, y), verbose=0)


def test_fit_checks_its_other_arguments_before_training(tmp_path):
    model, x, y = _toy()
    opt = mc.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="eval_batch_size must be >= 1"):
        mc.fit(model, SoftmaxCrossEntropy(), opt, (x, y), eval_batch_size=0, verbose=0)
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        mc.fit(model, SoftmaxCrossEntropy(), opt, (x, y), epochs=0, verbose=0)
    with pytest.raises(FileNotFoundError, match="the folder of checkpoint .* does not exist"):
        mc.fit(model, SoftmaxCrossEntropy(), opt, (x, y), verbose=0,
               checkpoint=tmp_path / "missing" / "ckpt.safetensors")
    with pytest.raises(ValueError, match="expected at least one sample"):
        mc.fit(model, SoftmaxCrossEntropy(), opt, (x[:0], y[:0]), verbose=0)


def test_fit_checks_a_data_loaders_labels_and_batches():
    from minicnn.data import DataLoader

    model, x, y = _toy()
    opt = mc.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"fit \(DataLoader labels\): labels must be in \[0, 2\]"):
        mc.fit(model, SoftmaxCrossEntropy(), opt, DataLoader(x, y + 1), verbose=0)
    with pytest.raises(ValueError, match="the DataLoader yields no batch"):
        mc.fit(model, SoftmaxCrossEntropy(), opt, DataLoader(x, y, batch_size=10, drop_last=True),
               verbose=0)
    with pytest.raises(TypeError, match=r"fit \(DataLoader batches\).*got dtype uint8"):
        mc.fit(model, SoftmaxCrossEntropy(), opt, DataLoader(x.astype(np.uint8), y), verbose=0)


def test_data_loader_refuses_object_images_and_float_labels():
    from minicnn.data import DataLoader

    with pytest.raises(TypeError, match="x must be a numeric array"):
        DataLoader(np.empty((4, 2), object), np.arange(4))
    with pytest.raises(TypeError, match="y must hold integer class labels, got dtype float64"):
        DataLoader(np.zeros((4, 2), np.float32), np.zeros(4))


def test_sequential_backward_validates_the_gradient():
    model, x, _ = _toy()
    model.forward(x, training=True)
    with pytest.raises(ValueError, match=r"Dense \(layer 4, the model's last\): backward expects "
                                         r"dL/dy shaped like the last output \(6, 3\), got \(6, 2\)"):
        model.backward(np.zeros((6, 2), np.float32))
    with pytest.raises(TypeError, match="expects dL/dy as a float array, got list"):
        model.backward([[0.0] * 3] * 6)
    with pytest.raises(TypeError, match=r"Dense \(layer 4, the model's last\): backward expects a "
                                        r"float32 or float64 gradient, got dtype int64"):
        model.backward(np.zeros((6, 3), np.int64))


def test_every_layers_forward_and_backward_validate():
    from minicnn.layers import LAYER_TYPES

    bad = np.zeros((2, 1, 4, 4), np.int16)
    for name, cls in LAYER_TYPES.items():
        if name in ("Conv2D", "Dense", "BatchNorm2D", "Residual", "Sequential"):
            continue  # need arguments; covered above and in tests/test_reliability.py
        layer = cls(2) if name in ("MaxPool2D", "AvgPool2D") else cls()
        with pytest.raises(TypeError, match=rf"{name}: expected a float32 or float64 array"):
            layer.forward(bad)
        with pytest.raises(RuntimeError, match=rf"{name}: backward\(\) called before forward"):
            cls(2).backward(np.zeros(2)) if name in ("MaxPool2D", "AvgPool2D") else \
                cls().backward(np.zeros(2))
        y = layer.forward(bad.astype(np.float32))
        with pytest.raises(TypeError, match=rf"{name}: backward expects a float32 or float64"):
            layer.backward(np.zeros(y.shape, bool))


def test_one_cycle_divisors_must_be_positive():
    opt = mc.optim.SGD(_toy()[0].parameters(), lr=0.1)
    for what in ("div_factor", "final_div_factor"):
        with pytest.raises(ValueError, match=f"OneCycleLR: {what} must be > 0"):
            mc.optim.OneCycleLR(opt, max_lr=0.1, total_steps=10, **{what: 0.0})


def test_schedules_validate_their_arguments():
    opt = mc.optim.SGD(_toy()[0].parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"StepLR: step_size must be >= 1, got 0"):
        mc.optim.StepLR(opt, step_size=0)
    with pytest.raises(TypeError, match=r"StepLR: step_size must be a positive int, got 1.5"):
        mc.optim.StepLR(opt, step_size=1.5)
    with pytest.raises(ValueError, match=r"StepLR: gamma must be >= 0, got -0.5"):
        mc.optim.StepLR(opt, step_size=2, gamma=-0.5)
    with pytest.raises(TypeError, match=r"CosineAnnealingLR: T_max must be a positive int, got True"):
        mc.optim.CosineAnnealingLR(opt, T_max=True)
    with pytest.raises(TypeError, match="CosineAnnealingLR: expected an Optimizer"):
        mc.optim.CosineAnnealingLR("sgd", T_max=3)


def test_unknown_backend_name_types():
    for name in (None, 3, ""):
        with pytest.raises(ValueError, match="unknown backend"):
            mc.set_backend(name)


def test_load_model_of_a_folder(tmp_path):
    with pytest.raises(mc.ModelFileError, match="a folder, not a model file"):
        mc.load_model(tmp_path)


def test_memory_budget_argument():
    for bad in (0, -1, 2.5, True, "1GB"):
        with pytest.raises(ValueError, match="memory budget must be a positive number of bytes"):
            mc.backend.set_memory_budget(bad)


def test_dataset_parsers_raise_dataset_file_errors(tmp_path):
    from minicnn.data import DatasetFileError, load_image_folder, parse_idx, read_idx

    with pytest.raises(DatasetFileError, match="not an IDX file"):
        parse_idx(b"PK\x03\x04")
    with pytest.raises(DatasetFileError, match="declares shape \\(3,\\).*truncated"):
        parse_idx(bytes([0, 0, 8, 1, 0, 0, 0, 3, 1]))
    (tmp_path / "x.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DatasetFileError, match="corrupt or truncated gzip"):
        read_idx(tmp_path / "x.gz")
    with pytest.raises(ValueError, match="size must be positive"):
        load_image_folder(tmp_path, size=0)
    with pytest.raises(ValueError, match="channels must be 1"):
        load_image_folder(tmp_path, channels=2)


def test_train_classifier_checks_settings_before_loading_data(tmp_path):
    from minicnn.recipes import train_classifier

    for kwargs, message in [({"lr": 0.0}, "lr must be > 0"), ({"epochs": 0}, "epochs must be >= 1"),
                            ({"batch_size": -4}, "batch_size must be >= 1"),
                            ({"model": "gpt"}, "unknown model 'gpt'"),
                            ({"weight_decay": float("nan")}, "weight_decay must be a finite number"),
                            ({"limit": 0}, "limit must be >= 1")]:
        with pytest.raises(ValueError, match=message):  # a missing dataset would say otherwise
            train_classifier("mnist", data_dir=tmp_path / "nothing", out=tmp_path / "run",
                             verbose=0, **kwargs)


@pytest.mark.parametrize("argv", [
    ["train", "--epochs", "0"], ["train", "--batch-size", "-1"], ["train", "--limit", "ten"],
    ["train", "--backend", "tpu"], ["evaluate", "m.safetensors", "--batch-size", "0"],
    ["bench", "--steps", "0"], ["predict", "m.safetensors", "x.png", "--top", "0"], ["frobnicate"],
])
def test_cli_usage_errors_exit_with_2(argv, capsys):
    from minicnn import cli

    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


def test_cli_bad_files_and_settings_exit_with_2(tmp_path, capsys):
    from minicnn import cli

    (tmp_path / "junk.safetensors").write_bytes(b"not a model")
    cases = [
        (["predict", str(tmp_path / "missing.safetensors"), "x.png"], "model file not found"),
        (["predict", str(tmp_path / "junk.safetensors"), "x.png"], "not a safetensors model file"),
        (["evaluate", str(tmp_path), "--dataset", "digits"], "a folder, not a model file"),
        (["train", "--lr", "0", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r")],
         "--lr: expected a number > 0, got 0"),
        (["train", "--lr", "nan", "--out", str(tmp_path / "r")], "--lr: expected a number > 0"),
    ]
    for argv, message in cases:
        try:
            code = cli.main(argv)
        except SystemExit as exit_info:  # argparse's own usage errors
            code = exit_info.code
        assert code == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
