"""A training step recorded once as a CUDA graph and replayed (minicnn.capture).

On the CPU: when a step can be recorded and when not, and that asking for it where it cannot be
is an error naming why; the inference loops' schedule and results with a stand-in for the
record. On a GPU (``-m gpu``): a recorded run trains as the run written out step by step: the
same weights after 50 steps, a schedule's learning rate honoured by the replays, a checkpoint of
a recorded run resumed into the same weights, a record made again when the weights are
replaced; recorded predict and evaluate give what they give as written."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

import minicnn as mc
from minicnn import backend
from minicnn.callbacks import Callback, LRSchedule
from minicnn.capture import why_not_recorded
from minicnn.layers import BatchNorm2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from minicnn.losses import SoftmaxCrossEntropy
from minicnn.training import Trainer


def data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, 1, 12, 12)).astype(np.float32), rng.integers(0, 3, n))


def network(*extra):
    return mc.Sequential([Conv2D(1, 8, 3, padding=1), BatchNorm2D(8), ReLU(), MaxPool2D(2),
                          *extra, Flatten(), Dense(8 * 6 * 6, 3)], seed=0)


def trainer(model, **options):
    return Trainer(model, SoftmaxCrossEntropy(), mc.optim.Adam(model.parameters()), data(),
                   batch_size=16, verbose=0, **options)


# -- on any machine -----------------------------------------------------------------------------

def test_a_cpu_run_is_never_recorded_and_asking_for_it_says_why():
    mc.set_backend("numpy")
    assert trainer(network()).recorder.active is False  # the default: only where it can be
    assert "cupy backend" in why_not_recorded(trainer(network()))
    with pytest.raises(ValueError, match="record_steps=True, but recording a step is a CUDA"):
        trainer(network(), record_steps=True)


class _Watching(Callback):
    def on_before_update(self, trainer):
        pass


class _Noise(mc.layers.Layer):
    """A layer with a generator of its own and no draw_for_replay."""

    def __init__(self):
        super().__init__()
        self.rng = np.random.default_rng(0)

    def _forward(self, x, training):
        return x + self.rng.random() if training else x

    def _backward(self, dy, input_grad):
        return dy

    def output_shape(self, input_shape):
        return tuple(input_shape)


@pytest.mark.parametrize("change, reason", [
    (dict(model=lambda: network(_Noise())), "_Noise draws random numbers in training and has no "
                                            "draw_for_replay"),
    (dict(options={"read_every": 1}), "read_every=1"),
    (dict(options={"diagnostics": 5}), "GradientFlow watches the step"),
    (dict(options={"callbacks": [_Watching()]}), "_Watching watches the step"),
])
def test_what_a_record_could_not_replay_is_named(change, reason, monkeypatch):
    """Each reason, with the backend check passed (the model said to be on the GPU)."""
    mc.set_backend("numpy")
    model = change.get("model", network)()
    for layer in [model, *model.layers]:
        monkeypatch.setattr(layer, "backend", "cupy")
    job = trainer(model, **change.get("options", {}))
    assert reason in why_not_recorded(job)


def test_a_run_a_record_could_replay_has_no_reason(monkeypatch):
    """Dropout included: it draws its seed before each replay (Layer.draw_for_replay)."""
    mc.set_backend("numpy")
    model = network(Dropout(0.5))
    for layer in [model, *model.layers]:
        monkeypatch.setattr(layer, "backend", "cupy")
    assert why_not_recorded(trainer(model, read_every=20)) is None


class _FakeRecord:
    """Stands for RecordedStep: counts recordings and replays; ``valid`` says still_valid."""

    made, runs, valid, refuse = 0, 0, True, None

    def __init__(self, trainer, xb, yb):
        if _FakeRecord.refuse is not None:
            raise _FakeRecord.refuse
        _FakeRecord.made += 1

    def still_valid(self):
        return _FakeRecord.valid

    def run(self, xb, yb):
        _FakeRecord.runs += 1
        return "replayed"


def test_when_a_step_is_recorded_replayed_or_run_as_written(monkeypatch):
    """The recorder's schedule, with a stand-in for the CUDA record: the first step of a shape
    as written, then recorded and replayed; a smaller last batch as written; after the arrays
    were replaced one step as written, then a new record; a recording CUDA refuses is a warning
    and every later step as written, or an error where record_steps=True was asked."""
    from minicnn import capture

    mc.set_backend("numpy")
    monkeypatch.setattr(capture, "RecordedStep", _FakeRecord)
    monkeypatch.setattr(_FakeRecord, "made", 0)
    monkeypatch.setattr(_FakeRecord, "runs", 0)
    job = trainer(network())
    recorder = capture.Recorder(job)
    recorder.active = True  # as on a GPU
    full, last = data(16), data(8)
    steps = [recorder.step(*full) for _ in range(4)] + [recorder.step(*last)]
    assert steps == [None, "replayed", "replayed", "replayed", None]
    assert (_FakeRecord.made, _FakeRecord.runs) == (1, 3)
    monkeypatch.setattr(_FakeRecord, "valid", False)  # new weights loaded, say
    assert recorder.step(*full) is None and len(recorder.replaced) == 1
    monkeypatch.setattr(_FakeRecord, "valid", True)
    assert recorder.step(*full) == "replayed" and _FakeRecord.made == 2

    monkeypatch.setattr(_FakeRecord, "refuse", RuntimeError("operation not permitted"))
    refused = capture.Recorder(job)
    refused.active = True
    assert refused.step(*full) is None  # the first, as written
    with pytest.warns(RuntimeWarning, match="could not be recorded.*operation not permitted"):
        assert refused.step(*full) is None
    assert refused.active is False and refused.step(*full) is None
    asked = capture.Recorder(job)
    asked.active, asked.asked = True, True
    asked.step(*full)
    with pytest.raises(RuntimeError, match="operation not permitted"):
        asked.step(*full)


class _ReplayingCall:
    """Stands for RecordedCall: each run calls ``fn`` on copies of the inputs, as a replay runs
    the recorded kernels on the batch copied in, and hands out copies of the outputs."""

    made, runs = 0, 0
    stream = contextlib.nullcontext()

    def __init__(self, fn, inputs):
        _ReplayingCall.made += 1
        self.fn = fn

    def run(self, *inputs):
        _ReplayingCall.runs += 1
        return tuple(np.copy(out) for out in self.fn(*[np.copy(a) for a in inputs]))


def _loops_as_on_a_gpu(monkeypatch):
    """predict and evaluate loop as on the cupy backend, with _ReplayingCall for the record."""
    from minicnn import cuda_graphs, training
    from minicnn.layers import sequential

    class ActiveLoop(cuda_graphs.RecordedLoop):
        def __init__(self, model, fn, record=None, where=""):
            super().__init__(model, fn, record, where)
            self.active = record is not False

    monkeypatch.setattr(cuda_graphs, "RecordedCall", _ReplayingCall)
    monkeypatch.setattr(_ReplayingCall, "made", 0)
    monkeypatch.setattr(_ReplayingCall, "runs", 0)
    monkeypatch.setattr(sequential, "RecordedLoop", ActiveLoop)
    monkeypatch.setattr(training, "RecordedLoop", ActiveLoop)


def test_predict_and_evaluate_record_a_shape_once_and_give_what_they_give_as_written(monkeypatch):
    """Batches of 32, 32, 32, 4: the first as written, the second recorded and launched, the
    third a replay, the last (another shape) as written; the probabilities, loss and accuracy
    are those of the loop as written."""
    mc.set_backend("numpy")
    model = network()
    x, y = data(100)
    written = model.predict(x, batch_size=32, record=False)
    scores = mc.evaluate(model, SoftmaxCrossEntropy(), x, y, batch_size=32, shifts=1, record=False)
    _loops_as_on_a_gpu(monkeypatch)
    np.testing.assert_array_equal(model.predict(x, batch_size=32), written)
    assert (_ReplayingCall.made, _ReplayingCall.runs) == (1, 2)
    assert mc.evaluate(model, SoftmaxCrossEntropy(), x, y, batch_size=32, shifts=1) == scores
    assert (_ReplayingCall.made, _ReplayingCall.runs) == (2, 4)


def test_an_inference_record_cuda_refuses_runs_as_written(monkeypatch):
    from minicnn import cuda_graphs

    def refuse(fn, inputs):
        raise RuntimeError("operation not permitted when stream is capturing")

    loop = cuda_graphs.RecordedLoop(network(), lambda a: (a * 2,), record=False, where="predict")
    loop.active = True
    monkeypatch.setattr(cuda_graphs, "RecordedCall", refuse)
    batch = np.ones((4, 3))
    assert loop(batch)[0].sum() == 24
    with pytest.warns(RuntimeWarning, match="predict: the pass could not be recorded.*not permitted"):
        assert loop(batch)[0].sum() == 24
    assert loop.active is False
    loop.active, loop.asked, loop.records = True, True, {}
    loop(batch)
    with pytest.raises(RuntimeError, match="not permitted"):
        loop(batch)


def test_asking_a_cpu_model_to_record_its_pass_is_an_error():
    mc.set_backend("numpy")
    x, y = data(8)
    with pytest.raises(ValueError, match="predict: record=True, but recording a pass is a CUDA "
                                         "feature .* on numpy"):
        network().predict(x, record=True)
    with pytest.raises(ValueError, match="evaluate: record=True"):
        mc.evaluate(network(), SoftmaxCrossEntropy(), x, y, record=True)


def test_evaluate_with_a_loss_that_reads_back_is_never_recorded(monkeypatch):
    """A loss without forward_array reads each batch's loss back to the host: evaluate runs it
    as written (asked to record, it says why), with the same scores."""
    mc.set_backend("numpy")
    _loops_as_on_a_gpu(monkeypatch)

    class HostLoss:  # a loss of the user's: forward returns a float
        def forward(self, logits, labels):
            return SoftmaxCrossEntropy().forward(logits, labels)

    model, (x, y) = network(), data(40)
    scores = mc.evaluate(model, HostLoss(), x, y, batch_size=16)
    assert _ReplayingCall.made == 0
    assert scores == mc.evaluate(model, SoftmaxCrossEntropy(), x, y, batch_size=16, record=False)
    with pytest.raises(ValueError, match="the loss has no forward_array"):
        mc.evaluate(model, HostLoss(), x, y, record=True)


def test_a_recorded_step_draws_its_layers_seeds_before_each_replay(monkeypatch):
    """Recording draws nothing (the step as written before it drew for itself); each replay
    draws once per random layer, before the launch, as a step as written would."""
    from minicnn import capture

    mc.set_backend("numpy")
    monkeypatch.setattr(capture, "RecordedCall", _ReplayingCall)
    draws = []
    monkeypatch.setattr(Dropout, "draw_for_replay", lambda layer: draws.append(layer))
    model = network(Dropout(0.5))
    job = trainer(model)
    xb, yb = data(16)
    record = capture.RecordedStep(job, xb, yb)
    assert draws == [] and job.optimizer.step_count == 0
    record.run(xb, yb)
    record.run(xb, yb)
    assert draws == [model.layers[4]] * 2


def test_a_replayed_seed_is_drawn_as_the_step_as_written_draws_it():
    """Dropout's seed on the GPU (cuda_graphs.ReplayedSeed), with numpy standing in for CuPy:
    each step as written draws the next number of the layer's generator; a step being recorded
    draws nothing (the record reads the array), and the draw before each replay takes the
    number the step as written would have taken."""
    from types import SimpleNamespace

    from minicnn.cuda_graphs import ReplayedSeed

    capturing = [False]
    stream = SimpleNamespace(is_capturing=lambda: capturing[0])
    xp = SimpleNamespace(zeros=np.zeros, float64=np.float64,
                         cuda=SimpleNamespace(get_current_stream=lambda: stream))
    expected = np.random.default_rng(7).integers(2**53, size=4).astype(float)
    rng, seed = np.random.default_rng(7), ReplayedSeed()
    seed.draw(rng)  # before any step: there is no array to draw into, and nothing is drawn
    seen = [float(seed.for_step(rng, xp)), float(seed.for_step(rng, xp))]  # two steps as written
    capturing[0] = True
    array = seed.for_step(rng, xp)  # recorded: the same array, not drawn again
    capturing[0] = False
    assert array is seed.array and float(array) == seen[-1]
    for _ in range(2):  # two replays
        seed.draw(rng)
        seen.append(float(array))
    assert seen == list(expected)


def test_the_operations_of_a_record_are_the_nodes_of_its_graph():
    """CUDA's DOT description of a graph (cudaGraphDebugDotPrint's layout): two nodes, one edge."""
    from minicnn.cuda_graphs import graph_operations

    dot = "\n".join([
        'digraph dot {', 'subgraph cluster_1 {', 'label="graph_1" graph[style="dashed"];',
        '"graph_1_node_0"[style="solid" shape="rectangle" label="0', '_Z6im2colIfEvPKT_PS0_x',
        '"];', '"graph_1_node_1"[style="solid" shape="trapezium" label="1', 'MEMCPY', '"];',
        '"graph_1_node_0" -> "graph_1_node_1" [style="solid" arrowhead="normal"];', '}', '}'])
    assert graph_operations(dot) == 2


def test_the_gpu_session_fits_one_call_of_the_device_tool():
    """benchmarks/gpu_session.sh is the one call a session with a lent GPU makes, and a call
    may run 600 s: its parts' time limits must add up to less, with room to start."""
    import re
    from pathlib import Path

    script = (Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_session.sh").read_text()
    limits = [int(seconds) for seconds in re.findall(r"^timeout (\d+) ", script, re.M)]
    assert len(limits) >= 4 and sum(limits) <= 560, limits


# -- on a GPU -----------------------------------------------------------------------------------

def _gpu():
    if "cupy" not in backend.available_backends():
        pytest.skip("needs CuPy and an NVIDIA GPU")
    mc.set_backend("cupy")


def _weights(model):
    return [backend.to_numpy(a.data) for a in model.named_arrays().values()]


def _train(record, epochs=1, callbacks=(), checkpoint=None, resume=False, model=None):
    model = model or network().to("cupy")
    optimizer = mc.optim.Adam(model.parameters(), lr=3e-3)
    history = mc.fit(model, SoftmaxCrossEntropy(), optimizer, data(816), epochs=epochs,
                     batch_size=16, verbose=0, record_steps=record, callbacks=list(callbacks),
                     checkpoint=checkpoint, resume=resume)
    return model, optimizer, history


@pytest.mark.gpu
def test_a_recorded_run_trains_as_the_run_written_out():
    """51 steps of 16 (50 replays after the first, eager step): the same weights, running
    statistics, optimizer step count and losses as every step run as written."""
    _gpu()
    recorded, optimizer, history = _train(True)
    eager, optimizer_eager, history_eager = _train(False)
    assert optimizer.step_count == optimizer_eager.step_count == 51
    for a, b in zip(_weights(recorded), _weights(eager)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(history["train_loss"], history_eager["train_loss"], rtol=1e-6)


@pytest.mark.gpu
def test_a_schedule_changes_the_rate_the_replays_read():
    """A one-cycle schedule steps the rate after every batch, after the recording: the replays
    must read each new rate (a record of the number would train at the first rate)."""
    _gpu()

    def run(record):
        model = network().to("cupy")
        optimizer = mc.optim.Adam(model.parameters(), lr=3e-3)
        schedule = mc.optim.OneCycleLR(optimizer, max_lr=1e-2, total_steps=51)
        mc.fit(model, SoftmaxCrossEntropy(), optimizer, data(816), epochs=1, batch_size=16,
               verbose=0, record_steps=record, callbacks=[LRSchedule(schedule, per="batch")])
        return _weights(model)

    for a, b in zip(run(True), run(False)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.gpu
def test_a_recorded_run_resumed_from_its_checkpoint_continues_as_one_uninterrupted(tmp_path):
    _gpu()
    whole, _, _ = _train(True, epochs=2)
    path = tmp_path / "checkpoint.safetensors"
    _train(True, epochs=1, checkpoint=path)
    resumed, optimizer, _ = _train(True, epochs=2, checkpoint=path, resume=True)
    assert optimizer.step_count == 102
    for a, b in zip(_weights(resumed), _weights(whole)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.gpu
def test_new_weights_loaded_between_epochs_are_what_the_replays_train():
    """A callback that puts new arrays into the model (as loading weights does) at an epoch's
    end: the record made on the old arrays is made again on the new ones."""
    _gpu()

    class Reload(Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            for p in trainer.model.parameters():
                p.data = p.data.copy()

    recorded, _, _ = _train(True, epochs=2, callbacks=[Reload()])
    eager, _, _ = _train(False, epochs=2, callbacks=[Reload()])
    for a, b in zip(_weights(recorded), _weights(eager)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.gpu
def test_recorded_predict_and_evaluate_give_what_they_give_as_written():
    """On the GPU: 100 images in batches of 32 (recorded, replayed, and a last batch as
    written) against every batch as written."""
    _gpu()
    model = network().to("cupy")
    x, y = data(100)
    np.testing.assert_allclose(model.predict(x, batch_size=32, record=True),
                               model.predict(x, batch_size=32, record=False), rtol=1e-6, atol=1e-7)
    recorded = mc.evaluate(model, SoftmaxCrossEntropy(), x, y, batch_size=32, shifts=1, record=True)
    written = mc.evaluate(model, SoftmaxCrossEntropy(), x, y, batch_size=32, shifts=1, record=False)
    assert recorded["acc"] == written["acc"]
    assert recorded["loss"] == pytest.approx(written["loss"], rel=1e-6)


@pytest.mark.gpu
def test_a_recorded_run_with_dropout_draws_the_masks_of_the_run_written_out():
    """Dropout's seed is drawn on the host before each replay, as each step as written draws
    it: the same masks, so the same weights after 51 steps."""
    _gpu()
    recorded, _, _ = _train(True, model=network(Dropout(0.5)).to("cupy"))
    eager, _, _ = _train(False, model=network(Dropout(0.5)).to("cupy"))
    for a, b in zip(_weights(recorded), _weights(eager)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
