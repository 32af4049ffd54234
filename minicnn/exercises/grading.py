"""Grading one exercise: run the learner's function on the exercise's cases, compare every
array it returns with the reference solution, and say *where* and, when it can, *why* an answer
is wrong (a classic mistake recognized by its answer, a constant factor, a transposed shape)."""

from __future__ import annotations

import copy
import importlib.machinery
import importlib.util
import linecache
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .course import Exercise

RTOL = 1e-6  # float64 cases: a right answer agrees to ~1e-12; a wrong one is off by far more


@dataclass
class Grade:
    exercise: Exercise
    passed: bool
    cases: int            # how many cases passed
    report: list[str]     # lines for a person


class _Stop(Exception):
    """The learner's code cannot be graded further (not written, does not run)."""


def load_function(exercise: Exercise, path: Path):
    """The learner's function from their file, or a _Stop naming what is missing."""
    if not path.is_file():
        raise _Stop(f"{path.name} is not there: run `minicnn exercises start {path.parent}` "
                    "to write the exercise files")
    # the learner's own file, imported as a module (it is their code, run at their request)
    name = f"_minicnn_exercise_{exercise.number:02d}"
    loader = _FreshSourceLoader(name, str(path))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader))
    try:
        loader.exec_module(module)
    except Exception as err:
        raise _Stop(f"{path.name} does not run: {_where(err, path)}") from None
    function = getattr(module, exercise.name, None)
    if not callable(function):
        raise _Stop(f"{path.name} has no function {exercise.name}(): keep the name the "
                    "template gave it")
    return function


class _FreshSourceLoader(importlib.machinery.SourceFileLoader):
    """Compiles the file's text every time, with no bytecode cache: an edit made within the
    same second as the last check (same size, same modification time) is still seen, and
    nothing is written into the learner's folder."""

    def get_code(self, fullname):
        return self.source_to_code(self.get_data(self.path), self.path)


def _where(err: BaseException, path: Path) -> str:
    """``line 12: dx = dy @ W: ValueError: ...``: the error at its line in the learner's file."""
    frames = [f for f in traceback.extract_tb(err.__traceback__)
              if Path(f.filename).resolve() == path.resolve()]
    lineno = getattr(err, "lineno", None) if isinstance(err, SyntaxError) else None
    if frames:
        frame = frames[-1]
        place = f"line {frame.lineno}: {frame.line.strip()}: " if frame.line else \
            f"line {frame.lineno}: "
    elif lineno:
        place = f"line {lineno}: "
    else:
        place = ""
    return f"{place}{type(err).__name__}: {err}"


def _as_tuple(value, count: int) -> tuple:
    """What a function returned, as a tuple of its ``count`` arrays (a list of them is fine)."""
    if count > 1 and isinstance(value, list):
        return tuple(value)
    return value if isinstance(value, tuple) else (value,)


def _close(got: np.ndarray, expected: np.ndarray) -> np.ndarray:
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    return np.isclose(got, expected, rtol=RTOL, atol=1e-9 * scale)


def grade(exercise: Exercise, path: Path) -> Grade:
    try:
        function = load_function(exercise, path)
    except _Stop as stop:
        return Grade(exercise, False, 0, [str(stop)])
    cases = exercise.cases()
    for number, case in enumerate(cases, 1):
        problems = _grade_case(exercise, function, case, path)
        if problems:
            head = (f"case {number} of {len(cases)} ({case.description}): " if
                    not problems[0].startswith("not written") else "")
            return Grade(exercise, False, number - 1, [head + problems[0], *problems[1:]])
    return Grade(exercise, True, len(cases), [f"all {len(cases)} cases right"])


def _grade_case(exercise: Exercise, function, case, path: Path) -> list[str]:
    """Nothing when the learner's answer is right; otherwise what is wrong, in lines."""
    outputs = exercise.outputs
    linecache.checkcache(str(path))  # tracebacks quote the file as it is now
    try:
        with np.errstate(all="ignore"):  # an overflow is reported as what it did to the answer
            answer = function(**copy.deepcopy(case.arguments))
    except NotImplementedError:
        return [f"not written yet: replace the TODO in {path.name}"]
    except Exception as err:
        return [f"your function raised {_where(err, path)}"]
    expected = _as_tuple(exercise.solution(**copy.deepcopy(case.arguments)), len(outputs))
    answer = _as_tuple(answer, len(outputs))
    if len(answer) != len(outputs):
        return [f"it returned {len(answer)} value(s); expected {len(outputs)}: "
                f"({', '.join(outputs)})"]
    for name, got, want in zip(outputs, answer, expected):
        problem = _compare(name, got, want)
        if problem:
            return [*problem, *_diagnose(exercise, case, answer)]
    return []


def _compare(name: str, got, want: np.ndarray) -> list[str]:
    try:
        got = np.asarray(got, dtype=np.float64)
    except (TypeError, ValueError):
        return [f"{name} is a {type(got).__name__}, not an array of numbers"]
    if got.shape != want.shape:
        if got.shape == want.shape[::-1] and got.ndim == 2:
            return [f"{name} has shape {got.shape}, the transpose of the expected {want.shape}"]
        return [f"{name} has shape {got.shape}; expected {want.shape}"]
    if not np.isfinite(got).all():
        bad = int((~np.isfinite(got)).sum())
        return [f"{name} holds {bad} NaN or infinite value(s) where {name} is finite: an "
                "overflow? (exp of a large number: subtract the maximum first)"]
    close = _close(got, want)
    if close.all():
        return []
    wrong = np.argwhere(~close)
    lines = [f"{name}: {len(wrong)} of {got.size} entries wrong"]
    for index in wrong[:3]:
        index = tuple(int(i) for i in index)
        lines.append(f"  {name}[{', '.join(map(str, index))}] = {got[index]:.6g}, expected "
                     f"{want[index]:.6g}")
    factor = _constant_factor(got, want)
    if factor is not None:
        lines.append(f"  every entry is {factor:.6g} times the expected one")
    elif not got.any():
        lines.append(f"  {name} is all zeros: was anything written into it?")
    return lines


def _constant_factor(got: np.ndarray, want: np.ndarray) -> float | None:
    mask = np.abs(want) > 1e-9 * max(1.0, float(np.abs(want).max(initial=0.0)))
    if not mask.any():
        return None
    ratios = got[mask] / want[mask]
    factor = float(np.median(ratios))
    if abs(factor - 1) > 1e-6 and np.allclose(ratios, factor, rtol=1e-6) and \
            np.allclose(got[~mask], 0, atol=1e-9):
        return factor
    return None


def _diagnose(exercise: Exercise, case, answer) -> list[str]:
    """The classic mistake whose answer equals the learner's, in plain words."""
    for mistake in exercise.mistakes:
        planted = _as_tuple(mistake.answer(**copy.deepcopy(case.arguments)),
                            len(exercise.outputs))
        try:
            same = all(np.shape(a) == np.shape(p) and _close(np.asarray(a, dtype=np.float64),
                                                             np.asarray(p)).all()
                       for a, p in zip(answer, planted))
        except (TypeError, ValueError):
            same = False
        if same:
            return [f"This looks like a classic mistake: {mistake.words}."]
    return []
