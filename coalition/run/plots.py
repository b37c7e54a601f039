"""PNG plots of run results (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def accuracy_per_round(acc: dict[str, dict[str, Any]], path: Path, title: str = "") -> None:
    """Held-out accuracy per stage (base, warm-up, round 1…) per variant, with 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = list(acc)
    names = sorted({name for per in acc.values() for name in per})
    fig, ax = plt.subplots(figsize=(1.6 * len(stages) + 3, 4))
    for name in names:
        xs = [i for i, st in enumerate(stages) if name in acc[st]]
        ys = [acc[stages[i]][name]["accuracy"] for i in xs]
        lo = [y - acc[stages[i]][name]["ci95"][0] for i, y in zip(xs, ys, strict=True)]
        hi = [acc[stages[i]][name]["ci95"][1] - y for i, y in zip(xs, ys, strict=True)]
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=4, label=name)
    ax.set_xticks(range(len(stages)), stages)
    ax.set_ylabel("held-out accuracy (95% CI)")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def method_bars(rows: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Held-out accuracy per inference method (bars with 95% intervals)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["method"] for r in rows]
    acc = [r["accuracy"] for r in rows]
    lo = [a - r["ci95"][0] for a, r in zip(acc, rows, strict=True)]
    hi = [r["ci95"][1] - a for a, r in zip(acc, rows, strict=True)]
    fig, ax = plt.subplots(figsize=(0.7 * len(rows) + 3, 4.5))
    ax.bar(range(len(rows)), acc, yerr=[lo, hi], capsize=4, color="#4C72B0")
    ax.set_xticks(range(len(rows)), names, rotation=40, ha="right")
    ax.set_ylabel("held-out accuracy (95% CI)")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
