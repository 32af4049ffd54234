"""The suite checking itself (``pytest -m slow``; .ci/run runs them after the default suite).

- Every gradient check of correct code stays at least 10x under its bound over 50 draws.
- Every planted bug of tests/mutation_check.py is caught by the suite without PyTorch.
"""

import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.slow


def run_script(name):
    result = subprocess.run([sys.executable, str(HERE / name)], cwd=HERE.parent,
                            capture_output=True, text=True)
    print(result.stdout)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


def test_every_gradient_check_keeps_a_tenfold_margin():
    run_script("gradcheck_margins.py")


def test_every_planted_bug_is_caught_without_pytorch():
    run_script("mutation_check.py")
