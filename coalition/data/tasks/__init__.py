"""Task registry: procedural (reasoning-gym, coin flip, last letters), hub benchmarks, user JSONL."""

from __future__ import annotations

# Importing the modules registers their tasks.
from coalition.data.tasks import benchmarks, procedural, userfile  # noqa: E402,F401,I001
from coalition.data.tasks.base import Task, TaskError, register, registry


def task_names() -> list[str]:
    return sorted(registry())


def get_task(name: str, n_train: int, n_test: int, seed: int, params: dict | None = None) -> Task:
    """Build the task ``name`` with its split sizes, seed and task-specific params."""
    if name not in registry():
        raise TaskError(f"unknown task {name!r}; allowed: {', '.join(task_names())}")
    return registry()[name](n_train=n_train, n_test=n_test, seed=seed, params=params or {})


def from_config(cfg) -> Task:  # cfg: coalition.run.config.TaskConfig (no import cycle)
    return get_task(cfg.name, cfg.n_train, cfg.n_test, cfg.seed, cfg.params)


__all__ = ["Task", "TaskError", "from_config", "get_task", "register", "task_names"]
