"""The engine interface: batched generation, batched target scoring, versioned LoRA adapters.

The HF engine implements it everywhere; the vLLM engine plugs into the same slot on GPUs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. ``temperature == 0`` means greedy."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    seed: int = 0
    ignore_eos: bool = False  # always max_new_tokens tokens (benchmarks: equal work per engine)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass(frozen=True)
class Generation:
    """One sampled completion: its text, how many new tokens, and whether it ended at EOS."""

    text: str
    tokens: int
    finished: bool


@dataclass(frozen=True)
class TokenScore:
    """Log-likelihood of a target after a prompt: summed, averaged per token, and token count."""

    sum: float
    mean: float
    count: int


@dataclass(frozen=True)
class LoraSpec:
    """The shape of a LoRA adapter (what PEFT's LoraConfig needs to host its weights)."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    extra: dict[str, Any] = field(default_factory=dict)

    def peft_config(self) -> Any:
        """The PEFT ``LoraConfig`` of this shape (imported lazily: PEFT is heavy)."""
        from peft import LoraConfig

        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=list(self.target_modules),
            task_type="CAUSAL_LM",
            **self.extra,
        )


def prompt_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a prompt; BOS is added only when the text does not already carry it. Both
    engines tokenize through this, so they see exactly the same ids."""
    bos = tokenizer.bos_token
    add = not (bos and text.startswith(bos))
    return tokenizer(text, add_special_tokens=add)["input_ids"]


def stop_ids(generation_config: Any, tokenizer: Any) -> list[int]:
    """The token ids that end a generation: the model's generation config's EOS ids plus the
    tokenizer's EOS."""
    ids = getattr(generation_config, "eos_token_id", None)
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def target_ids(tokenizer: Any, target: str) -> list[int]:
    """Token ids of a scored target (no special tokens); an empty target is an error."""
    ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"target {target!r} has no tokens")
    return ids


class Engine(ABC):
    """Generate and score with one base model and any number of named, versioned adapters."""

    @abstractmethod
    def generate(
        self, prompts: list[str], params: SamplingParams, adapter: str | None = None
    ) -> list[list[Generation]]:
        """``params.n`` completions per prompt, in prompt order; ``adapter=None`` is the base."""

    @abstractmethod
    def score(
        self, prompts: list[str], targets: list[str], adapter: str | None = None
    ) -> list[TokenScore]:
        """Log-probabilities of each target's tokens right after its prompt."""

    @abstractmethod
    def embed(self, prompts: list[str]) -> list[list[float]]:
        """The frozen base model's mean-pooled last hidden state of each prompt (the
        controller's features: adapters never change them)."""

    @abstractmethod
    def set_adapter(self, name: str, state: dict[str, Any], version: int, spec: LoraSpec) -> None:
        """Install (or replace) adapter ``name`` from a LoRA state dict, recording ``version``."""

    @abstractmethod
    def load_adapter(self, name: str, path: str, version: int = 0) -> None:
        """Install adapter ``name`` from a saved PEFT adapter directory."""

    @abstractmethod
    def set_weights(self, state: dict[str, Any], version: int) -> None:
        """Replace the base model's weights (``variants.mode: full``); served as "weights"."""

    @abstractmethod
    def versions(self) -> dict[str, int]:
        """The version each installed adapter serves."""

    def sleep(self) -> None:  # noqa: B027 - optional: engines without device memory do nothing
        """Free accelerator memory (weights offloaded, caches dropped) so a trainer can use the
        device; :meth:`wake` restores it. No-op where there is nothing to free."""

    def wake(self) -> None:  # noqa: B027
        """Undo :meth:`sleep`."""
