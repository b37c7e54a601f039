"""Run directories: a job never writes over another job's run or a run with other settings,
a failed start leaves nothing behind, a finished run is said to be finished, and damage is
named with what to do."""

from __future__ import annotations

import fcntl
import os
import shutil
import time

import pytest

from tests.hostile.conftest import job, refused, snapshot


@pytest.fixture
def run(train_run, tmp_path):
    """A private copy of the finished smoke run."""
    return shutil.copytree(train_run, tmp_path / "run")


def test_run_dir_that_is_a_file(tmp_path):
    path = tmp_path / "afile"
    path.write_text("keep me")
    refused(job("train", f"run_dir={path}"), f"run_dir {path} is a file")
    assert path.read_text() == "keep me"


def test_run_dir_that_cannot_be_created(tmp_path):
    path = tmp_path / "afile"
    path.write_text("x")
    refused(job("evaluate", f"run_dir={path / 'sub'}"), "cannot be created", f"{path} is a file")


def test_a_directory_that_is_not_a_run_is_left_alone(tmp_path):
    (tmp_path / "thesis.tex").write_text("precious")
    before = snapshot(tmp_path)
    refused(job("evaluate", f"run_dir={tmp_path}"), "is not empty and holds no coalition run")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("evaluate", ["task.name=coin_flip", "task.params={}"]),
        ("evaluate", []),
        ("distill", []),
        ("saie", []),
    ],
)
def test_no_job_writes_over_a_train_run(run, name, args):
    before = snapshot(run)
    line = refused(job(name, f"run_dir={run}", *args), f"run_dir {run} holds a jobs/train.py run")
    assert f"jobs/{name}.py would write over it" in line
    assert snapshot(run) == before


def test_a_rerun_with_other_settings_is_refused(run):
    before = snapshot(run)
    refused(job("train", f"run_dir={run}", "sro.beta=0.5"), "another config (", "sro.beta")
    assert snapshot(run) == before


def test_a_finished_run_is_said_finished_at_once(run):
    before = snapshot(run)
    start = time.monotonic()
    done = job("train", f"run_dir={run}", "deliberation.refine_turns=1", "ray.max_retries=5")
    assert done.rc == 0, done.err[-2000:]
    assert "finished jobs/train.py run with this config; nothing to do" in done.out
    assert time.monotonic() - start < 30 and "Ray" not in done.err  # no Ray was started
    assert snapshot(run) == before


def test_a_failed_start_leaves_a_run_dir_a_corrected_rerun_accepts(tmp_path):
    run_dir = tmp_path / "eval"
    refused(job("evaluate", f"run_dir={run_dir}", "model.name_or_path=builtin:nope"), "builtin")
    assert not run_dir.exists()
    # a directory an older version left with only config.yaml: no finished work to protect
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("seed: 5\n")
    done = job("evaluate", f"run_dir={run_dir}", "task.n_test=4")
    assert done.rc == 0, done.err[-2000:]
    assert (run_dir / "summary.json").exists()


def test_half_written_files_are_cleaned_and_files_are_shared_readable(tmp_path):
    run_dir = tmp_path / "eval"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("seed: 5\n")
    (run_dir / ".summary.json.k3j4h5g6.tmp").write_text('{"half')
    done = job("evaluate", f"run_dir={run_dir}", "task.n_test=4")
    assert done.rc == 0 and "removed 1 half-written file(s)" in done.out, done.out
    assert not list(run_dir.glob(".*.tmp"))
    umask = os.umask(0)
    os.umask(umask)
    for name in ("summary.json", "predictions.jsonl", "config.yaml", "run.json"):
        assert (run_dir / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_a_job_on_another_jobs_evaluation_is_refused(tmp_path):
    run_dir = tmp_path / "eval"
    assert job("evaluate", f"run_dir={run_dir}", "task.n_test=4").rc == 0
    before = snapshot(run_dir)
    refused(job("train", f"run_dir={run_dir}"), "holds a jobs/evaluate.py run")
    refused(job("evaluate", f"run_dir={run_dir}", "task.n_test=5"), "another config", "n_test")
    assert snapshot(run_dir) == before


def test_a_run_dir_in_use_is_refused(run):
    fd = os.open(run / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"4242")
        refused(job("train", f"run_dir={run}", "rounds=2"), "in use by another job (pid 4242)")
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("name", "damage", "says"),
    [
        ("manifest.json", '{"stages": {"warmup/tr', "manifest.json is damaged"),
        ("run.json", "{", "run.json is damaged"),
        ("config.yaml", "seed: [", "config.yaml is damaged"),
    ],
)
def test_damaged_run_files_are_named(run, name, damage, says):
    (run / "run.json").write_text('{"job": "train", "created": 0, "_kind": "run", "_schema": 1}')
    (run / name).write_text(damage)
    refused(job("train", f"run_dir={run}", "rounds=2"), says)


def test_suite_and_serve_need_a_train_run(tmp_path):
    refused(job("evaluate", f"run_dir={tmp_path}", "method=suite"), "this needs a jobs/train.py")
    refused(job("serve", f"run_dir={tmp_path / 'nope'}", smoke=False), "does not exist")
