"""minicnn studio without a browser: the panels' numbers, the MNIST-style preprocessing, and a
real server that answers bad requests with a 4xx and keeps serving."""

import http.client
import json
import threading

import numpy as np
import pytest

import minicnn as mc
from minicnn import interpret
from minicnn.layers import BatchNorm2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sequential
from minicnn.studio import (
    DemoTraining,
    Studio,
    StudioApp,
    StudioInputError,
    TrainingMonitor,
    make_server,
    preprocess_drawing,
)
from minicnn.studio.compute import encode_maps


def small_model():
    model = Sequential([Conv2D(1, 4, 3, padding=1), BatchNorm2D(4), ReLU(), MaxPool2D(2),
                        Flatten(), Dense(4 * 14 * 14, 10)], seed=0, input_shape=(1, 28, 28))
    model.metadata = {"input_shape": [1, 28, 28], "class_names": [str(i) for i in range(10)],
                      "normalization": {"mean": [0.13], "std": [0.31]}}
    rng = np.random.default_rng(0)
    for buffer in model.buffers():
        buffer.data = rng.uniform(0.5, 1.5, buffer.data.shape).astype(np.float32)
    return model


@pytest.fixture(scope="module")
def studio():
    _, (x, y), _ = mc.data.load_mnist(verbose=0)
    return Studio(small_model(), test_images=x[:30], test_labels=y[:30])


def decode(encoded):
    import base64

    values = np.frombuffer(base64.b64decode(encoded["data"]), dtype=np.uint8)
    return values.reshape(encoded["shape"])


def test_preprocessing_scales_the_ink_into_20x20_and_centres_its_mass():
    ink = np.zeros((112, 112))
    ink[10:90, 70:80] = 1.0  # a tall bar off to the right
    image = preprocess_drawing(ink)
    rows, cols = np.nonzero(image > 0.05)
    assert image.shape == (28, 28) and 0 <= image.min() and image.max() <= 1
    assert rows.max() - rows.min() + 1 in (20, 21)  # the longer side becomes 20 pixels
    ys, xs = np.indices(image.shape)
    centre = (ys * image).sum() / image.sum(), (xs * image).sum() / image.sum()
    assert abs(centre[0] - 14) <= 1 and abs(centre[1] - 14) <= 1
    assert preprocess_drawing(np.zeros((50, 50))).sum() == 0


def test_encoding_keeps_zero_grey_for_gradients():
    encoded = encode_maps(np.array([[-2.0, 0.0, 1.0]]), signed=True)
    assert decode(encoded).tolist() == [[[0, 128, 191]]]
    assert decode(encode_maps(np.array([3.0, 5.0]))).tolist() == [[[0, 255]]]


def test_analyze_shows_the_real_forward_and_backward_passes(studio):
    result = studio.analyze({"test_index": 4})
    model = studio.model
    x = studio._normalized(studio.test_images[4].astype(np.float64))
    outputs = [x]
    for layer in model.layers:
        outputs.append(layer.forward(outputs[-1]))
    for layer, panel in zip(range(len(model.layers)), result["layers"]):
        expected = outputs[layer + 1][0]
        assert panel["output_shape"] == list(outputs[layer + 1].shape)
        assert panel["forward"]["min"] == pytest.approx(expected.min())
        assert panel["forward"]["max"] == pytest.approx(expected.max())
    predicted = int(np.argmax(outputs[-1]))
    assert result["predicted"] == predicted and result["target"] == {"kind": "class",
                                                                     "class": predicted}
    assert sum(result["probabilities"]) == pytest.approx(1.0)
    # the input gradient of the class score is interpret's (an independent code path)
    expected = interpret.class_score_gradient(model, x, classes=[predicted])[0]
    assert result["input_gradient"]["max"] == pytest.approx(np.abs(expected).max())
    conv = result["layers"][0]["formula"]
    assert "cols = im2col(x)   (1, 1, 28, 28) -> (9, 784)" in conv["forward"]
    assert "dW2 = dout @ cols.T   (4, 784) @ (784, 9) = (4, 9)" in conv["backward"]
    assert result["first_weight_gradient"]["shape"] == [4, 3, 3]
    assert result["grad_cam"]["shape"] == [28, 28] or result["grad_cam"]["shape"] == [1, 28, 28]


def test_the_backward_maps_follow_the_chosen_gradient(studio):
    by_class = [studio.analyze({"test_index": 1, "class": c})["layers"][2]["backward"]["data"]
                for c in (0, 1)]
    assert by_class[0] != by_class[1]
    loss = studio.analyze({"test_index": 1, "target": "loss", "label": 3})
    assert loss["target"] == {"kind": "loss", "label": 3} and loss["value"] > 0


@pytest.mark.parametrize("request_", [
    {"test_index": 2, "kind": "pixel", "index": [0, 14, 13]},
    {"test_index": 2, "kind": "weight", "layer": 0, "index": [1, 0, 2, 0]},
    {"test_index": 2, "kind": "weight", "layer": 5, "index": [100, 3], "target": "loss",
     "label": 7},
])
def test_check_compares_analytic_and_numerical_gradients(studio, request_):
    result = studio.check(request_)
    assert result["relative_error"] < 1e-6, result
    assert result["analytic"] != 0 or request_.get("layer") == 5  # an input the ReLU silenced


@pytest.mark.parametrize("request_, message", [
    ({}, "names no image"),
    ({"test_index": 99}, "test_index must be an int in [0, 30)"),
    ({"test_index": True}, "test_index must be an int"),
    ({"drawing": [[0.5, 2.0]]}, "in [0, 1]"),
    ({"drawing": "abc"}, "non-empty list"),
    ({"drawing": [[0.1], [0.2, 0.3]]}, "rows of equal length"),
    ({"drawing": np.zeros((1025, 2)).tolist()}, "at most 1024"),
    ({"image": np.zeros((27, 28)).tolist()}, "must have shape (1, 28, 28)"),
    ({"test_index": 0, "target": "banana"}, "target must be"),
    ({"test_index": 0, "class": 10}, "class must be an int in [0, 10)"),
    ({"test_index": 0, "kind": "pixel", "index": [0, 28, 0]}, "outside the shape"),
    ({"test_index": 0, "kind": "weight", "layer": 2, "index": [0]}, "has no weights"),
])
def test_bad_requests_are_refused_with_a_message(studio, request_, message):
    with pytest.raises(StudioInputError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[")):
        (studio.check if "kind" in request_ else studio.analyze)(request_)


@pytest.fixture(scope="module")
def server(studio):
    from minicnn.recipes import prepare_data

    x = np.random.default_rng(0).standard_normal((4000, 1, 28, 28)).astype(np.float32)
    y = np.arange(4000) % 10
    noise = ((x, y), (x[:20], y[:20]), [str(c) for c in range(10)])
    training = DemoTraining(lambda limit: prepare_data("mnist", loaded=noise, limit=limit))
    server = make_server(StudioApp(studio, training, verbose=0))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def call(server, method, path, body=None, raw=None, headers=None):
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    connection.request(method, path, body=data, headers=headers or {})
    reply = connection.getresponse()
    content = reply.read()
    connection.close()
    return reply.status, content


def test_server_binds_to_loopback_and_serves_its_own_files_only(server):
    assert server.server_address[0] == "127.0.0.1"
    for path in ("/", "/static/studio.js", "/static/studio.css", "/source/Conv2D"):
        status, content = call(server, "GET", path)
        assert status == 200 and content, path
    for path in ("/../../etc/passwd", "/static/../../../etc/passwd", "/static/%2e%2e/server.py",
                 "/source/os", "/source/../compute", "/api/nothing", "/minicnn/studio/server.py"):
        status, content = call(server, "GET", path)
        assert status == 404, path
        assert b"root:" not in content


def test_server_answers_bad_requests_with_4xx_and_keeps_serving(server):
    bad = [
        (dict(raw=b"not json"), 400, "not JSON"),
        (dict(raw=b"[1, 2]"), 400, "JSON object"),
        (dict(raw=b"\xff\xfe"), 400, "not JSON"),
        (dict(body={"drawing": [[5]]}), 400, "in [0, 1]"),
        # a huge body is refused by its Content-Length, before a byte of it is read
        (dict(raw=b"{}", headers={"Content-Length": str(3 * 1024 * 1024)}), 413, "at most"),
        (dict(body={"test_index": 0, "kind": "weight", "layer": 99, "index": [0]}), 400, "layer"),
    ]
    for kwargs, status, message in bad:
        path = "/api/check" if "kind" in kwargs.get("body", {}) else "/api/analyze"
        got, content = call(server, "POST", path, **kwargs)
        assert got == status and message in json.loads(content)["error"], (kwargs, content)
    status, content = call(server, "POST", "/api/analyze", body={"test_index": 3})
    assert status == 200 and json.loads(content)["layers"]


def test_the_training_view_reports_progress(server):
    status, content = call(server, "POST", "/api/train", body={"steps": 5})
    assert status == 400 and "steps must be" in json.loads(content)["error"]
    status, _ = call(server, "POST", "/api/train", body={"steps": 40})
    assert status == 200
    app_training = server.RequestHandlerClass.app.training
    app_training.thread.join(timeout=120)
    state = json.loads(call(server, "GET", "/api/training")[1])
    assert state["finished"] and not state.get("error")
    assert [r["step"] for r in state["records"]] == [10, 20, 30, 40]
    assert state["gradient_norms"] and state["filters"]["shape"][0] == 8


def test_monitor_state_is_cheap_and_complete():
    monitor = TrainingMonitor(every=2)
    model = Sequential([Conv2D(1, 2, 3), ReLU(), Flatten(), Dense(2 * 4 * 4, 3)], seed=0)
    rng = np.random.default_rng(0)
    mc.fit(model, mc.losses.SoftmaxCrossEntropy(), mc.optim.SGD(model.parameters(), lr=0.1),
           (rng.standard_normal((32, 1, 6, 6)).astype(np.float32), rng.integers(0, 3, 32)),
           epochs=1, batch_size=4, verbose=0, callbacks=[monitor], diagnostics=4)
    state = monitor.state()
    assert [r["step"] for r in state["records"]] == [2, 4, 6, 8]
    assert [g["step"] for g in state["gradient_norms"]] == [1, 4, 8]
    assert state["finished"] and state["filters"]["shape"] == [2, 3, 3]
