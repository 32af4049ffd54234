"""Several ``minicnn tune`` workers on one study in a real PostgreSQL database: together they
finish exactly the requested trials and see each other's; a worker killed with SIGKILL in the
middle of a trial leaves a trial that is marked FAIL and run again, and the survivor completes
the study; the password of the storage URL never shows; a bad URL or an unreachable server
fails in seconds with one line.

The server: ``$MINICNN_TEST_POSTGRES``, a URL to a database the tests may fill with studies
(``.ci/run`` starts a throwaway cluster with ``.ci/postgres`` and sets it). Without it these
tests skip, saying so; in CI (``CI`` set) they fail instead."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from helpers import require

# trials of about half a second on 2 CPU cores, long enough to be killed in the middle
SMALL = ["--dataset", "digits", "--epochs", "2", "--limit", "500", "--width", "4,8",
         "--blocks", "1,2", "--batch-size", "32,64", "--kernel-size", "3", "--no-plots",
         "--heartbeat", "1"]
TRIALS = 8


@pytest.fixture
def database():
    """A new, empty database on the test server (workers starting together then also race to
    create Optuna's tables, as on a real first run), its URL and the password; dropped after.
    Without the right to create databases, the server's own database. Without a server: a
    skip (a failure in CI)."""
    url = os.environ.get("MINICNN_TEST_POSTGRES")
    if not url:
        reason = ("no PostgreSQL server: set MINICNN_TEST_POSTGRES to a database URL "
                  "(bash .ci/postgres start DIR prints one)")
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    require("optuna")
    psycopg = require("psycopg")
    from sqlalchemy.engine import make_url

    server = make_url(url).set(drivername="postgresql")
    name = f"minicnn_test_{uuid.uuid4().hex[:8]}"
    given = server.render_as_string(hide_password=False)
    try:
        with psycopg.connect(given, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error:
        yield url, server.password
        return
    yield server.set(database=name).render_as_string(hide_password=False), server.password
    with psycopg.connect(given, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def tune(*arguments, cwd, wait=True):
    command = [sys.executable, "-m", "minicnn", "tune", *arguments]
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    if not wait:
        return process
    output, _ = process.communicate(timeout=240)
    return process.returncode, output


def finish(process, timeout=240):
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def trials_of(url, study_name):
    import optuna

    try:
        return optuna.load_study(study_name=study_name, storage=url).get_trials(deepcopy=False)
    except KeyError:  # not created yet
        return []


def assert_nowhere(secret, tmp_path, outputs):
    """The password is in none of the printed outputs and none of the files written."""
    assert all(secret not in output for output in outputs)
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".csv", ".txt", ".log", ".md"):
            assert secret not in path.read_text(errors="replace"), path


def assert_outputs_match_the_database(out, trials):
    with open(out / "trials.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [(int(r["number"]), r["state"]) for r in rows] == \
        [(t.number, t.state.name) for t in trials]
    assert [r["worker"] for r in rows] == [t.user_attrs.get("worker", "") for t in trials]
    listed = json.loads((out / "trials.json").read_text())
    assert [(r["number"], r["state"], r["val_acc"]) for r in listed] == \
        [(t.number, t.state.name, t.value) for t in trials]


def test_two_workers_share_one_study_and_its_best_model_can_be_evaluated(database, tmp_path):
    url, password = database
    study = f"two-workers-{uuid.uuid4().hex[:8]}"
    shared = ["--storage", url, "--study-name", study, "--trials", str(TRIALS), *SMALL]
    first = tune(*shared, "--sampler-seed", "1", "--out", "first", cwd=tmp_path, wait=False)
    second = tune(*shared, "--sampler-seed", "2", "--out", "second", cwd=tmp_path, wait=False)
    (code_1, output_1), (code_2, output_2) = finish(first), finish(second)
    assert code_1 == 0 and code_2 == 0, output_1 + output_2

    trials = trials_of(url, study)
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == TRIALS, [(t.number, t.state.name) for t in trials]
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert sum("baseline" in t.user_attrs for t in trials) == 1  # the defaults, queued once
    workers = {t.user_attrs["worker"] for t in finished}
    assert len(workers) == 2, "both workers ran trials"
    # each worker's trials were drawn knowing every trial the other had finished (the TPE
    # sampler reads every finished trial of the study)
    seen_the_other = 0
    for worker in workers:
        for trial in (t for t in finished if t.user_attrs["worker"] == worker):
            before = [t for t in finished if t.datetime_complete <= trial.datetime_start]
            assert trial.user_attrs["finished_before"] >= len(before), (worker, trial.number)
            seen_the_other += any(t.user_attrs["worker"] != worker for t in before)
    assert seen_the_other

    # once more, with --retrain-best (and the plots): no trial left to run, the study's best
    # retrained, every output drawn from the whole study
    with_plots = [argument for argument in shared if argument != "--no-plots"]
    code, output = tune(*with_plots, "--out", "best", "--retrain-best", cwd=tmp_path)
    assert code == 0, output
    assert "0 finished trials" not in output and "running 0 more" in output
    for plot in ("optimization_history", "param_importances", "parallel_coordinate",
                 "intermediate_values"):
        assert (tmp_path / "best" / f"{plot}.png").stat().st_size > 1000, plot
    best = json.loads((tmp_path / "best" / "best.json").read_text())
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    study_best = max(complete, key=lambda t: (t.value, -t.number))
    assert (best["trial"], best["value"]) == (study_best.number, study_best.value)
    assert best["storage"] == url.replace(f":{password}@", ":***@")
    assert_outputs_match_the_database(tmp_path / "best", trials_of(url, study))
    evaluated = subprocess.run([sys.executable, "-m", "minicnn", "evaluate",
                                str(tmp_path / "best" / "best_run" / "model.safetensors")],
                               cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert evaluated.returncode == 0, evaluated.stderr
    assert_nowhere(password, tmp_path, [output_1, output_2, output])

    # a worker with other settings on this study is refused
    other = ["--storage", url, "--study-name", study, "--trials", str(TRIALS),
             *SMALL[:2], "--epochs", "3", *SMALL[4:]]
    code, output = tune(*other, "--out", "other", cwd=tmp_path)
    assert code == 2 and "was run with other settings (epochs: 2 -> 3)" in output, output
    assert password not in output


# ``minicnn tune`` in a process that freezes itself (SIGSTOP) once its first trial has drawn its
# configuration and starts to train: the test kills it there, where a race with a real trial of
# half a second (and a busy CI machine) could not promise to find it
FREEZES_IN_ITS_FIRST_TRIAL = """
import os, signal, sys
from minicnn.cli import main
from minicnn.tuning import study

def recipe_then_freeze(*arguments, train=study.recipe_of):
    os.kill(os.getpid(), signal.SIGSTOP)
    return train(*arguments)

study.recipe_of = recipe_then_freeze
sys.exit(main(["tune", *sys.argv[1:]]))
"""


def frozen(process, timeout=120) -> bool:
    """Whether ``process`` stopped itself (state T in /proc) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        with open(f"/proc/{process.pid}/stat") as stat:
            if stat.read().rpartition(")")[2].split()[0] == "T":
                return True
        time.sleep(0.05)
    return False


def test_a_killed_worker_s_trial_is_failed_and_run_again(database, tmp_path):
    url, password = database
    study = f"killed-worker-{uuid.uuid4().hex[:8]}"
    shared = ["--storage", url, "--study-name", study, "--trials", str(TRIALS), *SMALL]
    doomed = subprocess.Popen(
        [sys.executable, "-c", FREEZES_IN_ITS_FIRST_TRIAL, *shared, "--sampler-seed", "1",
         "--out", "doomed"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    if not frozen(doomed):
        doomed.kill()
        pytest.fail(f"the doomed worker never reached a trial:\n{doomed.communicate()[0]}")
    [killed] = [t.number for t in trials_of(url, study)
                if t.state.name == "RUNNING" and "finished_before" in t.user_attrs
                and t.user_attrs["worker"].endswith(f":{doomed.pid}")]
    doomed.send_signal(signal.SIGKILL)
    doomed.communicate(timeout=30)
    survivor = tune(*shared, "--sampler-seed", "2", "--out", "survivor", cwd=tmp_path,
                    wait=False)
    code, output = finish(survivor, timeout=90)  # a trial left RUNNING would hold it forever
    assert code == 0, output

    trials = trials_of(url, study)
    states = {t.number: t.state.name for t in trials}
    assert states[killed] == "FAIL"  # its heartbeat stopped: not RUNNING forever
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].state.name in ("COMPLETE", "PRUNED")
    assert retries[0].params == trials[killed].params  # the same configuration, run again
    assert sum(s in ("COMPLETE", "PRUNED") for s in states.values()) == TRIALS
    assert not [n for n, s in states.items() if s in ("RUNNING", "WAITING")]
    assert_outputs_match_the_database(tmp_path / "survivor", trials)
    assert_nowhere(password, tmp_path, [output])


def test_a_bad_url_or_an_unreachable_server_fails_in_seconds_with_one_line(tmp_path):
    require("optuna")
    require("psycopg")
    for storage, reason in [
        ("postgresql://minicnn:s3cret@127.0.0.1:1/studies", "cannot open the study storage"),
        ("postgresql://minicnn:s3cret@10.255.255.1:5432/studies", "cannot open the study storage"),
        ("not a url", "is not a database URL"),
        ("nosuchdb://minicnn:s3cret@host/studies", "is not a database URL"),
    ]:
        start = time.monotonic()
        code, output = tune("--storage", storage, "--trials", "2", "--out", "out", cwd=tmp_path)
        seconds = time.monotonic() - start
        assert code == 2 and reason in output, output
        assert len(output.strip().splitlines()) == 1 and "Traceback" not in output, output
        assert "s3cret" not in output, output
        assert seconds < 20, (storage, seconds)


def test_the_password_is_masked():
    require("optuna")
    from minicnn.tuning.study import masked

    assert masked("postgresql://me:pa:ss@db.example/studies") == \
        "postgresql://me:***@db.example/studies"
    assert masked("sqlite:////runs/study.db") == "sqlite:////runs/study.db"
    assert "secret" not in masked("postgresql//me:secret@db.example/studies")  # a typo
