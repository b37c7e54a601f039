"""Shared fixtures: offline hub, the tiny model built in code, one engine per session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "configs" / "smoke.yaml"


@pytest.fixture(scope="session")
def tiny_path() -> str:
    from coalition.engines.models import resolve

    return resolve("builtin:tiny")


@pytest.fixture
def tiny_engine(tiny_path):
    from coalition.engines.hf import HFEngine

    return HFEngine.from_pretrained(tiny_path, device="cpu", batch_size=4, progress=False)


def lora_state(tiny_path: str, seed: int) -> dict:
    """A random LoRA state for the tiny model (the smoke config's adapter shape), scaled so a
    variant's outputs clearly differ from the base's."""
    import torch
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_path),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    return {k: v * 10 for k, v in get_peft_model_state_dict(model).items()}


def two_variant_workers(tiny_path: str):
    """In-process workers on the tiny model with variants v0 and v1 (random LoRA states, v1)."""
    from coalition.engines import EngineSpec
    from coalition.engines.base import LoraSpec
    from coalition.groups.layout import coalition_layout
    from coalition.groups.local import LocalGroup

    spec = LoraSpec(r=4, alpha=8, target_modules=("q_proj", "v_proj"))
    layout = coalition_layout(tiny_path, "lora", "base", 2, in_process=True)
    w = LocalGroup(layout, spec, EngineSpec(batch_size=4))
    w.push("v0", lora_state(tiny_path, 1), 1)
    w.push("v1", lora_state(tiny_path, 2), 1)
    return w


def make_run_dir(path, tiny_path, overrides=("deliberation.refine_turns=1",), summary=False):
    """A finished smoke run as the training job leaves it: config, variant states, controller
    (and, with ``summary``, its summary.json), in seconds and without Ray."""
    from coalition.engines.hf import HFEngine
    from coalition.method import controller as C
    from coalition.run import config
    from coalition.run.checkpoints import save_state
    from coalition.run.rundir import Manifest, atomic_write

    cfg = config.load(SMOKE, list(overrides))
    atomic_write(path / "config.yaml", config.dump(cfg))
    for stage in ("warmup/train/v0", "warmup/train/v1"):
        Manifest(path).mark(stage)
    for k in range(2):
        save_state(
            path / "states" / f"v{k}-v1.safetensors", lora_state(tiny_path, k + 1), f"v{k}", 1
        )
    engine = HFEngine.from_pretrained(tiny_path, device="cpu", progress=False)
    texts = [f"question {i}" for i in range(6)]
    feats = engine.embed(texts)
    examples = [C.RoutingExample(f"q{i}", "generate", t, (0.2, 0.7)) for i, t in enumerate(texts)]
    examples += [C.RoutingExample(f"q{i}", "refine", t, (0.6, 0.1)) for i, t in enumerate(texts)]
    C.fit(examples, feats + feats, 2, holdout=0.0).save(path / "controller")
    if summary:
        atomic_write(path / "summary.json", '{"job": "train"}\n')
    return path
