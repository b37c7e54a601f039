"""The shared command line of every job: ``--config PATH`` plus dotted ``key=value`` overrides.

User mistakes (config, task data) end the job with exit code 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from coalition.data.tasks.base import TaskError
from coalition.engines import choose_engine
from coalition.run import config as config_mod
from coalition.run import preflight, rundir
from coalition.run.config import Config, ConfigError
from coalition.run.rundir import RunDir, atomic_write

USAGE_ERRORS = (ConfigError, TaskError)


def parse(argv: list[str] | None, job: str, default: Path | None = None) -> Config:
    """The job's config: ``--config`` (else ``default``, else configs/default.yaml) + overrides."""
    path, overrides = parse_args(argv, job)
    return config_mod.load(path or default, overrides)


def parse_args(argv: list[str] | None, job: str) -> tuple[Path | None, list[str]]:
    """``--config`` (None: the default config) and the ``key=value`` overrides."""
    parser = argparse.ArgumentParser(
        prog=f"coalition-{job} (or python jobs/{job}.py)",
        description=f"coalition {job}: --config PATH plus dotted key=value overrides.",
        epilog=f"example: coalition-{job} --config configs/smoke.yaml task.n_test=20",
    )
    parser.add_argument(
        "--config", type=Path, default=None, help="YAML config (default: configs/default.yaml)"
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides")
    args = parser.parse_args(argv)
    return args.config, list(args.overrides)


def start(cfg: Config, job: str) -> Path | None:
    """Everything a job checks before it writes anything or starts Ray (config combination,
    models, task data, resources, the run directory), then its run directory, locked, with the
    config in it. None: that run already finished with this config; there is nothing to do."""
    check_combination(cfg, job)
    preflight.check(cfg, job)
    if cfg.engine == "auto":
        kind, why = choose_engine(cfg)
        print(f"engine: auto -> {kind}: {why}")
    path, finished = prepare_run_dir(cfg, job)
    if finished:
        more = ", or raise rounds to continue it" if job in ("train", "saie") else ""
        print(
            f"run_dir {path} holds a finished {_job_name(job)} run with this config; nothing "
            f"to do (results: {path / 'summary.json'}). Use another run_dir for a new run{more}"
        )
        return None
    return path


def prepare_run_dir(cfg: Config, job: str) -> tuple[Path, bool]:
    """The run directory (``run_dir`` or ``runs/<job>-<time>``), checked, locked and with the
    resolved config in it; and whether it holds this job's finished run with this config.

    A directory another job owns, a run with other settings, a non-empty directory that is no
    run, a file, or one that cannot be created is refused before anything is written."""
    path = (
        Path(cfg.run_dir)
        if cfg.run_dir
        else Path("runs") / f"{job}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    rundir.check_creatable(path)
    kind = rundir.owner(path)
    if kind == "foreign":
        raise ConfigError(
            f"run_dir {path} is not empty and holds no coalition run ({rundir.describe(path)}); "
            "use a new or empty directory"
        )
    if kind is not None and kind != job:
        raise ConfigError(
            f"run_dir {path} holds a {_job_name(kind)} run ({rundir.describe(path)}); "
            f"{_job_name(job)} would write over it. Use another run_dir"
            + (
                " (or method=suite / method=discussion to evaluate that run beside it)"
                if job == "evaluate" and kind == "train"
                else ""
            )
        )
    finished = False
    if kind == job:
        check_resume(cfg, path)
        finished = RunDir(path).summary_file.exists() and not _changes(cfg, path, FREE_CHANGES)
    path.mkdir(parents=True, exist_ok=True)
    rundir.lock(path)
    if finished:
        return path, True
    if removed := rundir.clean_partial(path):
        print(f"run_dir {path}: removed {removed} half-written file(s) a killed run left")
    atomic_write(RunDir(path).config_file, config_mod.dump(cfg))
    rundir.mark_owner(path, job)
    return path, False


def _job_name(job: str) -> str:
    known = ("train", "ablate", "distill", "saie", "evaluate")
    return f"jobs/{job}.py" if job in known else f"a {job}"


# an ablation may add arms (each arm's directory is checked against its own config)
RESUMABLE_CHANGES = {"rounds", "ray", "run_dir", "evaluate.bootstrap", "ablate"}
FREE_CHANGES = {"ray", "run_dir"}  # do not change a finished run's results


def check_combination(cfg: Config, job: str = "train") -> None:
    """Settings that are each valid but do not work together (for ``job``)."""
    source = cfg.warmup.rationales_from
    uses_warmup = job in ("train", "ablate", "saie")
    if uses_warmup and source not in ("auto", "gold", "self") and not Path(source).is_dir():
        raise ConfigError(
            f"warmup.rationales_from: {source!r} is neither auto, gold, self nor a "
            "jobs/distill.py run directory"
        )
    if job in ("train", "ablate") and cfg.variants.mode == "full" and cfg.scorer == "variants_mean":
        raise ConfigError(
            "scorer: 'variants_mean' needs variants.mode: lora (it scores with every variant on one "
            "base); with variants.mode: full use scorer: ift_all or base"
        )


def check_resume(cfg: Config, run_dir: Path) -> None:
    """A rerun may extend ``rounds`` or change Ray resources, nothing that changes results."""
    changed = _changes(cfg, run_dir, RESUMABLE_CHANGES)
    if changed:
        raise ConfigError(
            f"run_dir {run_dir} holds a run with another config ({', '.join(changed)} differ); "
            "use a new run_dir or the same settings to resume"
        )


def _changes(cfg: Config, run_dir: Path, allowed: set[str]) -> list[str]:
    """Keys whose value differs from the run's saved config, beyond the ``allowed`` ones."""
    old_path = RunDir(run_dir).config_file
    if not old_path.exists():
        return []
    try:
        old = yaml.safe_load(old_path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError):
        raise ConfigError(
            f"{old_path} is damaged; it is the config this run was made with. Restore it"
        ) from None
    with contextlib.suppress(ConfigError):  # keys the schema gained since read as defaults
        old = config_mod.validate(config_mod.drop_retired(old)).model_dump(mode="json")
    new = cfg.model_dump(mode="json")
    return [
        key
        for key in diff(old, new)
        if not any(key == k or key.startswith(k + ".") for k in allowed)
    ]


def diff(a: object, b: object, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [d for k in keys for d in diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


def command(main: Callable[[list[str] | None], int | None]) -> Callable[[], None]:
    """The console command of a job (``coalition-train`` …, pyproject.toml): ``main`` on the
    process's arguments through :func:`run`, its code as the exit status."""
    return lambda: sys.exit(run(main))


def run(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Call ``main``; a user mistake becomes one stderr line and exit code 2, no traceback."""
    try:
        return int(main(argv) or 0)
    except USAGE_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        rundir.unlock_all()
