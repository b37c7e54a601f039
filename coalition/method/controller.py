"""The controller: which variant should write a question's rationale, and which should refine a
given draft (COALITION §"Controller").

A linear softmax head per decision over the frozen base model's pooled hidden state of the prompt
the chosen variant will see (the rationale prompt, or the refine prompt with the draft in it).
Labels come from the rounds' scored candidates: for a question, the variant whose drafts had the
highest mean U; for a draft, the variant whose refinement had the highest U (ties share the
target). A linear head is what a few hundred examples support; the base features cost one
forward pass and never change as the variants train.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from coalition.method.pairs import Candidate
from coalition.run.config import ConfigError
from coalition.run.rundir import atomic_write

SCHEMA = 1
DECISIONS = ("generate", "refine")
TIE = 1e-6  # utilities this close count as equally good


@dataclass(frozen=True)
class RoutingExample:
    """One decision the controller learns: the prompt it sees and each variant's utility."""

    qid: str
    decision: str  # "generate" | "refine"
    prompt: str
    utilities: tuple[float, ...]

    kind: ClassVar[str] = "routing_example"


def routing_examples(
    scored: Sequence[Candidate], count: int, prompt_of: Callable[[str, str | None], str]
) -> list[RoutingExample]:
    """Decisions from one round's scored candidates. ``prompt_of(qid, draft)`` renders the
    rationale prompt (``draft=None``) or the refine prompt around ``draft``. A question counts
    only where every variant wrote (generate) or refined the same draft (refine)."""
    gen: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    drafts: dict[tuple[str, int], str] = {}
    refs: dict[tuple[str, int], dict[int, float]] = defaultdict(dict)
    for c in scored:
        if c.utility is None:
            raise ValueError(f"candidate for {c.qid} by variant {c.variant} is not scored")
        if c.stage == "generate":
            gen[c.qid][c.variant].append(c.utility)
            if c.sample == 0:
                drafts[(c.qid, c.variant)] = c.text
        elif c.guide is not None:
            refs[(c.qid, c.guide)][c.variant] = c.utility
    out = []
    for qid in sorted(gen):
        per = gen[qid]
        if len(per) == count:
            u = tuple(sum(per[k]) / len(per[k]) for k in range(count))
            out.append(RoutingExample(qid, "generate", prompt_of(qid, None), u))
    for (qid, guide), per in sorted(refs.items()):
        if len(per) == count and (qid, guide) in drafts:
            u = tuple(per[k] for k in range(count))
            out.append(RoutingExample(qid, "refine", prompt_of(qid, drafts[(qid, guide)]), u))
    return out


def best_set(utilities: Sequence[float]) -> list[int]:
    """The variants within :data:`TIE` of the best utility."""
    top = max(utilities)
    return [k for k, u in enumerate(utilities) if u >= top - TIE]


@dataclass
class HeadReport:
    """How well one decision's head routes on questions it did not see in training."""

    n_train: int
    n_holdout: int
    accuracy: float | None  # share of held-out decisions routed to a best variant
    majority: float | None  # the same for always picking the train split's most common best
    chance: float | None  # the same for a uniformly random pick (expected)
    regret: float | None  # mean U(best) - U(chosen) on the held-out decisions
    # "learned": the head routes; "majority": it did not beat always picking the train split's
    # most common best variant on held-out decisions, so that fixed choice routes instead
    routes: str = "learned"


@dataclass
class Controller:
    """Per-decision linear heads over standardised base features."""

    count: int
    mean: torch.Tensor
    std: torch.Tensor
    heads: dict[str, torch.nn.Linear]
    report: dict[str, HeadReport] = field(default_factory=dict)

    def probs(self, decision: str, features: Sequence[Sequence[float]]) -> torch.Tensor:
        """Each variant's probability of being the best choice (uniform without a head)."""
        x = torch.tensor(features, dtype=torch.float32)
        if decision not in self.heads:
            return torch.full((len(x), self.count), 1.0 / self.count)
        with torch.no_grad():
            return torch.softmax(self.heads[decision]((x - self.mean) / self.std), dim=-1)

    def choose(self, decision: str, features: Sequence[Sequence[float]]) -> list[int]:
        """The variant to use for each prompt (variant 0 where no head was trained)."""
        if not features:
            return []
        return [int(i) for i in self.probs(decision, features).argmax(dim=-1)]

    def save(self, path: Path) -> None:
        """``controller.safetensors`` (weights) and ``controller.json`` (shape and report)."""
        from safetensors.torch import save

        path = Path(path)
        tensors = {"mean": self.mean, "std": self.std}
        for name, head in self.heads.items():
            tensors[f"{name}.weight"] = head.weight.detach().contiguous()
            tensors[f"{name}.bias"] = head.bias.detach().contiguous()
        atomic_write(path / "controller.safetensors", save(tensors))
        meta = {
            "schema": SCHEMA,
            "count": self.count,
            "dim": int(self.mean.numel()),
            "decisions": sorted(self.heads),
            "report": {k: vars(v) for k, v in self.report.items()},
        }
        atomic_write(path / "controller.json", json.dumps(meta, indent=2))

    @staticmethod
    def check(path: Path) -> None:
        """Refuse (one line, with the fix) a controller that is missing or cannot load."""
        Controller.load(path)

    @classmethod
    def load(cls, path: Path) -> Controller:
        from safetensors.torch import load_file

        path = Path(path)
        fix = (
            f"resume the run to fit it (python jobs/train.py run_dir={path.parent}: its last "
            "stage fits the controller, and redoes it if damaged), or route with "
            "deliberation.routing=fixed|random"
        )
        if not (path / "controller.json").is_file():
            raise ConfigError(f"{path.parent}: no trained controller ({path} is missing); {fix}")
        try:
            meta = json.loads((path / "controller.json").read_text())
            tensors = load_file(str(path / "controller.safetensors"))
        except Exception:  # noqa: BLE001 - JSON, I/O or safetensors errors: the files are bad
            raise ConfigError(f"{path} is damaged (truncated or incomplete); {fix}") from None
        if meta.get("schema") != SCHEMA:
            raise ConfigError(f"{path}/controller.json: schema {meta.get('schema')}, want {SCHEMA}")
        heads = {}
        for name in meta["decisions"]:
            head = torch.nn.Linear(meta["dim"], meta["count"])
            head.load_state_dict(
                {"weight": tensors[f"{name}.weight"], "bias": tensors[f"{name}.bias"]}
            )
            heads[name] = head.eval()
        report = {k: HeadReport(**v) for k, v in meta["report"].items()}
        return cls(meta["count"], tensors["mean"], tensors["std"], heads, report)


def _targets(utilities: Sequence[Sequence[float]], count: int) -> torch.Tensor:
    y = torch.zeros(len(utilities), count)
    for i, u in enumerate(utilities):
        best = best_set(u)
        y[i, best] = 1.0 / len(best)
    return y


def _fit_head(
    x: torch.Tensor, y: torch.Tensor, weight_decay: float, steps: int, lr: float, seed: int
) -> torch.nn.Linear:
    """Soft-target cross-entropy with an L2 penalty, full batch (a few hundred rows)."""
    torch.manual_seed(seed)
    head = torch.nn.Linear(x.shape[1], y.shape[1])
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = -(y * torch.log_softmax(head(x), dim=-1)).sum(-1).mean()
        loss = loss + weight_decay * head.weight.pow(2).sum()
        loss.backward()
        opt.step()
    return head.eval()


def _report(
    head: torch.nn.Linear | None,
    x: torch.Tensor,
    utils: list[tuple[float, ...]],
    majority_class: int,
    n_train: int,
) -> HeadReport:
    if not utils or head is None:
        return HeadReport(n_train, len(utils), None, None, None, None)
    with torch.no_grad():
        chosen = head(x).argmax(-1).tolist()
    sets = [best_set(u) for u in utils]
    count = len(utils[0])
    n = len(utils)
    return HeadReport(
        n_train=n_train,
        n_holdout=n,
        accuracy=sum(c in s for c, s in zip(chosen, sets, strict=True)) / n,
        majority=sum(majority_class in s for s in sets) / n,
        chance=sum(len(s) / count for s in sets) / n,
        regret=sum(max(u) - u[c] for u, c in zip(utils, chosen, strict=True)) / n,
    )


def fit(
    examples: Sequence[RoutingExample],
    features: Sequence[Sequence[float]],
    count: int,
    holdout: float = 0.2,
    weight_decay: float = 1e-2,
    steps: int = 300,
    lr: float = 1e-2,
    seed: int = 0,
) -> Controller:
    """Train one head per decision on all but a held-out share of the questions (split by
    question id, so a question's two decisions stay on one side) and report on the rest."""
    if len(examples) != len(features):
        raise ValueError(f"{len(examples)} examples but {len(features)} feature rows")
    if not examples:
        raise ValueError("no routing examples: the run has no scored round to learn from")
    qids = sorted({e.qid for e in examples})
    random.Random(seed).shuffle(qids)
    n_hold = int(round(len(qids) * holdout)) if len(qids) > 1 else 0
    held = set(qids[:n_hold])
    x_all = torch.tensor(features, dtype=torch.float32)
    train_rows = [i for i, e in enumerate(examples) if e.qid not in held]
    mean = x_all[train_rows].mean(0)
    std = x_all[train_rows].std(0, unbiased=False).clamp_min(1e-6)
    z = (x_all - mean) / std
    heads: dict[str, torch.nn.Linear] = {}
    report: dict[str, HeadReport] = {}
    for decision in DECISIONS:
        rows = [i for i, e in enumerate(examples) if e.decision == decision]
        tr = [i for i in rows if examples[i].qid not in held]
        ho = [i for i in rows if examples[i].qid in held]
        if not tr:
            continue
        y = _targets([examples[i].utilities for i in tr], count)
        heads[decision] = _fit_head(z[tr], y, weight_decay, steps, lr, seed)
        majority = int(y.sum(0).argmax())
        ho_utils = [examples[i].utilities for i in ho]
        report[decision] = rep = _report(heads[decision], z[ho], ho_utils, majority, len(tr))
        if rep.accuracy is not None and rep.majority is not None and rep.accuracy <= rep.majority:
            heads[decision] = _constant_head(z.shape[1], count, majority)
            rep.routes = "majority"
    return Controller(count, mean, std, heads, report)


def _constant_head(dim: int, count: int, choice: int) -> torch.nn.Linear:
    """A head that always picks ``choice`` (the fallback when the learned one routes no better)."""
    head = torch.nn.Linear(dim, count)
    torch.nn.init.zeros_(head.weight)
    with torch.no_grad():
        head.bias.zero_()
        head.bias[choice] = 1.0
    return head.eval()


def report_dict(ctrl: Controller) -> dict[str, Any]:
    """The held-out routing report as plain data (for ``summary.json``)."""
    return {k: vars(v) for k, v in ctrl.report.items()}
