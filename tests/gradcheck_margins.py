"""How far every gradient check of the suite stays under its bound: the worst of 50 draws.

    python tests/gradcheck_margins.py            # prints a table; exit code 1 below 10x

Runs the tests that check gradients numerically with the hypothesis profile "margins" (50 draws
per test, derandomized) and reports, per test, the largest relative error seen and the margin
(bound / error). A check of correct code must keep a margin of at least 10 on any machine; the
slow test tests/test_slow.py runs this script and asserts it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
GRADIENT_TESTS = ["test_gradcheck_layers.py", "test_model.py", "test_interpret.py",
                  "test_models.py"]
REQUIRED_MARGIN = 10.0


def measure() -> dict[str, float]:
    sys.path.insert(0, str(HERE))
    from helpers import GRADCHECK_BOUND

    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "margins.json"
        env = dict(os.environ, HYPOTHESIS_PROFILE="margins", MINICNN_GRADCHECK_MARGINS=str(report))
        # -n 0: one process, which writes the report
        command = [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider",
                   *[str(HERE / name) for name in GRADIENT_TESTS]]
        result = subprocess.run(command, cwd=HERE.parent, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            print(result.stdout[-4000:], result.stderr[-2000:], file=sys.stderr)
            raise SystemExit("the gradient-check tests failed (see above)")
        worst = json.loads(report.read_text())
    return {test: GRADCHECK_BOUND / max(error, 1e-300) for test, error in worst.items() if test}


def main() -> int:
    margins = measure()
    width = max(map(len, margins))
    print(f"{'test':<{width}}  worst error   margin (bound / worst)")
    from helpers import GRADCHECK_BOUND

    for test, margin in sorted(margins.items(), key=lambda item: item[1]):
        print(f"{test:<{width}}  {GRADCHECK_BOUND / margin:10.1e}   {margin:10.0f}x")
    low = {test: margin for test, margin in margins.items() if margin < REQUIRED_MARGIN}
    print(f"\n{len(margins)} checks; smallest margin {min(margins.values()):.0f}x "
          f"(required: {REQUIRED_MARGIN:.0f}x)")
    return 1 if low else 0


if __name__ == "__main__":
    raise SystemExit(main())
