"""jobs/train.py as users run it: under `ray job submit` on a `ray start --head` cluster, and
killed with SIGKILL mid-stage then rerun (it must resume and reach the same pairs)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, SMOKE

BIN = Path(sys.executable).parent
ENV = {
    **os.environ,
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "HF_HUB_OFFLINE": "1",
}
ENV.pop("RAY_ADDRESS", None)
# warm-up epochs raised so the kill test can land while a warm-up update is in flight
TRAIN = [sys.executable, str(REPO / "jobs/train.py"), "--config", str(SMOKE), "warmup.epochs=40"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_tree(marker: str) -> None:
    """SIGKILL every process whose command line mentions ``marker`` (a test's own Ray dir)."""
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="ignore")
                if marker in cmdline:
                    os.kill(int(pid), signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """The smoke run submitted as a Ray job to a local `ray start --head` cluster."""
    run_dir = tmp_path_factory.mktemp("ref")
    temp = tmp_path_factory.mktemp("raytmp")
    dash = free_port()
    start = [
        str(BIN / "ray"), "start", "--head", "--block", f"--port={free_port()}", "--num-cpus=4",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
        f"--temp-dir={temp}", "--disable-usage-stats",
        # its own ports throughout, so it never collides with another Ray on this machine
        f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
        f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
        f"--ray-client-server-port={free_port()}", f"--node-manager-port={free_port()}",
        f"--object-manager-port={free_port()}",
    ]  # fmt: skip
    head = subprocess.Popen(
        start, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    submit = [
        str(BIN / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{dash}",
        "--working-dir", str(REPO), "--", *TRAIN, f"run_dir={run_dir}",
    ]  # fmt: skip
    try:
        for _ in range(40):  # the head and its job agent take a few seconds to come up
            proc = subprocess.run(submit, capture_output=True, text=True, env=ENV, timeout=900)
            out = proc.stdout + proc.stderr
            if "succeeded" in out or "Job entrypoint command failed" in out:
                break
            time.sleep(3)
        assert proc.returncode == 0 and "succeeded" in out, out[-5000:]
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        kill_tree(str(temp))
    return run_dir


def test_job_submit_run_is_complete(reference_run):
    summary = json.loads((reference_run / "summary.json").read_text())
    assert set(summary["accuracy"]) == {"warmup", "round1"}
    for stage in ("warmup", "round1"):
        for key in ("v0", "v1"):
            acc = summary["accuracy"][stage][key]
            assert acc["n"] == 8 and acc["ci95"][0] <= acc["accuracy"] <= acc["ci95"][1]
    # every variant was updated and pushed, and the actors themselves report the new version
    assert summary["versions"] == {"v0": 2, "v1": 2}
    assert summary["actor_versions"]["v0"] == {"v0": 2}
    assert summary["actor_versions"]["scorer"] == {"v0": 2, "v1": 2}
    assert sum(p["kept"] for p in summary["pairs"]["round1"].values()) > 0
    # the round generated with the version the warm-up pushed
    manifest = json.loads((reference_run / "manifest.json").read_text())["stages"]
    assert manifest["round1/generate"]["versions"] == {"v0": 1, "v1": 1}
    assert manifest["round1/update/v0"]["pairs"] > 0
    assert (reference_run / "accuracy.png").stat().st_size > 1000
    assert (reference_run / "config.yaml").exists() and (reference_run / "metrics.jsonl").exists()
    for name in ("drafts", "refinements", "scored", "pairs"):
        assert (reference_run / "round1" / f"{name}.jsonl").exists()
    assert (reference_run / "states" / "v0-v2.safetensors").exists()


def test_kill_9_mid_stage_then_rerun_resumes_to_same_pairs(reference_run, tmp_path):
    raytmp = Path(tempfile.mkdtemp(prefix="coal-", dir="/tmp"))  # unix socket paths must be short
    env = {**ENV, "RAY_TMPDIR": str(raytmp)}
    cmd = [*TRAIN, f"run_dir={tmp_path}"]
    with open(tmp_path.parent / f"{tmp_path.name}-killed.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        deadline = time.time() + 600
        try:
            # kill while the warm-up updates are in flight (TRL has started writing curves)
            while time.time() < deadline and not list(
                (tmp_path / "tensorboard").glob("warmup-*/events.*")
            ):
                assert proc.poll() is None, "run ended before it could be killed"
                time.sleep(0.2)
            time.sleep(0.5)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            kill_tree(str(raytmp))
    stages = json.loads((tmp_path / "manifest.json").read_text())["stages"]
    assert "warmup/data" in stages and "warmup/train/v0" not in stages

    rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    after = json.loads((tmp_path / "manifest.json").read_text())["stages"]
    assert after["warmup/data"] == stages["warmup/data"]  # the finished stage was kept
    for name in ("pairs", "scored"):  # and the rerun reached exactly the reference's round
        got = (tmp_path / "round1" / f"{name}.jsonl").read_text()
        assert got == (reference_run / "round1" / f"{name}.jsonl").read_text()


def test_the_same_run_in_one_process_reaches_the_same_pairs(reference_run, tmp_path):
    """``ray.in_process=true``: no Ray, the same recipe on in-process workers (a round a
    debugger can step through). Same seed: the same samples and pairs, utilities within the
    scorer's 1e-3 relative tolerance, the same held-out accuracies."""
    proc = subprocess.run([*TRAIN, f"run_dir={tmp_path}", "ray.in_process=true"], cwd=REPO,
                          env=ENV, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Ray instance" not in proc.stdout + proc.stderr and not (tmp_path / "ray_train").exists()
    for name in ("drafts", "refinements"):
        got = (tmp_path / "round1" / f"{name}.jsonl").read_text()
        assert got == (reference_run / "round1" / f"{name}.jsonl").read_text()

    def pairs(run: Path) -> list[dict]:
        return [json.loads(line) for line in (run / "round1" / "pairs.jsonl").open()]

    mine, ref = pairs(tmp_path), pairs(reference_run)
    assert len(mine) == len(ref) > 0
    for a, b in zip(mine, ref, strict=True):
        for key, value in b.items():
            if key.startswith("u_"):
                assert a[key] == pytest.approx(value, rel=1e-3), key
            else:
                assert a[key] == value, key
    accuracy = json.loads((tmp_path / "summary.json").read_text())["accuracy"]
    assert accuracy == json.loads((reference_run / "summary.json").read_text())["accuracy"]


def test_rerun_with_other_settings_is_refused(reference_run):
    proc = subprocess.run(
        [*TRAIN, f"run_dir={reference_run}", "sro.beta=0.5"],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "sro.beta differ" in proc.stderr and "Traceback" not in proc.stderr


def test_the_run_trains_a_controller(reference_run):
    summary = json.loads((reference_run / "summary.json").read_text())
    assert set(summary["controller"]) == {"generate", "refine"}
    assert summary["controller"]["generate"]["n_train"] > 0
    assert (reference_run / "controller" / "controller.safetensors").exists()


def test_evaluate_suite_then_serve_the_trained_run(reference_run, tmp_path):
    import shutil

    import requests

    run_dir = tmp_path / "run"
    shutil.copytree(reference_run, run_dir)
    suite = [sys.executable, str(REPO / "jobs/evaluate.py"), f"run_dir={run_dir}", "method=suite"]
    proc = subprocess.run(suite, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((run_dir / "evaluation" / "summary.json").read_text())
    methods = {m["method"]: m for m in summary["methods"]}
    assert {"base direct", "base cot", "v0 alone", "v1 self-refine", "v0→v1 cross-refine",
            "random routing", "controller routing", "oracle"} <= set(methods)  # fmt: skip
    assert all(m["n"] == 8 for m in methods.values())
    paths = [m["accuracy"] for k, m in methods.items() if k.endswith(("alone", "refine"))]
    assert methods["oracle"]["accuracy"] >= max(paths)
    assert "oracle" in summary["controller_vs"]
    assert (run_dir / "evaluation" / "methods.png").stat().st_size > 1000
    assert "controller routing" in proc.stdout
    best = summary["serving_route"]["method"]  # the most accurate route on the variants
    assert methods[best]["accuracy"] == max(
        m["accuracy"] for k, m in methods.items() if k not in ("base direct", "base cot", "oracle")
    )
    assert f"serving route (deliberation.routing=auto): {best}" in proc.stdout

    talk = [sys.executable, str(REPO / "jobs/evaluate.py"), f"run_dir={run_dir}",
            "method=discussion", "agents=3", "rounds=1"]  # fmt: skip
    proc = subprocess.run(talk, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    talked = json.loads((run_dir / "evaluation" / "discussion-3x1" / "summary.json").read_text())
    assert talked["agents"] == ["v0", "v1", "v0"] and talked["n"] == 8
    assert [r["round"] for r in talked["majority_per_round"]] == [0, 1]

    port = free_port()
    serve_cmd = [sys.executable, str(REPO / "jobs/serve.py"), f"run_dir={run_dir}",
                 f"serve.port={port}"]  # fmt: skip
    with open(tmp_path / "serve.log", "w") as log:
        server = subprocess.Popen(
            serve_cmd, cwd=REPO, env=ENV, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.time() + 300
            while time.time() < deadline:
                assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
                try:
                    if requests.get(f"{url}/healthz", timeout=5).ok:
                        break
                except requests.RequestException:  # not up yet, or busy starting
                    pass
                time.sleep(1)
            r = requests.post(f"{url}/v1/solve", json={"question": "What is 2 + 3?"}, timeout=120)
            assert r.status_code == 200, r.text
            assert r.json()["version"] == 2 and r.json()["generator"] in {"v0", "v1"}
            info = requests.get(f"{url}/v1/info", timeout=30).json()  # routing=auto by default
            assert info["routing"] == best and "best measured" in info["routing_why"]
        finally:
            server.send_signal(signal.SIGINT)
            code = server.wait(timeout=120)
    assert code == 0, (tmp_path / "serve.log").read_text()[-3000:]


def test_three_variants_run_on_the_smoke_config(tmp_path):
    """K = 3 on the same config as K = 2: every trainer and engine fits the local Ray (sized to
    the run), nothing waits for resources, and every variant is updated and pushed."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "jobs/train.py"), "--config", str(SMOKE), "variants.count=3",
         f"run_dir={tmp_path}"],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["versions"] == {"v0": 2, "v1": 2, "v2": 2}
    assert set(summary["pairs"]["round1"]) == {"v0", "v1", "v2"}
    assert set(summary["accuracy"]["round1"]) == {"v0", "v1", "v2"}
