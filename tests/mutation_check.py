"""Plant known bugs one at a time and check that the test suite catches every one, without PyTorch.

    python tests/mutation_check.py                # all mutants; prints a table; exit 1 if one survives
    python tests/mutation_check.py --only adam    # the mutants whose name contains "adam"

Each mutant is one plausible single-line bug: a snippet of minicnn's source and what it becomes.
For each, the repository is copied to a temporary folder, the bug planted there (never in your
checkout), and the default test suite run in the copy with PyTorch hidden (``MINICNN_HIDE_TORCH``:
the cross-checks against PyTorch skip), stopping at the first failure. A mutant is *caught* when
some test fails. The slow test in tests/test_slow.py runs this script.

When a refactoring changes a snippet below, the script stops with "snippet not found": update
the mutant so that it plants the same bug in the new code.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    original: str
    mutated: str
    first: tuple[str, ...] = ()  # test files likeliest to catch it, run before FIRST


MUTANTS = [
    Mutant("loss-summed", "minicnn/losses.py",
           "return float(nll.mean())", "return float(nll.sum())"),
    Mutant("loss-grad-not-over-n", "minicnn/losses.py",
           "grad *= probs.dtype.type(scale / n)", "grad *= probs.dtype.type(scale)"),
    Mutant("batchnorm-running-var-biased", "minicnn/layers/normalization.py",
           "m * var * (count / (count - 1))", "m * var"),
    Mutant("batchnorm-mean-term-numpy", "minicnn/kernels/numpy_kernels.py",
           "dx = scale * (dy - (dbeta / count)[_CHANNEL]",
           "dx = scale * (dy - (dbeta / (count + 1))[_CHANNEL]"),
    Mutant("batchnorm-mean-term-numba", "minicnn/kernels/numba_kernels.py",
           "dgamma_mean, dbeta_mean = dgamma / count, dbeta / count",
           "dgamma_mean, dbeta_mean = dgamma / count, dbeta / (count + 1)"),
    Mutant("col2im-crop-numpy", "minicnn/kernels/numpy_kernels.py",
           "return dx_padded[:, :, ph : ph + h, pw : pw + w]",
           "return dx_padded[:, :, :h, :w]"),
    Mutant("col2im-last-row-numba", "minicnn/kernels/numba_kernels.py",
           "for oh in range(oh_first, oh_stop):\n                        source = row",
           "for oh in range(oh_first, oh_stop - 1):\n                        source = row"),
    Mutant("maxpool-backward-assign-numpy", "minicnn/kernels/numpy_kernels.py",
           "dx[_window_slab(i, j, dy.shape[2:], stride)] += dy * (argmax == i * kw + j)",
           "dx[_window_slab(i, j, dy.shape[2:], stride)] = dy * (argmax == i * kw + j)"),
    Mutant("maxpool-backward-assign-numba", "minicnn/kernels/numba_kernels.py",
           "dx_flat[_u(winner)] += dy_flat[q]", "dx_flat[_u(winner)] = dy_flat[q]"),
    Mutant("adam-step-count", "minicnn/optim.py",
           "self.step_count, self.weight_decay, self.decoupled)",
           "self.step_count + 1, self.weight_decay, self.decoupled)"),
    Mutant("winograd-transform-entry", "minicnn/kernels/winograd.py",
           "[0, -2, -1, 2, 1, 0],", "[0, -2, -1, 2, 2, 0],", first=("test_winograd.py",)),
    Mutant("winograd-overlap-assign-numba", "minicnn/kernels/numba_winograd.py",
           "dpadded[_u(corner + k * cols + l)] += dd[", "dpadded[_u(corner + k * cols + l)] = dd[",
           first=("test_winograd.py",)),
    Mutant("cupy-grid-rounded-down", "minicnn/kernels/cupy_kernels.py",
           "blocks = (total + _THREADS_PER_BLOCK - 1) // _THREADS_PER_BLOCK",
           "blocks = total // _THREADS_PER_BLOCK"),
]

# The tests most likely to catch a kernel or layer bug run first (pytest -x stops at the first
# failure); the rest of the default suite follows.
FIRST = ["test_gradcheck_layers.py", "test_loss.py", "test_layers.py", "test_model.py",
         "test_optim.py", "test_backend_parity.py", "test_winograd.py", "test_cuda_sources.py"]


def copy_checkout(target: Path) -> None:
    """Every file git knows of (tracked, or new and not ignored), as in your working tree."""
    listing = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                             cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, listing.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def plant(folder: Path, mutant: Mutant) -> None:
    path = folder / mutant.path
    text = path.read_text()
    count = text.count(mutant.original)
    if count != 1:
        raise SystemExit(f"mutant {mutant.name}: snippet found {count} times in {mutant.path} "
                         f"(expected once): {mutant.original!r}")
    path.write_text(text.replace(mutant.original, mutant.mutated))


def run(mutant: Mutant) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"mutant-{mutant.name}-") as folder:
        folder = Path(folder)
        copy_checkout(folder)
        plant(folder, mutant)
        env = dict(os.environ, MINICNN_HIDE_TORCH="1", PYTHONPATH=str(folder),
                   NUMBA_CACHE_DIR=str(folder / ".numba-cache"), PYTHONDONTWRITEBYTECODE="1")
        # every file named: given the folder too, pytest would collect in its own (alphabetical) order
        first = list(dict.fromkeys(mutant.first + tuple(FIRST)))
        rest = sorted(p.name for p in (folder / "tests").glob("test_*.py") if p.name not in first)
        command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                   *[f"tests/{name}" for name in first + rest]]
        start = time.perf_counter()
        result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    # exit code 1: tests failed (caught); 0: all passed (survived); anything else (a collection
    # error, an interruption) means the run itself is broken and proves nothing
    failed = re.search(r"^(?:FAILED|ERROR) (\S+::\S+)", result.stdout, re.MULTILINE)
    verdict = {0: "SURVIVED", 1: "caught"}.get(result.returncode, "BROKEN RUN")
    if verdict == "caught" and failed is None:
        verdict = "BROKEN RUN"
    return {"mutant": mutant.name, "verdict": verdict,
            "by": failed.group(1) if failed else f"(pytest exit code {result.returncode})",
            "seconds": seconds, "output": result.stdout[-3000:]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="run the mutants whose name contains this")
    args = parser.parse_args(argv)
    mutants = [m for m in MUTANTS if args.only in m.name]
    rows = []
    for mutant in mutants:
        row = run(mutant)
        rows.append(row)
        print(f"{row['mutant']:<32} {row['verdict']:<10} {row['seconds']:5.0f} s  {row['by']}",
              flush=True)
        if row["verdict"] != "caught":
            print(row["output"], file=sys.stderr)
    missed = [row["mutant"] for row in rows if row["verdict"] != "caught"]
    print(f"\n{len(rows) - len(missed)} of {len(rows)} planted bugs caught without PyTorch"
          + (f"; not caught: {', '.join(missed)}" if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
