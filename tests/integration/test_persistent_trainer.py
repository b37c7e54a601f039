"""The persistent Ray Train trainer: one TorchTrainer serves several updates in order (the
same results as a fresh TorchTrainer per update), a worker killed mid-update is
restarted by Ray Train and the update redone, and workers silent past the start deadline
stop the driver's wait with a line instead of a hang."""

from __future__ import annotations

import io
import os
import signal
import threading
import time

import pytest
import torch

from coalition.engines.base import LoraSpec
from coalition.method.training import StepSettings

SPEC = LoraSpec(r=4, alpha=8, dropout=0.0, target_modules=("q_proj", "v_proj"))


def sft_rows(n: int) -> list[dict[str, str]]:
    return [
        {"prompt": f"Question: {i} + 1?\nAnswer:", "completion": f" {i + 1}."} for i in range(n)
    ]


def dpo_rows(n: int) -> list[dict[str, str]]:
    return [
        {"prompt": f"Question: {i} + 1?\nAnswer:", "chosen": f" {i + 1}.", "rejected": f" {i}."}
        for i in range(n)
    ]


@pytest.fixture
def trainer(ray_session, tiny_path, tmp_path):
    from actors.persistent import PersistentTrainer

    t = PersistentTrainer("trainer-v0", tiny_path, "lora", SPEC, tmp_path, max_failures=2)
    yield t
    t.close()


def test_updates_in_order_match_a_fresh_trainer_per_update(trainer, tiny_path, tmp_path):
    from actors.update import train_update

    sft = StepSettings(lr=1e-3, epochs=1, batch_size=4, seed=3)
    dpo = StepSettings(lr=1e-3, epochs=1, batch_size=4, seed=4, beta=0.1)
    s1, m1 = trainer.update("sft", None, sft_rows(8), sft)
    s2, m2 = trainer.update("dpo", s1, dpo_rows(8), dpo)
    assert m1["steps"] == 2 and m2["steps"] == 2
    assert m2["loss_first"] == pytest.approx(0.6931, abs=1e-3)  # DPO starts at ln 2
    assert any(not torch.equal(s1[k], s2[k]) for k in s1)

    f1, _ = train_update(
        "sft", "fresh-sft", tiny_path, "lora", SPEC, None, sft_rows(8), sft, tmp_path
    )
    f2, _ = train_update(
        "dpo", "fresh-dpo", tiny_path, "lora", SPEC, f1, dpo_rows(8), dpo, tmp_path
    )
    for k in s2:
        torch.testing.assert_close(s2[k], f2[k])


def test_worker_killed_mid_update_is_restarted_and_the_update_redone(trainer, ray_session):
    settings = StepSettings(lr=1e-3, epochs=30, batch_size=2, seed=5)
    trainer.update("sft", None, sft_rows(2), StepSettings(lr=1e-3, epochs=1, batch_size=2))
    first = ray_session.get(trainer.mailbox.status.remote())["pids"][0]
    result: dict = {}
    thread = threading.Thread(
        target=lambda: result.update(
            zip(
                ("state", "metrics"),
                trainer.update("sft", None, sft_rows(16), settings),
                strict=True,
            )
        )
    )
    thread.start()
    while ray_session.get(trainer.mailbox.status.remote())["taken"] < 1:
        time.sleep(0.1)
    time.sleep(1.0)
    assert thread.is_alive(), "the update finished before the kill; make it longer"
    os.kill(first, signal.SIGKILL)
    thread.join(timeout=600)
    assert result["metrics"]["steps"] == 30 * 8
    assert ray_session.get(trainer.mailbox.status.remote())["pids"][0] != first


def test_workers_silent_past_the_deadline_stop_the_wait_with_a_line(trainer, ray_session):
    """A worker that died and whose restart Ray cannot place (Ray Train retries that for
    ever) looks to the driver like one that hangs: no step, no check-in. A stopped process
    is that, deterministically: alive to Ray, silent to the mailbox."""
    from coalition.run.preflight import ResourceTimeout

    trainer.update("sft", None, sft_rows(2), StepSettings(lr=1e-3, epochs=1, batch_size=2))
    trainer.start_timeout = 8.0  # after the start: the silence deadline only
    pid = ray_session.get(trainer.mailbox.status.remote())["pids"][0]
    os.kill(pid, signal.SIGSTOP)
    try:
        began = time.monotonic()
        with pytest.raises(ResourceTimeout, match="no word from its workers for"):
            trainer.update("sft", None, sft_rows(2), StepSettings(lr=1e-3, epochs=1, batch_size=2))
        assert time.monotonic() - began < 60
    finally:
        os.kill(pid, signal.SIGCONT)


def test_the_driver_sees_the_updates_steps_and_loss_live(trainer):
    """Rank 0 reports each logged step to the mailbox; the driver's wait puts it on the
    stage's live progress line (steps done of the total, the loss)."""
    from coalition.run import progress

    board = progress.Board(stream=io.StringIO(), every=60.0)
    seen = []
    with board.task("warmup/train/v0") as task:
        original = task.set

        def spy(done, total, unit, **extra):
            seen.append((done, total, unit, extra))
            original(done, total, unit, **extra)

        task.set = spy
        rows = sft_rows(64)
        trainer.update("sft", None, rows, StepSettings(lr=1e-3, epochs=3, batch_size=4, seed=1))
    assert seen and all(unit == "steps" and total == 48 for _, total, unit, _ in seen)
    assert any("loss" in extra for *_, extra in seen)
