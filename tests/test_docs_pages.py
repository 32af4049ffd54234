"""The documentation site's pages (docs/*.md, built by MkDocs: mkdocs.yml) as a reader meets
them: every ```python block runs, in order, in one namespace per page, in a scratch folder
(```py marks an excerpt of the library's own code, shown, not run);
every page is in the site's navigation; the glossary's terms are linked where a page first uses
them; and the README and the site's home page give the same reading path. (README.md's code
blocks: tests/test_readme.py. The links themselves: `mkdocs build --strict`, in .ci/run.)"""

import os
import re
from pathlib import Path

import pytest
from test_readme import python_blocks

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
PAGES_WITH_CODE = [page for page in PAGES if python_blocks((DOCS / page).read_text())]

# term -> (its anchor in docs/glossary.md, how it is written in prose)
GLOSSARY_TERMS = {
    "im2col": ("im2col", r"\bim2col\b"),
    "col2im": ("col2im", r"\bcol2im\b"),
    "GEMM": ("gemm", r"\bGEMMs?\b"),
    "NCHW": ("nchw", r"\bNCHW\b"),
    "cross-correlation": ("cross-correlation", r"(?i)\bcross-correlation"),
    "He initialization": ("he-initialization", r"\bHe init"),
    "one-cycle": ("one-cycle", r"(?i)\bone-cycle\b"),
    "label smoothing": ("label-smoothing", r"(?i)\blabel smoothing\b"),
    "Winograd": ("winograd", r"\bWinograd\b"),
    "BatchNorm": ("batchnorm", r"\bBatchNorm\b"),
    "Grad-CAM": ("grad-cam", r"\bGrad-CAM\b"),
    "central differences": ("central-differences", r"(?i)\bcentral difference"),
}
# a link, an image (skipped), or a code span (skipped: `im2col(x)` is code, not the word)
_TOKEN = re.compile(r"!\[[^\]]*\]\([^)]*\)|\[(?P<text>[^\]]*)\]\((?P<target>[^)]*)\)|`[^`]*`")


def prose(markdown: str) -> str:
    """The text a reader reads as words: without code blocks (fenced or indented) and headings."""
    markdown = re.sub(r"(?ms)^```.*?^```", "", markdown)
    kept, previous_blank = [], True
    for line in markdown.splitlines():
        indented_code = line.startswith("    ") and previous_blank and not line.lstrip().startswith("-")
        if line.startswith("#") or indented_code:
            previous_blank = previous_blank and indented_code
            continue
        kept.append(line)
        previous_blank = not line.strip()
    return "\n".join(kept)


def first_use_unlinked(markdown: str, glossary: str) -> list[str]:
    """The glossary terms whose first use in ``markdown`` is not a link to their entry."""
    text = re.sub(r"\s+", " ", prose(markdown))  # a term may be wrapped onto the next line
    unlinked = []
    for term, (anchor, pattern) in GLOSSARY_TERMS.items():
        position = 0
        while True:
            token = _TOKEN.search(text, position)
            plain = text[position:token.start() if token else len(text)]
            if re.search(pattern, plain):
                unlinked.append(term)
                break
            if token is None:
                break
            if token.group("text") is not None and re.search(pattern, token.group("text")):
                if not token.group("target").endswith(f"{glossary}#{anchor}"):
                    unlinked.append(term)
                break
            position = token.end()
    return unlinked


@pytest.mark.parametrize("page", PAGES_WITH_CODE)
def test_every_python_block_of_the_page_runs(page, tmp_path, monkeypatch):
    path = DOCS / page
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": page}
    for line, code in python_blocks(path.read_text()):
        compiled = compile("\n" * (line - 1) + code, str(path), "exec")
        try:
            exec(compiled, namespace)
        except ImportError as err:  # an optional extra (PyTorch, ONNX): CI installs them all
            if os.environ.get("CI"):
                raise
            pytest.skip(f"docs/{page}, the python block at line {line} needs {err.name}: {err}")
        except Exception as err:
            pytest.fail(f"docs/{page}, the python block at line {line}: "
                        f"{type(err).__name__}: {err}")


def test_the_pages_hold_the_examples_that_left_the_readme():
    assert {"writing_a_layer.md", "usage.md", "gradients.md", "report.md",
            "interop.md"} <= set(PAGES_WITH_CODE)


def test_every_page_and_notebook_is_in_the_site_navigation():
    navigation = (ROOT / "mkdocs.yml").read_text()
    listed = set(re.findall(r":\s+\"?([\w/]+\.(?:md|ipynb))\"?\s*$", navigation, flags=re.M))
    notebooks = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.ipynb")}
    assert set(PAGES) | notebooks == listed - {"benchmarks.md"}  # benchmarks: mkdocs_hooks.py


@pytest.mark.parametrize("page", ["../README.md"] + [p for p in PAGES if p != "glossary.md"])
def test_the_glossary_terms_are_linked_at_first_use(page):
    glossary = "docs/glossary.md" if page == "../README.md" else \
        os.path.relpath(DOCS / "glossary.md", (DOCS / page).parent).replace(os.sep, "/")
    unlinked = first_use_unlinked((DOCS / page).read_text(), glossary)
    if unlinked:
        term = unlinked[0]
        pytest.fail(f"{page}: link the first use of {', '.join(unlinked)} to the glossary, e.g. "
                    f"[{term}]({glossary}#{GLOSSARY_TERMS[term][0]})")


def test_every_glossary_anchor_exists():
    headings = re.findall(r"^## (.+)$", (DOCS / "glossary.md").read_text(), flags=re.M)
    anchors = {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}
    assert {anchor for anchor, _ in GLOSSARY_TERMS.values()} <= anchors


def test_the_glossary_check_catches_an_unlinked_first_use():
    linked = "The [im2col](glossary.md#im2col) trick; im2col again, unlinked, is fine."
    assert "im2col" not in first_use_unlinked(linked, "glossary.md")
    assert "im2col" in first_use_unlinked("First im2col, then [im2col](glossary.md#im2col).",
                                          "glossary.md")
    assert "im2col" in first_use_unlinked("[im2col](other.md#im2col)", "glossary.md")
    assert "label smoothing" in first_use_unlinked("With label\nsmoothing.", "glossary.md")
    code_only = "Call `im2col(x)`:\n\n```python\nim2col(x)\n```\n"
    assert first_use_unlinked(code_only, "glossary.md") == []


def reading_path(markdown: str) -> list[str]:
    """The bold titles of the numbered steps under the heading that says 'reading path'."""
    section = re.search(r"(?ms)^##+ [^\n]*reading path[^\n]*\n(.*?)(?=^#)", markdown + "\n#",
                        flags=re.I)
    assert section, "no section whose heading says 'reading path'"
    return re.findall(r"(?m)^\d+\. \*\*(.+?)\*\*", section.group(1))


def test_the_readme_and_the_home_page_give_one_reading_path():
    readme = reading_path((ROOT / "README.md").read_text())
    assert readme == reading_path((DOCS / "index.md").read_text())
    assert len(readme) >= 7


def test_the_readme_links_resolve():
    """GitHub shows the README; the site's links are checked by `mkdocs build --strict`."""
    readme = (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme):
        if not re.match(r"[a-z]+://", target):
            assert (ROOT / target).exists(), f"README.md links to {target}, which does not exist"


def test_the_convolution_page_shows_the_loops_of_naive_py_as_they_are():
    """docs/conv_backprop.md says "the loops below are its code": they must stay minicnn.naive's."""
    import inspect

    from minicnn import naive

    text = (DOCS / "conv_backprop.md").read_text()
    blocks = [code for code in re.findall(r"^```py\n(.*?)^```", text, flags=re.S | re.M)
              if "def conv2d_forward" in code]
    assert [block.strip() for block in blocks] == [inspect.getsource(naive.conv2d_forward).strip()]


def test_the_im2col_picture_is_what_its_script_draws_and_im2col_computes():
    """docs/images/im2col.svg: redrawn by docs/images/im2col_figure.py (so it cannot drift from
    the script), whose columns are minicnn's im2col of the same image."""
    import importlib.util

    from minicnn.kernels import numpy_kernels

    path = DOCS / "images" / "im2col_figure.py"
    spec = importlib.util.spec_from_file_location("im2col_figure", path)
    figure = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(figure)
    assert (figure.columns() == numpy_kernels.im2col(figure.X, (3, 3), (1, 1), (0, 0))).all()
    assert (DOCS / "images" / "im2col.svg").read_text() == figure.drawing()
    assert "images/im2col.svg" in (DOCS / "conv_backprop.md").read_text()
