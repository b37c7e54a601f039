"""Evaluate one model, or compare every inference method of a trained run.

    python jobs/evaluate.py [--config configs/X.yaml] [key=value ...]
    python jobs/evaluate.py run_dir=runs/<train run> method=suite [deliberation.refine_turns=2]

One model (``evaluate.method: direct | cot``): writes ``run_dir/summary.json`` (accuracy with a
bootstrap 95% interval) and ``run_dir/predictions.jsonl``.

``method=discussion agents=N rounds=R`` (optionally over a trained run directory: COALITION
variants, a SAIE learner, a distilled student): N agents answer, read each other's solutions for
R rounds, majority vote; writes per-round majority accuracy (round 0 is self-consistency).

``method=suite`` over a ``jobs/train.py`` run directory: the base model (direct, CoT), each
variant alone, self-refine, cross-refine with fixed roles, random routing, controller routing
and the oracle, on the same held-out questions, through the run's Ray actors. The controller is
trained first if the run has none. Writes ``run_dir/evaluation/`` (summary.json, outcomes per
method, methods.png) and prints the table.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from coalition.data import tasks
from coalition.engines import build_engine, sampling
from coalition.method.evaluation import evaluate
from coalition.run import cli, preflight, rundir, stats
from coalition.run.config import Config, ConfigError
from coalition.run.report import print_table
from coalition.run.rundir import RunDir, write_json, write_records


def _aliases(argv: list[str] | None) -> list[str]:
    """``method=X`` is short for ``evaluate.method=X``; with ``method=discussion``, ``agents=N``
    and ``rounds=R`` are short for ``discussion.agents`` and ``discussion.rounds``."""
    args = list(sys.argv[1:] if argv is None else argv)
    out = [f"evaluate.{a}" if a.startswith("method=") else a for a in args]
    if "evaluate.method=discussion" in out:
        out = [f"discussion.{a}" if a.startswith(("agents=", "rounds=")) else a for a in out]
    return out


def main(argv: list[str] | None = None) -> int:
    argv = _aliases(argv)
    cfg = cli.parse(argv, "evaluate")
    if cfg.evaluate.method == "suite":
        return suite(argv, cfg)
    if cfg.evaluate.method == "discussion":
        return discussion(argv, cfg)
    return single(cfg)


def single(cfg: Config) -> int:
    run_dir = cli.start(cfg, "evaluate")
    if run_dir is None:
        return 0
    task = tasks.from_config(cfg.task)
    examples = task.load(cfg.evaluate.split)
    engine = build_engine(cfg)
    start = time.perf_counter()
    preds = evaluate(
        engine,
        task,
        examples,
        cfg.evaluate.method,  # type: ignore[arg-type]
        sampling(cfg.generation, cfg.seed),
        adapter="default" if cfg.model.adapter else None,
        chat=cfg.model.chat_template,
    )
    elapsed = time.perf_counter() - start
    acc = stats.accuracy([p.correct for p in preds], cfg.evaluate.bootstrap, cfg.seed)
    write_records(run_dir / "predictions.jsonl", preds)
    summary = {
        "job": "evaluate",
        "task": cfg.task.name,
        "split": cfg.evaluate.split,
        "method": cfg.evaluate.method,
        "model": cfg.model.name_or_path,
        "adapter": cfg.model.adapter,
        "n": acc.n,
        "accuracy": acc.accuracy,
        "ci95": [acc.ci_low, acc.ci_high],
        "tokens": sum(p.tokens for p in preds),
        "seconds": round(elapsed, 2),
    }
    write_json(RunDir(run_dir).summary_file, summary)
    print_table(
        ["task", "method", "model", "n", "accuracy", "95% CI", "tokens", "seconds"],
        [
            [
                cfg.task.name,
                cfg.evaluate.method,
                cfg.model.name_or_path,
                acc.n,
                f"{acc.accuracy:.3f}",
                f"[{acc.ci_low:.3f}, {acc.ci_high:.3f}]",
                summary["tokens"],
                f"{elapsed:.1f}",
            ]
        ],
    )
    print(f"run_dir: {run_dir}")
    return 0


def suite(argv: list[str], cfg: Config) -> int:
    if not cfg.run_dir:
        raise ConfigError("method=suite needs run_dir=<a jobs/train.py run directory>")
    run_dir = Path(cfg.run_dir)
    trained = RunDir(run_dir)
    _, version = trained.trained()
    _, overrides = cli.parse_args(argv, "evaluate")
    cfg = trained.config(overrides)  # the run's own, overridden
    preflight.model_paths(cfg, "suite")
    rundir.lock(run_dir)  # it writes evaluation/ (and a controller) beside the run
    from actors.session import init_ray
    from actors.workers import RayWorkers
    from coalition.engines.models import resolve
    from coalition.method.controller import Controller
    from coalition.method.deliberation import Steps
    from coalition.method.suite import compare, rows, run_suite
    from coalition.recipes.sro import Run
    from coalition.run.plots import method_bars

    start = time.perf_counter()
    init_ray(cfg, "suite")
    workers = RayWorkers(
        cfg, resolve(cfg.model.name_or_path), run_dir / "ray_train", trainers=False
    )
    try:
        run = Run(cfg, workers, run_dir)
        run.sync(version)
        controller = None
        if cfg.rounds and trained.round_file(1, "scored.jsonl").exists():
            if not (trained.controller_dir / "controller.json").exists() or not run.manifest.done(
                run.controller_stage()
            ):
                run.stage(run.controller_stage(), run.train_controller)
            controller = Controller.load(trained.controller_dir)
        params = replace(sampling(cfg.generation, cfg.seed), temperature=0.0, n=1)
        results = run_suite(
            Steps(workers, params),
            run.task,
            run.test,
            run.keys,
            controller,
            cfg.deliberation.refine_turns,
            cfg.model.chat_template,
            cfg.deliberation.seed,
        )
    finally:
        workers.close()
    out_dir = trained.evaluation_dir
    table = [asdict(r) for r in rows(results, cfg.evaluate.bootstrap, cfg.seed)]
    for name, outs in results.items():
        write_records(out_dir / "outcomes" / f"{_slug(name)}.jsonl", outs)
    versus = (
        compare(results, "controller routing", cfg.evaluate.bootstrap, cfg.seed)
        if "controller routing" in results
        else {}
    )
    summary = {
        "job": "evaluate",
        "method": "suite",
        "task": cfg.task.name,
        "model": cfg.model.name_or_path,
        "version": version,
        "refine_turns": cfg.deliberation.refine_turns,
        "methods": table,
        "controller_vs": versus,
        "seconds": round(time.perf_counter() - start, 1),
    }
    write_json(out_dir / "summary.json", summary)
    method_bars(table, out_dir / "methods.png", title=f"{cfg.task.name}: inference methods")
    print_table(
        ["method", "accuracy", "95% CI", "tokens/q", "s/q (batched)"],
        [
            [
                r["method"],
                f"{r['accuracy']:.3f}",
                f"[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]",
                f"{r['tokens_per_question']:.1f}",
                f"{r['seconds_per_question']:.3f}",
            ]
            for r in table
        ],
    )
    if versus:
        print_table(
            ["controller routing vs", "Δ accuracy", "paired 95% CI"],
            [
                [name, f"{d['delta']:+.3f}", f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"]
                for name, d in versus.items()
            ],
        )
    print(f"wall time {summary['seconds']:.0f}s; results: {out_dir}")
    return 0


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
    from actors.team import RayTeam
    from coalition.engines.models import resolve
    from coalition.groups.team import Bound, Member
    from coalition.method.variants import variant_key
    from coalition.run.checkpoints import load_state
    from coalition.run.rundir import RunDir

    path = resolve(cfg.model.name_or_path)
    run = RunDir(run_dir) if run_dir is not None else None
    if run is not None and run.state(variant_key(0), 1).exists():
        from actors.workers import RayWorkers

        _, version = run.trained()
        workers = RayWorkers(cfg, path, run_dir / "ray_train", trainers=False)
        keys = [variant_key(k) for k in range(cfg.variants.count)]
        for key in keys:
            workers.push(key, load_state(run.state(key, version))[0], version)
        return (
            workers,
            [keys[i % len(keys)] for i in range(n)],
            workers.close,
            f"COALITION variants v{version}",
        )
    for name in ("learner", "student"):
        if run is not None and run.state(name, 1).exists():
            version = run.latest_version([name])
            team = RayTeam(
                cfg, [Member(name, path, trained=True)], run_dir / "ray_train", trainers=False
            )
            state, _, _ = load_state(run.state(name, version))
            team.push(name, state, version)
            return Bound(team, {name: name}), [name] * n, team.close, f"{name} v{version}"
    if run_dir is not None:
        raise ConfigError(f"run_dir {run_dir}: no trained models there to discuss with")
    team = RayTeam(cfg, [Member("base", path)], Path("runs") / "ray_train", trainers=False)
    return Bound(team, {None: "base"}), [None] * n, team.close, cfg.model.name_or_path


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower().replace("→", "-to-")).strip("-")


command = cli.command(main)

if __name__ == "__main__":
    command()
