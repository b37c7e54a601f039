"""The Ray workers on the tiny model: pushes are versioned and confirmed, a killed generator
actor is restarted, its state replayed, and no prompt of the batch is lost."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from coalition import config
from coalition.engines.base import SamplingParams
from tests.conftest import SMOKE, lora_state


@pytest.fixture
def workers(ray_session, tiny_path, tmp_path):
    from actors.workers import RayWorkers

    cfg = config.load(
        SMOKE,
        ["ray.chunk_size=2", "ray.max_restarts=2", "ray.max_retries=3", "ray.trainer=per_update"],
    )
    w = RayWorkers(cfg, tiny_path, tmp_path / "train", log=lambda _: None)
    yield w
    w.close()


def test_push_is_versioned_and_confirmed_by_every_actor(workers, tiny_path):
    prompts = [f"Question: {i} + {i}?" for i in range(4)]
    params = SamplingParams(max_new_tokens=8)
    base = workers.generate({None: prompts}, params)[None]
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

    handle = workers.gens["v0"]
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
