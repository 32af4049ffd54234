"""The studio's web server: the page's three files and a small JSON API, on the standard
library's HTTP server (nothing to install). docs/studio.md ("The server") lists the API and
what it refuses, and why. Any web page can make a browser send requests to 127.0.0.1, so a
request is answered only when it names this server's own ``Host``; the API only with the run's
token (``X-Studio-Token``, as in Jupyter), and a POST only from the studio's own origin. Every
request gets an answer and no client prints a traceback: malformed input is a 4xx with its
reason, an oversized body a 413 after it was read and dropped (up to ``MAX_DISCARD``), a
stalled client is dropped after ``TIMEOUT`` seconds. Nothing is unpickled or evaluated; only a
fixed list of files is served.
"""

from __future__ import annotations

import inspect
import ipaddress
import json
import re
import secrets
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlsplit

from .. import layers as layer_module
from ..kernels.cpu_runtime import blas_on_one_thread
from .compute import StudioInputError, encode_maps

MAX_BODY = 2 * 1024 * 1024  # bytes: a drawing of 1024x1024 numbers fits, a flood does not
MAX_DISCARD = 64 * 1024 * 1024  # an oversized body up to this size is read (and dropped) first
TIMEOUT = 30  # seconds a connection may stall before it is dropped
TOKEN_HEADER = "X-Studio-Token"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
ASSETS = {"/": ("index.html", "text/html; charset=utf-8"),
          "/index.html": ("index.html", "text/html; charset=utf-8"),
          "/static/studio.js": ("studio.js", "text/javascript; charset=utf-8"),
          "/static/studio.css": ("studio.css", "text/css; charset=utf-8")}
_DIGITS = re.compile(r"[0-9]{1,12}")  # ASCII only: "²".isdigit() is True but int("²") fails


class _Refused(Exception):
    """A request answered with ``status`` and ``message`` (a 4xx)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class _Handler(BaseHTTPRequestHandler):
    server_version = "minicnn-studio"
    timeout = TIMEOUT
    disable_nagle_algorithm = True  # a reply's last segment must not wait for the client's ACK
    app = None  # set per server (see make_server)

    def log_message(self, format, *args):  # quiet: the terminal shows the URL and errors only
        if self.app.verbose > 1:
            super().log_message(format, *args)

    # -- replies ---------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, content_type: str, close: bool = False,
              allow: str | None = None) -> None:
        self.send_response(status)
        if allow is not None:
            self.send_header("Allow", allow)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'self'; img-src 'self' data:")
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, value, close: bool = False, allow: str | None = None) -> None:
        self._send(status, json.dumps(value).encode(), "application/json", close, allow)

    def _error(self, status: int, message: str, close: bool = False,
               allow: str | None = None) -> None:
        self._json(status, {"error": message}, close, allow)

    def send_error(self, code, message=None, explain=None):
        # The standard library answers an unsupported HTTP version with a 505; to a client that
        # sent one it is a malformed request like any other (and HTTP/0.9 has no status line)
        if code == HTTPStatus.HTTP_VERSION_NOT_SUPPORTED:
            code, message = HTTPStatus.BAD_REQUEST, "only HTTP/1.0 and HTTP/1.1 are spoken here"
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.0"
        super().send_error(code, message, explain)

    def parse_request(self):
        if not str(self.raw_requestline, "iso-8859-1").split():  # as the standard library splits it
            self.command, self.requestline, self.request_version = None, "", "HTTP/1.0"
            self.send_error(HTTPStatus.BAD_REQUEST, "empty request line")
            return False
        if not super().parse_request():
            return False
        if self.request_version == "HTTP/0.9":
            self.send_error(HTTPStatus.BAD_REQUEST, "HTTP/0.9 requests are not answered")
            return False
        return True

    def __getattr__(self, name):
        if name.startswith("do_"):  # any other method: 405, not the standard library's 501
            return self._not_allowed
        raise AttributeError(name)

    def _not_allowed(self):
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, f"method {self.command} is not allowed here; "
                    "use GET, HEAD or POST", close=True, allow="GET, HEAD, POST")

    def _answer(self, route) -> None:
        """Run ``route`` and turn every way a request can be wrong into a 4xx with a message (a
        refusal, bad input); anything else is a bug of the studio's: a 500, and one line on the
        terminal."""
        self._body_read = False
        try:
            path, query = self._split_path()
            self._check_host()
            route(path, query)
        except _Refused as err:
            if self.command == "POST" and not self._body_read:
                self._discard_body()  # an answer sent over an unread body may never arrive
            self._error(err.status, str(err), close=err.status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        except StudioInputError as err:
            self._error(HTTPStatus.BAD_REQUEST, str(err))
        except RecursionError:
            self._error(HTTPStatus.BAD_REQUEST, "the request is nested too deeply")
        except OSError:  # the client went away or stalled: nobody to answer
            self.close_connection = True
        except Exception as err:
            print(f"minicnn studio: {type(err).__name__} answering {self.command} "
                  f"{self.path[:80]!r}: {err}", file=sys.stderr)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(err).__name__}: {err}",
                        close=True)

    def _split_path(self):
        try:
            parts = urlsplit(self.path)
        except ValueError:
            raise _Refused(HTTPStatus.BAD_REQUEST, "the request target is not a URL path") from None
        return parts.path, parse_qs(parts.query)

    # -- who may ask -----------------------------------------------------------------------
    def _check_host(self) -> None:
        host = self.headers.get("Host")
        if not host_allowed(host, self.server.allowed_hosts):
            raise _Refused(HTTPStatus.FORBIDDEN,
                           f"Host {host!r} is not this studio's address; open the URL it printed")

    def _check_token(self, query) -> None:
        given = self.headers.get(TOKEN_HEADER) or (query.get("token") or [""])[0]
        if not secrets.compare_digest(given.encode("utf-8", "replace"),
                                      self.app.token.encode()):
            raise _Refused(HTTPStatus.FORBIDDEN, "the API needs the token of the URL the studio "
                                                 "printed (open that URL)")

    def _check_origin(self) -> None:
        origin = self.headers.get("Origin")
        if origin is not None and origin != f"http://{self.headers.get('Host')}":
            raise _Refused(HTTPStatus.FORBIDDEN, f"a request from {origin!r}, another site: "
                                                 "the studio only answers its own page")

    # -- GET and HEAD ----------------------------------------------------------------------
    def do_GET(self):
        self._answer(self._get)

    def do_HEAD(self):
        self._answer(self._get)

    def _get(self, path, query):
        if path in ASSETS:
            name, content_type = ASSETS[path]
            body = resources.files(__package__).joinpath("static", name).read_bytes()
            return self._send(HTTPStatus.OK, body, content_type)
        if path == "/favicon.ico":
            return self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        if path.startswith("/source/"):
            cls = layer_module.LAYER_TYPES.get(path[len("/source/"):])
            if cls is not None:
                return self._send(HTTPStatus.OK, inspect.getsource(cls).encode(),
                                  "text/plain; charset=utf-8")
        if path in ("/api/info", "/api/training"):
            self._check_token(query)
            if path == "/api/info":
                return self._json(HTTPStatus.OK, self.app.info())
            return self._json(HTTPStatus.OK, self.app.training_state())
        raise _Refused(HTTPStatus.NOT_FOUND, f"not found: {path[:200]}")

    # -- POST ------------------------------------------------------------------------------
    def do_POST(self):
        self._answer(self._post)

    def _post(self, path, query):
        handlers = {"/api/analyze": self.app.analyze, "/api/check": self.app.check,
                    "/api/train": self.app.start_training}
        if path not in handlers:
            raise _Refused(HTTPStatus.NOT_FOUND, f"not found: {path[:200]}")
        request = self._read_json()  # the body first: then every answer reaches the client
        self._check_origin()
        self._check_token(query)
        self._json(HTTPStatus.OK, handlers[path](request))

    def _content_length(self) -> int:
        length = self.headers.get("Content-Length")
        if length is None:
            raise _Refused(HTTPStatus.LENGTH_REQUIRED, "the request needs a Content-Length")
        if not _DIGITS.fullmatch(length.strip()):
            self.close_connection = True  # where this body ends is unknown
            raise _Refused(HTTPStatus.BAD_REQUEST, f"Content-Length must be a whole number of "
                                                   f"bytes, got {length[:40]!r}")
        return int(length)

    def _discard_body(self) -> None:
        self._body_read = True
        try:
            length = self._content_length()
        except _Refused:
            self.close_connection = True
            return
        self._drain(length)

    def _drain(self, length: int) -> None:
        if length > MAX_DISCARD:
            self.close_connection = True
            return
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 16))
            if not chunk:
                break
            length -= len(chunk)

    def _read_json(self):
        self._body_read = True
        length = self._content_length()
        if length > MAX_BODY:
            self._drain(length)
            raise _Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                           f"request body of {length:,} bytes; at most {MAX_BODY:,}")
        body = self.rfile.read(length)
        if len(body) < length:
            raise StudioInputError(f"the body ended after {len(body)} of its {length} bytes")
        try:
            value = json.loads(body or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise StudioInputError(f"the body is not JSON: {err}") from None
        if not isinstance(value, dict):
            raise StudioInputError("the body must be a JSON object")
        return value


class StudioApp:
    """The server's state: the :class:`Studio` (one request at a time: the layers keep their
    last pass), the background training run, and the token the API asks for (new per app)."""

    def __init__(self, studio, training, verbose: int = 1):
        self.studio, self.training, self.verbose = studio, training, verbose
        self.lock = threading.Lock()
        self.token = secrets.token_urlsafe(24)

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

    # One image is a pass of small products, where BLAS's threads cost more than they give, and
    # the page's browser needs the other cores while it draws: the studio's passes run on the
    # request's thread (taking turns with the training run's multiplies, restored after each).
    def analyze(self, request):
        with self.lock, blas_on_one_thread():
            return self._studio().analyze(request)

    def check(self, request):
        with self.lock, blas_on_one_thread():
            return self._studio().check(request)

    def _studio(self):
        if self.studio is None:
            raise StudioInputError("this studio shows a training run only; it has no model")
        return self.studio

    def start_training(self, request):
        if self.training is None or not self.training.available:
            raise StudioInputError("this studio has no training run to start")
        return self.training.start(request)

    def close(self) -> None:
        """Stop the demo run the page started, if one is going (the server is closing)."""
        if self.training is not None:
            self.training.stop()

    def training_state(self) -> dict:
        if self.training is None:
            return {"started": False, "records": []}
        return self.training.state()


def allowed_hosts(host: str, port: int) -> frozenset[str] | None:
    """The ``Host`` headers a server bound to ``host``:``port`` answers: the loopback names and
    the bound address, each with the port; None (any) for a wildcard address."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None and address.is_unspecified:
        return None
    bound = f"[{host}]" if address is not None and address.version == 6 else host
    return frozenset(f"{name}:{port}" for name in (*LOOPBACK_NAMES, bound.lower()))


def host_allowed(host: str | None, allowed: frozenset[str] | None) -> bool:
    if host is None:
        return False
    return allowed is None or host.strip().lower() in allowed


def make_server(app: StudioApp, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """An HTTP server for ``app`` (port 0: a free port). ``server.url`` is the address to open,
    token included; ``server.server_address`` the bound address."""
    handler = type("StudioHandler", (_Handler,), {"app": app})
    server = _Server((host, port), handler)
    server.daemon_threads = True
    bound_port = server.server_address[1]
    server.allowed_hosts = allowed_hosts(host, bound_port)
    shown = "127.0.0.1" if server.allowed_hosts is None else host
    if ":" in shown:
        shown = f"[{shown}]"
    server.url = f"http://{shown}:{bound_port}/?token={app.token}"
    return server


class _Server(ThreadingHTTPServer):
    def server_close(self):
        super().server_close()
        self.RequestHandlerClass.app.close()

    def handle_error(self, request, client_address):
        # A client that hangs up mid-answer is not the studio's error; anything else is one line
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):
            print(f"minicnn studio: {type(error).__name__}: {error}", file=sys.stderr)
