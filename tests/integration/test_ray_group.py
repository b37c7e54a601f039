"""The Ray group on the tiny model: pushes are versioned and confirmed, a killed generator
actor is restarted, its state and environment replayed, and no prompt of the batch is lost."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import torch

from actors.session import ALLOCATOR, WORKER_ENV_VARS
from coalition.engines.base import SamplingParams
from coalition.groups.layout import coalition_layout
from coalition.method.variants import BASE
from coalition.run import config
from tests.conftest import SMOKE, lora_state


@pytest.fixture
def workers(ray_session, tiny_path, tmp_path):
    from actors.group import RayGroup

    cfg = config.load(
        SMOKE,
        ["ray.chunk_size=2", "ray.max_restarts=2", "ray.max_retries=3", "ray.trainer=per_update"],
    )
    v = cfg.variants
    layout = coalition_layout(tiny_path, v.mode, cfg.scorer, v.count, in_process=False)
    w = RayGroup(cfg, layout, tmp_path / "train", log=lambda _: None)
    yield w
    w.close()


def test_push_is_versioned_and_confirmed_by_every_actor(workers, tiny_path):
    prompts = [f"Question: {i} + {i}?" for i in range(4)]
    params = SamplingParams(max_new_tokens=8)
    base = workers.generate({BASE: prompts}, params)[BASE]
    workers.push("v0", lora_state(tiny_path, 1), 1)
    workers.push("v1", lora_state(tiny_path, 2), 1)
    assert workers.actor_versions() == {
        "v0": {"v0": 1},
        "v1": {"v1": 1},
        "scorer": {"v0": 1, "v1": 1},
    }
    out = workers.generate({"v0": prompts, "v1": prompts}, params)
    assert out["v0"] != base and out["v0"] != out["v1"]
    workers.push("v0", lora_state(tiny_path, 3), 2)
    assert workers.actor_versions()["v0"] == {"v0": 2}
    assert workers.generate({"v0": prompts}, params)["v0"] != out["v0"]


def test_generator_killed_mid_batch_loses_nothing(workers, tiny_path, ray_session):
    workers.push("v0", lora_state(tiny_path, 1), 1)
    prompts = [f"Question: what is {i} + {2 * i}?" for i in range(96)]
    params = SamplingParams(max_new_tokens=24)
    expected = workers.generate({"v0": prompts}, params)["v0"]

    handle = workers.hosts["v0"]
    old_pid = ray_session.get(handle.actor.pid.remote())
    result: dict = {}
    thread = threading.Thread(
        target=lambda: result.update(workers.generate({"v0": prompts}, params))
    )
    thread.start()
    time.sleep(0.5)
    finished_before_kill = not thread.is_alive()
    os.kill(old_pid, signal.SIGKILL)
    thread.join(timeout=300)
    assert not finished_before_kill, "the batch finished before the kill; make it longer"
    assert result["v0"] == expected  # every prompt answered, by the same version, in order
    assert ray_session.get(handle.actor.pid.remote()) != old_pid  # it really was restarted
    assert workers.actor_versions()["v0"] == {"v0": 1}  # and its pushed state was replayed
    env = ray_session.get(handle.actor.__ray_call__.remote(lambda _: dict(os.environ)))
    want = WORKER_ENV_VARS | ALLOCATOR
    assert {k: env.get(k) for k in want} == want  # so is its environment, allocator and all


def test_full_weights_are_broadcast_from_the_trainer(ray_session, tiny_path, tmp_path):
    """``ray.full_push=collective``: the persistent trainer's rank 0 broadcasts the state it just
    trained (also when the driver pushes it back from its checkpoint); a state the trainer does
    not hold goes by the object store. Either way every actor serves the same weights."""
    from safetensors.torch import load_file, save_file

    from actors.group import RayGroup
    from coalition.engines.hf import HFEngine
    from coalition.method.training import StepSettings

    cfg = config.load(
        SMOKE, ["variants.mode=full", "scorer=base", "ray.full_push=collective", "ray.chunk_size=4"]
    )
    logs: list[str] = []
    layout = coalition_layout(tiny_path, "full", "base", cfg.variants.count, in_process=False)
    w = RayGroup(cfg, layout, tmp_path / "train", log=logs.append)
    try:
        rows = [
            {"prompt": f"Question: {i} + 1?\nAnswer:", "completion": f" {i + 1}."} for i in range(8)
        ]
        state, _ = w.train("sft", "v0", None, rows, StepSettings(lr=1e-2, batch_size=4, seed=1))
        save_file(state, str(tmp_path / "v0.safetensors"))
        w.push("v0", load_file(str(tmp_path / "v0.safetensors")), 1)  # read back: same state
        assert w.pushes["broadcast"] == 1, logs
        assert w.actor_versions()["v0"] == {"v0": 1}

        prompts = [f"Question: {i} + {i}?" for i in range(4)]
        params = SamplingParams(max_new_tokens=8)
        local = HFEngine.from_pretrained(tiny_path, device="cpu", batch_size=4, progress=False)
        local.set_weights(state, 1)
        assert w.generate({"v0": prompts}, params)["v0"] == local.generate(prompts, params)

        other = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v
                 for k, v in state.items()}  # fmt: skip
        w.push("v0", other, 2)  # not the trainer's state: object store
        assert w.pushes["broadcast"] == 1 and w.actor_versions()["v0"] == {"v0": 2}
        local.set_weights(other, 2)
        assert w.generate({"v0": prompts}, params)["v0"] == local.generate(prompts, params)
    finally:
        w.close()
