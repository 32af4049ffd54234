"""``minicnn exercises``: a graded course in backprop. You write the backward passes; the grader
says whether, and where, they are wrong.

    minicnn exercises start DIR                 # one file per exercise, with a TODO
    minicnn exercises check [NAME] --dir DIR    # grade them (all, or one; DIR: default here)
    minicnn exercises check NAME --hint         # the next hint, one more each time
    minicnn exercises check NAME --reveal       # the reference solution (shown after a pass too)
    minicnn exercises train --dir DIR           # MNIST with your layers and optimizer

The thirteen exercises go from the Dense layer to the convolution and BatchNorm, then the
convolution's forward pass, average pooling, SGD with momentum and Adam (see
:data:`EXERCISES`). Each file holds the signature, the derivation up to the step to write, and a
TODO. The grader (:mod:`.grading`) runs the function on drawn cases (every layout the layers
meet, values that hide nothing), compares every array with the reference
solutions (:mod:`.solutions`, held to minicnn's layers, ``minicnn.naive`` and central
differences by the tests), names the wrong entries and recognizes the classic mistakes by their
answers. Progress (passes, hints seen) is kept in ``DIR/progress.json``.
"""

from __future__ import annotations

import inspect
import json
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

from ..atomic import atomic_write_bytes
from .course import BY_NAME, EXERCISES, Exercise
from .grading import Grade, grade

PROGRESS = "progress.json"


def exercise(name: str) -> Exercise:
    """The exercise called ``name`` (its function's name, or its number as text)."""
    for candidate in EXERCISES:
        if name in (candidate.name, str(candidate.number), f"{candidate.number:02d}"):
            return candidate
    raise ValueError(f"no exercise {name!r}; the exercises are: "
                     + ", ".join(e.name for e in EXERCISES))


def start(folder) -> list[Path]:
    """Write every exercise's template into ``folder`` (created if needed). A file already there
    is kept as it is (it may hold your work); returns the files written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for item in EXERCISES:
        path = folder / item.file_name
        if path.exists():
            continue
        text = resources.files(__package__).joinpath("templates", item.file_name).read_bytes()
        atomic_write_bytes(path, text)
        written.append(path)
    if not (folder / PROGRESS).exists():
        _save_progress(folder, {"passed": {}, "hints": {}})
    return written


def check(folder, name: str | None = None) -> list[Grade]:
    """Grade one exercise (``name``) or all of them, in order; record the passes."""
    folder = Path(folder)
    chosen = [exercise(name)] if name else list(EXERCISES)
    grades = [grade(item, folder / item.file_name) for item in chosen]
    progress = load_progress(folder)
    for result in grades:
        if result.passed:
            progress["passed"].setdefault(result.exercise.name,
                                          datetime.now(timezone.utc).isoformat(timespec="seconds"))
    if any((folder / item.file_name).is_file() for item in EXERCISES):  # an exercises folder
        _save_progress(folder, progress)
    return grades


def next_hint(folder, name: str) -> list[str]:
    """The hints of exercise ``name`` seen so far, plus the next one (recorded in progress)."""
    folder, item = Path(folder), exercise(name)
    progress = load_progress(folder)
    seen = min(len(item.hints), progress["hints"].get(item.name, 0) + 1)
    progress["hints"][item.name] = seen
    _save_progress(folder, progress)
    return list(item.hints[:seen])


def solution_source(name: str) -> str:
    """The reference solution of exercise ``name``, as source code."""
    return inspect.getsource(exercise(name).solution)


def load_progress(folder) -> dict:
    path = Path(folder) / PROGRESS
    try:
        progress = json.loads(path.read_text())
    except (OSError, ValueError):
        progress = {}
    if not isinstance(progress, dict):
        progress = {}
    progress.setdefault("passed", {})
    progress.setdefault("hints", {})
    return progress


def _save_progress(folder: Path, progress: dict) -> None:
    atomic_write_bytes(folder / PROGRESS, (json.dumps(progress, indent=1) + "\n").encode())


__all__ = ["BY_NAME", "EXERCISES", "Exercise", "Grade", "check", "exercise", "grade",
           "load_progress", "next_hint", "solution_source", "start"]
