"""Calls to restartable actors that survive a restart: retry the lost call after replaying the
state pushes the fresh process lost (a restarted actor re-runs ``__init__`` and holds only the
base model)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from coalition.run import progress

LOST = (RayActorError, ActorDiedError, ActorUnavailableError)


class Resilient:
    """An actor handle plus what must be replayed into it after a restart."""

    def __init__(
        self,
        actor: Any,
        name: str,
        retries: int,
        log: Callable[[str], None] = print,
        restart_timeout: float = 600.0,
    ):
        self.actor, self.name, self.retries, self.log = actor, name, retries, log
        self.restart_timeout = restart_timeout
        self._replay: dict[str, tuple[str, tuple[Any, ...]]] = {}

    def remember(self, tag: str, method: str, *args: Any) -> None:
        """Record a state-setting call (latest per tag) to replay after a restart."""
        self._replay[tag] = (method, args)

    def submit(self, method: str, *args: Any) -> Any:
        return getattr(self.actor, method).remote(*args)

    def get(self, ref: Any, method: str, *args: Any) -> Any:
        """Wait for ``ref``; if the actor died, replay its state and rerun the call."""
        for attempt in range(self.retries + 1):
            try:
                return ray.get(ref)
            except LOST as exc:
                if attempt == self.retries:
                    raise
                self.log(
                    f"[retry] {self.name}.{method}: actor lost ({type(exc).__name__}); "
                    f"replaying {len(self._replay)} state push(es), attempt {attempt + 2}"
                )
                self._restore()
                ref = self.submit(method, *args)
        raise AssertionError("unreachable")

    def call(self, method: str, *args: Any) -> Any:
        return self.get(self.submit(method, *args), method, *args)

    def _restore(self) -> None:
        """Wait (with backoff) while the actor restarts — a loaded machine can take a minute to
        bring a model back — then replay its state. An actor dead for good raises at once."""
        deadline, delay = time.monotonic() + self.restart_timeout, 0.25
        while True:
            try:
                ray.get(
                    [self.submit(m, *a) for m, a in self._replay.values()] or [self.submit("pid")]
                )
                return
            except ActorUnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(2 * delay, 5.0)


def started(handles: Sequence[Resilient], timeout: float) -> None:
    """Wait until every actor has started (its model loaded); past ``timeout`` say which did
    not and what Ray has free, instead of letting the first call wait forever."""
    from coalition.run.preflight import ResourceTimeout

    pending = {h.name: h.submit("pid") for h in handles}
    ready, _ = ray.wait(list(pending.values()), num_returns=len(pending), timeout=timeout)
    late = [name for name, ref in pending.items() if ref not in ready]
    if late:
        raise ResourceTimeout(
            f"{', '.join(late)} did not start within {timeout:.0f}s (ray.start_timeout_s); "
            f"{free_resources()}: the cluster is too small for the run or busy with other work"
        )
    ray.get(ready)  # an actor that failed to start raises its error here


def free_resources() -> str:
    have, free = ray.cluster_resources(), ray.available_resources()
    return f"Ray has {free.get('CPU', 0):g} of {have.get('CPU', 0):g} CPUs free" + (
        f" and {free.get('GPU', 0):g} of {have.get('GPU', 0):g} GPUs" if have.get("GPU") else ""
    )


def gather(
    calls: Sequence[tuple[Resilient, str, tuple[Any, ...]]],
    sizes: Sequence[int] | None = None,
    unit: str = "",
) -> list[Any]:
    """Submit every call first (so different actors work in parallel), then collect each with
    its own retry, in the order they finish; with ``sizes`` (items per call) the stage's live
    progress line counts the ``unit`` done."""
    refs = [h.submit(m, *a) for h, m, a in calls]
    task = progress.current()
    if sizes is not None:
        task.expect(sum(sizes), unit)
    out: list[Any] = [None] * len(calls)
    index = {ref: i for i, ref in enumerate(refs)}
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        i = index[ready[0]]
        h, m, a = calls[i]
        out[i] = h.get(ready[0], m, *a)
        if sizes is not None:
            task.advance(sizes[i])
    return out
