"""One SFT or DPO update on a fresh Ray Train ``TorchTrainer`` (``ray.trainer: per_update``:
the workers and their GPUs are freed between updates).

Each worker runs :func:`coalition.method.training.run_update` with TRL's trainer hooked into Ray
through ``prepare_trainer`` (DDP with gloo on CPU, NCCL on GPU, when ``num_workers > 1``).
TRL is used rather than our own loop because its SFT/DPO losses, masking and reference
handling are the tested implementations.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from actors.session import WORKER_ENV_VARS
from coalition.engines.base import LoraSpec
from coalition.method.training import State, StepSettings, run_update, threads_for

STATE_FILE = "state.safetensors"
# Ray Train routes every print of a worker to its logger, even prints a library captures for
# itself (datasets' fingerprinting disassembles functions into a captured stdout): off. And no
# per-update progress bars in the driver's terminal (the stage lines say what runs).
WORKER_ENV = {"env_vars": {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0", **WORKER_ENV_VARS}}


def _train_loop(config: dict[str, Any]) -> None:
    import ray.train
    import torch
    from ray.train.huggingface.transformers import prepare_trainer
    from safetensors.torch import save_file

    torch.set_num_threads(threads_for(config["cpus"]))
    state, metrics = run_update(
        config["kind"],
        config["base_path"],
        config["mode"],
        config["spec"],
        config["state"],
        config["rows"],
        config["settings"],
        config["dtype"],
        prepare=prepare_trainer,
    )
    if ray.train.get_context().get_world_rank() == 0:
        with tempfile.TemporaryDirectory() as tmp:
            save_file(state, str(Path(tmp) / STATE_FILE))
            (Path(tmp) / "metrics.json").write_text(json.dumps(metrics))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
    else:
        ray.train.report(metrics)


def train_update(
    kind: str,
    name: str,
    base_path: str,
    mode: str,
    spec: LoraSpec,
    state: State | None,
    rows: list[dict[str, str]],
    settings: StepSettings,
    storage: Path,
    dtype: str = "float32",
    workers: int = 1,
    cpus_per_worker: float = 1.0,
    use_gpu: bool = False,
) -> tuple[State, dict[str, float]]:
    """Run one update under a TorchTrainer named ``name``; return (new state, metrics)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from safetensors.torch import load_file

    storage = Path(storage).resolve()
    shutil.rmtree(storage / name, ignore_errors=True)  # a rerun of a crashed update starts clean
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config={
            "kind": kind,
            "base_path": base_path,
            "mode": mode,
            "spec": spec,
            "state": state,
            "rows": rows,
            "settings": settings,
            "dtype": dtype,
            "cpus": cpus_per_worker,
        },
        scaling_config=ScalingConfig(
            num_workers=workers, use_gpu=use_gpu, resources_per_worker={"CPU": cpus_per_worker}
        ),
        run_config=RunConfig(name=name, storage_path=str(storage), worker_runtime_env=WORKER_ENV),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"update {name}: the trainer reported no checkpoint ({result.error})")
    with result.checkpoint.as_directory() as folder:
        new_state = load_file(str(Path(folder) / STATE_FILE))
        metrics = json.loads((Path(folder) / "metrics.json").read_text())
    return new_state, metrics
