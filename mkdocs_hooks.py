"""MkDocs hooks for the documentation site (mkdocs.yml).

The benchmark figures live beside the benchmarks (benchmarks/README.md, which the benchmark
scripts and GitHub show there); the site serves that file as its Benchmarks page, with its
images, instead of keeping a copy that would drift.

The docstrings are written for ``help()`` and the source, with Sphinx's roles
(:func:`check_layer`) and ``::`` before a code block; the API reference shows them as the
code they name; and as written: a ``*`` or ``_`` outside code is a character there, not
Markdown's emphasis (``N*OH*OW`` would lose its stars to italics), so :class:`LiteralDocstrings`
escapes them before Markdown reads the docstring (mkdocs.yml names it as a griffe extension),
all but the stars around a word or phrase (``**Backward.**``), which are emphasis.

The math is typeset by KaTeX (mkdocs.yml). Where a KaTeX is installed on the machine (Debian's
``libjs-katex``, or a folder named by ``$MINICNN_KATEX`` holding ``katex.min.js``), the site
serves that copy instead of the CDN's, so that it reads the same without a network."""

import os
import re
from pathlib import Path

from griffe import Extension
from mkdocs.structure.files import File

REPOSITORY = Path(__file__).resolve().parent
BORROWED = {
    "benchmarks.md": "benchmarks/README.md",
    "results/roofline.png": "benchmarks/results/roofline.png",
}
_SPHINX_ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|exc|obj):(?=<code)")
_LITERAL_MARKER = re.compile(r"::</p>")


KATEX_CDN = "https://unpkg.com/katex@0.16.4/dist/"
KATEX_SITE = "assets/katex/"
KATEX_PLACES = ("MINICNN_KATEX", "/usr/share/javascript/katex")


def local_katex() -> Path | None:
    """The folder of an installed KaTeX (katex.min.js, katex.min.css, fonts/), or None."""
    for place in (os.environ.get(KATEX_PLACES[0]), KATEX_PLACES[1]):
        if place and (Path(place) / "katex.min.js").is_file():
            return Path(place)
    return None


def _katex_files(folder: Path) -> dict[str, Path]:
    """{path under assets/katex/: file} for the site; auto-render minified or not."""
    render = folder / "contrib" / "auto-render.min.js"
    files = {"katex.min.js": folder / "katex.min.js", "katex.min.css": folder / "katex.min.css",
             "contrib/auto-render.min.js": render if render.is_file() else
             folder / "contrib" / "auto-render.js"}
    for font in sorted((folder / "fonts").iterdir()):
        files[f"fonts/{font.name}"] = font
    return files


def on_config(config):
    if local_katex() is not None:
        for extra in (config.extra_javascript, config.extra_css):
            for index, entry in enumerate(extra):
                if str(entry).startswith(KATEX_CDN):
                    extra[index] = KATEX_SITE + str(entry)[len(KATEX_CDN):]
    return config


def on_files(files, config):
    for site_path, repository_path in BORROWED.items():
        files.append(File.generated(config, site_path,
                                    abs_src_path=str(REPOSITORY / repository_path)))
    folder = local_katex()
    if folder is not None:
        for site_path, source in _katex_files(folder).items():
            files.append(File.generated(config, KATEX_SITE + site_path,
                                        abs_src_path=str(source.resolve())))
    return files


def on_page_content(html, page, config, files):
    html = _LITERAL_MARKER.sub(":</p>", _SPHINX_ROLE.sub("", html))
    if page.file.src_uri.endswith(".ipynb"):  # mkdocs-jupyter copies the notebook beside it
        name = Path(page.file.src_uri).name
        html = (f'<p class="notebook-download"><a href="{name}" download>Download this notebook'
                f"</a> ({name}) to run it yourself, in Jupyter or VS Code, with minicnn "
                "installed.</p>\n" + html)
    return html


_CODE_SPAN = re.compile(r"(`+).+?\1")
# a run of * that opens emphasis (after a space or an opening bracket, before a non-space) or
# closes it (after a non-space, before a space or punctuation) is kept: **Backward.**, *sum*
_STARS = re.compile(r"\*+")
_OPENS, _CLOSES = " \t([{\"'", " \t.,;:!?)]}\"'"


def _escape_stars(text: str) -> str:
    def escape(match):
        before = text[match.start() - 1] if match.start() > 0 else " "
        after = text[match.end()] if match.end() < len(text) else " "
        opens = before in _OPENS and after not in " \t"
        closes = before not in " \t" and after in _CLOSES
        return match.group(0) if opens or closes else "\\*" * len(match.group(0))
    return _STARS.sub(escape, text).replace("_", "\\_")


def literal_markdown(text: str) -> str:
    """``text`` with every ``*`` and ``_`` that is not emphasis escaped, outside code. Stars
    that open or close emphasis (``**Backward.**``, ``*sum*``) are kept, as the docstrings use
    them so; the others (``N*OH*OW``, ``y**2``) and every ``_`` are characters. Inline code
    spans, fenced blocks and indented (literal) blocks are left as they are: Markdown shows
    those as written."""
    lines, fenced, indented, blank_before = [], False, False, True
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped.startswith("```"):
            fenced = not fenced
        elif not fenced and stripped:
            indented = line.startswith("    ") and (blank_before or indented)
            if not indented:
                texts = _CODE_SPAN.split(line)[::2]  # split keeps the delimiters: drop them
                spans = [m.group(0) for m in _CODE_SPAN.finditer(line)]
                line = "".join(_escape_stars(piece) + span
                               for piece, span in zip(texts, [*spans, ""]))
        blank_before = not stripped
        lines.append(line)
    return "\n".join(lines)


class LiteralDocstrings(Extension):
    """Docstrings shown as written (see the module's docstring)."""

    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is not None:
            obj.docstring.value = literal_markdown(obj.docstring.value)
