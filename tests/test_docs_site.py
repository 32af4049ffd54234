"""The documentation site as a reader gets it: built by MkDocs (the docs extra), its math
typeset by KaTeX in a real browser (headless Chromium driven by Playwright), its API reference
showing the docstrings as written.

Needs the docs extra, Playwright, a Chromium and a local KaTeX (Debian's ``libjs-katex``, which
the site serves instead of the CDN's: see mkdocs_hooks.py); ``.ci/run`` installs them. Without
them the tests skip with the reason; in CI they fail instead. Screenshots of the pages go to
``$MINICNN_SCREENSHOTS`` when set (docs/images/site_*.png come from there).
"""

import functools
import html
import http.server
import importlib
import inspect
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from helpers import require

REPOSITORY = Path(__file__).resolve().parents[1]
DOCS = REPOSITORY / "docs"


def hooks():
    """mkdocs_hooks.py, imported as MkDocs imports it (it needs the docs extra: griffe)."""
    require("mkdocs")
    require("griffe")
    if str(REPOSITORY) not in sys.path:
        sys.path.insert(0, str(REPOSITORY))
    import mkdocs_hooks

    return mkdocs_hooks


def unavailable(message):
    if os.environ.get("CI"):
        pytest.fail(message + "; CI must run the site's tests (see .ci/run)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    require("mkdocs")
    require("mkdocstrings")
    out = tmp_path_factory.mktemp("site")
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
                            "--site-dir", str(out)], cwd=REPOSITORY, capture_output=True,
                           text=True, env=dict(os.environ, NO_MKDOCS_2_WARNING="1"))
    assert built.returncode == 0, built.stderr[-3000:]
    return out


def page_text(path: Path) -> str:
    """What a reader sees of a page as text, without its source-code listings (which hold the
    docstrings' text as it is and would hide a character lost in the rendered docstring)."""
    text = path.read_text()
    text = re.sub(r'(?s)<details class="quote">.*?</details>', " ", text)
    text = re.sub(r"(?s)<(script|style)\b.*?</\1>", " ", text)
    return html.unescape(re.sub(r"<[^>]+>", "", text))


def documented_docstrings(module_name: str):
    """The docstrings the API reference shows for a module: its own, and those of its public
    classes, functions and methods defined there (mkdocs.yml's filter hides names with _)."""
    module = importlib.import_module(module_name)
    yield module.__doc__ or ""
    for name, value in vars(module).items():
        if name.startswith("_") or getattr(value, "__module__", None) != module_name:
            continue
        if inspect.isclass(value) or inspect.isfunction(value):
            yield value.__doc__ or ""
        if inspect.isclass(value):
            for member_name, member in vars(value).items():
                if not member_name.startswith("_") and inspect.isfunction(member):
                    yield member.__doc__ or ""


def test_the_api_reference_shows_every_star_and_underscore_as_written(site):
    """`N*OH*OW` in a docstring is `N*OH*OW` on the page, not N<em>OH</em>OW; the same for
    every word holding a * or an _ (the test fails without LiteralDocstrings). Stars around a
    word are emphasis (**Backward.**): the word is checked without them."""
    checked = 0
    for reference in sorted((DOCS / "reference").glob("*.md")):
        text = page_text(site / "reference" / reference.stem / "index.html")
        text = re.sub(r"\s+", " ", text)
        for module_name in re.findall(r"^::: (\S+)", reference.read_text(), re.MULTILINE):
            for docstring in documented_docstrings(module_name):
                docstring = re.sub(r":(?:func|class|meth|mod|attr|data|exc|obj):", "",
                                   docstring).replace("`", "")
                for word in re.findall(r"[^\s*_]*[*_][^\s]*", docstring):
                    word = word.strip(".,;:()[]'\"").strip("*").strip(".,;:()[]'\"")
                    if "*" in word or "_" in word:
                        assert word in text, (reference.name, module_name, word)
                        checked += 1
    assert checked > 300  # the reference pages were read


def test_every_notebook_page_links_its_notebook(site):
    pages = sorted((site / "notebooks").glob("*/index.html"))
    assert len(pages) == len(list((DOCS / "notebooks").glob("*.ipynb"))) >= 5
    for page in pages:
        name = re.search(r'<a href="([^"]+\.ipynb)" download>', page.read_text()).group(1)
        assert (page.parent / name).is_file() and name == page.parent.name + ".ipynb"


def test_literal_markdown_leaves_code_alone():
    text = ("**Backward.** K = C*KH*KW, y**2, *sum*, __init__ and `a*b`\n\n    y = a * b  # a "
            "literal block\n\n```\nz = x_1 * 2\n```\nafter a ``b*c``")
    assert hooks().literal_markdown(text) == (
        "**Backward.** K = C\\*KH\\*KW, y\\*\\*2, *sum*, \\_\\_init\\_\\_ and `a*b`\n\n    y = a "
        "* b  # a literal block\n\n```\nz = x_1 * 2\n```\nafter a ``b*c``")


# -- in the browser -------------------------------------------------------------------------------

def pages_with_math(site: Path) -> list[Path]:
    """Every page whose HTML holds math for KaTeX: arithmatex's spans, a notebook's $ $."""
    found = []
    for path in sorted(site.rglob("index.html")):
        text = path.read_text()
        if 'class="arithmatex"' in text or ("jupyter-wrapper" in text and
                                            re.search(r"\$[^$<>\n]+\$", page_text(path))):
            found.append(path)
    return found


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def served(site):
    """The site over HTTP on 127.0.0.1, as `mkdocs serve` gives it (its search runs in a web
    worker, which a file:// page may not start)."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    playwright_api = require("playwright.sync_api")
    from test_studio_browser import chromium_path

    if hooks().local_katex() is None:
        unavailable("no local KaTeX (apt-get install libjs-katex): the site would load it from "
                    "the network")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(),
                                             args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


def typeset(browser, url: str, width=1280, height=900):
    page = browser.new_page(viewport={"width": width, "height": height})
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    page.wait_for_load_state("load")
    page.wait_for_timeout(300)  # document$ emits, then KaTeX renders
    return page, errors


READING_PATH_WITH_MATH = ["learn/chain_rule", "conv_backprop", "notebooks/derivations",
                          "notebooks/backprop_by_hand"]


def test_every_formula_is_typeset(site, served, browser):
    """Every page with math shows it typeset by KaTeX: no formula left as TeX source, none that
    KaTeX could not read, no error in the page; the derivation pages hold many."""
    pages = pages_with_math(site)
    names = {str(p.parent.relative_to(site)) for p in pages}
    assert set(READING_PATH_WITH_MATH) <= names, names
    for path in pages:
        where = path.parent.relative_to(site)
        page, errors = typeset(browser, f"{served}{where}/")
        formulas = page.locator(".katex").count()
        raw = page.evaluate("""() => [...document.querySelectorAll('.arithmatex')]
            .filter(e => !e.querySelector('.katex')).map(e => e.textContent)""")
        assert not errors and formulas > 0 and not raw, (where, errors, formulas, raw[:3])
        assert page.locator(".katex-error").count() == 0, (
            where, page.locator(".katex-error").first.text_content())
        text = page.inner_text("article")
        assert "\\frac" not in text and "$$" not in text, where
        if str(where) in READING_PATH_WITH_MATH:
            assert formulas >= 10, (where, formulas)
        page.close()


SCREENSHOTS = {"site_home.png": "",
               "site_derivation.png":
                   "notebooks/derivations/#2-batchnorm-three-paths-summed-into-the-compact-form",
               "site_reading_path.png": "learn/chain_rule/",
               "site_api.png": "reference/layers/#minicnn.layers.conv.Conv2D"}


def test_screenshots_of_the_site(served, browser):
    """The pictures docs/usage.md shows, taken when $MINICNN_SCREENSHOTS names a folder."""
    out = os.environ.get("MINICNN_SCREENSHOTS")
    for name, where in SCREENSHOTS.items():
        page, errors = typeset(browser, served + where)
        assert not errors and page.locator(".katex-error").count() == 0, (where, errors)
        if out:
            Path(out).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(out) / name))
        page.close()
