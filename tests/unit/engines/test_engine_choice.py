"""engine: auto picks vLLM only where the generators get a GPU and vLLM is installed, and says why."""

from __future__ import annotations

import importlib.util

import pytest

from coalition.engines import EngineSpec, choose_engine
from coalition.run import config as config_mod
from tests.conftest import SMOKE


@pytest.fixture
def auto():
    return config_mod.override(config_mod.load(SMOKE), {"engine": "auto", "model.device": "cpu"})


def test_a_named_engine_is_taken_as_it_is(auto):
    assert choose_engine(config_mod.override(auto, {"engine": "vllm"})) == (
        "vllm",
        "set in the config",
    )


def test_auto_on_a_cpu_is_the_hf_engine_and_says_why(auto):
    kind, why = choose_engine(auto)
    assert kind == "hf" and "lean decoder" in why
    assert EngineSpec.of(auto).kind == "hf"


def test_auto_with_gpu_generators_takes_vllm_where_it_is_installed(auto, monkeypatch):
    gpu = config_mod.override(auto, {"ray.generator_gpus": 1})
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "vllm" else real(name)
    )
    assert choose_engine(gpu) == (
        "hf",
        "a GPU, but vLLM is not installed (pip install -e '.[vllm]')",
    )
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: object() if name == "vllm" else real(name)
    )
    assert choose_engine(gpu)[0] == "vllm" and EngineSpec.of(gpu).kind == "vllm"


def test_the_job_says_which_engine_runs(tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO

    proc = subprocess.run(
        [sys.executable, str(REPO / "jobs/evaluate.py"), "--config", str(SMOKE), "engine=auto",
         "model.device=cpu", "task.n_test=2", f"run_dir={tmp_path / 'run'}"],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "engine: auto -> hf: no GPU for the generators" in proc.stdout
