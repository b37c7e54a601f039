"""COALITION end to end on Ray: warm-up, then rounds of generate → refine → score → SRO → push.

    python jobs/train.py [--config configs/X.yaml] [key=value ...]

Starts a local Ray unless ``ray.address`` / ``RAY_ADDRESS`` is set (or it runs under
``ray job submit``). Rerunning with the same ``run_dir`` resumes after the last finished stage.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from coalition import cli  # noqa: E402
from coalition.config import Config, ConfigError  # noqa: E402
from coalition.report import print_table  # noqa: E402

RESUMABLE_CHANGES = {"rounds", "ray", "run_dir", "evaluate.bootstrap"}


def check_combination(cfg: Config) -> None:
    if cfg.variants.mode == "full" and cfg.scorer == "variants_mean":
        raise ConfigError(
            "scorer: 'variants_mean' needs variants.mode: lora (it scores with every variant on one "
            "base); with variants.mode: full use scorer: ift_all or base"
        )


def check_resume(cfg: Config, run_dir: Path) -> None:
    """A rerun may extend ``rounds`` or change Ray resources, nothing that changes results."""
    import yaml

    old_path = run_dir / "config.yaml"
    if not old_path.exists():
        return
    old = yaml.safe_load(old_path.read_text()) or {}
    new = cfg.model_dump(mode="json")
    changed = [
        key
        for key in _diff(old, new)
        if not any(key == k or key.startswith(k + ".") for k in RESUMABLE_CHANGES)
    ]
    if changed:
        raise ConfigError(
            f"run_dir {run_dir} holds a run with another config ({', '.join(changed)} differ); "
            "use a new run_dir or the same settings to resume"
        )


def _diff(a: object, b: object, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [d for k in keys for d in _diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


def main(argv: list[str] | None = None) -> int:
    cfg = cli.parse(argv, "train")
    check_combination(cfg)
    run_dir = Path(cfg.run_dir) if cfg.run_dir else None
    if run_dir is not None:
        check_resume(cfg, run_dir)
    run_dir = cli.prepare_run_dir(cfg, "train")

    from actors.session import init_ray
    from actors.workers import RayWorkers
    from coalition.models import resolve
    from coalition.recipes.coalition import Run

    start = time.perf_counter()
    base_path = resolve(cfg.model.name_or_path)
    init_ray(cfg)
    workers = RayWorkers(cfg, base_path, run_dir / "ray_train")
    try:
        summary = Run(cfg, workers, run_dir).run()
    finally:
        workers.close()
    rows = []
    for stage, per in summary["accuracy"].items():
        for name, acc in per.items():
            rows.append(
                [
                    stage,
                    name,
                    acc["n"],
                    f"{acc['accuracy']:.3f}",
                    f"[{acc['ci95'][0]:.3f}, {acc['ci95'][1]:.3f}]",
                ]
            )
    print_table(["stage", "model", "n", "accuracy", "95% CI"], rows)
    gains = [
        [stage, name, f"{g['delta']:+.3f}", f"[{g['ci95'][0]:+.3f}, {g['ci95'][1]:+.3f}]"]
        for stage, per in summary["gain_over_warmup"].items()
        for name, g in per.items()
    ]
    if gains:
        print_table(["round", "model", "gain over warm-up", "paired 95% CI"], gains)
    print(f"wall time {time.perf_counter() - start:.0f}s; run_dir: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
