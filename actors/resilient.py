"""Typed calls to restartable host actors that survive a restart: retry the lost call after
replaying the state pushes the fresh process lost (a restarted actor re-runs ``__init__`` and
holds only the base model)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from coalition.data.records import Example
from coalition.engines.base import SamplingParams
from coalition.engines.weightsync import Channel
from coalition.run import progress

LOST = (RayActorError, ActorDiedError, ActorUnavailableError)


@dataclass(frozen=True)
class Call:
    """One method call on a host actor, ready to (re)submit: ``submit`` sends it again, so a
    call lost with its actor can be retried."""

    host: HostHandle
    method: str  # for logs only: the call itself is ``submit``
    submit: Callable[[], Any]

    def result(self) -> Any:
        return self.host.get(self.submit(), self)


class HostHandle:
    """A host actor's handle (:class:`actors.hosts.GeneratorActor` or ``ScorerActor``) with
    one typed method per actor method, each returning a :class:`Call`, plus what must be
    replayed into the actor after a restart."""

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
        self._replay: dict[str, Call] = {}

    # the actor's methods (actors/hosts.py)
    def pid(self) -> Call:
        return Call(self, "pid", lambda: self.actor.pid.remote())

    def install(self, key: str, state: Any, version: int) -> Call:
        return Call(self, "install", lambda: self.actor.install.remote(key, state, version))

    def receive(self, key: str, channel: Channel, rank: int, version: int) -> Call:
        return Call(self, "receive", lambda: self.actor.receive.remote(key, channel, rank, version))

    def versions(self) -> Call:
        return Call(self, "versions", lambda: self.actor.versions.remote())

    def sleep(self) -> Call:
        return Call(self, "sleep", lambda: self.actor.sleep.remote())

    def wake(self) -> Call:
        return Call(self, "wake", lambda: self.actor.wake.remote())

    def generate(
        self, key: str | None, prompts: list[str], params: SamplingParams, expect: int | None
    ) -> Call:
        return Call(
            self, "generate", lambda: self.actor.generate.remote(key, prompts, params, expect)
        )

    def utilities(self, keys: list[str | None], prompts: list[str], targets: list[str]) -> Call:
        return Call(self, "utilities", lambda: self.actor.utilities.remote(keys, prompts, targets))

    def features(self, prompts: list[str]) -> Call:
        return Call(self, "features", lambda: self.actor.features.remote(prompts))

    def evaluate(
        self,
        key: str | None,
        task_spec: dict[str, Any],
        examples: list[Example],
        method: str,
        params: SamplingParams,
        chat: bool,
        expect: int | None,
    ) -> Call:
        return Call(
            self,
            "evaluate",
            lambda: self.actor.evaluate.remote(
                key, task_spec, examples, method, params, chat, expect
            ),
        )

    # surviving a restart
    def remember(self, tag: str, call: Call) -> None:
        """Record a state-setting call (latest per tag) to replay after a restart."""
        self._replay[tag] = call

    def get(self, ref: Any, call: Call) -> Any:
        """Wait for ``ref`` (``call``'s result); if the actor died, replay its state and rerun
        the call."""
        for attempt in range(self.retries + 1):
            try:
                return ray.get(ref)
            except LOST as exc:
                if attempt == self.retries:
                    raise
                self.log(
                    f"[retry] {self.name}.{call.method}: actor lost ({type(exc).__name__}); "
                    f"replaying {len(self._replay)} state push(es), attempt {attempt + 2}"
                )
                self._restore()
                ref = call.submit()
        raise AssertionError("unreachable")

    def _restore(self) -> None:
        """Wait (with backoff) while the actor restarts — a loaded machine can take a minute to
        bring a model back — then replay its state. An actor dead for good raises at once."""
        deadline, delay = time.monotonic() + self.restart_timeout, 0.25
        while True:
            try:
                ray.get([c.submit() for c in self._replay.values()] or [self.pid().submit()])
                return
            except ActorUnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(2 * delay, 5.0)


def started(handles: Sequence[HostHandle], timeout: float) -> None:
    """Wait until every actor has started (its model loaded); past ``timeout`` say which did
    not and what Ray has free, instead of letting the first call wait forever."""
    from coalition.run.preflight import ResourceTimeout

    pending = {h.name: h.pid().submit() for h in handles}
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


def gather(calls: Sequence[Call], sizes: Sequence[int] | None = None, unit: str = "") -> list[Any]:
    """Submit every call first (so different actors work in parallel), then collect each with
    its own retry, in the order they finish; with ``sizes`` (items per call) the stage's live
    progress line counts the ``unit`` done."""
    refs = [c.submit() for c in calls]
    task = progress.current()
    if sizes is not None:
        task.expect(sum(sizes), unit)
    out: list[Any] = [None] * len(calls)
    index = {ref: i for i, ref in enumerate(refs)}
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        i = index[ready[0]]
        out[i] = calls[i].host.get(ready[0], calls[i])
        if sizes is not None:
            task.advance(sizes[i])
    return out
