"""The command line's edges: --version, python -m minicnn, options that do not apply, --resume
without --out, validated numbers, --debug, and a bench that measures in separate processes."""

import dataclasses
import subprocess
import sys

import pytest

import minicnn
from minicnn import benchmark, cli


def run_cli(argv, capsys):
    """``(exit code, stdout, stderr)`` of ``minicnn ARGV`` (argparse's own exits included)."""
    try:
        code = cli.main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_version(capsys):
    code, out, _ = run_cli(["--version"], capsys)
    assert code == 0 and out.strip() == f"minicnn {minicnn.__version__}"


def test_python_dash_m_minicnn_is_the_command():
    done = subprocess.run([sys.executable, "-m", "minicnn", "--help"], capture_output=True,
                          text=True)
    assert done.returncode == 0 and "usage: minicnn" in done.stdout
    for command in ("train", "evaluate", "explain", "predict", "bench", "tune"):
        assert command in done.stdout


@pytest.mark.parametrize("argv, message", [
    (["train", "--dataset", "digits", "--fast"], "--fast is a preset of the MNIST recipe"),
    (["train", "--dataset", "cifar10", "--long"], "--long is a preset of the MNIST recipe"),
    (["train", "--dataset", "mnist", "--image-size", "32"], "apply to --image-folder only"),
    (["train", "--channels", "3"], "apply to --image-folder only"),
    (["bench", "--backends", "numpy,gpu"], "unknown backend 'gpu'"),
])
def test_options_that_do_not_apply_are_refused(argv, message, capsys):
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and message in err


@pytest.mark.parametrize("argv, message", [
    (["tune", "--limit", "-5"], "--limit: expected a whole number >= 1, got -5"),
    (["tune", "--trials", "0"], "--trials: expected a whole number >= 1"),
    (["tune", "--val-fraction", "1.5"], "--val-fraction: expected a fraction between 0 and 1"),
    (["tune", "--timeout", "-1"], "--timeout: expected a number > 0"),
    (["tune", "--seed", "-1"], "--seed: expected a whole number >= 0"),
    (["train", "--lr", "0"], "--lr: expected a number > 0, got 0"),
    (["train", "--lr", "nan"], "--lr: expected a number > 0, got nan"),
    (["train", "--weight-decay", "-0.1"], "--weight-decay: expected a number >= 0"),
    (["train", "--epochs", "two"], "--epochs: expected a whole number >= 1, got 'two'"),
    (["train", "--diagnostics", "0"], "--diagnostics: expected a whole number >= 1"),
    (["bench", "--steps", "0"], "--steps: expected a whole number >= 1"),
    (["predict", "m.safetensors", "x.png", "--top", "-1"], "--top: expected a whole number >= 1"),
])
def test_every_number_is_validated(argv, message, capsys):
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and message in err


def test_resume_without_out_continues_the_latest_run_or_says_there_is_none(tmp_path, capsys,
                                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["train", "--dataset", "digits", "--resume", "--quiet"], capsys)
    assert code == 2 and "--resume without --out: no run of digits" in err
    assert not (tmp_path / "runs").exists()  # no new run was started
    first = tmp_path / "runs" / "digits-first"
    assert cli.main(["train", "--dataset", "digits", "--epochs", "1", "--quiet",
                     "--out", str(first)]) == 0
    capsys.readouterr()
    code, _, err = run_cli(["train", "--dataset", "digits", "--epochs", "2", "--resume",
                            "--quiet"], capsys)
    assert code == 0 and "resuming the latest run of digits: runs/digits-first" in err
    history = minicnn.History.load(first / "history.json")
    assert history["epoch"] == [1, 2]
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["digits-first"]


def test_errors_are_one_line_unless_debug_asks_for_the_traceback(capsys, monkeypatch):
    def buggy(args):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")

    monkeypatch.setitem(cli.COMMANDS, "bench", dataclasses.replace(cli.COMMANDS["bench"],
                                                                  handler=buggy))
    code, _, err = run_cli(["bench"], capsys)
    assert code == 2 and "minicnn bench: error: unsupported operand" in err
    assert "--debug" in err and "Traceback" not in err
    with pytest.raises(TypeError, match="unsupported operand"):
        cli.main(["bench", "--debug"])
    monkeypatch.setenv("MINICNN_DEBUG", "1")
    with pytest.raises(TypeError, match="unsupported operand"):
        cli.main(["bench"])


def test_bench_measures_training_and_inference_of_each_backend_in_its_own_process(capsys,
                                                                                  monkeypatch):
    calls = []
    real_run = subprocess.run

    def recording_run(command, **kwargs):
        calls.append(command)
        return real_run(command, **kwargs)

    monkeypatch.setattr(benchmark.subprocess, "run", recording_run)
    code, out, _ = run_cli(["bench", "--backends", "numpy", "--steps", "1", "--batch-size", "8",
                            "--quiet"], capsys)
    assert code == 0
    (line,) = out.strip().splitlines()  # --quiet: the result lines only
    assert line.startswith("numpy ") and "training" in line and "inference" in line
    assert len(calls) == 1 and calls[0][:3] == [sys.executable, "-m", "minicnn.benchmark"]
