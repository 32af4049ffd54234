"""MkDocs hook: the benchmark figures live beside the benchmarks (benchmarks/README.md, which
the benchmark scripts and GitHub show there); the site serves that file as its Benchmarks page,
with its images, instead of keeping a copy that would drift."""

from pathlib import Path

from mkdocs.structure.files import File

REPOSITORY = Path(__file__).resolve().parent
BORROWED = {
    "benchmarks.md": "benchmarks/README.md",
    "results/roofline.png": "benchmarks/results/roofline.png",
}


def on_files(files, config):
    for site_path, repository_path in BORROWED.items():
        files.append(File.generated(config, site_path,
                                    abs_src_path=str(REPOSITORY / repository_path)))
    return files
