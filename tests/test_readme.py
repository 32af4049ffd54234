"""Every Python code block of README.md runs, in order, in one namespace (a later block may use
what an earlier one defined, as a reader would), in a scratch folder: an API example that no
longer matches the code fails here."""

import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line of the block's first code line, code)`` for every ```python block."""
    return [(text.count("\n", 0, match.start(1)) + 1, match.group(1))
            for match in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M)]


def test_the_readme_has_python_examples():
    assert len(python_blocks(README.read_text())) >= 3


def test_every_python_block_of_the_readme_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme"}
    for line, code in python_blocks(README.read_text()):
        # blank lines in front: a traceback points at the README's own line numbers
        compiled = compile("\n" * (line - 1) + code, str(README), "exec")
        try:
            exec(compiled, namespace)
        except ImportError as err:  # an optional extra (PyTorch, ONNX): CI installs them all
            if os.environ.get("CI"):
                raise
            pytest.skip(f"README.md, the python block at line {line} needs {err.name}: {err}")
        except Exception as err:
            pytest.fail(f"README.md, the python block at line {line}: "
                        f"{type(err).__name__}: {err}")


def test_a_broken_example_is_caught():
    """The extraction itself: a block with a wrong argument name must fail to run."""
    text = "intro\n```python\nimport minicnn as mc\nmc.layers.Conv2D(1, 2, kernel=3)\n```\n"
    (line, code), = python_blocks(text)
    assert line == 3
    with pytest.raises(TypeError, match="kernel"):
        exec(compile(code, "README", "exec"), {})
