"""Every Python code block of the learner's pages in docs/ runs, in order, in one namespace per
page (as a reader would run them), in a scratch folder: a page whose code no longer matches the
library fails here. (README.md's blocks: tests/test_readme.py.)"""

from pathlib import Path

import pytest
from test_readme import python_blocks

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = ["writing_a_layer.md"]


@pytest.mark.parametrize("page", PAGES)
def test_every_python_block_of_the_page_runs(page, tmp_path, monkeypatch):
    path = DOCS / page
    blocks = python_blocks(path.read_text())
    assert blocks, f"{page} has no python blocks"
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": page}
    for line, code in blocks:
        compiled = compile("\n" * (line - 1) + code, str(path), "exec")
        try:
            exec(compiled, namespace)
        except Exception as err:
            pytest.fail(f"docs/{page}, the python block at line {line}: "
                        f"{type(err).__name__}: {err}")
