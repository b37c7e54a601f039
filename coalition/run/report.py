"""Plain-text tables for the terminal (kept dependency-free so they print in any log)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()  # noqa: E731
    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def print_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    print(format_table(header, rows), flush=True)


def print_accuracy(
    accuracy: dict[str, dict[str, Any]], gains: dict[str, Any] | None = None
) -> None:
    """A run's held-out accuracy per stage and model with intervals, then its paired gains
    (``{label: {model: gain}}`` or ``{label: gain}``; a gain is delta, ci95, n)."""
    rows = [
        [stage, name, acc["n"], f"{acc['accuracy']:.3f}", _interval(acc["ci95"], "")]
        for stage, per in accuracy.items()
        for name, acc in per.items()
    ]
    print_table(["stage", "model", "n", "accuracy", "95% CI"], rows)
    flat = []
    for label, per in (gains or {}).items():
        if per is None:
            continue
        items = [("", per)] if "delta" in per else list(per.items())
        flat += [
            [label, name, f"{g['delta']:+.3f}", _interval(g["ci95"], "+")] for name, g in items
        ]
    if flat:
        print_table(["compared", "model", "Δ accuracy", "paired 95% CI"], flat)


def _interval(ci: Sequence[float], sign: str) -> str:
    return f"[{ci[0]:{sign}.3f}, {ci[1]:{sign}.3f}]"
