"""Explain an MNIST model: metrics, confusion matrix, mistakes, Grad-CAM, filters, one HTML page.

    python examples/explain_mnist.py --model runs/mnist-.../model.safetensors --out report/
    python examples/explain_mnist.py --out report/     # trains a quick 1-epoch model first

Writes into --out: metrics.json, classification_report.txt, the figures as PNG and report.html
(self-contained: open it in a browser). The same report as
``minicnn explain MODEL --dataset mnist --out DIR``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import minicnn as mc
from minicnn.data import load_dataset, normalize_as_trained
from minicnn.recipes import train_classifier
from minicnn.report import write_report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", metavar="PATH",
                        help="a model file (default: train a quick 1-epoch model into "
                             "OUT/model first, about 2 minutes on 2 CPU cores)")
    parser.add_argument("--out", metavar="DIR", default="mnist-report",
                        help="output folder (default: mnist-report)")
    parser.add_argument("--data-dir", metavar="DIR", help="folder holding the MNIST files")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(argv)
    verbose = 0 if args.quiet else 1
    out = Path(args.out)

    model_path = args.model
    if model_path is None:
        results = train_classifier("mnist", epochs=1, data_dir=args.data_dir,
                                   out=out / "model", verbose=verbose)
        model_path = results["model_file"]

    model = mc.load_model(model_path)
    _, (x_test, y_test), class_names = load_dataset("mnist", args.data_dir)
    x_test = normalize_as_trained(x_test, model.metadata)
    write_report(model, x_test, y_test, class_names, out, dataset="mnist",
                 model_path=model_path, verbose=verbose)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
