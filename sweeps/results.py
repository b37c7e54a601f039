"""A sweep's results: what a trial reports each round, the per-trial record, and the outputs
(terminal table, CSV, accuracy-vs-size plot, best config). Pure (no Ray)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from coalition.run.config import Config
from coalition.run.rundir import atomic_write

METRIC = "accuracy"  # mean held-out accuracy over the variants, reported after each round
TIME_ATTR = "round"  # 0 = after the warm-up, r = after round r


def round_report(r: int, accuracy: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What a trial reports to Tune after round ``r`` from the run's ``{variant: {accuracy,
    ci95, n}}``: the mean over variants (the metric), the best variant, and each variant."""
    per = {name: float(acc["accuracy"]) for name, acc in sorted(accuracy.items())}
    return {
        TIME_ATTR: r,
        METRIC: sum(per.values()) / len(per),
        "accuracy_best_variant": max(per.values()),
        **{f"accuracy_{name}": value for name, value in per.items()},
    }


@dataclass
class TrialResult:
    """One trial as the sweep saw it: its model and sampled values, the accuracy it reported
    each round, how it ended and how long it ran."""

    trial: str
    model: str
    family: str
    params_b: float
    params: dict[str, Any]
    status: str  # TERMINATED (finished or stopped early) | ERROR | RUNNING | PENDING
    accuracy: dict[int, float] = field(default_factory=dict)  # round → mean accuracy
    wall_s: float = 0.0
    error: str | None = None

    @property
    def best_round(self) -> int | None:
        if not self.accuracy:
            return None
        return max(self.accuracy, key=lambda r: (self.accuracy[r], -r))  # earliest on ties

    @property
    def best_accuracy(self) -> float | None:
        r = self.best_round
        return None if r is None else self.accuracy[r]


def best(results: list[TrialResult]) -> TrialResult | None:
    """The trial with the highest accuracy at its best round (ties: the earlier trial)."""
    scored = [t for t in results if t.best_accuracy is not None]
    return max(scored, key=lambda t: t.best_accuracy) if scored else None  # type: ignore[arg-type,return-value]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table(results: list[TrialResult]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: trial, family, model, size, sampled values, accuracy per round
    (r0 = after warm-up), best round, wall time, status."""
    keys = sorted({k for t in results for k in t.params})
    rounds = sorted({r for t in results for r in t.accuracy})
    header = ["trial", "family", "model", "params_b", *keys]
    header += [f"acc_r{r}" for r in rounds] + ["best_round", "best_acc", "wall_s", "status"]
    rows = []
    for t in results:
        row = [t.trial, t.family, t.model, _fmt(t.params_b)]
        row += [_fmt(t.params.get(k, "")) for k in keys]
        row += [f"{t.accuracy[r]:.3f}" if r in t.accuracy else "" for r in rounds]
        row += [
            "" if t.best_round is None else str(t.best_round),
            "" if t.best_accuracy is None else f"{t.best_accuracy:.3f}",
            f"{t.wall_s:.0f}",
            t.status,
        ]
        rows.append(row)
    return header, rows


def write_csv(results: list[TrialResult], path: Path) -> None:
    header, rows = table(results)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write(Path(path), buf.getvalue())


def markdown(results: list[TrialResult]) -> str:
    """The table as Markdown (for docs)."""
    header, rows = table(results)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def plot_accuracy_vs_size(results: list[TrialResult], path: Path, title: str = "") -> None:
    """Best held-out accuracy against model size (log scale), one line per family through
    the best trial at each size; every trial as a faint dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [t for t in results if t.best_accuracy is not None]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for family in sorted({t.family for t in done}):
        mine = [t for t in done if t.family == family]
        sizes = sorted({t.params_b for t in mine})
        tops = [
            max((t for t in mine if t.params_b == s), key=lambda t: t.best_accuracy or 0.0)
            for s in sizes
        ]
        accs = [t.best_accuracy for t in tops]
        (line,) = ax.plot(sizes, accs, marker="o", label=family)
        for t in tops:
            ax.annotate(t.model, (t.params_b, t.best_accuracy), fontsize=7,
                        xytext=(4, 4), textcoords="offset points")  # fmt: skip
        ax.scatter(
            [t.params_b for t in mine],
            [t.best_accuracy for t in mine],
            color=line.get_color(),
            alpha=0.3,
            s=18,
        )
    ax.set_xscale("log")
    ax.set_xlabel("model size (billions of parameters, log scale)")
    ax.set_ylabel("held-out accuracy at the best round")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    if done:
        ax.legend(title="family")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_best(top: TrialResult, cfg: Config, path: Path, sweep_name: str) -> None:
    """The best trial's full config, with ``rounds`` set to its best round and no run_dir,
    so ``python jobs/train.py --config <path>`` reruns it."""
    out = cfg.model_copy(update={"rounds": top.best_round or 0, "run_dir": None})
    head = (
        f"# Best trial of sweep {sweep_name}: {top.trial} ({top.model}), held-out accuracy "
        f"{top.best_accuracy:.3f} at round {top.best_round} (0 = after warm-up).\n"
        f"# Sampled: {top.params}\n"
    )
    body = yaml.safe_dump(out.model_dump(mode="json"), sort_keys=False)
    atomic_write(Path(path), head + body)
