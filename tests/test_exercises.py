"""minicnn exercises: the reference solutions are right (held to minicnn's layers, naive loops
and central differences), every classic mistake planted into a solution is caught and named, a
stub fails with a clear message, and the command line does what the templates tell a learner."""

import copy
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minicnn as mc
from minicnn import exercises, naive
from minicnn.exercises import solutions
from minicnn.exercises.grading import grade
from minicnn.gradcheck import numerical_gradient, relative_error
from minicnn.kernels import numpy_kernels as K
from minicnn.layers import AvgPool2D, BatchNorm2D, Dense, MaxPool2D, ReLU
from minicnn.layers.base import Parameter

CASES = [(item, case) for item in exercises.EXERCISES for case in item.cases()]


def ids(pair):
    item, case = pair
    return f"{item.name}-{case.description}"


def agree(a, b, tolerance=1e-9):
    assert relative_error(np.asarray(a), np.asarray(b)) <= tolerance


# -- the reference solutions, against minicnn -------------------------------------------------------

@pytest.mark.parametrize("pair", CASES, ids=[ids(p) for p in CASES])
def test_every_reference_solution_agrees_with_minicnn(pair):
    item, case = pair
    a = copy.deepcopy(case.arguments)
    answer = item.solution(**copy.deepcopy(a))
    if item.name == "dense_backward":
        layer = Dense(*a["W"].shape).astype(np.float64)
        layer.weight.data = a["W"]
        layer.forward(a["x"])
        dx = layer.backward(a["dy"])
        for mine, theirs in zip(answer, (dx, layer.weight.grad, layer.bias.grad)):
            agree(mine, theirs)
    elif item.name == "relu_backward":
        layer = ReLU()
        layer.forward(a["x"])
        agree(answer, layer.backward(a["dy"]))
    elif item.name == "softmax_cross_entropy_backward":
        loss = mc.losses.SoftmaxCrossEntropy()
        loss.forward(a["logits"], a["labels"])
        agree(answer, loss.backward())
    elif item.name == "maxpool_backward":
        agree(answer, naive.maxpool2d_backward(a["dy"], a["x"], a["kernel"], a["stride"]))
        layer = MaxPool2D(a["kernel"], a["stride"])
        layer.forward(a["x"])
        agree(answer, layer.backward(a["dy"]))
    elif item.name == "im2col":
        agree(answer, K.im2col(a["x"], a["kernel"], a["stride"], a["padding"]), 0)
    elif item.name == "conv_backward_cols":
        dW2, dcols = answer
        agree(dW2, a["dout"] @ a["cols"].T)
        agree(dcols, a["W2"].T @ a["dout"])
    elif item.name == "col2im":
        agree(answer, K.col2im(a["dcols"], a["x_shape"], a["kernel"], a["stride"],
                               a["padding"]))
    elif item.name == "conv_forward":
        agree(answer, naive.conv2d_forward(a["x"], a["W"], a["b"], a["stride"], a["padding"]))
    elif item.name == "avgpool_backward":
        agree(answer, K.avgpool_backward(a["dy"], a["x_shape"], a["kernel"], a["stride"]))
        layer = AvgPool2D(a["kernel"], a["stride"])
        layer.forward(np.zeros(a["x_shape"]))
        agree(answer, layer.backward(a["dy"]))
    elif item.name == "sgd_momentum_step":  # minicnn's SGD, its velocity where the case's is
        weight = Parameter(a["w"].copy())
        sgd = mc.optim.SGD([weight], lr=a["lr"], momentum=a["momentum"])
        if a["velocity"].any():
            sgd.state[0]["momentum_buffer"] = a["velocity"].copy()
        weight.grad = a["grad"]
        sgd.step()
        agree(answer[0], weight.data)
        agree(answer[1], sgd.state[0]["momentum_buffer"])
    elif item.name == "adam_step":  # minicnn's Adam at step t, its moments the case's
        weight = Parameter(a["w"].copy())
        adam = mc.optim.Adam([weight], lr=a["lr"], betas=(a["beta1"], a["beta2"]), eps=a["eps"])
        adam.state[0] = {"exp_avg": a["m"].copy(), "exp_avg_sq": a["v"].copy()}
        adam.step_count = a["t"] - 1
        weight.grad = a["grad"]
        adam.step()
        for mine, theirs in zip(answer, (weight.data, adam.state[0]["exp_avg"],
                                         adam.state[0]["exp_avg_sq"])):
            agree(mine, theirs)
    else:  # BatchNorm, both forms: the layer in training mode, and central differences
        layer = BatchNorm2D(a["x"].shape[1], eps=a["eps"]).astype(np.float64)
        layer.gamma.data = a["gamma"]
        layer.forward(a["x"], training=True)
        dx = layer.backward(a["dy"])
        for mine, theirs in zip(answer, (dx, layer.gamma.grad, layer.beta.grad)):
            agree(mine, theirs)
        x = a["x"].copy()
        numeric = numerical_gradient(lambda: (layer.forward(x, training=True) * a["dy"]).sum(),
                                     x)
        agree(answer[0], numeric, 1e-6)


def test_the_convolution_exercises_compose_into_the_naive_convolution():
    """im2col, then the columns' backward, then col2im: the naive loops' dx and dW."""
    rng = np.random.default_rng(3)
    x, W = rng.standard_normal((2, 3, 6, 5)), rng.standard_normal((4, 3, 3, 2))
    stride, padding = (2, 1), (1, 1)
    y = naive.conv2d_forward(x, W, None, stride, padding)
    dy = rng.standard_normal(y.shape)
    cols = solutions.im2col(x, (3, 2), stride, padding)
    dout = dy.transpose(1, 0, 2, 3).reshape(4, -1)
    dW2, dcols = solutions.conv_backward_cols(cols, W.reshape(4, -1), dout)
    dx = solutions.col2im(dcols, x.shape, (3, 2), stride, padding)
    dx_naive, dW_naive, _ = naive.conv2d_backward(dy, x, W, stride, padding)
    agree(dx, dx_naive)
    agree(dW2.reshape(W.shape), dW_naive)


# -- grading -------------------------------------------------------------------------------------

def write(folder, item, source: str):
    """``source`` as the learner's file, with the imports its template starts with."""
    imports = "import numpy as np\n"
    if item.name == "conv_forward":
        imports += "\nfrom minicnn.exercises.solutions import im2col\n"
    (folder / item.file_name).write_text(imports + "\n\n" + source)


def answer_file(folder, item, function):
    """A learner's file whose function returns what ``function`` returns."""
    source = inspect.getsource(function)
    name = function.__name__
    write(folder, item, source + f"\n\n{item.name} = {name}\n" if name != item.name else source)


@pytest.fixture
def folder(tmp_path):
    exercises.start(tmp_path)
    return tmp_path


def test_the_stubs_fail_with_a_clear_message(folder):
    grades = exercises.check(folder)
    assert len(grades) == len(exercises.EXERCISES) >= 8
    for result in grades:
        assert not result.passed
        assert result.report == [f"not written yet: replace the TODO in "
                                 f"{result.exercise.file_name}"]


def test_the_reference_solutions_pass_and_the_pass_is_recorded(folder):
    for item in exercises.EXERCISES:
        write(folder, item, inspect.getsource(item.solution))
    grades = exercises.check(folder)
    assert all(result.passed for result in grades), [r.report for r in grades]
    assert all(result.cases >= 3 for result in grades)
    progress = json.loads((folder / "progress.json").read_text())
    assert set(progress["passed"]) == {item.name for item in exercises.EXERCISES}


MISTAKES = [(item, mistake) for item in exercises.EXERCISES for mistake in item.mistakes]


@pytest.mark.parametrize("pair", MISTAKES, ids=[f"{i.name}-{n}" for n, (i, m) in
                                                 enumerate(MISTAKES)])
def test_every_classic_mistake_is_caught_and_named(tmp_path, pair):
    item, mistake = pair
    module = inspect.getmodule(mistake.answer)
    source = inspect.getsource(module) if mistake.answer.__name__ == "<lambda>" else None
    path = tmp_path / item.file_name
    # the mistake as a learner's file: the planted function under the exercise's name
    if source is None:
        path.write_text(f"from {module.__name__} import {mistake.answer.__name__} as "
                        f"{item.name}\n")
    else:
        index = item.mistakes.index(mistake)
        path.write_text(f"from {module.__name__} import BY_NAME\n\n"
                        f"{item.name} = BY_NAME[{item.name!r}].mistakes[{index}].answer\n")
    result = grade(item, path)
    assert not result.passed
    text = "\n".join(result.report)
    assert f"This looks like a classic mistake: {mistake.words}." in text, text
    assert "case " in result.report[0]  # which case, with its shapes


def test_a_wrong_answer_says_where(folder):
    item = exercises.exercise("dense_backward")
    write(folder, item, """def dense_backward(x, W, dy):
    return dy @ W.T, x.T @ dy, dy.sum(axis=0) + 1.0
""")
    report = grade(item, folder / item.file_name).report
    assert report[0].startswith("case 1 of 4 (x (4, 5), W (5, 3), dy (4, 3)): db: 3 of 3 "
                                "entries wrong")
    assert report[1].startswith("  db[0] = ")


def test_shapes_factors_errors_and_syntax_are_named(folder):
    item = exercises.exercise("softmax_cross_entropy_backward")
    write(folder, item, "def softmax_cross_entropy_backward(logits, labels):\n"
                        "    return np.zeros((2, 2))\n")
    assert "dlogits has shape (2, 2); expected (4, 3)" in grade(item, folder /
                                                                 item.file_name).report[0]
    write(folder, item, inspect.getsource(solutions.softmax_cross_entropy_backward).replace(
        "return (p - onehot) / n", "return 2 * (p - onehot) / n"))
    assert "  every entry is 2 times the expected one" in grade(item, folder /
                                                                item.file_name).report
    write(folder, item, "def softmax_cross_entropy_backward(logits, labels):\n"
                        "    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)\n"
                        "    p[np.arange(len(p)), labels] -= 1\n    return p / len(p)\n")
    report = grade(item, folder / item.file_name).report
    assert "huge logits" in report[0] and "NaN or infinite" in report[0]
    write(folder, item, "def softmax_cross_entropy_backward(logits, labels):\n"
                        "    return logits @ labels\n")
    report = grade(item, folder / item.file_name).report
    assert "your function raised line 5: return logits @ labels: ValueError" in report[0]
    write(folder, item, "def softmax_cross_entropy_backward(logits, labels)\n    pass\n")
    assert "does not run: line 4: SyntaxError" in grade(item, folder / item.file_name).report[0]
    (folder / item.file_name).unlink()
    assert "is not there: run `minicnn exercises start" in grade(
        item, folder / item.file_name).report[0]


def test_a_folder_without_exercises_is_left_alone(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    grades = exercises.check(elsewhere)
    assert "is not there: run `minicnn exercises start" in grades[0].report[0]
    assert list(elsewhere.iterdir()) == []  # no progress.json dropped into a random folder


# -- what the layers of `train` cannot use is refused --------------------------------------------

RIGHT_RELU = "def relu_backward(x, dy):\n    return dy * (x > 0)\n"


@pytest.mark.parametrize("source, words", [
    # the layers call relu_backward(x, dy) by position: swapped names compute dx = x * (dy > 0)
    ("def relu_backward(dy, x):\n    return dy * (x > 0)\n", "dx: "),
    ("def relu_backward(x, dy):\n    dx = dy * (x > 0)\n", "it returned None: a `return dx`"),
    ("def relu_backward(x, dy):\n    return (dy * (x > 0),)\n", "it returned a tuple of 1"),
    ("def relu_backward(x, dy):\n    return (dy * (x > 0)).tolist()\n", "it returned a list"),
    ("def relu_backward(x, dy):\n    return np.where(x > 0, dy, 0).astype(np.float64)\n",
     "dx has dtype float64; expected float32"),
    ("def relu_backward(x, dy):\n    dy[x <= 0] = 0\n    return dy\n",
     "changed its argument dy in place"),
    ("def relu_backward(x, dy):\n    while True:\n        pass\n", "did not finish within"),
    ("import sys\n\n\ndef relu_backward(x, dy):\n    sys.exit(0)\n", "called sys.exit(0)"),
    ("import os\n\n\ndef relu_backward(x, dy):\n    os._exit(3)\n",
     "ended the process (exit code 3, e.g. sys.exit() or os._exit()), on case 1 of"),
    ("import os, signal\n\n\ndef relu_backward(x, dy):\n    os.kill(os.getpid(), "
     "signal.SIGSEGV)\n", "crashed (SIGSEGV)"),
])
def test_what_train_cannot_use_fails_with_the_reason(folder, source, words):
    item = exercises.exercise("relu_backward")
    write(folder, item, RIGHT_RELU)
    assert grade(item, folder / item.file_name).passed  # the right answer, as a learner writes it
    write(folder, item, source)
    result = grade(item, folder / item.file_name, time_limit=5)
    assert not result.passed and words in result.report[0], result.report


def test_an_argument_changed_in_place_is_named(folder):
    """A BatchNorm backward that divides a view of gamma in place computes the right values, and
    corrupts the layer's gamma at every training step."""
    item = exercises.exercise("batchnorm_backward_compact")
    source = inspect.getsource(solutions.batchnorm_backward_compact)
    write(folder, item, source)
    assert grade(item, folder / item.file_name).passed
    write(folder, item, source.replace("    return ", "    view = gamma.reshape(-1)\n"
                                                      "    view *= 1.0000001\n    return ", 1))
    report = grade(item, folder / item.file_name).report
    assert "changed its argument gamma in place" in report[0], report


def test_values_that_differ_are_shown_with_digits_enough_to_see_it(folder):
    item = exercises.exercise("relu_backward")
    # 3e-6 apart, over the tolerance of 1e-6: six digits would often print the same number
    write(folder, item, "def relu_backward(x, dy):\n    return dy * (x > 0) * (1 + 3e-6)\n")
    lines = grade(item, folder / item.file_name).report[1:4]
    for line in lines:
        got, expected = re.match(r"  dx\[[\d, ]+\] = (\S+), expected (\S+)", line).groups()
        assert got != expected and float(got) / float(expected) == pytest.approx(1 + 3e-6,
                                                                                 abs=2e-6), line


def test_start_keeps_a_learners_work(folder):
    path = folder / exercises.EXERCISES[0].file_name
    path.write_text("# my work\n")
    assert exercises.start(folder) == []
    assert path.read_text() == "# my work\n"


def test_hints_come_one_more_each_time_and_are_remembered(folder):
    item = exercises.exercise("maxpool_backward")
    assert exercises.next_hint(folder, "maxpool_backward") == list(item.hints[:1])
    assert exercises.next_hint(folder, "4") == list(item.hints[:2])
    for _ in range(5):
        hints = exercises.next_hint(folder, "maxpool_backward")
    assert hints == list(item.hints)
    assert exercises.load_progress(folder)["hints"]["maxpool_backward"] == len(item.hints)
    with pytest.raises(ValueError, match="no exercise 'nope'; the exercises are: dense_backward"):
        exercises.exercise("nope")


def minicnn(*arguments, cwd):
    return subprocess.run([sys.executable, "-m", "minicnn", "exercises", *arguments], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_the_command_line_as_the_templates_describe_it(tmp_path):
    run = minicnn("start", "course", cwd=tmp_path)
    assert run.returncode == 0 and "13 exercise file(s) written" in run.stdout
    course = tmp_path / "course"
    run = minicnn("check", "dense_backward", cwd=course)
    assert run.returncode == 1 and "FAIL  1. dense_backward: not written yet" in run.stdout
    assert "minicnn exercises check dense_backward --hint" in run.stdout
    assert "def dense_backward" not in run.stdout  # no solution before a pass
    run = minicnn("check", "dense_backward", "--hint", cwd=course)
    assert run.stdout.startswith("hint 1 of 3: ") and "every hint" not in run.stdout
    for _ in range(3):  # hints 2 and 3, then the same three again: said so, with what is next
        run = minicnn("check", "dense_backward", "--hint", cwd=course)
    assert run.stdout.count(" of 3: ") == 3 and "That was every hint there is; minicnn exercises " \
        "check dense_backward --reveal shows the reference solution." in run.stdout
    write(course, exercises.exercise("dense_backward"),
          inspect.getsource(solutions.dense_backward))
    run = minicnn("check", "dense_backward", cwd=course)
    assert run.returncode == 0 and "PASS  1. dense_backward: all 4 cases right" in run.stdout
    assert "The reference solution" in run.stdout and "dW = x.T @ dy" in run.stdout
    run = minicnn("check", "--dir", str(course), cwd=tmp_path)
    assert run.returncode == 1 and "1 of 13 passed; next: minicnn exercises check relu_backward" \
        in run.stdout
    run = minicnn("check", "col2im", "--reveal", cwd=course)
    assert "def col2im(dcols, x_shape, kernel, stride, padding):" in run.stdout
    run = minicnn("list", "--dir", str(course), cwd=tmp_path)
    assert "passed  1. dense_backward" in run.stdout
    run = minicnn("check", "--hint", cwd=course)
    assert run.returncode == 2 and "--hint and --reveal need the exercise's NAME" in run.stderr
    # check, list and train take the folder the same way: --dir (train also as earlier, DIR)
    for where in (["--dir", str(course)], [str(course)]):
        run = minicnn("train", *where, "--quiet", cwd=tmp_path)
        assert run.returncode == 2 and "not yet: 2. relu_backward" in run.stderr, where
    run = minicnn("train", "--dir", str(course), str(tmp_path), cwd=tmp_path)
    assert run.returncode == 2 and "two folders given" in run.stderr


def test_train_refuses_until_the_exercises_pass(folder):
    from minicnn.exercises.training import train_with_your_layers

    with pytest.raises(ValueError, match="train needs every exercise it uses to pass first; "
                                         "not yet: 1. dense_backward"):
        train_with_your_layers(folder, verbose=0)


@pytest.mark.parametrize("left_out", [(), ("adam_step", "avgpool_backward")])
def test_train_learns_with_the_reference_solutions(folder, left_out):
    """train runs every exercise that passes (the optimizer: Adam, else SGD with momentum) and
    says what stayed minicnn's."""
    from minicnn.exercises.training import train_with_your_layers

    for item in exercises.EXERCISES:
        if item.name not in left_out:
            write(folder, item, inspect.getsource(item.solution))
    result = train_with_your_layers(folder, epochs=1, limit=4000, verbose=0)
    assert result["test_accuracy"] > 0.8, result  # a network that does not learn: 10%
    ran = {item.name for item in exercises.EXERCISES} - {"batchnorm_backward_staged",
                                                           *left_out}
    if not left_out:
        assert set(result["yours"]) == ran - {"sgd_momentum_step"} and not result["minicnns"]
    else:
        assert set(result["yours"]) == ran
        assert result["minicnns"] == ["AvgPool2D stays minicnn's: avgpool_backward not passed"]


def test_the_studio_runs_your_layers_and_they_match_minicnns(folder):
    """`minicnn studio --layers DIR`: the page's backward maps come from the learner's
    functions (those that pass); with the reference answers they equal minicnn's own."""
    from test_studio import small_model

    from minicnn.exercises.training import with_your_layers
    from minicnn.studio import Studio

    model = small_model()
    for item in exercises.EXERCISES[:4]:  # dense, ReLU, softmax, max pooling; not the conv
        write(folder, item, inspect.getsource(item.solution))
    yours, kept = with_your_layers(model, folder)
    # the learner's answers wrapped around minicnn's layers: each keeps its class
    assert [type(a) for a in yours.layers] == [type(b) for b in model.layers]
    assert [layer.passes_words for layer in yours.layers] == [
        "", "", "[your backward]", "[your backward]", "", "[your backward]"]
    assert all(model.layers[i].passes_words == "" for i in range(6))  # the model is untouched
    assert kept == ["BatchNorm2D stays minicnn's: batchnorm_backward_compact or "
                    "batchnorm_backward_staged not passed",
                    "Conv2D stays minicnn's: im2col, conv_backward_cols, col2im not passed"]
    image = np.random.default_rng(0).uniform(0, 1, (1, 1, 28, 28))
    theirs = Studio(model).analyze({"image": image[0].tolist()})
    mine = Studio(yours).analyze({"image": image[0].tolist()})
    assert "[your backward]" in mine["layers"][5]["describe"]
    # every layer's source link names a registered layer (the studio serves /source/<name>)
    from minicnn.layers.registry import LAYER_TYPES

    assert all(layer["source"] in LAYER_TYPES for layer in mine["layers"])
    for a, b in zip(theirs["layers"], mine["layers"]):
        assert a["backward"]["data"] == b["backward"]["data"]
    assert theirs["input_gradient"]["data"] == mine["input_gradient"]["data"]
    # the page really runs the learner's function: swap in a wrong one (the ReLU's slope taken
    # as x, which the grader would refuse) and the input gradient changes
    from minicnn.exercises.training import _relu_passes

    class Wrong:
        relu_backward = staticmethod(lambda x, dy: dy * np.maximum(x, 0))

    yours.layers[2].use_passes(*_relu_passes(Wrong), words="[your backward]")
    wrong = Studio(yours).analyze({"image": image[0].tolist()})
    assert wrong["input_gradient"]["data"] != theirs["input_gradient"]["data"]


def test_the_exercises_page_shows_what_a_learner_sees(tmp_path):
    """docs/exercises.md walks through the first exercise: its excerpt of the file and the
    grader's answers must be what the files and the grader say now."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "exercises.md").read_text()
    excerpt, wrong_dw, passed, wrong_softmax = re.findall(r"(?ms)^```text\n(.*?)^```", page)
    template = (Path(exercises.__file__).parent / "templates" / "01_dense_backward.py").read_text()
    for line in excerpt.splitlines():
        assert line.replace(" [...]", "") in template, line
    course = tmp_path / "course"
    exercises.start(course)
    dense, softmax = (exercises.exercise(name) for name in
                      ("dense_backward", "softmax_cross_entropy_backward"))
    write(course, dense, "def dense_backward(x, W, dy):\n"
                         "    return dy @ W.T, (x.T @ dy) / len(x), dy.sum(axis=0)\n")
    write(course, softmax, inspect.getsource(solutions.softmax_cross_entropy_backward).replace(
        "return (p - onehot) / n", "return p - onehot"))  # the mean over the batch forgotten
    for name, shown in (("dense_backward", wrong_dw),
                        ("softmax_cross_entropy_backward", wrong_softmax)):
        run = minicnn("check", name, cwd=course)
        assert run.returncode == 1
        for line in shown.splitlines():
            assert line in run.stdout.splitlines(), (line, run.stdout)
    write(course, dense, inspect.getsource(solutions.dense_backward))
    assert passed.strip() in minicnn("check", "dense_backward", cwd=course).stdout


# -- the cases cover what the layers meet, and the tolerances are tight ---------------------------

SPATIAL = {"maxpool_backward", "avgpool_backward", "im2col", "col2im", "conv_forward"}


def spatial_cases(item):
    """(x shape, kernel, stride, padding) of each case of a pooling or convolution exercise."""
    for case in item.cases():
        a = case.arguments
        shape = a["x"].shape if "x" in a else tuple(a["x_shape"])
        kernel = a["kernel"] if "kernel" in a else a["W"].shape[2:]
        yield shape, tuple(kernel), tuple(a["stride"]), tuple(a.get("padding", (0, 0)))


@pytest.mark.parametrize("name", sorted(SPATIAL))
def test_the_cases_cover_every_layout_the_layers_meet(name):
    """Batch 1 and more; every pair non-square; overlapping windows; windows that leave pixels
    uncovered, between them and at the end; for the convolution, padding that differs per side
    and an output size that rounding instead of flooring gets wrong."""
    from minicnn.exercises.course import coverage

    shapes = list(spatial_cases(exercises.exercise(name)))
    assert {s[0][0] == 1 for s in shapes} == {True, False}
    for what in (lambda s: s[0][2:], lambda s: s[1], lambda s: s[2]):  # H, W; KH, KW; SH, SW
        assert any(len(set(what(s))) == 2 for s in shapes)
    counts = [coverage(*s) for s in shapes]
    assert any(c.max() > 1 for c in counts)                           # overlapping windows
    assert any((c[:, 1:-1] == 0).any() for c in counts)               # a gap between windows
    assert any((c[-1] == 0).any() or (c[:, -1] == 0).any() for c in counts)  # left at the end
    if name != "maxpool_backward" and name != "avgpool_backward":
        assert any(s[3][0] != s[3][1] for s in shapes)
        assert any(round((size + 2 * p - k) / st) != (size + 2 * p - k) // st
                   for s in shapes for size, k, st, p in zip(s[0][2:], s[1], s[2], s[3]))


@pytest.mark.parametrize("item", exercises.EXERCISES, ids=lambda item: item.name)
def test_the_cases_use_values_that_hide_nothing(item):
    """At least three cases; every floating-point argument non-integer in some case (integers
    make some wrong formulas right), and the checks a layer's edge needs."""
    cases = item.cases()
    assert len(cases) >= 3
    for name, value in cases[0].arguments.items():
        if isinstance(value, np.ndarray) and value.dtype.kind == "f" and name not in ("m", "v"):
            assert any((c.arguments[name] != np.round(c.arguments[name])).any()
                       for c in cases), name
    if item.name == "relu_backward":  # exact zeros beside values between 0 and 1
        assert any(((c.arguments["x"] == 0).any() and
                    ((c.arguments["x"] > 0) & (c.arguments["x"] < 1)).any()) for c in cases)
    if item.name == "maxpool_backward":  # ties, and windows without them
        assert any(len(np.unique(c.arguments["x"])) <= 3 for c in cases)
        assert any(len(np.unique(c.arguments["x"])) == c.arguments["x"].size for c in cases)
    if item.name == "softmax_cross_entropy_backward":
        assert any(np.abs(c.arguments["logits"]).max() > 700 for c in cases)  # exp overflows
    if item.name == "adam_step":  # the first step from zeros, later ones, and an eps that counts
        assert any(c.arguments["t"] == 1 and not c.arguments["m"].any() for c in cases)
        assert any(c.arguments["t"] > 1 for c in cases)
        assert any(c.arguments["eps"] > 0.1 * np.sqrt(c.arguments["v"]).min() for c in cases)


# wrong answers that only the cases above catch: values and layouts that hide the mistake
HIDDEN = [
    ("relu_backward", "def relu_backward(x, dy):\n    return dy * np.clip(x, 0, 1)\n",
     "entries wrong"),
    ("im2col", inspect.getsource(solutions.im2col).replace(
        "out_w = (width + 2 * pw - kw) // sw + 1",
        "out_w = round((width + 2 * pw - kw) / sw) + 1"), "raised"),
    ("col2im", inspect.getsource(solutions.col2im).replace(
        "dxpad = np.zeros((n_images, channels, height + 2 * ph, width + 2 * pw)",
        "dxpad = np.zeros((n_images, channels, (out_h - 1) * sh + kh, (out_w - 1) * sw + kw)"),
     "dx has shape"),
    ("maxpool_backward", """def maxpool_backward(x, dy, kernel, stride):
    # right where the windows tile x (stride = kernel): each dy to its window's first maximum
    n, c, h, w = x.shape
    (kh, kw), oh, ow = kernel, h // kernel[0], w // kernel[1]
    tiles = x[:, :, :oh * kh, :ow * kw].reshape(n, c, oh, kh, ow, kw).transpose(0, 1, 2, 4, 3, 5)
    first = np.argmax(tiles.reshape(n, c, oh, ow, kh * kw), axis=-1)
    sent = (np.arange(kh * kw) == first[..., None]) * dy[..., None]
    dx = np.zeros_like(x)
    dx[:, :, :oh * kh, :ow * kw] = sent.reshape(n, c, oh, ow, kh, kw).transpose(
        0, 1, 2, 4, 3, 5).reshape(n, c, oh * kh, ow * kw)
    return dx
""", "case 2 of"),
    ("avgpool_backward", """def avgpool_backward(dy, x_shape, kernel, stride):
    (kh, kw) = kernel
    return np.kron(dy, np.ones((kh, kw))) / (kh * kw)
""", "case 2 of"),
]


@pytest.mark.parametrize("name, source, words", HIDDEN, ids=[h[0] for h in HIDDEN])
def test_a_mistake_that_values_or_layouts_could_hide_fails(folder, name, source, words):
    item = exercises.exercise(name)
    write(folder, item, source)
    result = grade(item, folder / item.file_name)
    assert not result.passed and words in result.report[0], result.report


def test_the_tolerances_refuse_three_times_their_size_and_pass_a_right_answer():
    """A right answer agrees to ~1e-12 (float64) or ~1e-6 (float32): an error three times a
    tolerance fails, one a hundred times smaller passes. A looser tolerance fails this test."""
    from minicnn.exercises import grading

    want = np.random.default_rng(0).standard_normal(1000)
    want[::10] = 0.0  # exact zeros: only the absolute tolerance speaks there
    scale = np.abs(want).max()
    for dtype, relative, absolute in ((np.float64, grading.RTOL, 1e-9),
                                      (np.float32, grading.RTOL_FLOAT32, 1e-6)):
        expected = want.astype(dtype)
        assert not grading._close(expected * dtype(1 + 3 * relative), expected).all()
        assert grading._close(expected * dtype(1 + relative / 100), expected).all()
        off_at_zero = expected.copy()
        off_at_zero[0] = 3 * absolute * scale
        assert not grading._close(off_at_zero, expected).all()
        off_at_zero[0] = absolute * scale / 100
        assert grading._close(off_at_zero, expected).all()
    assert (grading.RTOL, grading.RTOL_FLOAT32) == (1e-6, 1e-4)  # what the module says above


def test_a_hanging_answer_ends_after_the_time_limit_with_its_name(folder):
    import time

    from minicnn.exercises import grading

    item = exercises.exercise("relu_backward")
    write(folder, item, "def relu_backward(x, dy):\n    while True:\n        pass\n")
    start = time.perf_counter()
    result = grade(item, folder / item.file_name)  # the default limit
    elapsed = time.perf_counter() - start
    assert f"did not finish within {grading.TIME_LIMIT:g} s, on case 1 of" in result.report[0]
    assert grading.TIME_LIMIT <= elapsed < 12, elapsed  # seconds, not minutes


# right answers in the forms a learner writes them all pass (the grader checks values, not style)
RIGHT_FORMS = [
    ("dense_backward", """def dense_backward(x, W, dy):
    dx = np.einsum("nk,dk->nd", dy, W)
    dW = np.einsum("nd,nk->dk", x, dy)
    return dx, dW, np.sum(dy, axis=0)
"""),
    ("relu_backward", "def relu_backward(x, dy):\n    return np.where(x > 0, dy, 0)\n"),
    ("relu_backward", """def relu_backward(x, dy):
    dx = dy.copy()
    dx[x <= 0] = 0
    return dx
"""),
    ("softmax_cross_entropy_backward", """def softmax_cross_entropy_backward(logits, labels):
    log_p = logits - logits.max(axis=1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    dz = np.exp(log_p)
    for n, label in enumerate(labels):
        dz[n, label] -= 1
    return dz / len(labels)
"""),
    ("maxpool_backward", """def maxpool_backward(x, dy, kernel, stride):
    dx = np.zeros_like(x)
    N, C, OH, OW = dy.shape
    for n in range(N):
        for c in range(C):
            for oh in range(OH):
                for ow in range(OW):
                    h, w = oh * stride[0], ow * stride[1]
                    window = x[n, c, h:h + kernel[0], w:w + kernel[1]]
                    i, j = np.unravel_index(window.argmax(), window.shape)
                    dx[n, c, h + i, w + j] += dy[n, c, oh, ow]
    return dx
"""),
    ("avgpool_backward", """def avgpool_backward(dy, x_shape, kernel, stride):
    dx = np.zeros(x_shape, dtype=dy.dtype)
    N, C, OH, OW = dy.shape
    for oh in range(OH):
        for ow in range(OW):
            h, w = oh * stride[0], ow * stride[1]
            dx[:, :, h:h + kernel[0], w:w + kernel[1]] += (
                dy[:, :, oh:oh + 1, ow:ow + 1] / (kernel[0] * kernel[1]))
    return dx
"""),
    ("conv_forward", """def conv_forward(x, W, b, stride, padding):
    xpad = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    F, C, KH, KW = W.shape
    OH = (xpad.shape[2] - KH) // stride[0] + 1
    OW = (xpad.shape[3] - KW) // stride[1] + 1
    y = np.zeros((x.shape[0], F, OH, OW), dtype=x.dtype)
    for oh in range(OH):
        for ow in range(OW):
            patch = xpad[:, :, oh * stride[0]:oh * stride[0] + KH, ow * stride[1]:ow * stride[1] + KW]
            y[:, :, oh, ow] = np.tensordot(patch, W, axes=([1, 2, 3], [1, 2, 3])) + b
    return y
"""),
    ("sgd_momentum_step", """def sgd_momentum_step(w, grad, velocity, lr, momentum):
    velocity = velocity * momentum
    velocity += grad
    return w - lr * velocity, velocity
"""),
    ("adam_step", """def adam_step(w, grad, m, v, t, lr, beta1, beta2, eps):
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * np.square(grad)
    step = lr * (m / (1 - beta1**t)) / (np.sqrt(v / (1 - beta2**t)) + eps)
    return w - step, m, v
"""),
]


@pytest.mark.parametrize("name, source", RIGHT_FORMS,
                         ids=[f"{name}-{n}" for n, (name, _) in enumerate(RIGHT_FORMS)])
def test_right_answers_in_other_forms_pass(folder, name, source):
    item = exercises.exercise(name)
    write(folder, item, source)
    result = grade(item, folder / item.file_name)
    assert result.passed, result.report
