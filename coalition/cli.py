"""The shared command line of every job: ``--config PATH`` plus dotted ``key=value`` overrides.

User mistakes (config, task data) end the job with exit code 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from coalition import config as config_mod
from coalition.config import Config, ConfigError
from coalition.rundir import atomic_write
from coalition.tasks.base import TaskError

USAGE_ERRORS = (ConfigError, TaskError)


def parse(argv: list[str] | None, job: str, default: Path | None = None) -> Config:
    """The job's config: ``--config`` (else ``default``, else configs/default.yaml) + overrides."""
    path, overrides = parse_args(argv, job)
    return config_mod.load(path or default, overrides)


def parse_args(argv: list[str] | None, job: str) -> tuple[Path | None, list[str]]:
    """``--config`` (None: the default config) and the ``key=value`` overrides."""
    parser = argparse.ArgumentParser(
        prog=f"jobs/{job}.py",
        description=f"coalition {job}: --config PATH plus dotted key=value overrides.",
        epilog="example: python jobs/evaluate.py --config configs/smoke.yaml task.n_test=20",
    )
    parser.add_argument(
        "--config", type=Path, default=None, help="YAML config (default: configs/default.yaml)"
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides")
    args = parser.parse_args(argv)
    return args.config, list(args.overrides)


def prepare_run_dir(cfg: Config, job: str) -> Path:
    """The run directory (``run_dir`` or ``runs/<job>-<time>``) with the resolved config in it."""
    path = (
        Path(cfg.run_dir)
        if cfg.run_dir
        else Path("runs") / f"{job}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    path.mkdir(parents=True, exist_ok=True)
    atomic_write(path / "config.yaml", config_mod.dump(cfg))
    return path


RESUMABLE_CHANGES = {"rounds", "ray", "run_dir", "evaluate.bootstrap"}


def check_combination(cfg: Config) -> None:
    """Settings that are each valid but do not work together."""
    source = cfg.warmup.rationales_from
    if source not in ("auto", "gold", "self") and not Path(source).is_dir():
        raise ConfigError(
            f"warmup.rationales_from: {source!r} is neither auto, gold, self nor a "
            "jobs/distill.py run directory"
        )
    if cfg.variants.mode == "full" and cfg.scorer == "variants_mean":
        raise ConfigError(
            "scorer: 'variants_mean' needs variants.mode: lora (it scores with every variant on one "
            "base); with variants.mode: full use scorer: ift_all or base"
        )


def check_resume(cfg: Config, run_dir: Path) -> None:
    """A rerun may extend ``rounds`` or change Ray resources, nothing that changes results."""
    old_path = run_dir / "config.yaml"
    if not old_path.exists():
        return
    old = yaml.safe_load(old_path.read_text()) or {}
    new = cfg.model_dump(mode="json")
    changed = [
        key
        for key in diff(old, new)
        if not any(key == k or key.startswith(k + ".") for k in RESUMABLE_CHANGES)
    ]
    if changed:
        raise ConfigError(
            f"run_dir {run_dir} holds a run with another config ({', '.join(changed)} differ); "
            "use a new run_dir or the same settings to resume"
        )


def diff(a: object, b: object, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [d for k in keys for d in diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


def run(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Call ``main``; a user mistake becomes one stderr line and exit code 2, no traceback."""
    try:
        return int(main(argv) or 0)
    except USAGE_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
