"""Plant known bugs one at a time and check that the test suite catches every one, without PyTorch.

    python tests/mutation_check.py                # all mutants; prints a table; exit 1 if one survives
    python tests/mutation_check.py --only adam    # the mutants whose name contains "adam"

Each mutant is one plausible single-line bug: a snippet of minicnn's source and what it becomes.
The repository is copied once to a temporary folder; each bug is planted there in turn (never in
your checkout) and the default test suite run in the copy with PyTorch hidden
(``MINICNN_HIDE_TORCH``: the cross-checks against PyTorch skip): the tests likeliest to catch it
alone, and where they pass, the whole suite, stopping at the first failure; then the file is
restored. A mutant is *caught* when some test fails. The slow test in tests/test_slow.py runs this script.

The mutants share one numba cache, started from your checkout's (the default suite fills it), so
that each does not compile every kernel again: numba checks a cached function against the time
stamp and size of its own source file only, which the planted bug leaves alone, except for the
mutants planted in a file that numba compiles or that compiled code reads (:data:`NUMBA_SEES`):
those get a cache of their own, empty, and compile what they run.

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
    first: tuple[str, ...]  # the tests likeliest to catch it (files, or tests in them), before FIRST


MUTANTS = [
    Mutant("loss-summed", "minicnn/losses.py",
           "return nll.mean()", "return nll.sum()", first=("test_loss.py",)),
    Mutant("loss-grad-not-over-n", "minicnn/losses.py",
           "grad *= probs.dtype.type(scale / n)", "grad *= probs.dtype.type(scale)",
           first=("test_loss.py",)),
    Mutant("batchnorm-running-var-biased", "minicnn/layers/normalization.py",
           "m * var * (count / (count - 1))", "m * var", first=("test_layers.py",)),
    Mutant("batchnorm-mean-term-numpy", "minicnn/kernels/numpy_kernels.py",
           "dx = scale * (dy - (dbeta / count)[_CHANNEL]",
           "dx = scale * (dy - (dbeta / (count + 1))[_CHANNEL]",
           first=("test_gradcheck_layers.py::test_batchnorm_gradients",)),
    Mutant("batchnorm-mean-term-numba", "minicnn/kernels/numba_kernels.py",
           "bm = dy_flat.dtype.type(dbeta[c] / count)",
           "bm = dy_flat.dtype.type(dbeta[c] / (count + 1))",
           first=("test_gradcheck_layers.py::test_batchnorm_gradients_on_every_cpu_backend",)),
    Mutant("batchnorm-relu-mask-numba", "minicnn/kernels/numba_kernels.py",
           "g = g * ((v * a + b) > zero)\n                dx_flat",
           "g = g * ((v * a + b) >= zero)\n                dx_flat",
           first=("test_fusion.py::test_the_fused_kernels_compute_what_the_two_layers_kernels_do",)),
    Mutant("col2im-crop-numpy", "minicnn/kernels/numpy_kernels.py",
           "return dx_padded[:, :, ph : ph + h, pw : pw + w]",
           "return dx_padded[:, :, :h, :w]",
           first=("test_gradcheck_layers.py::test_conv2d_gradients",)),
    Mutant("col2im-last-row-numba", "minicnn/kernels/numba_kernels.py",
           "for oh in range(oh_first, oh_stop):\n                        source = row",
           "for oh in range(oh_first, oh_stop - 1):\n                        source = row",
           first=("test_gradcheck_layers.py::test_conv2d_gradients",)),
    Mutant("maxpool-backward-assign-numpy", "minicnn/kernels/numpy_kernels.py",
           "dx[_window_slab(i, j, dy.shape[2:], stride)] += dy * (argmax == i * kw + j)",
           "dx[_window_slab(i, j, dy.shape[2:], stride)] = dy * (argmax == i * kw + j)",
           first=("test_gradcheck_layers.py::test_pool_gradients",)),
    Mutant("maxpool-backward-assign-numba", "minicnn/kernels/numba_kernels.py",
           "dx_flat[_u(winner)] += dy_flat[q]", "dx_flat[_u(winner)] = dy_flat[q]",
           first=("test_gradcheck_layers.py::test_pool_gradients",)),
    Mutant("adam-step-count", "minicnn/optim.py",
           "self.count, self.weight_decay, self.decoupled)",
           "self.count + 1, self.weight_decay, self.decoupled)", first=("test_optim.py",)),
    Mutant("winograd-transform-entry", "minicnn/kernels/winograd.py",
           "[0, -2, -1, 2, 1, 0],", "[0, -2, -1, 2, 2, 0],", first=("test_winograd.py",)),
    Mutant("winograd-overlap-assign-numba", "minicnn/kernels/numba_winograd.py",
           "planes[_u(out + 4)] += w4", "planes[_u(out + 4)] = w4",
           first=("test_winograd.py::test_winograd_matches_the_naive_loops",)),
    Mutant("winograd-written-out-transform-numba", "minicnn/kernels/numba_winograd.py",
           "return y0, even + odd, even - odd, even4 + odd8, even4 - odd8, y3",
           "return y0, even + odd, even - odd, even4 + odd8, even4 + odd8, y3",
           first=("test_winograd.py",)),
    Mutant("direct-weight-gradient-column-shift", "minicnn/kernels/numba_direct.py",
           "b[e] = ((n * c_count + c) * hp + ij // 3) * wp + ij % 3",
           "b[e] = ((n * c_count + c) * hp + ij // 3) * wp + ij // 3",
           first=("test_direct_conv.py::"
                  "test_a_conv2d_layer_computes_the_same_summed_directly_as_with_im2col",)),
    Mutant("gpu-rate-not-kept", "minicnn/optim.py",
           "            self._on_device[0].fill(self._lr)",
           "            pass  # the GPU's copy of lr left as it was",
           first=("test_cuda_sources.py",)),
    Mutant("cupy-grid-rounded-down", "minicnn/kernels/cupy_kernels.py",
           "blocks = (total + _THREADS_PER_BLOCK - 1) // _THREADS_PER_BLOCK",
           "blocks = total // _THREADS_PER_BLOCK", first=("test_cuda_sources.py",)),
]

# numba compiles these files, and its compiled code reads values from them: a mutant planted in
# one would meet the others' cached machine code, compiled from the file as it was
NUMBA_SEES = ("minicnn/kernels/numba_kernels.py", "minicnn/kernels/numba_winograd.py",
              "minicnn/kernels/numba_direct.py", "minicnn/kernels/numba_dots.py",
              "minicnn/kernels/cpu_runtime.py",
              "minicnn/kernels/winograd.py", "minicnn/kernels/__init__.py")

# tests/test_architecture.py's check that each mutant's snippet is in the source, which a planted
# mutant fails whatever the other tests do
SNIPPET_TEST = "tests/test_architecture.py::test_every_planted_bug_of_the_mutation_check_finds_its_line"

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


def copy_numba_cache(target: Path) -> None:
    """The machine code numba cached beside your checkout's sources (``__pycache__``), valid
    for the copies: copy2 keeps the sources' time stamps."""
    for cached in (ROOT / "minicnn").rglob("__pycache__/*.nb[ic]"):
        destination = target / cached.relative_to(ROOT)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(cached, destination)


def plant(folder: Path, mutant: Mutant) -> None:
    path = folder / mutant.path
    text = path.read_text()
    count = text.count(mutant.original)
    if count != 1:
        raise SystemExit(f"mutant {mutant.name}: snippet found {count} times in {mutant.path} "
                         f"(expected once): {mutant.original!r}")
    path.write_text(text.replace(mutant.original, mutant.mutated))


def restore(folder: Path, mutant: Mutant) -> None:
    """The file as in the checkout, its time stamp included (numba's cache index reads it)."""
    shutil.copy2(ROOT / mutant.path, folder / mutant.path)


def run(mutant: Mutant, folder: Path) -> dict:
    plant(folder, mutant)
    try:
        with tempfile.TemporaryDirectory(prefix="numba-cache-") as own_cache:
            env = {name: value for name, value in os.environ.items() if name != "NUMBA_CACHE_DIR"}
            # the "mutants" hypothesis profile: a failing example is not shrunk (tests/conftest.py)
            env.update(MINICNN_HIDE_TORCH="1", PYTHONPATH=str(folder), PYTHONDONTWRITEBYTECODE="1",
                       HYPOTHESIS_PROFILE="mutants")
            if mutant.path in NUMBA_SEES:
                env["NUMBA_CACHE_DIR"] = own_cache  # else the copy's __pycache__, shared

            def pytest(tests):
                # -n 0: in this order, in one process, stopping at the first failure; without
                # the test that finds every mutant's snippet in the source (a planted one is not)
                command = [sys.executable, "-m", "pytest", "-x", "-q", "-n", "0",
                           "-p", "no:cacheprovider", "--deselect", SNIPPET_TEST,
                           *[f"tests/{name}" for name in tests]]
                return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)

            # every file named: given the folder too, pytest would collect in its own
            # (alphabetical) order; a test named beside its file would run where the file does
            files = list(dict.fromkeys([name.split("::")[0] for name in mutant.first] + FIRST))
            rest = sorted(p.name for p in (folder / "tests").glob("test_*.py")
                          if p.name not in files)
            start = time.perf_counter()
            result = pytest(mutant.first)  # the tests likeliest to catch it, alone
            if result.returncode == 0:  # they pass: the whole suite, their files first
                result = pytest(files + rest)
            seconds = time.perf_counter() - start
    finally:
        restore(folder, mutant)
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
    with tempfile.TemporaryDirectory(prefix="mutants-") as folder:
        folder = Path(folder)
        copy_checkout(folder)
        copy_numba_cache(folder)
        for mutant in mutants:
            row = run(mutant, folder)
            rows.append(row)
            print(f"{row['mutant']:<32} {row['verdict']:<10} {row['seconds']:5.0f} s  "
                  f"{row['by']}", flush=True)
            if row["verdict"] != "caught":
                print(row["output"], file=sys.stderr)
    missed = [row["mutant"] for row in rows if row["verdict"] != "caught"]
    print(f"\n{len(rows) - len(missed)} of {len(rows)} planted bugs caught without PyTorch"
          + (f"; not caught: {', '.join(missed)}" if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
