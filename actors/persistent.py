"""One long-lived Ray Train ``TorchTrainer`` per model (``ray.trainer: persistent``, the
default) whose worker group serves a stream of updates through a :class:`Mailbox` actor.

Starting a TorchTrainer (controller, worker processes, torch/transformers/TRL imports, process
group) costs ~20–50 s on a small machine; paid once per model instead of once per update. A
worker that dies mid-update is restarted by Ray Train (``FailureConfig``) and the update is
redone. Rank 0 keeps the last state and, asked to, broadcasts it to the engines
(:mod:`coalition.engines.weightsync`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path
from typing import Any

import ray

from actors.update import WORKER_ENV
from coalition.engines.base import LoraSpec
from coalition.engines.weightsync import Channel, Members, fingerprint
from coalition.method.training import State, StepSettings, release_memory, run_update, threads_for
from coalition.run import progress


@ray.remote(num_cpus=0)
class Mailbox:
    """Update requests for one long-lived trainer and their results, in order. Async, so a
    worker waiting for the next request does not block the driver submitting it."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any] | None] = []
        self.results: dict[int, dict[str, Any]] = {}
        self.finished = 0  # requests [0, finished) have a result (or were collected)
        self.taken = -1  # the latest request a worker started
        self.pids: dict[int, int] = {}
        self.progress: dict[int, tuple[int, int, float | None]] = {}
        self.heard = time.monotonic()  # the workers' latest word (this actor's clock)
        self._changed: asyncio.Condition | None = None

    def _cond(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def submit(self, request: dict[str, Any] | None) -> int:
        """Queue an update (``None`` stops the trainer); returns its sequence number."""
        async with self._cond():
            self.requests.append(request)
            self._cond().notify_all()
            return len(self.requests) - 1

    async def hello(self, rank: int, pid: int) -> int:
        """A (re)started worker checks in; it resumes at the first unfinished request."""
        self.pids[rank] = pid
        self.heard = time.monotonic()
        return self.finished

    async def take(self, seq: int) -> dict[str, Any] | None:
        """Request ``seq``, waiting for it to be submitted."""
        async with self._cond():
            await self._cond().wait_for(lambda: len(self.requests) > seq)
            self.taken, self.heard = max(self.taken, seq), time.monotonic()
            return self.requests[seq]

    async def finish(self, seq: int, result: dict[str, Any]) -> None:
        async with self._cond():
            self.results[seq] = result
            self.finished, self.heard = max(self.finished, seq + 1), time.monotonic()
            self._cond().notify_all()

    async def result(self, seq: int, timeout: float) -> dict[str, Any] | None:
        """Request ``seq``'s result once there is one (``None`` after ``timeout`` seconds)."""
        async with self._cond():
            try:
                await asyncio.wait_for(self._cond().wait_for(lambda: seq in self.results), timeout)
            except TimeoutError:
                return None
            return self.results.pop(seq)

    async def status(self) -> dict[str, Any]:
        return {
            "submitted": len(self.requests),
            "taken": self.taken,
            "pids": dict(self.pids),
            "quiet_s": time.monotonic() - self.heard,  # since the workers' latest word
        }

    async def report(self, seq: int, step: int, total: int, loss: float | None) -> None:
        """Rank 0's latest step of request ``seq`` (for the driver's live progress line); a
        log without a loss (the closing summary) keeps the last one."""
        if loss is None and seq in self.progress:
            loss = self.progress[seq][2]
        self.progress[seq] = (step, total, loss)
        self.heard = time.monotonic()

    async def progress_of(self, seq: int) -> tuple[int, int, float | None] | None:
        return self.progress.get(seq)


def _serve_loop(config: dict[str, Any]) -> None:
    """A worker of a persistent trainer: run each requested update until told to stop."""
    import ray.train
    import torch
    from ray.train.huggingface.transformers import prepare_trainer

    torch.set_num_threads(threads_for(config["cpus"]))
    import peft  # noqa: F401 - imported now, while the driver is busy elsewhere, not per update
    import trl  # noqa: F401

    mailbox = config["mailbox"]
    rank = ray.train.get_context().get_world_rank()
    seq = ray.get(mailbox.hello.remote(rank, os.getpid()))
    latest: State | None = None  # rank 0: the last update's state, for broadcast pushes
    members = Members()
    while (request := ray.get(mailbox.take.remote(seq))) is not None:
        if request["kind"] == "push":
            if rank == 0:
                ray.get(mailbox.finish.remote(seq, _send(members, request, latest)))
            seq += 1
            continue
        state = ray.get(request["state"]) if request["state"] is not None else None

        def prepare(trainer: Any, seq: int = seq) -> Any:
            if rank == 0:
                trainer.add_callback(step_reporter(mailbox, seq))
            return prepare_trainer(trainer)

        new_state, metrics = run_update(
            request["kind"],
            config["base_path"],
            config["mode"],
            config["spec"],
            state,
            request["rows"],
            request["settings"],
            config["dtype"],
            prepare=prepare,
        )
        if rank == 0:  # the driver fetches the state at once; the worker owns the object
            latest = new_state
            ray.get(mailbox.finish.remote(seq, {"state": ray.put(new_state), "metrics": metrics}))
        ray.train.report({**metrics, "update": request["name"]})
        del state, new_state
        release_memory()
        seq += 1


def step_reporter(mailbox: Any, seq: int) -> Any:
    """A transformers callback telling the mailbox each logged step and loss (every step)."""
    from transformers import TrainerCallback

    class StepReporter(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            loss = (logs or {}).get("loss")
            mailbox.report.remote(seq, state.global_step, state.max_steps, loss)

    return StepReporter()


def _send(members: Members, request: dict[str, Any], latest: State | None) -> dict[str, Any]:
    """Broadcast the last update's state to the engines, if it is the one the driver wants
    served (else announce nothing, and the driver uses the object store). Never raises: a
    failed push must not take the trainer down."""
    channel: Channel = request["channel"]
    try:
        member = members.get(request["key"], channel, 0)
        fits = latest is not None and fingerprint(latest) == request["fingerprint"]
        return {"sent": member.send(latest if fits else None, request["version"])}
    except Exception as exc:  # noqa: BLE001 - reported to the driver, which falls back
        members.drop(request["key"])
        return {"sent": False, "error": f"{type(exc).__name__}: {exc}"}


@ray.remote(num_cpus=0)
def _fit(trainer: Any) -> str | None:
    """Run a TorchTrainer to its end in a task (``fit`` installs a signal handler, so it
    cannot run in a driver thread); returns the error, if any, as text."""
    result = trainer.fit()
    return None if result.error is None else repr(result.error)


class PersistentTrainer:
    """One long-lived TorchTrainer for model ``name``: ``update`` sends it an SFT/DPO update
    and waits for the new state."""

    def __init__(
        self,
        name: str,
        base_path: str,
        mode: str,
        spec: LoraSpec,
        storage: Path,
        dtype: str = "float32",
        workers: int = 1,
        cpus_per_worker: float = 1.0,
        use_gpu: bool = False,
        max_failures: int = 3,
        start_timeout: float = 600.0,
    ):
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        self.name, self.workers = name, workers
        self.start_timeout, self.created = start_timeout, time.monotonic()
        self.up = False  # every worker has checked in once
        storage = Path(storage).resolve()
        shutil.rmtree(storage / name, ignore_errors=True)
        self.mailbox = Mailbox.remote()
        trainer = TorchTrainer(
            _serve_loop,
            train_loop_config={
                "mailbox": self.mailbox,
                "base_path": base_path,
                "mode": mode,
                "spec": spec,
                "dtype": dtype,
                "cpus": cpus_per_worker,
            },
            scaling_config=ScalingConfig(
                num_workers=workers, use_gpu=use_gpu, resources_per_worker={"CPU": cpus_per_worker}
            ),
            run_config=RunConfig(
                name=name,
                storage_path=str(storage),
                failure_config=FailureConfig(max_failures=max_failures),
                worker_runtime_env=WORKER_ENV,
            ),
        )
        self.fit = _fit.remote(trainer)

    def ready(self, timeout: float = 300.0) -> None:
        """Wait until every worker has started and checked in (benchmarks time a warm system)."""
        deadline = time.monotonic() + timeout
        while len(ray.get(self.mailbox.status.remote())["pids"]) < self.workers:
            if ray.wait([self.fit], timeout=0)[0]:
                raise RuntimeError(f"trainer {self.name} stopped: {self._fit_error()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"trainer {self.name}: workers not up after {timeout:.0f}s")
            time.sleep(0.2)

    def update(
        self, kind: str, state: State | None, rows: list[dict[str, str]], settings: StepSettings
    ) -> tuple[State, dict[str, float]]:
        request = {
            "kind": kind,
            "name": f"{kind}-{settings.seed}",
            "state": None if state is None else ray.put(state),
            "rows": rows,
            "settings": settings,
        }
        out = self.wait(ray.get(self.mailbox.submit.remote(request)))
        return ray.get(out["state"]), out["metrics"]

    def push(self, key: str, channel: Channel, version: int, fingerprint: str) -> int:
        """Ask rank 0 to broadcast its last state as ``version`` if its fingerprint matches;
        returns the request's sequence number (:meth:`wait` for ``{"sent": …}``)."""
        request = {
            "kind": "push", "key": key, "channel": channel, "version": version,
            "fingerprint": fingerprint,
        }  # fmt: skip
        return ray.get(self.mailbox.submit.remote(request))

    def wait(self, seq: int, timeout: float | None = None) -> dict[str, Any]:
        """Request ``seq``'s result; raises if the trainer stopped, its workers did not start
        or fell silent within the start deadline, or ``timeout`` passed."""
        since = time.monotonic()
        deadline = None if timeout is None else since + timeout
        while (out := ray.get(self.mailbox.result.remote(seq, 2.0))) is None:
            done, _ = ray.wait([self.fit], timeout=0)
            if done:
                raise RuntimeError(f"trainer {self.name} stopped: {self._fit_error()}")
            self._check_started()
            self._check_heard(seq, since)
            self._show(seq)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"trainer {self.name}: request {seq} not done in {timeout}s")
        self._show(seq)  # the last step (rank 0 reports it before the result)
        self.up = True  # a result: the workers were up
        return out

    def _show(self, seq: int) -> None:
        """Request ``seq``'s latest step and loss on the stage's live progress line."""
        if (step := ray.get(self.mailbox.progress_of.remote(seq))) is not None:
            extra = {} if step[2] is None else {"loss": step[2]}
            progress.current().set(step[0], step[1], "steps", **extra)

    def _check_started(self) -> None:
        """Past the start deadline with workers still missing: the cluster cannot place them
        (Ray Train would retry for ever), so stop with what is missing and what is free."""
        if self.up:
            return
        if len(ray.get(self.mailbox.status.remote())["pids"]) >= self.workers:
            self.up = True
        elif time.monotonic() - self.created > self.start_timeout:
            from actors.resilient import free_resources
            from coalition.run.preflight import ResourceTimeout

            raise ResourceTimeout(
                f"trainer {self.name}: its {self.workers} worker(s) did not start within "
                f"{self.start_timeout:.0f}s (ray.start_timeout_s); {free_resources()}: the "
                "cluster is too small for the run or busy with other work"
            )

    def _check_heard(self, seq: int, since: float) -> None:
        """A started trainer whose workers have said nothing (no step, no check-in) for the
        start deadline while request ``seq`` waits: a worker died and its restart cannot be
        placed (Ray Train retries that for ever) or it hangs. Stop with a line; a rerun
        resumes at the stage in flight."""
        if not self.up or time.monotonic() - since <= self.start_timeout:
            return
        quiet = ray.get(self.mailbox.status.remote())["quiet_s"]
        if quiet > self.start_timeout:
            from actors.resilient import free_resources
            from coalition.run.preflight import ResourceTimeout

            raise ResourceTimeout(
                f"trainer {self.name}: no word from its workers for {quiet:.0f}s "
                f"(ray.start_timeout_s: {self.start_timeout:.0f}) while request {seq} waits: "
                f"a worker died and could not be restarted, or hangs; {free_resources()}"
            )

    def _fit_error(self) -> str:
        """Why the trainer's ``fit`` task ended: its error, or the task's own failure."""
        try:
            return str(ray.get(self.fit))
        except ray.exceptions.RayError as exc:
            return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"

    def close(self, timeout: float = 60.0) -> None:
        """Stop the workers (they finish the update in flight) and the trainer."""
        try:
            ray.get(self.mailbox.submit.remote(None))
            if not ray.wait([self.fit], timeout=timeout)[0]:
                ray.cancel(self.fit, force=True)  # only if still running: Ray aborts on a
                # force-cancel racing the task's own completion
        finally:
            ray.kill(self.mailbox)


def persistent_trainer(
    cfg: Any, key: str, base_path: str, mode: str, spec: LoraSpec, storage: Path
) -> PersistentTrainer:
    """The long-lived trainer of model ``key`` with the run's Ray resources (``cfg.ray``)."""
    r = cfg.ray
    return PersistentTrainer(
        f"trainer-{key}",
        base_path,
        mode,
        spec,
        storage,
        cfg.model.dtype,
        r.train_workers,
        r.train_cpus_per_worker,
        r.train_use_gpu,
        max(r.max_restarts, 0),
        r.start_timeout_s,
    )
