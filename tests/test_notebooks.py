"""The tutorial notebooks (docs/notebooks/) run from top to bottom without an error, on the
library as it is now, and are committed with their outputs (a reader on GitHub sees them)."""

from pathlib import Path

import pytest
from helpers import require

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "docs" / "notebooks").glob("*.ipynb"))


def test_the_tutorials_are_there():
    assert {p.stem for p in NOTEBOOKS} >= {"backprop_by_hand", "im2col", "gradient_flow"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_with_outputs(path):
    nbformat = require("nbformat")
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.execution_count is not None for cell in code), \
        f"{path.name}: run it and save it with its outputs"
    assert sum(bool(cell.outputs) for cell in code) >= len(code) // 2
    assert not any(output.output_type == "error" for cell in code for output in cell.outputs)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
    nbformat = require("nbformat")
    nbclient = require("nbclient")
    require("ipykernel")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the failing cell and its traceback
