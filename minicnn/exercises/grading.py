"""Grading one exercise: run the learner's function on the exercise's cases, compare every
array it returns with the reference solution, and say *where* and, when it can, *why* an answer
is wrong (a classic mistake recognized by its answer, a constant factor, a transposed shape).

The grader runs the learner's code the way the layers of ``minicnn exercises train`` will: each
exercise in a child process with a time limit (a hang, ``sys.exit`` or a crash of the
interpreter is named, and the grader goes on), the function called with its arguments *by
position*, in the reference's order, as the layers call it; an answer that changes an argument in
place, or returns what the layers cannot use (None, a list, a tuple for one array, another
dtype), fails with words that say so. Each exercise's cases end with one in float32, the dtype
``train`` runs in.
"""

from __future__ import annotations

import copy
import importlib.machinery
import importlib.util
import inspect
import json
import linecache
import os
import signal
import subprocess
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_bytes
from .course import BY_NAME, Case, Exercise

RTOL = 1e-6  # float64 cases: a right answer agrees to ~1e-12; a wrong one is off by far more
RTOL_FLOAT32 = 1e-4  # the float32 case: a right answer agrees to ~1e-6
TIME_LIMIT = 10.0  # seconds for one exercise's cases: a right answer takes well under one


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
    """What a function returned, as a tuple of its ``count`` arrays."""
    return value if isinstance(value, tuple) and count > 1 else (value,)


def _close(got: np.ndarray, expected: np.ndarray) -> np.ndarray:
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    if np.asarray(expected).dtype == np.float32:
        return np.isclose(got, expected, rtol=RTOL_FLOAT32, atol=1e-6 * scale)
    return np.isclose(got, expected, rtol=RTOL, atol=1e-9 * scale)


def _distinct(got: float, want: float) -> tuple[str, str]:
    """The two numbers with as many digits as it takes to tell them apart (6 to 17)."""
    for digits in range(6, 18):
        shown, expected = f"{got:.{digits}g}", f"{want:.{digits}g}"
        if shown != expected:
            break
    return shown, expected


def grade(exercise: Exercise, path: Path, time_limit: float = TIME_LIMIT) -> Grade:
    """Grade the learner's answer in ``path`` in a child process (see the module docstring)."""
    path = Path(path)
    if not path.is_file():  # said without starting a process
        return Grade(exercise, False, 0, [f"{path.name} is not there: run `minicnn exercises "
                                          f"start {path.parent}` to write the exercise files"])
    with tempfile.TemporaryDirectory(prefix="minicnn-grade-") as folder:
        result = Path(folder) / "grade.json"
        progress = Path(folder) / "case"
        command = [sys.executable, "-m", "minicnn.exercises.grading", exercise.name, str(path),
                   str(result), str(progress)]
        # the child imports this very minicnn, wherever it was imported from
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [package_root, *filter(None, [os.environ.get("PYTHONPATH")])]))
        try:
            done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, timeout=time_limit, cwd=path.parent, env=env)
        except subprocess.TimeoutExpired:
            where = _read(progress)
            return Grade(exercise, False, 0, [
                f"your function did not finish within {time_limit:g} s{where}: an endless loop? "
                "(a right answer takes well under a second)"])
        if result.is_file():
            graded = json.loads(result.read_text())
            return Grade(exercise, graded["passed"], graded["cases"], graded["report"])
        where = _read(progress)
    if done.returncode < 0:
        try:
            name = signal.Signals(-done.returncode).name
        except ValueError:
            name = f"signal {-done.returncode}"
        return Grade(exercise, False, 0, [f"the Python interpreter running your code crashed "
                                          f"({name}){where}"])
    return Grade(exercise, False, 0, [
        f"your code ended the process (exit code {done.returncode}, e.g. sys.exit() or "
        f"os._exit()){where} before it was graded: the layers need your function to return"])


def _read(progress: Path) -> str:
    try:
        return f", on {progress.read_text().strip()}"
    except OSError:
        return ""


def _grade_here(exercise: Exercise, path: Path, progress: Path | None = None) -> Grade:
    """The grading itself, in this process (the child's)."""
    try:
        function = load_function(exercise, path)
    except _Stop as stop:
        return Grade(exercise, False, 0, [str(stop)])
    cases = exercise.cases()
    cases.append(_in_float32(cases[0]))
    for number, case in enumerate(cases, 1):
        if progress is not None:
            atomic_write_bytes(progress, f"case {number} of {len(cases)} ({case.description})"
                               .encode())
        problems = _grade_case(exercise, function, case, path)
        if problems:
            head = (f"case {number} of {len(cases)} ({case.description}): " if
                    not problems[0].startswith("not written") else "")
            return Grade(exercise, False, number - 1, [head + problems[0], *problems[1:]])
    return Grade(exercise, True, len(cases), [f"all {len(cases)} cases right"])


def _in_float32(case: Case) -> Case:
    """The case with its floating-point arrays in float32, as ``train`` runs."""
    arguments = {name: value.astype(np.float32) if isinstance(value, np.ndarray) and
                 value.dtype.kind == "f" else value for name, value in case.arguments.items()}
    return Case(f"{case.description}, in float32 as train runs", arguments)


def _grade_case(exercise: Exercise, function, case, path: Path) -> list[str]:
    """Nothing when the learner's answer is right; otherwise what is wrong, in lines."""
    outputs = exercise.outputs
    linecache.checkcache(str(path))  # tracebacks quote the file as it is now
    order = list(inspect.signature(exercise.solution).parameters)  # as the layers call it
    arguments = copy.deepcopy(case.arguments)
    try:
        with np.errstate(all="ignore"):  # an overflow is reported as what it did to the answer
            answer = function(*[arguments[name] for name in order])
    except NotImplementedError:
        return [f"not written yet: replace the TODO in {path.name}"]
    except SystemExit as exit_:
        return [f"your code called sys.exit({exit_.code if exit_.code is not None else ''}): "
                "the layers need your function to return its answer"]
    except Exception as err:
        return [f"your function raised {_where(err, path)}"]
    for name in order:
        before, after = case.arguments[name], arguments[name]
        if isinstance(before, np.ndarray) and not (
                isinstance(after, np.ndarray) and after.shape == before.shape and
                np.array_equal(after, before, equal_nan=True)):
            return [f"your function changed its argument {name} in place: the layers pass their "
                    f"own arrays ({name} is kept by the layer), which train would then see "
                    f"change at every step. Compute into new arrays (or {name}.copy())"]
    expected = _as_tuple(exercise.solution(**copy.deepcopy(case.arguments)), len(outputs))
    problem = _returned(answer, outputs)
    if problem:
        return [problem]
    answer = _as_tuple(answer, len(outputs))
    for name, got, want in zip(outputs, answer, expected):
        problem = _compare(name, got, want)
        if problem:
            return [*problem, *_diagnose(exercise, case, answer)]
    return []


def _returned(answer, outputs: tuple[str, ...]) -> str | None:
    """What is wrong with the *kind* of value returned, for the layers that will use it."""
    wanted = ", ".join(outputs)
    if answer is None:
        return f"it returned None: a `return {wanted}` is missing"
    if len(outputs) == 1:
        if isinstance(answer, (tuple, list)):
            return (f"it returned a {type(answer).__name__} of {len(answer)} value(s); return "
                    f"one array: return {wanted}")
        values = [answer]
    else:
        if not isinstance(answer, tuple):
            return (f"it returned a {type(answer).__name__}; return the {len(outputs)} arrays "
                    f"as a tuple: return {wanted}")
        if len(answer) != len(outputs):
            return f"it returned {len(answer)} value(s); expected {len(outputs)}: ({wanted})"
        values = list(answer)
    for name, value in zip(outputs, values):
        if value is None:
            return f"{name} is None: was it computed and returned?"
        if not isinstance(value, np.ndarray):
            return (f"{name} is a {type(value).__name__}, not a NumPy array: the layers do "
                    f"array arithmetic with it (np.asarray, or build it with NumPy)")
    return None


def _compare(name: str, got: np.ndarray, want: np.ndarray) -> list[str]:
    if got.dtype != want.dtype:
        return [f"{name} has dtype {got.dtype}; expected {want.dtype}, the dtype of the inputs "
                f"(np.zeros(shape) is float64: np.zeros_like, or dtype=x.dtype)"]
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
        shown, expected = _distinct(float(got[index]), float(want[index]))
        lines.append(f"  {name}[{', '.join(map(str, index))}] = {shown}, expected {expected}")
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


def _main(argv: list[str]) -> None:
    """The child: ``python -m minicnn.exercises.grading NAME PATH RESULT PROGRESS``."""
    name, path, result, progress = argv
    graded = _grade_here(BY_NAME[name], Path(path), Path(progress))
    # whole or not at all: the parent reads it after a time limit may have ended this process
    atomic_write_bytes(Path(result), json.dumps({"passed": graded.passed, "cases": graded.cases,
                                                 "report": graded.report}).encode())
    sys.stdout.flush()
    os._exit(0)  # the learner's threads or atexit handlers cannot hold the grade back


if __name__ == "__main__":
    _main(sys.argv[1:])
