"""fit/evaluate: history, callbacks, exact resume (also mid-epoch), the NaN guard, Ctrl-C."""

import json
import os
import signal

import numpy as np
import pytest

import minicnn as mc
from minicnn.data import DataLoader, RandomHorizontalFlip
from minicnn.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from minicnn.losses import SoftmaxCrossEntropy
from minicnn.training import (
    Callback,
    EarlyStopping,
    History,
    LRSchedule,
    ModelCheckpoint,
    TrainingDivergedError,
    evaluate,
    fit,
)


def toy_data(n=240, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 1, 8, 8), dtype=np.float32)
    y = rng.integers(0, 2, n)
    x[y == 1, :, :4] += 0.5  # class 1: a brighter top half
    return x, y


def toy_model(seed=0):
    return mc.Sequential([Conv2D(1, 4, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(),
                          Dense(64, 16), ReLU(), Dropout(0.2), Dense(16, 2)], seed=seed)


def run(epochs, checkpoint=None, resume=False, callbacks=(), transform=None):
    x, y = toy_data()
    model = toy_model()
    opt = mc.optim.Adam(model.parameters(), lr=1e-2)
    sched = mc.optim.CosineAnnealingLR(opt, T_max=100)
    loader = DataLoader(x, y, batch_size=32, seed=3, transform=transform)
    history = fit(model, SoftmaxCrossEntropy(), opt, loader, val=(x[:64], y[:64]), epochs=epochs,
                  callbacks=[LRSchedule(sched, per="batch"), *callbacks], verbose=0,
                  checkpoint=checkpoint, resume=resume)
    return model, opt, history


def test_fit_learns_and_records_history(tmp_path):
    model, _, history = run(4)
    assert len(history) == 4
    assert history["epoch"] == [1, 2, 3, 4]
    assert history["val_acc"][-1] > 0.8
    assert history["train_loss"][-1] < history["train_loss"][0]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "time_s", "images_per_s"):
        assert all(v is not None for v in history[key]), key
    path = history.save(tmp_path / "history.json")
    assert History.load(path).epochs == json.loads(path.read_text())["epochs"]
    png = history.plot(tmp_path / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_after_an_epoch_equals_an_uninterrupted_run(tmp_path):
    straight, straight_opt, straight_history = run(3)
    ckpt = tmp_path / "ckpt.safetensors"
    run(1, checkpoint=ckpt)
    resumed, resumed_opt, history = run(3, checkpoint=ckpt, resume=True)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        np.testing.assert_array_equal(a.data, b.data)
    assert resumed_opt.lr == straight_opt.lr and resumed_opt.step_count == straight_opt.step_count
    assert history["train_loss"] == straight_history["train_loss"]


class InterruptAt(Callback):
    """Send ourselves Ctrl-C after a given step, as a user would."""

    def __init__(self, step):
        self.step = step

    def on_batch_end(self, trainer, step, logs):
        if step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_mid_epoch_saves_a_checkpoint_that_resumes_exactly(tmp_path):
    flip = RandomHorizontalFlip()
    straight, _, straight_history = run(2, transform=flip)
    ckpt = tmp_path / "ckpt.safetensors"
    with pytest.raises(KeyboardInterrupt):
        run(2, checkpoint=ckpt, callbacks=[InterruptAt(11)], transform=flip)  # epoch 2, batch 3
    assert mc.load_model(ckpt)  # the checkpoint is also a loadable model file
    resumed, _, history = run(2, checkpoint=ckpt, resume=True, transform=flip)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        np.testing.assert_array_equal(a.data, b.data)
    assert history["train_loss"] == pytest.approx(straight_history["train_loss"], rel=1e-12)


def test_nan_guard_names_the_step_and_layer_and_keeps_the_checkpoint(tmp_path):
    x, y = toy_data()
    model = mc.Sequential([Flatten(), Dense(64, 8), ReLU(), Dense(8, 2)], seed=0)
    ckpt = tmp_path / "ckpt.safetensors"
    fit(model, SoftmaxCrossEntropy(), mc.optim.SGD(model.parameters(), lr=0.01), (x, y),
        epochs=1, batch_size=60, verbose=0, checkpoint=ckpt)
    good = ckpt.read_bytes()
    model.layers[1].weight.data[:] = 1e38  # the next forward pass overflows to inf
    with pytest.raises(TrainingDivergedError,
                       match=r"epoch 1, batch 1 \(step 1\).*layer 1 \(Dense\) is the first to output "
                             r"a non-finite value.*last good checkpoint"):
        fit(model, SoftmaxCrossEntropy(), mc.optim.SGD(model.parameters(), lr=0.01), (x, y),
            epochs=2, batch_size=60, verbose=0, checkpoint=ckpt)
    assert ckpt.read_bytes() == good


def test_early_stopping_and_best_model_checkpoint(tmp_path):
    x, y = toy_data()
    model = toy_model()
    stopper = EarlyStopping(monitor="val_loss", patience=2)
    best = ModelCheckpoint(tmp_path / "best.safetensors", monitor="val_acc")
    # fit refuses lr=0; 1e-12 is far below float32 resolution, so the weights never change
    history = fit(model, SoftmaxCrossEntropy(), mc.optim.SGD(model.parameters(), lr=1e-12), (x, y),
                  val=(x, y), epochs=10, batch_size=64, callbacks=[stopper, best], verbose=0)
    assert len(history) == 3  # nothing improves after the first epoch
    assert (tmp_path / "best.safetensors").exists()
    with pytest.raises(ValueError, match="metric 'val_loss' is not logged"):
        fit(model, SoftmaxCrossEntropy(), mc.optim.SGD(model.parameters(), lr=0.1), (x, y),
            epochs=1, callbacks=[EarlyStopping()], verbose=0)


def test_evaluate_in_batches_matches_one_batch():
    x, y = toy_data()
    model = toy_model()
    whole = evaluate(model, SoftmaxCrossEntropy(), x, y, batch_size=len(x))
    parts = evaluate(model, SoftmaxCrossEntropy(), x, y, batch_size=7)
    assert parts["acc"] == whole["acc"]
    assert parts["loss"] == pytest.approx(whole["loss"], rel=1e-5)


def test_fit_validates_its_arguments():
    x, y = toy_data()
    model = toy_model()
    opt = mc.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        fit(model, SoftmaxCrossEntropy(), opt, (x, y), batch_size=0, verbose=0)
    with pytest.raises(ValueError, match=r"expected 240 labels"):
        fit(model, SoftmaxCrossEntropy(), opt, (x, y[:10]), verbose=0)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 1\]"):
        fit(model, SoftmaxCrossEntropy(), opt, (x, y + 5), verbose=0)
    with pytest.raises(TypeError, match="train must be an"):
        fit(model, SoftmaxCrossEntropy(), opt, x, verbose=0)


# -- weight averaging and test-time shifts ------------------------------------------------------

class Snapshots(Callback):
    """Every parameter and buffer after every step, as trained (before any averaging)."""

    def __init__(self):
        self.steps = []

    def on_batch_end(self, trainer, step, logs):
        self.steps.append({name: a.data.copy() for name, a in trainer.model.named_arrays().items()})


def test_weight_average_leaves_the_moving_average_of_the_steps_in_the_network():
    from minicnn.callbacks import WeightAverage

    x, y = toy_data()
    model = mc.Sequential([Conv2D(1, 4, 3, padding=1), mc.layers.BatchNorm2D(4), ReLU(),
                           Flatten(), Dense(256, 2)], seed=0)
    initial = {name: a.data.copy() for name, a in model.named_arrays().items()}
    snapshots = Snapshots()  # runs before the average: it sees the weights as trained
    fit(model, SoftmaxCrossEntropy(), mc.optim.Adam(model.parameters(), lr=1e-2), (x, y),
        epochs=2, batch_size=32, callbacks=[snapshots, WeightAverage(0.9)], verbose=0)
    assert len(snapshots.steps) == 16
    for name, array in model.named_arrays().items():  # running statistics included
        expected = initial[name].astype(np.float64)
        for t, weights in enumerate(snapshots.steps, start=1):
            d = min(0.9, (1 + t) / (10 + t))
            expected = d * expected + (1 - d) * weights[name]
        np.testing.assert_allclose(array.data, expected, rtol=1e-5, atol=1e-6, err_msg=name)
        assert not np.allclose(array.data, snapshots.steps[-1][name]), name  # not the last step
    with pytest.raises(ValueError, match="decay must lie between 0 and 1, got 1"):
        WeightAverage(1)


def test_a_run_with_weight_averaging_resumes_exactly_mid_epoch(tmp_path):
    from minicnn.callbacks import WeightAverage
    from minicnn.checkpoints import load_checkpoint

    straight, _, _ = run(2, callbacks=[WeightAverage(0.95)])
    ckpt = tmp_path / "ckpt.safetensors"
    with pytest.raises(KeyboardInterrupt):
        run(2, checkpoint=ckpt, callbacks=[WeightAverage(0.95), InterruptAt(11)])
    _, _, state = load_checkpoint(ckpt)  # the average travels in the checkpoint, as tensors
    saved = state["callbacks"][1]
    assert saved["steps"] == 11 and sorted(saved["arrays"]) == sorted(straight.named_arrays())
    resumed, _, _ = run(2, checkpoint=ckpt, resume=True, callbacks=[WeightAverage(0.95)])
    for a, b in zip(straight.parameters(), resumed.parameters()):
        np.testing.assert_array_equal(a.data, b.data)


def test_shift_images_moves_the_content_and_repeats_the_edges():
    from minicnn.data import shift_images

    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    down_right = shift_images(x, 1, 2)
    np.testing.assert_array_equal(down_right[:, :, 1:, 2:], x[:, :, :-1, :-2])
    np.testing.assert_array_equal(down_right[:, :, 0, 2:], x[:, :, 0, :-2])  # top row repeated
    np.testing.assert_array_equal(down_right[:, :, 1:, 0], x[:, :, :-1, 0])  # left column
    up_left = shift_images(x, -1, -1)
    np.testing.assert_array_equal(up_left[:, :, :-1, :-1], x[:, :, 1:, 1:])
    np.testing.assert_array_equal(up_left[:, :, -1, :-1], x[:, :, -1, 1:])
    np.testing.assert_array_equal(shift_images(x, 0, 0), x)


def test_evaluate_with_shifts_scores_the_mean_logits_of_five_views():
    from minicnn.data import shift_images

    x, y = toy_data(64)
    model = toy_model()
    loss_fn = SoftmaxCrossEntropy()
    views = [x, shift_images(x, 2, 0), shift_images(x, -2, 0), shift_images(x, 0, 2),
             shift_images(x, 0, -2)]
    logits = sum(model.forward(v) for v in views) / 5
    scores = evaluate(model, loss_fn, x, y, batch_size=16, shifts=2)
    assert scores["acc"] == pytest.approx(float((logits.argmax(1) == y).mean()))
    assert scores["loss"] == pytest.approx(loss_fn.forward(logits, y), rel=1e-5)
    assert scores != evaluate(model, loss_fn, x, y)
    for bad in (-1, 8, 1.5, True):
        with pytest.raises(ValueError, match="shifts must be an int from 0 to 7"):
            evaluate(model, loss_fn, x, y, shifts=bad)


def test_early_stopping_keeps_its_best_weights_across_a_resume(tmp_path):
    ckpt = tmp_path / "ckpt.safetensors"
    first = EarlyStopping(monitor="val_loss", patience=5)
    run(2, checkpoint=ckpt, callbacks=[first])
    assert first.best_weights is not None
    again = EarlyStopping(monitor="val_loss", patience=5)
    run(2, checkpoint=ckpt, resume=True, callbacks=[again])  # nothing left to train: restored
    assert sorted(again.best_weights) == sorted(first.best_weights)
    for name, saved in first.best_weights.items():
        np.testing.assert_array_equal(again.best_weights[name], saved, err_msg=name)
    assert (again.best, again.wait) == (first.best, first.wait)


def test_a_resume_with_other_callbacks_is_refused_naming_them(tmp_path):
    from minicnn.callbacks import WeightAverage
    from minicnn.io import ModelFileError

    ckpt = tmp_path / "ckpt.safetensors"
    run(1, checkpoint=ckpt, callbacks=[EarlyStopping(patience=5)])
    good = ckpt.read_bytes()
    for others in ([], [WeightAverage(0.9)], [EarlyStopping(patience=5), WeightAverage(0.9)]):
        with pytest.raises(ModelFileError, match=r"holds the state of LRSchedule, EarlyStopping; "
                                                 r"this run has LRSchedule"
                                                 r".*resume with the same callbacks that keep "
                                                 r"a state"):
            run(2, checkpoint=ckpt, resume=True, callbacks=others)
        assert ckpt.read_bytes() == good  # refused before anything changed


def test_the_progress_line_shows_a_validation_set_under_any_name(capsys):
    x, y = toy_data()
    model = toy_model()
    fit(model, SoftmaxCrossEntropy(), mc.optim.Adam(model.parameters(), lr=1e-2), (x, y),
        val=(x[:64], y[:64]), val_name="holdout", epochs=1, batch_size=60, verbose=1)
    line = [out for out in capsys.readouterr().out.splitlines() if out.startswith("epoch 1/1")]
    assert len(line) == 1 and ", holdout_loss " in line[0] and ", holdout_acc " in line[0], line


# -- reading the steps every N (read_every: how a GPU is kept from waiting) -------------------------

def run_reading_every(read_every, epochs=2, checkpoint=None, resume=False, callbacks=()):
    x, y = toy_data()
    model = toy_model()
    opt = mc.optim.Adam(model.parameters(), lr=1e-2)
    loader = DataLoader(x, y, batch_size=32, seed=3)  # 8 batches an epoch: not a multiple of 3
    history = fit(model, SoftmaxCrossEntropy(), opt, loader, epochs=epochs, verbose=0,
                  callbacks=callbacks, checkpoint=checkpoint, checkpoint_every=5, resume=resume,
                  read_every=read_every)
    return model, history


def test_reading_the_steps_every_n_trains_and_reports_the_same(tmp_path):
    """read_every=3: the same weights, and the same per-epoch losses and accuracies (the steps
    are read in order, at the epoch's end and before each checkpoint too)."""
    plain, plain_history = run_reading_every(1)
    later, later_history = run_reading_every(3, checkpoint=tmp_path / "ckpt.safetensors")
    for a, b in zip(plain.parameters(), later.parameters()):
        np.testing.assert_array_equal(a.data, b.data)
    for key in ("train_loss", "train_acc"):
        assert later_history[key] == plain_history[key], key
    # the checkpoint taken mid-epoch (step 5, two steps unread until then) resumes exactly
    resumed, resumed_history = run_reading_every(3, epochs=3, checkpoint=tmp_path /
                                                 "ckpt.safetensors", resume=True)
    straight, straight_history = run_reading_every(1, epochs=3)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        np.testing.assert_array_equal(a.data, b.data)
    assert resumed_history["train_loss"] == straight_history["train_loss"]


def test_a_step_read_later_reads_nothing_back_inside_it(monkeypatch):
    """With read_every > 1 the step never asks for a value on the host: not the loss as a float
    (SoftmaxCrossEntropy.forward), not the guard's verdict (nothing reads it after each step);
    the loop reads them every N steps, N at a time."""
    from minicnn.training import Trainer

    def host_read(*args, **kwargs):
        raise AssertionError("a value was read back inside a step")

    monkeypatch.setattr(SoftmaxCrossEntropy, "forward", host_read)
    monkeypatch.setattr(Trainer, "_diverged", host_read)
    reads = []
    original = Trainer.read_steps
    monkeypatch.setattr(Trainer, "read_steps",
                        lambda self: reads.append(len(self._unread)) or original(self))
    _, history = run_reading_every(3, epochs=1)
    assert [n for n in reads if n] == [3, 3, 2]  # 8 steps: read after 3, 6 and the epoch's end
    assert 0 < history["train_loss"][0] < 1
    x, y = toy_data(64)
    model = toy_model()
    trainer = Trainer(model, SoftmaxCrossEntropy(), mc.optim.SGD(model.parameters(), lr=0.1),
                      (x, y), verbose=0, read_every=3)
    step = trainer.device_step(x[:32], y[:32])
    assert all(isinstance(value, (np.ndarray, np.generic)) and np.ndim(value) == 0 for value in step)


def test_a_step_read_later_that_diverged_is_named_with_its_window():
    x, y = toy_data()
    model = mc.Sequential([Flatten(), Dense(64, 8), ReLU(), Dense(8, 2)], seed=0)
    model.layers[1].weight.data[:] = 1e38  # the first forward pass overflows to inf
    with pytest.raises(TrainingDivergedError,
                       match=r"epoch 1, batch 1 \(read after batch 4: the loop reads the steps "
                             r"every 4, here batches 1-4\).*read_every=1"):
        fit(model, SoftmaxCrossEntropy(), mc.optim.SGD(model.parameters(), lr=0.01), (x, y),
            epochs=1, batch_size=30, verbose=0, read_every=4)


def test_read_every_is_checked_and_defaults_to_every_step_on_the_cpu():
    from minicnn.training import READ_EVERY_ON_A_GPU, Trainer

    x, y = toy_data()
    model = toy_model()
    trainer = Trainer(model, SoftmaxCrossEntropy(), mc.optim.SGD(model.parameters(), lr=0.1),
                      (x, y), verbose=0)
    assert trainer.read_every == 1 and READ_EVERY_ON_A_GPU > 1
    with pytest.raises(ValueError, match="read_every must be"):
        Trainer(model, SoftmaxCrossEntropy(), mc.optim.SGD(model.parameters(), lr=0.1), (x, y),
                read_every=0)


CPU_BACKENDS = ["numpy"] + (["numba"] if mc.backend.backend_available("numba") else [])


@pytest.mark.parametrize("backend_name", CPU_BACKENDS)
def test_fit_runs_the_fused_passes_unless_a_callback_watches_the_layers(backend_name, monkeypatch):
    """fit's step is model.forward / model.backward (BatchNorm2D + ReLU as one pass), what the
    benchmarks time; only a step that a callback watches layer by layer (diagnostics) runs the
    layers one at a time. The batches are not scanned for NaN again at each step."""
    from minicnn import kernels, validation
    from minicnn.layers import BatchNorm2D, fused

    mc.set_backend(backend_name)
    monkeypatch.setattr(kernels, "_fusion", True)  # on, whatever MINICNN_FUSION says
    passes, scans = [], []
    forward, check = fused.forward, validation.check_float_array
    monkeypatch.setattr(fused, "forward", lambda *a, **k: passes.append(1) or forward(*a, **k))
    monkeypatch.setattr("minicnn.layers.sequential.check_float_array",
                        lambda x, where, finite=True: scans.append(finite) or check(x, where, finite))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 1, 6, 6)).astype(np.float32)
    y = rng.integers(0, 3, 16)

    def train(**options):
        passes.clear(), scans.clear()
        model = mc.Sequential([Conv2D(1, 4, 3, padding=1), BatchNorm2D(4), ReLU(), Flatten(),
                               Dense(4 * 6 * 6, 3)], seed=0)
        mc.fit(model, SoftmaxCrossEntropy(), mc.optim.Adam(model.parameters()), (x, y),
               epochs=1, batch_size=8, verbose=0, **options)

    train()
    assert len(passes) == 2 and scans == [False, False]  # two steps, each one fused pass
    train(diagnostics=1)  # every step watched: layer by layer
    assert passes == [] and scans == [False, False]
