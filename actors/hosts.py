"""GeneratorActor (one per variant) and ScorerActor: Ray shells over :class:`VariantHost`."""

from __future__ import annotations

import os
from typing import Any

import ray

from coalition.data.records import Example
from coalition.engines import EngineSpec
from coalition.engines.base import LoraSpec, SamplingParams
from coalition.engines.weightsync import Channel, Members
from coalition.method.training import threads_for
from coalition.method.variants import VariantHost


class _EngineHost:
    """An engine (HF or vLLM) with installed variant states, in its own Ray worker process."""

    def __init__(self, base_path: str, mode: str, spec: LoraSpec, engine: EngineSpec, cpus: float):
        import torch

        torch.set_num_threads(threads_for(cpus))
        self.host = VariantHost(engine.open(base_path, lora=mode == "lora"), mode, spec)
        self.members = Members()

    def pid(self) -> int:
        return os.getpid()

    def install(self, key: str, state: dict[str, Any], version: int) -> int:
        return self.host.install(key, state, version)

    def receive(self, key: str, channel: Channel, rank: int, version: int) -> int | None:
        """Take part in a broadcast push of ``key``'s full weights as ``version``; returns the
        version now served, or ``None`` when the sender had nothing to send."""
        try:
            state = self.members.get(key, channel, rank).receive(version)
        except Exception:
            self.members.drop(key)  # the group may be broken: the next push meets afresh
            raise
        return None if state is None else self.host.install(key, state, version)

    def versions(self) -> dict[str, int]:
        return self.host.versions()

    def sleep(self) -> None:
        self.host.engine.sleep()

    def wake(self) -> None:
        self.host.engine.wake()

    def generate(
        self, key: str, prompts: list[str], params: SamplingParams, expect: int | None
    ) -> list[list[Any]]:
        return self.host.generate(key, prompts, params, expect)

    def utilities(self, keys: list[str], prompts: list[str], targets: list[str]) -> list[float]:
        return self.host.utilities(keys, prompts, targets)

    def features(self, prompts: list[str]) -> list[list[float]]:
        return self.host.features(prompts)

    def evaluate(
        self,
        key: str,
        task_spec: dict[str, Any],
        examples: list[Example],
        method: str,
        params: SamplingParams,
        chat: bool,
        expect: int | None,
    ) -> list[Any]:
        return self.host.evaluate(key, task_spec, examples, method, params, chat, expect)


@ray.remote
class GeneratorActor(_EngineHost):
    """Serves one variant: generation (and its held-out evaluation)."""


@ray.remote
class ScorerActor(_EngineHost):
    """Serves the scorer model(s): U of rationales, and base-model generation."""
