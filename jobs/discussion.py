"""``python jobs/evaluate.py method=discussion agents=N rounds=R [run_dir=<run>]``: N agents
answer, read each other's solutions for R rounds, majority vote; per-round majority accuracy
(round 0 is self-consistency). Agents are a trained run's models (COALITION variants in turn, a
SAIE learner, a distilled student) or, without a trained run_dir, the base model."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from coalition.data import tasks
from coalition.engines import sampling
from coalition.run import cli, preflight, rundir, stats
from coalition.run.config import Config, ConfigError
from coalition.run.report import print_table
from coalition.run.rundir import RunDir, write_json, write_records


def discussion(argv: list[str], cfg: Config) -> int:
    """N agents answer, read each other's solutions for R rounds, majority vote. Agents are a
    trained run's models (COALITION variants in turn, a SAIE learner, a distilled student) or,
    without a trained run_dir, the base model."""
    from actors.session import init_ray
    from coalition.method.discussion import accuracy_by_round, discuss

    run_dir = Path(cfg.run_dir) if cfg.run_dir else None
    run = RunDir(run_dir) if run_dir is not None else None
    trained = run is not None and run.kind() in ("train", "saie", "distill")
    if run is not None and trained:
        _, overrides = cli.parse_args(argv, "evaluate")
        cfg = run.config(overrides)  # the run's own, overridden
        preflight.model_paths(cfg, "discussion")
        rundir.lock(run_dir)  # it writes evaluation/ beside the run
        out_dir = run.evaluation_dir / f"discussion-{cfg.discussion.agents}x{cfg.discussion.rounds}"
    else:
        out_dir = cli.start(cfg, "evaluate")
        if out_dir is None:
            return 0
    d = cfg.discussion
    task = tasks.from_config(cfg.task)
    examples = task.load(cfg.evaluate.split)
    params = replace(sampling(cfg.generation, cfg.seed), temperature=d.temperature, n=1)
    start = time.perf_counter()
    init_ray(cfg, "suite" if trained and rundir.owner(run_dir) == "train" else "discussion")
    models, agents, close, label = _discussants(cfg, run_dir if trained else None, d.agents)
    try:
        results = discuss(models, task, examples, agents, d.rounds, params, cfg.model.chat_template)
    finally:
        close()
    by_round = accuracy_by_round(results)
    per_round = []
    for r, correct in enumerate(by_round):
        acc = stats.accuracy(correct, cfg.evaluate.bootstrap, cfg.seed)
        gain = stats.paired_difference(
            [float(c) for c in by_round[0]],
            [float(c) for c in correct],
            cfg.evaluate.bootstrap,
            cfg.seed,
        )
        per_round.append(
            {
                "round": r,
                "accuracy": acc.accuracy,
                "ci95": [acc.ci_low, acc.ci_high],
                "vs_round0": {"delta": gain.delta, "ci95": [gain.ci_low, gain.ci_high]},
            }
        )
    single = stats.accuracy(
        [task.is_correct(x.answers[0][0], ex) for x, ex in zip(results, examples, strict=True)],
        cfg.evaluate.bootstrap,
        cfg.seed,
    )
    summary = {
        "job": "evaluate",
        "method": "discussion",
        "task": cfg.task.name,
        "models": label,
        "agents": [a or "base" for a in agents],
        "rounds": d.rounds,
        "temperature": d.temperature,
        "n": len(results),
        "first_agent_alone": {"accuracy": single.accuracy, "ci95": [single.ci_low, single.ci_high]},
        "majority_per_round": per_round,
        "tokens_per_question": sum(x.tokens for x in results) / max(1, len(results)),
        "seconds": round(time.perf_counter() - start, 1),
    }
    write_records(out_dir / "discussions.jsonl", results)
    write_json(out_dir / "summary.json", summary)
    print_table(
        ["round", "majority accuracy", "95% CI", "Δ vs round 0 (paired 95% CI)"],
        [
            [
                r["round"],
                f"{r['accuracy']:.3f}",
                f"[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]",
                f"{r['vs_round0']['delta']:+.3f} [{r['vs_round0']['ci95'][0]:+.3f}, "
                f"{r['vs_round0']['ci95'][1]:+.3f}]",
            ]
            for r in per_round
        ],
    )
    print(
        f"{len(agents)} agents ({', '.join(summary['agents'])}); first agent alone "
        f"{single.accuracy:.3f}; round 0 is self-consistency (a vote without discussion)"
    )
    print(f"wall time {summary['seconds']:.0f}s; results: {out_dir}")
    return 0


def _discussants(cfg: Config, run_dir: Path | None, n: int):
    """(models, agent keys, close, label) for a discussion: a COALITION run's variants in turn,
    a SAIE learner or distilled student, or the base model."""
    from actors.group import RayGroup
    from coalition.engines.models import resolve
    from coalition.groups.layout import Member, run_layout, team_layout
    from coalition.method.variants import BASE, variant_key
    from coalition.run.rundir import RunDir

    path = resolve(cfg.model.name_or_path)
    run = RunDir(run_dir) if run_dir is not None else None
    if run is not None and run.state(variant_key(0), 1).exists():
        _, version = run.trained()
        layout = run_layout(cfg, in_process=False)
        workers = RayGroup(cfg, layout, run_dir / "ray_train", trainers=False)
        keys = [variant_key(k) for k in range(cfg.variants.count)]
        run.serve_states(workers, dict.fromkeys(keys, version))
        return (
            workers,
            [keys[i % len(keys)] for i in range(n)],
            workers.close,
            f"COALITION variants v{version}",
        )
    for name in ("learner", "student"):
        if run is not None and run.state(name, 1).exists():
            version = run.latest_version([name])
            layout = team_layout([Member(name, path, trained=True)], cfg.variants.mode)
            team = RayGroup(cfg, layout, run_dir / "ray_train", trainers=False)
            run.serve_states(team, {name: version})
            return team, [name] * n, team.close, f"{name} v{version}"
    if run_dir is not None:
        raise ConfigError(f"run_dir {run_dir}: no trained models there to discuss with")
    layout = team_layout([Member(BASE, path)], cfg.variants.mode)
    team = RayGroup(cfg, layout, Path("runs") / "ray_train", trainers=False)
    return team, [BASE] * n, team.close, cfg.model.name_or_path
