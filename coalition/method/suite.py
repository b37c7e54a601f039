"""The evaluation suite: every inference method on the same held-out questions, in one run.

Base model (direct and CoT), each variant alone, self-refinement, cross-refinement with fixed
roles, random routing, controller routing, and the oracle (best of the variants' paths). Each
row has accuracy with a bootstrap 95% interval, generated tokens and batched seconds per
question; controller routing is also compared with each other method on the same questions
(paired bootstrap).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
from coalition.method.variants import BASE
from coalition.run import stats
from coalition.run.config import ConfigError


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
    results["base direct"] = direct(steps, task, examples, BASE, chat)
    results["base cot"] = deliberate(steps, task, examples, Fixed("base cot", BASE), 0, chat)
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


NOT_ROUTES = ("base direct", "base cot", "oracle")  # suite rows Serve cannot run on the variants
SUITE_HINT = "python jobs/evaluate.py run_dir=<run> method=suite measures every route"


@dataclass(frozen=True)
class Route:
    """How Serve deliberates: a suite method it runs (``"v1→v0 cross-refine"``, ``"random
    routing"``, ``"controller routing"``, ``"fixed roles"``, …) and, in a line, why."""

    method: str
    why: str


def best_measured(summary: dict[str, Any]) -> Route:
    """The suite's most accurate route on the variants (ties: fewer tokens per question). The
    pick is on the suite's own held-out questions, so its edge over the runner-up is an upper
    estimate; the reason carries the interval and the controller's figure beside it."""
    try:
        table = [r for r in summary["methods"] if r["method"] not in NOT_ROUTES]
        best = max(table, key=lambda r: (r["accuracy"], -r["tokens_per_question"]))
        lo, hi = best["ci95"]
        n, version = best["n"], summary["version"]
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"the evaluation suite's summary is damaged ({e!r}); rerun it") from e
    why = (
        f"best measured by the evaluation suite of version {version}: "
        f"{best['accuracy']:.3f} [{lo:.3f}, {hi:.3f}] on {n} held-out questions"
    )
    ctrl = next((r for r in table if r["method"] == "controller routing"), None)
    if ctrl is not None and best is not ctrl:
        why += f" (controller routing {ctrl['accuracy']:.3f})"
    return Route(best["method"], why)


def choose_route(
    routing: str,
    summary: dict[str, Any] | None,
    version: int,
    refine_turns: int,
    has_controller: bool,
) -> Route:
    """What Serve runs for ``deliberation.routing``. ``auto`` takes the route the run's
    evaluation suite measured best (``summary``: its summary.json, or None) when that suite
    measured the served version with the same refine turns; otherwise the controller where
    the run has one (trained, or due from its scored rounds), else fixed roles."""
    if routing != "auto":
        method = {"controller": "controller routing", "random": "random routing"}
        return Route(method.get(routing, "fixed roles"), f"deliberation.routing={routing}")
    if summary is None:
        reason = f"no evaluation suite of this run yet ({SUITE_HINT})"
    elif summary.get("version") != version:
        reason = f"the suite measured version {summary.get('version')}, this serves {version}"
    elif summary.get("refine_turns") != refine_turns:
        reason = (
            f"the suite measured refine_turns={summary.get('refine_turns')}, "
            f"this serves {refine_turns}"
        )
    else:
        best = best_measured(summary)
        return Route(best.method, f"deliberation.routing=auto: {best.why}")
    if has_controller:
        return Route(
            "controller routing",
            f"deliberation.routing=auto: {reason}; the run's controller routes",
        )
    return Route("fixed roles", f"deliberation.routing=auto: {reason}; the run has no controller")


def router_for(
    route: Route,
    keys: list[str],
    refine_turns: int,
    controller: Callable[[], Controller],
    seed: int,
) -> tuple[Router, int]:
    """The router and refine turns of ``route`` (``controller`` loads the run's controller,
    called only when the route needs it)."""
    if route.method == "fixed roles":
        return Fixed("fixed roles", keys[0], keys[1 % len(keys)]), refine_turns
    ctrl = controller() if route.method == "controller routing" else None
    for router, turns in routers(keys, refine_turns, ctrl, seed):
        if router.name == route.method:
            return router, turns
    raise ValueError(f"{route.method!r} is not a route on variants {keys}")
