"""GeneratorActor (one per variant) and ScorerActor: Ray shells over :class:`VariantHost`."""

from __future__ import annotations

import os
from typing import Any

import ray

from coalition.engines.base import LoraSpec, SamplingParams
from coalition.engines.hf import HFEngine
from coalition.records import Example
from coalition.training import threads_for
from coalition.variants import VariantHost


class _EngineHost:
    """An HF engine with installed variant states, living in its own Ray worker process."""

    def __init__(
        self,
        base_path: str,
        mode: str,
        spec: LoraSpec,
        dtype: str,
        batch_size: int,
        cpus: float,
        device: str = "auto",
    ):
        import torch

        torch.set_num_threads(threads_for(cpus))
        engine = HFEngine.from_pretrained(
            base_path, dtype=dtype, device=device, batch_size=batch_size, progress=False
        )
        self.host = VariantHost(engine, mode, spec)

    def pid(self) -> int:
        return os.getpid()

    def install(self, key: str, state: dict[str, Any], version: int) -> int:
        return self.host.install(key, state, version)

    def versions(self) -> dict[str, int]:
        return self.host.versions()

    def generate(
        self, key: str | None, prompts: list[str], params: SamplingParams, expect: int | None
    ) -> list[list[Any]]:
        return self.host.generate(key, prompts, params, expect)

    def utilities(
        self, keys: list[str | None], prompts: list[str], targets: list[str]
    ) -> list[float]:
        return self.host.utilities(keys, prompts, targets)

    def features(self, prompts: list[str]) -> list[list[float]]:
        return self.host.features(prompts)

    def evaluate(
        self,
        key: str | None,
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
