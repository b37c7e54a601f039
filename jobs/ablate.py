"""Training ablations from one shared warm-up, as one resumable run and one table.

    python jobs/ablate.py --config configs/ablations/laptop.yaml [key=value ...]

Each arm of ``ablate.arms`` is a COALITION run (``run_dir/arms/<name>/``, a jobs/train.py run
directory that jobs/evaluate.py and jobs/serve.py read) with some round-level keys changed. The
first arm computes the warm-up; the others adopt it, and any round-1 stage whose settings agree
with an earlier arm's (``coalition.recipes.ablation.ROUND1_CHAIN``); an arm that scores
candidates an earlier arm scored (the same drafts, refined differently) reuses their U. The
arms run one after another on one set of actors and trainers. Results: ``ablation.md``,
``ablation.json``, ``ablation.png``.
"""

from __future__ import annotations

import time
from pathlib import Path

from coalition.recipes import ablation
from coalition.run import cli, rundir
from coalition.run import config as config_mod
from coalition.run.config import Config
from coalition.run.report import print_table


def prepare_arm(arm_dir: Path, cfg: Config) -> None:
    """An arm's directory as a train run with the arm's config (a changed arm is refused)."""
    cli.check_resume(cfg, arm_dir)
    arm_dir.mkdir(parents=True, exist_ok=True)
    rundir.lock(arm_dir)
    rundir.clean_partial(arm_dir)
    rundir.atomic_write(rundir.RunDir(arm_dir).config_file, config_mod.dump(cfg))
    rundir.mark_owner(arm_dir, "train")


def report(run_dir: Path, cfg: Config, done: list[ablation.ArmResult]) -> dict:
    """Write and return the table of the arms finished so far."""
    from coalition.run.plots import accuracy_per_round

    result = ablation.table(done, cfg.evaluate.bootstrap, cfg.seed)
    rundir.write_json(run_dir / "ablation.json", result)
    rundir.atomic_write(run_dir / "ablation.md", ablation.markdown(result))
    accuracy_per_round(
        ablation.plot_input(result),
        run_dir / "ablation.png",
        title=f"ablation on {cfg.task.name}: variants' mean accuracy",
    )
    return result


def main(argv: list[str] | None = None) -> int:
    cfg = cli.parse(argv, "ablate")
    arms = ablation.arm_configs(cfg)
    run_dir = cli.start(cfg, "ablate")
    if run_dir is None:
        return 0

    from actors.group import start_group
    from coalition.groups.layout import run_layout
    from coalition.recipes.sro import Run

    start = time.perf_counter()
    workers = start_group(cfg, run_layout(cfg), run_dir, "train")
    done: list[ablation.ArmResult] = []
    try:
        for name, arm_cfg in arms.items():
            arm_dir = run_dir / "arms" / name
            prepare_arm(arm_dir, arm_cfg)
            taken: list[str] = []
            if done:
                taken += ablation.adopt(arm_dir, done[0].dir, ablation.WARMUP_STAGES)
            for earlier in done:
                shared = ablation.shared_stages(arm_cfg, earlier.cfg)
                taken += ablation.adopt(arm_dir, earlier.dir, shared)
            print(f"[arm] {name}: {dict(ablation.flat(cfg.ablate.arms[name] or {}))}", flush=True)
            if taken:
                print(f"[arm] {name} shares {', '.join(taken)}", flush=True)
            Run(arm_cfg, workers, arm_dir, scores_from=ablation.score_sources(arm_cfg, done)).run()
            done.append(ablation.ArmResult(name, arm_cfg, arm_dir))
            report(run_dir, cfg, done)
    finally:
        workers.close()
    result = report(run_dir, cfg, done)
    rundir.write_json(
        rundir.RunDir(run_dir).summary_file,
        {
            "job": "ablate",
            "arms": list(arms),
            "table": result,
            "wall_seconds": round(time.perf_counter() - start),
        },
    )
    print_table(*ablation.rows_for_print(result))
    print(f"wall time {time.perf_counter() - start:.0f}s; run_dir: {run_dir} (ablation.md)")
    return 0


command = cli.command(main)

if __name__ == "__main__":
    command()
