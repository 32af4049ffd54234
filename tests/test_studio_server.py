"""minicnn studio's server, spoken to over real sockets: it answers every request (malformed,
hostile or fuzzed) with a 2xx or a 4xx and a message and keeps serving; it answers only its own
address (DNS rebinding), its API only with the run's token, POSTs only from its own origin."""

import http.client
import json
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_studio import small_model

import minicnn as mc
from minicnn.studio import DemoTraining, Studio, StudioApp, make_server
from minicnn.studio.server import MAX_BODY, allowed_hosts


@pytest.fixture(scope="module")
def studio():
    _, (x, y), _ = mc.data.load_mnist(verbose=0)
    return Studio(small_model(), test_images=x[:30], test_labels=y[:30])


@pytest.fixture(scope="module")
def server(studio):
    from minicnn.data import prepare_data

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
    if training.thread is not None:  # a run the fuzzing started: it ends here, not in later files
        training.thread.join()


def token(server) -> str:
    return server.RequestHandlerClass.app.token


def own_host(server) -> str:
    host, port = server.server_address[:2]
    return f"{host}:{port}"


def call(server, method, path, body=None, raw=None, headers=None, with_token=True):
    """One request through http.client, with the page's token unless told otherwise."""
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    headers = dict(headers or {})
    if with_token:
        headers.setdefault("X-Studio-Token", token(server))
    connection.request(method, path, body=data, headers=headers)
    reply = connection.getresponse()
    content = reply.read()
    connection.close()
    return reply.status, content


def exchange(server, raw: bytes) -> tuple[int, bytes]:
    """Raw bytes in, (status, body) out: the client sends everything, then says it is done
    (shuts its side down), and reads the answer to the end."""
    with socket.create_connection(server.server_address[:2], timeout=30) as connection:
        try:
            connection.sendall(raw)
            connection.shutdown(socket.SHUT_WR)
        except OSError:  # the server may answer (and close) before it has read everything
            pass
        chunks = []
        while chunk := connection.recv(1 << 16):
            chunks.append(chunk)
    reply = b"".join(chunks)
    assert reply.startswith(b"HTTP/1."), f"no status line for {raw[:120]!r}: {reply[:120]!r}"
    head, _, body = reply.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"application/json" in head and not raw.startswith(b"HEAD "):
        json.loads(body)  # a JSON answer is whole
    return status, body


def request_bytes(server, method="POST", path="/api/analyze", body=b"", headers=None) -> bytes:
    headers = {"Host": own_host(server), "X-Studio-Token": token(server),
               "Content-Length": str(len(body)), **(headers or {})}
    lines = [f"{method} {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()
                                            if v is not None]
    return wire_bytes("\r\n".join(lines) + "\r\n\r\n") + body


def wire_bytes(text: str) -> bytes:
    """Header text as a client puts it on the wire: Latin-1 where it can (HTTP's own charset,
    so "\u00b2" is the one byte 0xb2), UTF-8 where it cannot."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def still_serves(server) -> None:
    status, content = call(server, "POST", "/api/analyze", body={"test_index": 3})
    assert status == 200 and json.loads(content)["layers"]


def test_server_binds_to_loopback_and_serves_its_own_files_only(server):
    assert server.server_address[0] == "127.0.0.1"
    assert server.url == f"http://{own_host(server)}/?token={token(server)}"
    for path in ("/", "/static/studio.js", "/static/studio.css", "/source/Conv2D"):
        status, content = call(server, "GET", path, with_token=False)  # the page needs none
        assert status == 200 and content, path
    for path in ("/../../etc/passwd", "/static/../../../etc/passwd", "/static/%2e%2e/server.py",
                 "/source/os", "/source/../compute", "/api/nothing", "/minicnn/studio/server.py"):
        status, content = call(server, "GET", path)
        assert status == 404, path
        assert b"root:" not in content


def test_head_is_answered_like_get_without_a_body(server):
    for path in ("/", "/static/studio.js", "/api/info"):
        got, content = call(server, "GET", path)
        status, head_content = call(server, "HEAD", path)
        assert (status, head_content) == (200, b"") and got == 200 and content, path
    assert call(server, "HEAD", "/nothing")[0] == 404


def test_another_method_is_a_405_that_says_which_are_allowed(server):
    connection = http.client.HTTPConnection(*server.server_address, timeout=10)
    connection.request("PUT", "/api/info", headers={"Host": own_host(server)})
    answer = connection.getresponse()
    assert answer.status == 405 and answer.getheader("Allow") == "GET, HEAD, POST"
    assert json.loads(answer.read())["error"].startswith("method PUT is not allowed here")
    connection.close()
    still_serves(server)


def test_server_answers_bad_requests_with_4xx_and_keeps_serving(server):
    bad = [
        (dict(raw=b"not json"), 400, "not JSON"),
        (dict(raw=b"[1, 2]"), 400, "JSON object"),
        (dict(raw=b"\xff\xfe"), 400, "not JSON"),
        (dict(body={"drawing": [[5]]}), 400, "in [0, 1]"),
        (dict(body={"drawing": np.zeros((3, 28, 28)).tolist()}), 400, "drawing must be 2-D"),
        (dict(raw=b"[" * 100_000 + b"]" * 100_000), 400, "nested too deeply"),
        (dict(body={"drawing": [[[[[[0.5]]]]]]}), 400, "drawing must be 2-D"),
        (dict(body={"test_index": 0, "kind": "weight", "layer": 99, "index": [0]}), 400, "layer"),
    ]
    for kwargs, status, message in bad:
        path = "/api/check" if "kind" in kwargs.get("body", {}) else "/api/analyze"
        got, content = call(server, "POST", path, **kwargs)
        assert got == status and message in json.loads(content)["error"], (kwargs, content)
    still_serves(server)


@pytest.mark.parametrize("length, status, message", [
    ("\u00b2", 400, "whole number of bytes"),  # "²".isdigit() is True, int("²") fails
    ("-1", 400, "whole number of bytes"),
    ("12abc", 400, "whole number of bytes"),
    ("", 400, "whole number of bytes"),
    (None, 411, "needs a Content-Length"),
])
def test_a_bad_content_length_is_named(server, length, status, message):
    got, body = exchange(server, request_bytes(server, body=b"{}",
                                               headers={"Content-Length": length}))
    assert got == status and message in json.loads(body)["error"]
    still_serves(server)


def test_an_oversized_body_is_read_before_the_413_so_the_client_sees_it(server):
    # http.client sends the whole body before it reads: had the server closed the connection
    # unread, it would see a broken pipe, not the status
    status, content = call(server, "POST", "/api/analyze", raw=b" " * (4 * MAX_BODY))
    assert status == 413 and "at most" in json.loads(content)["error"]
    still_serves(server)


def test_the_host_must_be_this_studio(server):
    port = server.server_address[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}"):
        status, _ = exchange(server, request_bytes(server, "GET", "/api/info",
                                                   headers={"Host": host}))
        assert status == 200, host
    # a DNS-rebinding page reaches 127.0.0.1 under its own name; a wrong port is another server
    for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1:{port + 1}", "127.0.0.1",
                 "", None):
        status, body = exchange(server, request_bytes(server, "GET", "/api/info",
                                                      headers={"Host": host}))
        assert status == 403 and "not this studio's address" in json.loads(body)["error"], host
    status, _ = exchange(server, request_bytes(server, "GET", "/", headers={"Host": "evil.example"}))
    assert status == 403
    # refused before its body was wanted, a POST's body is still read, so the client sees the 403
    status, content = call(server, "POST", "/api/analyze", raw=b" " * 8_000_000,
                           headers={"Host": "evil.example"})
    assert status == 403 and "not this studio's address" in json.loads(content)["error"]


def test_the_api_needs_the_token_the_printed_url_carries(server):
    for method, path, body in (("GET", "/api/info", None), ("GET", "/api/training", None),
                               ("POST", "/api/analyze", {"test_index": 1}),
                               ("POST", "/api/train", {"steps": 100})):
        for headers in ({}, {"X-Studio-Token": "guess"}, {"X-Studio-Token": token(server)[:-1]}):
            status, content = call(server, method, path, body=body, headers=headers,
                                   with_token=False)
            assert status == 403 and "token" in json.loads(content)["error"], (path, headers)
    assert call(server, "GET", f"/api/info?token={token(server)}", with_token=False)[0] == 200
    assert server.RequestHandlerClass.app.training.thread is None  # nothing was started


def test_a_post_from_another_origin_is_refused(server):
    own = f"http://{own_host(server)}"
    assert call(server, "POST", "/api/analyze", body={"test_index": 1},
                headers={"Origin": own})[0] == 200
    for origin in ("http://evil.example", "null", own + ".evil.example", "https://" + own_host(server)):
        status, content = call(server, "POST", "/api/analyze", body={"test_index": 1},
                               headers={"Origin": origin})
        assert status == 403 and "another site" in json.loads(content)["error"], origin


def test_allowed_hosts_are_the_loopback_names_and_the_bound_address():
    assert allowed_hosts("127.0.0.1", 8000) == {"127.0.0.1:8000", "localhost:8000", "[::1]:8000"}
    assert "192.168.1.5:80" in allowed_hosts("192.168.1.5", 80)
    assert allowed_hosts("0.0.0.0", 80) is None  # any name: the warning says so, the token guards


def test_studio_on_all_interfaces_warns_and_prints_a_url_with_its_token(tmp_path):
    path = tmp_path / "model.safetensors"
    small_model().save(path)
    process = subprocess.Popen([sys.executable, "-m", "minicnn", "studio", str(path),
                                "--host", "0.0.0.0"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        url = process.stdout.readline()
        assert "?token=" in url and "http://127.0.0.1:" in url
        warning = process.stderr.readline()
        assert "not only on this machine" in warning
    finally:
        process.kill()
        process.wait()


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


def test_closing_the_server_stops_the_demo_run(studio):
    """A process that goes on after the studio (a notebook, a test session) does not keep
    training for nobody: the run ends after the step it is in, without an error."""
    from minicnn.data import prepare_data

    x = np.random.default_rng(1).standard_normal((19200, 1, 28, 28)).astype(np.float32)
    y = np.arange(len(x)) % 10
    noise = ((x, y), (x[:20], y[:20]), [str(c) for c in range(10)])
    training = DemoTraining(lambda limit: prepare_data("mnist", loaded=noise, limit=limit))
    server = make_server(StudioApp(studio, training, verbose=0))
    training.start({"steps": 300})
    while not training.monitor.state()["records"] and training.thread.is_alive():
        threading.Event().wait(0.005)
    server.server_close()
    assert not training.thread.is_alive()
    state = training.state()
    assert state["finished"] and state["error"] is None
    assert 10 <= state["records"][-1]["step"] < 300


# -- the fuzz test -------------------------------------------------------------------------------
# Request classes: (1) arbitrary bytes; (2) request lines and headers drawn from valid and broken
# pieces (methods known and unknown, HTTP versions 0.9 to 2.0 and garbage, paths with ../ and
# %-escapes and queries, Host / Origin / token / Content-Length right, wrong, missing, non-ASCII);
# (3) well-formed requests to the API whose JSON body is anything JSON can say, or the API's own
# fields holding wrong types, shapes, values and nesting.

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) |
                    st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=30)
FIELDS = ("test_index", "drawing", "image", "target", "class", "label", "kind", "index", "layer",
          "steps")
GRID = st.integers(0, 4).flatmap(lambda ndim: st.lists(
    st.integers(1, 30), min_size=ndim, max_size=ndim)).flatmap(
    lambda shape: st.sampled_from([0.0, 0.5, 1.0, 2.0, -1.0, float("nan")]).map(
        lambda value: np.full(shape, value).tolist()))
API_BODY = st.dictionaries(st.sampled_from(FIELDS), JSON | GRID | st.sampled_from(
    ["class", "loss", "pixel", "weight"]), max_size=5)


def text_piece(*valid):
    return st.sampled_from(valid) | st.text(max_size=12)


@settings(max_examples=1000)
@given(raw=st.binary(min_size=1, max_size=300))
def test_fuzz_arbitrary_bytes_get_a_4xx(server, capsys, raw):
    status, _ = exchange(server, raw)
    assert not capsys.readouterr().err  # no traceback, no "studio bug" line
    assert 400 <= status < 500 or (status == 200 and raw.startswith(b"GET "))


@settings(max_examples=1000)
@given(data=st.data())
def test_fuzz_broken_request_lines_and_headers_get_an_answer(server, capsys, data):
    """A well-formed request with one to three of its pieces replaced by a wrong, missing or
    random one: each piece is broken where everything else is right."""
    path = data.draw(st.sampled_from(["/", "/api/analyze", "/api/check", "/api/train",
                                      "/api/info", "/api/training", "/source/Conv2D"]))
    body = data.draw(st.sampled_from([b'{"test_index": 1}', b"{}"]) | st.binary(max_size=200))
    pieces = {"method": "POST" if path in ("/api/analyze", "/api/check", "/api/train") else "GET",
              "path": path, "version": "HTTP/1.1", "Host": own_host(server),
              "Origin": f"http://{own_host(server)}", "X-Studio-Token": token(server),
              "Content-Length": str(len(body))}
    wrong = {
        "method": text_piece("GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE",
                             "CONNECT", "FOO", ""),
        "path": text_piece("/static/../server.py", "/%2e%2e/%00", "/api/info?token=x&token=y",
                           "*", "//x", "/api/analyze?" + "a=" * 500, "http://evil.example/"),
        "version": text_piece("HTTP/1.0", "HTTP/0.9", "HTTP/2.0", "HTTP/1.\u00b2", "HTTP/x", ""),
        "Host": st.none() | text_piece("evil.example", "127.0.0.1:1", "\u00e9"),
        "Origin": st.none() | text_piece("null", "http://evil.example"),
        "X-Studio-Token": st.none() | text_piece("guess", "\u00e9"),
        "Content-Length": st.none() | text_piece("-1", "\u00b2", "12abc", "99999999999",
                                                 str(MAX_BODY + 1), "1e3", " 2 ", "0x10"),
    }
    for name in data.draw(st.sets(st.sampled_from(sorted(wrong)), min_size=1, max_size=3)):
        pieces[name] = data.draw(wrong[name])
    line = f"{pieces['method']} {pieces['path']} {pieces['version']}".rstrip()
    headers = [f"{k}: {pieces[k]}" for k in ("Host", "Origin", "X-Studio-Token", "Content-Length")
               if pieces[k] is not None]
    raw = wire_bytes("\r\n".join([line, *headers]) + "\r\n\r\n") + body
    status, _ = exchange(server, raw)
    assert 200 <= status < 300 or 400 <= status < 500
    assert not capsys.readouterr().err


@settings(max_examples=1000)
@given(path=st.sampled_from(["/api/analyze", "/api/check", "/api/train"]),
       body=JSON | API_BODY)
def test_fuzz_api_bodies_get_a_2xx_or_a_4xx_with_a_message(server, capsys, path, body):
    raw = json.dumps(body).encode()
    status, content = exchange(server, request_bytes(server, "POST", path, raw))
    assert status == 200 or (status in (400, 413) and json.loads(content)["error"])
    assert not capsys.readouterr().err


def test_after_the_fuzzing_the_server_still_serves(server):
    still_serves(server)
    assert call(server, "GET", "/")[0] == 200
