"""What every recipe shares: resumable stages over a run directory, metrics, saved states,
held-out evaluation with intervals, and paired gains.

A stage writes its outputs atomically and is then recorded in the manifest; a rerun with the
same ``run_dir`` skips finished stages and reads their outputs back, so a crash or ``kill -9``
loses at most the stage in flight.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from coalition.data.tasks import from_config
from coalition.data.tasks.base import Task
from coalition.engines import sampling
from coalition.groups.group import Group
from coalition.method.training import State
from coalition.run import progress, stats
from coalition.run.checkpoints import save_state
from coalition.run.config import Config
from coalition.run.rundir import Manifest, RunDir, recording, write_jsonl, write_records

Log = Callable[[str], None]


class Recipe:
    """Stages, metrics and evaluation of one run on its model group (:class:`coalition.groups.group.Group`)."""

    def __init__(self, cfg: Config, models: Group, run_dir: Path, log: Log = progress.echo):
        self.cfg, self.workers, self.log = cfg, models, log
        self.dir = RunDir(run_dir)  # every path the recipe writes or reads
        self.manifest = Manifest(self.dir.path)
        self.task: Task = from_config(cfg.task)
        self.task_spec = {
            "name": cfg.task.name,
            "n_train": cfg.task.n_train,
            "n_test": cfg.task.n_test,
            "seed": cfg.task.seed,
            "params": cfg.task.params,
        }
        self.chat = cfg.model.chat_template
        self.test = self.task.load("test")
        self._lock = threading.Lock()
        self.metrics_path = self.dir.metrics_file
        self.metrics: list[dict[str, Any]] = []
        if self.metrics_path.exists():
            self.metrics = [json.loads(x) for x in self.metrics_path.read_text().splitlines() if x]

    def stage(self, name: str, fn: Callable[[], dict[str, Any] | None]) -> dict[str, Any]:
        """Run ``fn`` unless the manifest says ``name`` finished; record timing and info."""
        if self.manifest.done(name):
            problem = self.manifest.damaged(name)
            if problem is None:
                return self.manifest.info(name)
            self.log(f"[stage] {name} finished before, but {problem}: redoing it")
            with self._lock:
                self.manifest.forget(name)
        self.log(f"[stage] {name} …")
        start = time.perf_counter()
        with recording() as outputs, progress.tracking(name):
            info = fn() or {}
        seconds = round(time.perf_counter() - start, 2)
        with self._lock:
            self.metrics.append({"stage": name, "seconds": seconds, **_flat(info)})
            write_jsonl(self.metrics_path, self.metrics)
            self.manifest.mark(name, outputs, seconds=seconds, **info)
        self.log(f"[stage] {name} done in {seconds:.1f}s")
        return self.manifest.info(name)

    def stages(self, named: list[tuple[str, Callable[[], dict[str, Any] | None]]]) -> None:
        """Independent stages (one update per model): concurrently where the workers run
        them in separate processes, else one after another. Each is recorded on its own."""
        if not self.workers.parallel_updates or len(named) < 2:
            for name, fn in named:
                self.stage(name, fn)
            return
        with ThreadPoolExecutor(max_workers=len(named)) as pool:
            for fut in [pool.submit(self.stage, name, fn) for name, fn in named]:
                fut.result()

    def save(self, key: str, state: State, version: int) -> None:
        save_state(self.dir.state(key, version), state, key, version)

    def evaluate(self, tag: str, keys: list[Any]) -> dict[str, Any]:
        """Greedy held-out predictions of each model in ``keys`` (``evaluate.method``), written
        to ``eval/<tag>-<name>.jsonl``, with accuracy and its bootstrap 95% interval."""
        params = replace(sampling(self.cfg.generation, self.cfg.seed), temperature=0.0, n=1)
        preds = self.workers.evaluate(
            keys, self.task_spec, self.test, self.cfg.evaluate.method, params, self.chat
        )
        out = {}
        for key, rows in preds.items():
            name = key
            write_records(self.dir.eval_file(tag, name), rows)
            acc = stats.accuracy(
                [p.correct for p in rows], self.cfg.evaluate.bootstrap, self.cfg.seed
            )
            out[name] = {"accuracy": acc.accuracy, "ci95": [acc.ci_low, acc.ci_high], "n": acc.n}
            self.log(f"[eval] {tag} {name}: {acc}")
        return {"accuracy": out}

    def gain(self, before: tuple[str, str], after: tuple[str, str]) -> dict[str, Any]:
        """Accuracy change from ``(tag, name)`` to ``(tag, name)`` on the same held-out
        questions, with a paired-bootstrap 95% interval."""
        b = {p.id: float(p.correct) for p in self.dir.predictions(*before)}
        a = {p.id: float(p.correct) for p in self.dir.predictions(*after)}
        ids = sorted(b)
        d = stats.paired_difference(
            [b[i] for i in ids], [a[i] for i in ids], self.cfg.evaluate.bootstrap, self.cfg.seed
        )
        return {"delta": d.delta, "ci95": [d.ci_low, d.ci_high], "n": d.n}


def _flat(info: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in info.items() if isinstance(v, int | float | str | bool)}
