"""``python jobs/evaluate.py run_dir=runs/<train run> method=suite``: every inference method of a
trained COALITION run on the same held-out questions, through the run's Ray actors: the base
model (direct, CoT), each variant alone, self-refine, cross-refine with fixed roles, random
routing, controller routing (the run's controller) and the oracle.
Writes ``run_dir/evaluation/`` (summary.json, outcomes per method, methods.png) and prints the
table with controller routing's paired differences against every other method."""

from __future__ import annotations

import re
import time
from dataclasses import asdict, replace
from pathlib import Path

from coalition.engines import sampling
from coalition.method.controller import Controller
from coalition.run import cli, preflight, rundir
from coalition.run.config import Config, ConfigError
from coalition.run.report import print_table
from coalition.run.rundir import RunDir, write_json, write_records


def suite(argv: list[str], cfg: Config) -> int:
    if not cfg.run_dir:
        raise ConfigError("method=suite needs run_dir=<a jobs/train.py run directory>")
    run_dir = Path(cfg.run_dir)
    trained = RunDir(run_dir)
    _, version = trained.trained()
    _, overrides = cli.parse_args(argv, "evaluate")
    cfg = trained.config(overrides)  # the run's own, overridden
    preflight.model_paths(cfg, "suite")
    scored = trained.expects_controller(cfg)
    if scored:  # routes by the run's controller: refuse now if it is missing or damaged
        Controller.check(trained.controller_dir)
    rundir.lock(run_dir)  # it writes evaluation/ beside the run
    from actors.group import RayGroup
    from actors.session import init_ray
    from coalition.data.tasks import from_config
    from coalition.groups.layout import run_layout
    from coalition.method.deliberation import Steps
    from coalition.method.suite import best_measured, compare, rows, run_suite
    from coalition.method.variants import variant_key
    from coalition.run.plots import method_bars

    start = time.perf_counter()
    task = from_config(cfg.task)
    test = task.load("test")
    keys = [variant_key(k) for k in range(cfg.variants.count)]
    controller = Controller.load(trained.controller_dir) if scored else None
    init_ray(cfg, "suite")
    layout = run_layout(cfg, in_process=False)
    workers = RayGroup(cfg, layout, run_dir / "ray_train", trainers=False)
    try:
        trained.serve_states(workers, dict.fromkeys(keys, version), print)
        params = replace(sampling(cfg.generation, cfg.seed), temperature=0.0, n=1)
        results = run_suite(
            Steps(workers, params),
            task,
            test,
            keys,
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
    route = best_measured(summary)
    summary["serving_route"] = asdict(route)  # what deliberation.routing=auto serves
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
    print(f"serving route (deliberation.routing=auto): {route.method}, {route.why}")
    print(f"wall time {summary['seconds']:.0f}s; results: {out_dir}")
    return 0


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower().replace("→", "-to-")).strip("-")
