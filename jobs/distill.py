"""Fine-tune-CoT on Ray: a teacher writes zero-shot-CoT rationales, the student learns the
ones that reach the gold answer.

    python jobs/distill.py [--config configs/distill.yaml] [key=value ...]
    python jobs/distill.py teacher.kind=openai teacher.base_url=http://host:8000/v1 \\
        teacher.model=Qwen/Qwen2.5-7B-Instruct   # any OpenAI-compatible endpoint (vllm serve, …)

The teacher's samples are cached chunk by chunk in ``run_dir/teacher``; rerunning with the
same ``run_dir`` resumes after the last finished stage (or chunk). The kept rationales can seed
COALITION's warm-up: ``python jobs/train.py warmup.rationales_from=<this run_dir>``.
"""

from __future__ import annotations

import time
from pathlib import Path

from coalition.run import cli
from coalition.run.report import print_accuracy

DEFAULT = Path(__file__).resolve().parent.parent / "configs" / "distill.yaml"


def main(argv: list[str] | None = None) -> int:
    cfg = cli.parse(argv, "distill", DEFAULT)
    run_dir = cli.start(cfg, "distill")
    if run_dir is None:
        return 0

    from actors.group import start_group
    from coalition.groups.layout import team_layout
    from coalition.recipes.distill import Distill, build_teacher, members

    start = time.perf_counter()
    team = start_group(cfg, team_layout(members(cfg), cfg.variants.mode), run_dir, "distill")
    teacher = build_teacher(cfg, team)
    try:
        summary = Distill(cfg, team, teacher, run_dir).run()
    finally:
        teacher.close()
        team.close()
    kept = summary["teacher_samples"]
    print(
        f"teacher kept {kept['kept']}/{kept['total']} samples ({kept['rate']:.0%}); "
        f"{kept['questions_kept']}/{kept['questions']} questions have one"
    )
    print_accuracy(summary["accuracy"], {"student vs base": summary.get("gain_over_base")})
    print(f"wall time {time.perf_counter() - start:.0f}s; run_dir: {run_dir}")
    return 0


command = cli.command(main)

if __name__ == "__main__":
    command()
