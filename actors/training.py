"""Where an update runs (``ray.trainer``): on the model's persistent trainer
(:mod:`actors.persistent`, the default) or on a fresh TorchTrainer (:mod:`actors.update`); with
``engine: vllm`` the generators sleep meanwhile so their GPU memory goes to the trainer."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from actors.persistent import PersistentTrainer, persistent_trainer
from actors.resilient import HostHandle, gather
from actors.update import train_update
from coalition.engines import choose_engine
from coalition.engines.base import LoraSpec
from coalition.method.training import State, StepSettings


def train_with(
    cfg: Any,
    trainers: dict[str, PersistentTrainer],
    key: str,
    base_path: str,
    mode: str,
    spec: LoraSpec,
    storage: Path,
    kind: str,
    state: State | None,
    rows: list[dict[str, str]],
    settings: StepSettings,
    generators: Sequence[HostHandle] = (),
) -> tuple[State, dict[str, float]]:
    """One update of model ``key`` per ``ray.trainer``: on its persistent trainer (started on
    first use and kept in ``trainers``), or on a fresh TorchTrainer. With ``engine: vllm`` and
    ``vllm.sleep_during_training``, the ``generators`` sleep while it runs (their GPU memory
    goes to the trainer) and wake before it returns, whatever happens."""
    sleep = choose_engine(cfg)[0] == "vllm" and cfg.vllm.sleep_during_training and generators
    if sleep:
        gather([g.sleep() for g in generators])
    try:
        r = cfg.ray
        if r.trainer == "persistent":
            if key not in trainers:
                trainers[key] = persistent_trainer(cfg, key, base_path, mode, spec, storage)
            return trainers[key].update(kind, state, rows, settings)
        return train_update(
            kind,
            f"{kind}-{key}-{settings.seed}",
            base_path,
            mode,
            spec,
            state,
            rows,
            settings,
            storage,
            cfg.model.dtype,
            r.train_workers,
            r.train_cpus_per_worker,
            r.train_use_gpu,
        )
    finally:
        if sleep:
            gather([g.wake() for g in generators])
