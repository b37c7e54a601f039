"""COALITION end to end on Ray: warm-up, then rounds of generate → refine → score → SRO → push.

    python jobs/train.py [--config configs/X.yaml] [key=value ...]

Starts a local Ray unless ``ray.address`` / ``RAY_ADDRESS`` is set (or it runs under
``ray job submit``). Rerunning with the same ``run_dir`` resumes after the last finished stage.
"""

from __future__ import annotations

import time

from coalition.run import cli
from coalition.run.report import print_accuracy


def main(argv: list[str] | None = None) -> int:
    cfg = cli.parse(argv, "train")
    run_dir = cli.start(cfg, "train")
    if run_dir is None:
        return 0

    from actors.group import start_group
    from coalition.groups.layout import run_layout
    from coalition.recipes.sro import Run

    start = time.perf_counter()
    workers = start_group(cfg, run_layout(cfg), run_dir, "train")
    try:
        summary = Run(cfg, workers, run_dir).run()
    finally:
        workers.close()
    print_accuracy(summary["accuracy"], summary["gain_over_warmup"])
    print(f"wall time {time.perf_counter() - start:.0f}s; run_dir: {run_dir}")
    return 0


command = cli.command(main)

if __name__ == "__main__":
    command()
