"""What a COALITION run needs from its workers, and the in-process implementation.

The recipe (``coalition/recipes/sro.py``) talks only to :class:`Workers`. Keys name the
models: ``"v0" … "v{K-1}"`` for the variants, ``"ift"`` for the all-data scorer model, and
``"base"`` for the frozen base. Two implementations:

- :class:`LocalWorkers` — everything in this process (tests, the one-process benchmark);
- ``actors.workers.RayWorkers`` — a GeneratorActor per variant, a ScorerActor, updates as Ray
  Train jobs, weights pushed through the object store.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from coalition.engines import EngineSpec
from coalition.engines.base import LoraSpec
from coalition.groups.group import Group
from coalition.method import training
from coalition.method.variants import BASE, VariantHost, variant_key


def scorer_keys(kind: str, count: int) -> list[str]:
    """Which models' utilities the scorer averages: the base, every variant, or M_IFT."""
    if kind == "base":
        return [BASE]
    if kind == "variants_mean":
        return [variant_key(k) for k in range(count)]
    if kind == "ift_all":
        return ["ift"]
    raise ValueError(f"scorer: {kind!r}; allowed: ift_all, variants_mean, base")


class Workers(Group):
    """A COALITION run's group: the variants, the scorer's models and the base; beyond every
    group's calls, the scorer's utilities and the base's features for the controller."""

    @abstractmethod
    def utilities(self, prompts: list[str], targets: list[str]) -> list[float]:
        """The scorer's U for each (prompt, target)."""

    @abstractmethod
    def features(self, prompts: list[str]) -> list[list[float]]:
        """The frozen base model's pooled hidden state of each prompt (controller features)."""


class LocalWorkers(Workers):
    """All models on in-process engines; updates run in this process too."""

    def __init__(
        self,
        base_path: str,
        mode: str,
        spec: LoraSpec,
        scorer: str,
        count: int,
        engine: EngineSpec | None = None,
    ):
        self.base_path, self.mode, self.spec = base_path, mode, spec
        self.engine = engine or EngineSpec()
        self.dtype = self.engine.dtype
        self.scorer_keys = scorer_keys(scorer, count)
        self._hosts: dict[str, VariantHost] = {}
        self._expected: dict[str, int] = {}
        base = self._new_host()
        self.tokenizer = base.tokenizer
        self._hosts[BASE] = base

    def _new_host(self) -> VariantHost:
        engine = self.engine.open(self.base_path, lora=self.mode == "lora")
        return VariantHost(engine, self.mode, self.spec)

    def _host(self, key: str) -> VariantHost:
        # LoRA: every adapter lives on the one base engine; full: one engine per model.
        if key == BASE or self.mode == "lora":
            return self._hosts[BASE]
        if key not in self._hosts:
            self._hosts[key] = self._new_host()
        return self._hosts[key]

    def generate(self, jobs, params):
        return {
            key: self._host(key).generate(key, prompts, params, self._expected.get(key))
            for key, prompts in jobs.items()
        }

    def utilities(self, prompts, targets):
        if self.mode == "full":
            cols = [self._host(k).utilities([k], prompts, targets) for k in self.scorer_keys]
            return [sum(c) / len(c) for c in zip(*cols, strict=True)]
        return self._hosts[BASE].utilities(self.scorer_keys, prompts, targets)

    def features(self, prompts):
        return self._hosts[BASE].features(prompts)

    def evaluate(self, keys, task_spec, examples, method, params, chat):
        return {
            key: self._host(key).evaluate(key, task_spec, examples, method, params, chat)
            for key in keys
        }

    def train(self, kind, key, state, rows, settings):
        return training.run_update(
            kind, self.base_path, self.mode, self.spec, state, rows, settings, self.dtype
        )

    def push(self, key, state, version):
        served = self._host(key).install(key, state, version)
        if served != version:
            raise RuntimeError(f"{key}: pushed version {version} but host serves {served}")
        self._expected[key] = version

    def versions(self):
        return dict(self._expected)


def local_workers(cfg: Any) -> LocalWorkers:
    """A run's workers in this process (``ray.in_process: true``), with the torch threads one
    generator actor gets, so its numerics and samples match the Ray run's."""
    from coalition.engines.models import resolve
    from coalition.groups.group import prepare_in_process
    from coalition.method.training import lora_spec

    prepare_in_process(cfg.ray.generator_cpus)
    return LocalWorkers(
        resolve(cfg.model.name_or_path),
        cfg.variants.mode,
        lora_spec(cfg.variants.lora),
        cfg.scorer,
        cfg.variants.count,
        EngineSpec.of(cfg),
    )
