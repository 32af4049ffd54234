"""MkDocs hooks for the documentation site (mkdocs.yml).

The benchmark figures live beside the benchmarks (benchmarks/README.md, which the benchmark
scripts and GitHub show there); the site serves that file as its Benchmarks page, with its
images, instead of keeping a copy that would drift.

The docstrings are written for ``help()`` and the source, with Sphinx's roles
(:func:`check_layer`) and ``::`` before a code block; the API reference shows them as the
code they name."""

import re
from pathlib import Path

from mkdocs.structure.files import File

REPOSITORY = Path(__file__).resolve().parent
BORROWED = {
    "benchmarks.md": "benchmarks/README.md",
    "results/roofline.png": "benchmarks/results/roofline.png",
}
_SPHINX_ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|exc|obj):(?=<code)")
_LITERAL_MARKER = re.compile(r"::</p>")


def on_files(files, config):
    for site_path, repository_path in BORROWED.items():
        files.append(File.generated(config, site_path,
                                    abs_src_path=str(REPOSITORY / repository_path)))
    return files


def on_page_content(html, page, config, files):
    return _LITERAL_MARKER.sub(":</p>", _SPHINX_ROLE.sub("", html))
