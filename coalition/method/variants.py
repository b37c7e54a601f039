"""Variants hosted on one engine: install a variant's state by version, generate with it (checking
the version served), score utilities with one or several variants, evaluate.

The generator and scorer actors are thin Ray shells over a :class:`VariantHost`; the in-process
workers (tests, benchmarks) use it directly, so both paths run the same code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from coalition.data.records import Example, Prediction
from coalition.data.tasks import get_task
from coalition.engines.base import Engine, Generation, LoraSpec, SamplingParams
from coalition.method.evaluation import evaluate
from coalition.method.scoring import mean_utility

BASE = "base"  # the frozen base model's name in every model group (no adapter, never trained)


def variant_key(k: int) -> str:
    """Variant ``k``'s name: its states, adapter and actor are called ``v{k}``."""
    return f"v{k}"


class VersionMismatch(RuntimeError):
    """A variant answered with another version than the caller expected."""


class VariantHost:
    """An engine and the variant states installed on it (LoRA adapters, or full weights)."""

    def __init__(self, engine: Engine, mode: str = "lora", spec: LoraSpec | None = None):
        self.engine = engine
        self.mode = mode
        self.spec = spec or LoraSpec()

    def install(self, key: str, state: dict[str, Any], version: int) -> int:
        """Install ``state`` as variant ``key`` at ``version``; returns the version now served."""
        if self.mode == "full":
            self.engine.set_weights(state, version)  # type: ignore[attr-defined]
            self._full_key = key
        else:
            self.engine.set_adapter(key, state, version, self.spec)
        return self.version(key)

    def version(self, key: str) -> int | None:
        if self.mode == "full":
            if getattr(self, "_full_key", None) != key:
                return None
            return self.engine.versions().get("weights")
        return self.engine.versions().get(key)

    def versions(self) -> dict[str, int]:
        if self.mode == "full":
            key = getattr(self, "_full_key", None)
            return {key: self.engine.versions()["weights"]} if key else {}
        return self.engine.versions()

    def _adapter(self, key: str, expect_version: int | None) -> str | None:
        if key == BASE:
            return None
        served = self.version(key)
        if served is None:
            raise KeyError(f"variant {key!r} is not installed here")
        if expect_version is not None and served != expect_version:
            raise VersionMismatch(
                f"variant {key!r} serves version {served}, expected {expect_version}"
            )
        return None if self.mode == "full" else key

    def generate(
        self,
        key: str,
        prompts: list[str],
        params: SamplingParams,
        expect_version: int | None = None,
    ) -> list[list[Generation]]:
        """Generate with variant ``key`` (or :data:`BASE`), refusing a stale version."""
        return self.engine.generate(prompts, params, self._adapter(key, expect_version))

    def utilities(self, keys: Sequence[str], prompts: list[str], targets: list[str]) -> list[float]:
        """U of each (prompt, target), averaged over the scorer models ``keys``."""
        per_key = [self.engine.score(prompts, targets, self._adapter(k, None)) for k in keys]
        return [mean_utility(list(col)) for col in zip(*per_key, strict=True)]

    def features(self, prompts: list[str]) -> list[list[float]]:
        """The base model's pooled hidden states of ``prompts`` (the controller's input)."""
        return self.engine.embed(prompts)

    def evaluate(
        self,
        key: str,
        task_spec: dict[str, Any],
        examples: list[Example],
        method: str,
        params: SamplingParams,
        chat: bool = True,
        expect_version: int | None = None,
    ) -> list[Prediction]:
        """Held-out predictions of variant ``key`` (task rebuilt here from its spec)."""
        task = get_task(**task_spec)
        adapter = self._adapter(key, expect_version)
        return evaluate(self.engine, task, examples, method, params, adapter, chat)  # type: ignore[arg-type]

    @property
    def tokenizer(self) -> Any:
        return getattr(self.engine, "tokenizer", None)
