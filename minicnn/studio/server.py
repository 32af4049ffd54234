"""The studio's web server: the page's three files and a small JSON API, on the standard
library's HTTP server (nothing to install).

Safety: it binds to 127.0.0.1 unless a host is given; it serves a fixed list of its own files
(any other path, ``../`` tricks included, is a 404), request bodies are limited to
``MAX_BODY`` bytes and must be JSON objects of the expected fields (anything else is a 400 with
a message, and the server keeps serving); nothing is unpickled or evaluated.

API (JSON in and out):

- ``GET  /api/info``: the model (layers, input shape, class names) and the test-image picker;
- ``POST /api/analyze``: ``{"test_index": i} | {"drawing": [[...]]} | {"image": [[...]]}``,
  optional ``"target": "class" | "loss"``, ``"class"`` / ``"label"``; every panel
  (:meth:`Studio.analyze`);
- ``POST /api/check``: the same image and target plus ``"kind": "pixel" | "weight"`` and an
  ``"index"``; the analytic and the numerical gradient (:meth:`Studio.check`);
- ``POST /api/train``: start a short training run in the background (``{"steps": n}``);
  ``GET /api/training``: its curves, gradient norms and first-layer filters so far;
- ``GET /source/<Layer>``: the layer class's source code, as text.
"""

from __future__ import annotations

import inspect
import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

from .. import layers as layer_module
from .compute import StudioInputError, encode_maps

MAX_BODY = 2 * 1024 * 1024  # bytes: a drawing of 1024x1024 numbers fits, a flood does not
ASSETS = {"/": ("index.html", "text/html; charset=utf-8"),
          "/index.html": ("index.html", "text/html; charset=utf-8"),
          "/static/studio.js": ("studio.js", "text/javascript; charset=utf-8"),
          "/static/studio.css": ("studio.css", "text/css; charset=utf-8")}


class _Handler(BaseHTTPRequestHandler):
    server_version = "minicnn-studio"
    app = None  # set per server (see make_server)

    def log_message(self, format, *args):  # quiet: the terminal shows the URL and errors only
        if self.app.verbose > 1:
            super().log_message(format, *args)

    # -- replies ---------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'self'; img-src 'self' data:")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, value) -> None:
        self._send(status, json.dumps(value).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    # -- GET -------------------------------------------------------------------------------
    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path in ASSETS:
            name, content_type = ASSETS[path]
            body = resources.files(__package__).joinpath("static", name).read_bytes()
            return self._send(HTTPStatus.OK, body, content_type)
        if path == "/favicon.ico":
            return self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        if path == "/api/info":
            return self._json(HTTPStatus.OK, self.app.info())
        if path == "/api/training":
            state = self.app.training.state() if self.app.training is not None else \
                {"started": False, "records": []}
            return self._json(HTTPStatus.OK, state)
        if path.startswith("/source/"):
            name = path[len("/source/"):]
            cls = layer_module.LAYER_TYPES.get(name)
            if cls is not None:
                return self._send(HTTPStatus.OK, inspect.getsource(cls).encode(),
                                  "text/plain; charset=utf-8")
        self._error(HTTPStatus.NOT_FOUND, f"not found: {path}")

    # -- POST ------------------------------------------------------------------------------
    def _read_json(self):
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise StudioInputError("the request needs a Content-Length")
        if int(length) > MAX_BODY:
            raise _TooLarge(f"request body of {int(length):,} bytes; at most {MAX_BODY:,}")
        try:
            value = json.loads(self.rfile.read(int(length)) or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise StudioInputError(f"the body is not JSON: {err}") from None
        if not isinstance(value, dict):
            raise StudioInputError("the body must be a JSON object")
        return value

    def do_POST(self):
        path = self.path.split("?", 1)[0]
        handlers = {"/api/analyze": self.app.analyze, "/api/check": self.app.check,
                    "/api/train": self.app.start_training}
        if path not in handlers:
            return self._error(HTTPStatus.NOT_FOUND, f"not found: {path}")
        try:
            request = self._read_json()
            return self._json(HTTPStatus.OK, handlers[path](request))
        except _TooLarge as err:
            self.close_connection = True  # the unread body must not be taken for a request
            return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, str(err))
        except StudioInputError as err:
            return self._error(HTTPStatus.BAD_REQUEST, str(err))


class _TooLarge(StudioInputError):
    pass


class StudioApp:
    """The server's state: the :class:`Studio` (one request at a time: the layers keep their
    last pass) and the background training run."""

    def __init__(self, studio, training, verbose: int = 1):
        self.studio, self.training, self.verbose = studio, training, verbose
        self.lock = threading.Lock()

    def info(self) -> dict:
        studio = self.studio
        training = self.training is not None and self.training.available
        if studio is None:  # the live view of a run only (minicnn train --studio)
            return {"model": False, "training": training, "attached": self.training is not None}
        images = studio.test_images
        picker = []
        if images is not None:
            for i in range(min(24, len(images))):
                picker.append({"index": i, "label": int(studio.test_labels[i]),
                               "image": encode_maps(images[i])})
        return {"input_shape": list(studio.input_shape), "class_names": studio.class_names,
                "layers": [layer.describe() for layer in studio.model.layers],
                "drawing": studio.input_shape[0] == 1, "test_images": picker, "model": True,
                "training": training, "attached": False}

    def analyze(self, request):
        with self.lock:
            return self._studio().analyze(request)

    def check(self, request):
        with self.lock:
            return self._studio().check(request)

    def _studio(self):
        if self.studio is None:
            raise StudioInputError("this studio shows a training run only; it has no model")
        return self.studio

    def start_training(self, request):
        if self.training is None or not self.training.available:
            raise StudioInputError("this studio has no training run to start")
        return self.training.start(request)


def make_server(app: StudioApp, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """An HTTP server for ``app`` (port 0: a free port; ``server.server_address`` says which)."""
    handler = type("StudioHandler", (_Handler,), {"app": app})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
