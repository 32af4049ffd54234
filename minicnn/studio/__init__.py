"""minicnn studio: a local web page where you draw a digit and watch both passes.

``minicnn studio [MODEL]`` serves it (127.0.0.1, a free port; the URL is printed; Ctrl-C
stops it). The page shows every layer's output for one image (forward), the gradient of a class
score or of the loss with respect to every layer's output (backward), the saliency map,
Grad-CAM and the first layer's weight gradient, each panel with the formula that computed it in
the symbols of the layer's docstring and this input's shapes; a click on a pixel or a weight
compares the analytic gradient with a central difference computed on the spot. A Train button
(and ``minicnn train --studio``) shows a run's curves, per-layer gradient norms and first-layer
filters as they change.

Everything runs on the standard library's HTTP server and the page's own three files (no CDN,
no build step): :mod:`.compute` computes the panels, :mod:`.server` serves them,
:mod:`.training` publishes a training run.
"""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

from ..data.images import preprocess_drawing
from .compute import Studio, StudioInputError, encode_maps
from .server import StudioApp, make_server
from .training import AttachedTraining, DemoTraining, TrainingMonitor


def default_model_path(verbose: int = 1) -> Path:
    """A small MNIST model for the studio, trained once (one epoch of the ``mnist-fast`` recipe)
    and kept in the user cache."""
    from ..data.sources import user_cache_dir
    from ..recipes import train_classifier

    folder = user_cache_dir() / "studio" / "mnist-fast"
    path = folder / "model.safetensors"
    if not path.is_file():
        if verbose:
            print(f"No model given: training a small MNIST model first (one epoch of the --fast "
                  f"recipe, less than a minute); it is kept in {folder}", file=sys.stderr)
        train_classifier("mnist", recipe="mnist-fast", out=folder, verbose=verbose)
    return path


def build_app(model_path=None, verbose: int = 1, demo_training: bool = True,
              your_layers=None) -> StudioApp:
    """The studio for a model file (None: the cached small MNIST model, trained if needed),
    with its dataset's held-out images in the picker. ``your_layers``: a folder of
    ``minicnn exercises``, whose passing backward passes replace minicnn's in the page."""
    from .. import load_model
    from ..data.splits import load_test_data

    path = Path(model_path) if model_path is not None else default_model_path(verbose)
    model = load_model(path)
    if your_layers is not None:
        from ..exercises.training import with_your_layers

        model, kept = with_your_layers(model, your_layers)
        if verbose:
            for line in kept:
                print(f"minicnn studio: {line}", file=sys.stderr)
    metadata = model.metadata or {}
    images = labels = None
    if metadata.get("dataset") and metadata["dataset"] != "folder":
        images, labels, _ = load_test_data(metadata["dataset"], None, metadata, verbose=0)
    studio = Studio(model, test_images=images, test_labels=labels)
    training = DemoTraining() if demo_training else None
    return StudioApp(studio, training, verbose=verbose)


def serve(app: StudioApp, host: str = "127.0.0.1", port: int = 0, verbose: int = 1) -> None:
    """Serve ``app`` until Ctrl-C. The printed URL carries the token the page's API needs."""
    server = make_server(app, host, port)
    if not _is_loopback(host):
        print(f"minicnn studio: listening on {host}, not only on this machine: anyone who can "
              "reach this port can load the page (the API still needs the URL's token)",
              file=sys.stderr)
    print(f"minicnn studio: {server.url}  (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if verbose:
            print("minicnn studio: stopped", file=sys.stderr)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host.lower() == "localhost"


__all__ = ["AttachedTraining", "DemoTraining", "Studio", "StudioApp", "StudioInputError",
           "TrainingMonitor", "build_app", "default_model_path", "encode_maps", "make_server",
           "preprocess_drawing", "serve"]
