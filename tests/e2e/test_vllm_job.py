"""jobs/train.py with ``engine: vllm`` through the real Ray actors and Ray Train (vLLM's CPU build
in CI): the same smoke run on both engines. Warm-up training is deterministic and evaluation is
greedy, so the warm-up predictions after the pushed adapters must be byte-identical; the round
then samples (different RNGs on the two engines) and must still push and serve version 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, SMOKE

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
ENV.pop("RAY_ADDRESS", None)


def run(engine: str, run_dir) -> dict:
    cmd = [sys.executable, str(REPO / "jobs/train.py"), "--config", str(SMOKE)]
    cmd += [f"engine={engine}", f"run_dir={run_dir}"]
    out = subprocess.run(cmd, env=ENV, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return json.loads((run_dir / "summary.json").read_text())


def test_train_job_on_vllm_matches_hf(tmp_path):
    runs = {e: tmp_path / e for e in ("hf", "vllm")}
    summaries = {e: run(e, d) for e, d in runs.items()}
    assert (runs["vllm"] / "config.yaml").read_text().count("engine: vllm") == 1
    for key in ("v0", "v1"):
        name = f"eval/warmup-{key}.jsonl"
        assert (runs["vllm"] / name).read_bytes() == (runs["hf"] / name).read_bytes()
    s = summaries["vllm"]
    assert s["versions"] == {"v0": 2, "v1": 2}
    assert s["actor_versions"]["scorer"] == {"v0": 2, "v1": 2}
    assert set(s["accuracy"]) == {"warmup", "round1"}


def test_bench_gpu_runs_every_part_on_cpu(tmp_path):
    """`jobs/bench.py gpu` where no GPU is: every measurement on the tiny shape, vLLM included."""
    cmd = [
        sys.executable, str(REPO / "jobs/bench.py"), "gpu", "--config", str(SMOKE),
        "bench.shapes=[tiny]", "bench.prompts=4", "bench.new_tokens=8", "bench.dpo_batch=2",
        "bench.dpo_seq=32", "bench.dpo_steps=2", "bench.repeats=1", f"run_dir={tmp_path}",
    ]  # fmt: skip
    out = subprocess.run(cmd, env=ENV, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads((tmp_path / "bench-gpu.json").read_text())
    r = result["shapes"]["tiny"]
    assert r["vllm"]["lora_push_s"] > 0 and r["vllm"]["full_push_s"] > 0
    assert r["generator_vs_direct"] > 0 and r["dpo"]["step_s"] > 0
    assert "our vLLM generator / vLLM direct" in out.stdout
