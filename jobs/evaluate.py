"""Evaluate one model, or compare every inference method of a trained run.

    python jobs/evaluate.py [--config configs/X.yaml] [key=value ...]
    python jobs/evaluate.py run_dir=runs/<train run> method=suite [deliberation.refine_turns=2]

One model (``evaluate.method: direct | cot``): writes ``run_dir/summary.json`` (accuracy with a
bootstrap 95% interval) and ``run_dir/predictions.jsonl``.

``method=suite`` (jobs/suite.py) compares every inference method of a trained run;
``method=discussion agents=N rounds=R`` (jobs/discussion.py) runs multi-agent discussion.
"""

from __future__ import annotations

import sys
import time

from coalition.data import tasks
from coalition.engines import build_engine, sampling
from coalition.method.evaluation import evaluate
from coalition.run import cli, stats
from coalition.run.config import Config
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
        from jobs.suite import suite

        return suite(argv, cfg)
    if cfg.evaluate.method == "discussion":
        from jobs.discussion import discussion

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


command = cli.command(main)

if __name__ == "__main__":
    command()
