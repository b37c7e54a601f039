"""The evaluation suite: every inference method on the same held-out questions, in one run.

Base model (direct and CoT), each variant alone, self-refinement, cross-refinement with fixed
roles, random routing, controller routing, and the oracle (best of the variants' paths). Each
row has accuracy with a bootstrap 95% interval, generated tokens and batched seconds per
question; controller routing is also compared with each other method on the same questions
(paired bootstrap).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from coalition.data.records import Example
from coalition.data.tasks.base import Task
from coalition.method.controller import Controller
from coalition.method.deliberation import (
    ControllerRouter,
    Fixed,
    Outcome,
    RandomRouter,
    Router,
    Steps,
    deliberate,
    direct,
    oracle,
)
from coalition.run import stats


@dataclass(frozen=True)
class Row:
    """One method's result on the suite's questions."""

    method: str
    accuracy: float
    ci95: tuple[float, float]
    n: int
    tokens_per_question: float
    seconds_per_question: float


def routers(
    keys: list[str], refine_turns: int, controller: Controller | None, seed: int
) -> list[tuple[Router, int]]:
    """(router, refine turns) for every method that runs on the variants."""
    out: list[tuple[Router, int]] = [(Fixed(f"{k} alone", k), 0) for k in keys]
    if refine_turns:
        out += [(Fixed(f"{k} self-refine", k, "same"), refine_turns) for k in keys]
        out += [
            (Fixed(f"{g}→{r} cross-refine", g, r), refine_turns)
            for g in keys
            for r in keys
            if g != r
        ]
    out.append((RandomRouter(keys, seed), refine_turns))
    if controller is not None:
        out.append((ControllerRouter(controller, keys), refine_turns))
    return out


def run_suite(
    steps: Steps,
    task: Task,
    examples: Sequence[Example],
    keys: list[str],
    controller: Controller | None,
    refine_turns: int = 1,
    chat: bool = True,
    seed: int = 0,
    log: Any = print,
) -> dict[str, list[Outcome]]:
    """Outcomes per method, in a fixed order (base first, oracle last)."""
    results: dict[str, list[Outcome]] = {}
    results["base direct"] = direct(steps, task, examples, None, chat)
    results["base cot"] = deliberate(steps, task, examples, Fixed("base cot", None), 0, chat)
    for router, turns in routers(keys, refine_turns, controller, seed):
        log(f"[suite] {router.name} …")
        results[router.name] = deliberate(steps, task, examples, router, turns, chat)
    paths = [
        v for name, v in results.items() if name.endswith(("alone", "self-refine", "cross-refine"))
    ]
    results["oracle"] = oracle(paths)
    return results


def rows(results: dict[str, list[Outcome]], n_boot: int, seed: int) -> list[Row]:
    out = []
    for name, outs in results.items():
        acc = stats.accuracy([o.correct for o in outs], n_boot, seed)
        out.append(
            Row(
                name,
                acc.accuracy,
                (acc.ci_low, acc.ci_high),
                acc.n,
                sum(o.tokens for o in outs) / len(outs),
                sum(o.seconds for o in outs) / len(outs),
            )
        )
    return out


def compare(
    results: dict[str, list[Outcome]], method: str, n_boot: int, seed: int
) -> dict[str, dict[str, Any]]:
    """``method`` minus every other method, per question (paired bootstrap 95% interval)."""
    mine = [float(o.correct) for o in results[method]]
    out = {}
    for name, outs in results.items():
        if name == method:
            continue
        d = stats.paired_difference([float(o.correct) for o in outs], mine, n_boot, seed)
        out[name] = {"delta": d.delta, "ci95": [d.ci_low, d.ci_high], "n": d.n}
    return out
