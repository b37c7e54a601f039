"""SAIE on Ray: a learner trained through a frozen partner's supportive and adversarial remarks.

    python jobs/saie.py [--config configs/saie.yaml] [key=value ...]
    python jobs/saie.py saie.partner=Qwen/Qwen2.5-1.5B-Instruct saie.adversarial_ratio=0.3

Warm-up SFT, then ``rounds`` rounds of attempt → remark → SFT toward the gold reasoning given
the discussion. Rerunning with the same ``run_dir`` resumes after the last finished stage; the
trained learner plays in ``jobs/evaluate.py run_dir=<this run> method=discussion``.
"""

from __future__ import annotations

import time
from pathlib import Path

from coalition.run import cli
from coalition.run.report import print_accuracy

DEFAULT = Path(__file__).resolve().parent.parent / "configs" / "saie.yaml"


def main(argv: list[str] | None = None) -> int:
    cfg = cli.parse(argv, "saie", DEFAULT)
    run_dir = cli.start(cfg, "saie")
    if run_dir is None:
        return 0

    from actors.group import start_group
    from coalition.groups.layout import team_layout
    from coalition.recipes.saie import SAIE, members

    start = time.perf_counter()
    team = start_group(cfg, team_layout(members(cfg), cfg.variants.mode), run_dir, "saie")
    try:
        summary = SAIE(cfg, team, run_dir).run()
    finally:
        team.close()
    gains = dict(summary["gain_over_warmup"])
    gains.update({f"{r}: SAIE - SFT baseline": g for r, g in summary["over_baseline"].items()})
    print_accuracy(summary["accuracy"], gains)
    print(f"wall time {time.perf_counter() - start:.0f}s; run_dir: {run_dir}")
    return 0


command = cli.command(main)

if __name__ == "__main__":
    command()
