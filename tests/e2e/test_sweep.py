"""sweeps/sweep.py as users run it: a real Ray Tune sweep of tiny COALITION trials, killed
with SIGKILL after one trial finished and the next was part-way, then rerun with the same
command, which restores it (``Tuner.restore``): the finished trial is not rerun, the
interrupted one resumes its COALITION run after its last finished stage, and the sweep
writes its table, CSV, plot and best config."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from coalition.run import config
from tests.conftest import REPO

ENV = {
    **os.environ,
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
ENV.pop("RAY_ADDRESS", None)
SWEEP = REPO / "configs" / "sweeps" / "smoke.yaml"


def tune_status(sweep_dir: Path) -> dict[str, str]:
    """Trial id → status in Tune's last saved experiment state (what a restore starts from)."""
    states = sorted((sweep_dir / "tune").glob("experiment_state-*.json"))
    if not states:
        return {}
    try:
        data = json.loads(states[-1].read_text())
    except (json.JSONDecodeError, OSError):  # caught mid-write
        return {}
    trials = [json.loads(entry[0]) for entry in data["trial_data"]]
    return {t["trial_id"]: t["status"] for t in trials}


def stages(run_dir: Path) -> dict:
    path = run_dir / "manifest.json"
    return json.loads(path.read_text())["stages"] if path.exists() else {}


def attempts(run_dir: Path) -> int:
    return len((run_dir / "attempts.jsonl").read_text().splitlines())


def processes_marked(marker: str) -> list[int]:
    """Processes whose environment carries ``marker`` (everything this test's Ray started)."""
    pids = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                if marker.encode() in Path(f"/proc/{pid}/environ").read_bytes():
                    pids.append(int(pid))
            except OSError:
                pass
    return pids


def kill_marked(marker: str) -> None:
    for pid in processes_marked(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def restored_sweep(tmp_path_factory):
    """Two tiny trials one at a time; killed once Tune has recorded the first finished and
    the second has finished its warm-up; then the same command again."""
    sweep_dir = tmp_path_factory.mktemp("sweep")
    raytmp = tempfile.mkdtemp(prefix="csw-", dir="/tmp")  # unix socket paths must be short
    marker = f"RAY_TMPDIR={raytmp}"
    env = {**ENV, "RAY_TMPDIR": raytmp}
    cmd = [
        sys.executable, str(REPO / "sweeps/sweep.py"), "--config", str(SWEEP),
        f"run_dir={sweep_dir}", "space.refine=[cross]", "resources.max_concurrent_trials=1",
    ]  # fmt: skip
    log_path = sweep_dir.parent / f"{sweep_dir.name}-killed.log"
    try:
        with open(log_path, "w") as log:
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # fmt: skip
            deadline = time.time() + 900
            first = second = None
            while time.time() < deadline:
                assert proc.poll() is None, "sweep ended before it could be killed: " + str(
                    log_path
                )
                status = tune_status(sweep_dir)
                done = [t for t, s in status.items() if s == "TERMINATED"]
                rest = [t for t in status if t not in done]
                if done and rest:
                    warm = stages(sweep_dir / "trials" / rest[0])
                    if {"warmup/train/v0", "warmup/train/v1"} <= set(warm):
                        first, second = done[0], rest[0]
                        break
                time.sleep(0.5)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        assert first and second, f"no kill point within the deadline; see {log_path}"
        kill_marked(marker)
        before = {
            "status": tune_status(sweep_dir),
            "first_stages": stages(sweep_dir / "trials" / first),
            "second_stages": stages(sweep_dir / "trials" / second),
        }
        rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                               timeout=900)  # fmt: skip
        assert rerun.returncode == 0, rerun.stdout[-4000:] + rerun.stderr[-4000:]
        return sweep_dir, first, second, before, rerun.stdout
    finally:
        kill_marked(marker)
        time.sleep(1)
        left = processes_marked(marker)
        shutil.rmtree(raytmp, ignore_errors=True)
        assert not left, "Ray processes of the sweep were left behind"


def test_killed_sweep_restores_without_rerunning_the_finished_trial(restored_sweep):
    sweep_dir, first, second, before, out = restored_sweep
    assert before["status"][first] == "TERMINATED" and before["status"][second] != "TERMINATED"
    assert "restoring the sweep" in out
    assert tune_status(sweep_dir) == {first: "TERMINATED", second: "TERMINATED"}
    # the finished trial ran once and its run directory was not touched again
    assert attempts(sweep_dir / "trials" / first) == 1
    assert stages(sweep_dir / "trials" / first) == before["first_stages"]
    # the interrupted one ran again and its COALITION run resumed after its warm-up
    run = sweep_dir / "trials" / second
    assert attempts(run) == 2
    after = stages(run)
    for name in ("warmup/data", "warmup/train/v0", "warmup/train/v1"):
        assert after[name] == before["second_stages"][name]
    assert "round1/eval" in after and (run / "summary.json").exists()


def test_sweep_writes_table_csv_plot_and_best_config(restored_sweep):
    sweep_dir, first, second, _, out = restored_sweep
    rows = list(csv.DictReader((sweep_dir / "results.csv").open()))
    assert sorted(r["trial"] for r in rows) == sorted([first, second])
    assert sorted(float(r["sro.beta"]) for r in rows) == [0.1, 0.5]
    for row in rows:
        assert row["family"] == "tiny" and row["model"] == "tiny" and row["refine"] == "cross"
        assert row["status"] == "TERMINATED"
        for r in ("acc_r0", "acc_r1"):  # after warm-up and after round 1
            assert 0.0 <= float(row[r]) <= 1.0
        assert row["best_round"] in ("0", "1") and float(row["wall_s"]) > 0
    # per-round accuracy is the mean over variants of what the run itself measured
    for row in rows:
        summary = json.loads((sweep_dir / "trials" / row["trial"] / "summary.json").read_text())
        per = summary["accuracy"]["round1"]
        mean = sum(v["accuracy"] for v in per.values()) / len(per)
        assert float(row["acc_r1"]) == pytest.approx(mean, abs=5e-4)
    assert "acc_r0" in out and "best: trial" in out  # the table went to the terminal too
    md = (sweep_dir / "results.md").read_text().splitlines()  # ...and to Markdown for docs
    assert md[0].startswith("| trial |") and len(md) == 2 + len(rows)
    png = (sweep_dir / "accuracy_vs_size.png").read_bytes()
    assert png[:4] == b"\x89PNG" and len(png) > 10_000
    results = json.loads((sweep_dir / "results.json").read_text())
    assert results["schema_version"] == 1 and len(results["trials"]) == 2
    best = config.load(sweep_dir / "best_config.yaml")
    top = max(rows, key=lambda r: float(r["best_acc"]))
    assert best.model.name_or_path == "builtin:tiny" and best.run_dir is None
    assert best.rounds == int(top["best_round"]) and best.sro.beta == float(top["sro.beta"])
