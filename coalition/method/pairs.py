"""Candidates, preference pairs and the selective filter (COALITION §"Select pairs").

Generation pair: best vs worst rationale the variants wrote for a question; kept (with the
filter on) only if U(best) > U0 and U(best) > U(worst). Refinement pair: best vs worst
refinement of a guide's draft; kept only if U(best) > U(draft) and U(best) > U(worst) — with a
single refinement (``refine: self``) the draft itself is the rejected side. With a
``min_utility`` floor (``filter_min_utility``), the filter also drops pairs whose chosen side
does not make the gold answer likely: a best-of-wrong rationale that merely beats U0 would
otherwise be taught as the preferred one (and, with the NLL term, imitated).
The question pool is split into 2K disjoint parts: variant k takes generation pairs from part
2k and refinement pairs from part 2k+1.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

Stage = Literal["generate", "refine"]


@dataclass(frozen=True)
class Candidate:
    """A rationale written by ``variant`` for question ``qid`` (a refinement of ``guide``'s draft
    when ``stage == "refine"``), with its utility once scored."""

    qid: str
    variant: int
    stage: str
    text: str
    guide: int | None = None
    utility: float | None = None
    tokens: int = 0
    sample: int = 0  # which of the variant's ``samples`` rationales for the question

    kind: ClassVar[str] = "candidate"


@dataclass(frozen=True)
class Pair:
    """A DPO preference pair for ``variant``: the prompt and the chosen/rejected completions."""

    qid: str
    variant: int
    stage: str
    prompt: str
    chosen: str
    rejected: str
    u_chosen: float
    u_rejected: float

    kind: ClassVar[str] = "pair"


@dataclass(frozen=True)
class Decision:
    """Best and worst candidate of a group and whether the pair is kept (``reason`` if not)."""

    best: Candidate | None
    worst: Candidate | None
    reason: str  # "kept" or why the pair was dropped

    @property
    def kept(self) -> bool:
        return self.reason == "kept"


def _utility(c: Candidate) -> float:
    if c.utility is None:
        raise ValueError(f"candidate for {c.qid} by variant {c.variant} is not scored")
    return c.utility


def _extremes(cands: Sequence[Candidate]) -> tuple[Candidate, Candidate]:
    # ties broken by variant and sample index so selection is deterministic
    ranked = sorted(cands, key=lambda c: (-_utility(c), c.variant, c.sample))
    return ranked[0], ranked[-1]


def select_generation(
    cands: Sequence[Candidate], u0: float, use_filter: bool = True, min_utility: float = 0.0
) -> Decision:
    """Best vs worst of the variants' rationales for one question."""
    if len(cands) < 2:
        return Decision(None, None, "too_few_candidates")
    best, worst = _extremes(cands)
    if _utility(best) <= _utility(worst) or best.text == worst.text:
        return Decision(best, worst, "tie")
    if use_filter and _utility(best) <= u0:
        return Decision(best, worst, "best_not_above_u0")
    if use_filter and _utility(best) < min_utility:
        return Decision(best, worst, "best_below_min_utility")
    return Decision(best, worst, "kept")


def select_refinement(
    refinements: Sequence[Candidate],
    draft: Candidate,
    use_filter: bool = True,
    min_utility: float = 0.0,
) -> Decision:
    """Best vs worst refinement of ``draft`` (the draft is the rejected side if only one)."""
    if not refinements:
        return Decision(None, None, "too_few_candidates")
    pool = list(refinements) if len(refinements) >= 2 else [refinements[0], draft]
    best, worst = _extremes(pool)
    if _utility(best) <= _utility(worst) or best.text == worst.text:
        return Decision(best, worst, "tie")
    if use_filter and _utility(best) <= _utility(draft):
        return Decision(best, worst, "best_not_above_draft")
    if use_filter and _utility(best) < min_utility:
        return Decision(best, worst, "best_below_min_utility")
    return Decision(best, worst, "kept")


def partition(qids: Sequence[str], parts: int, seed: int) -> list[list[str]]:
    """Split question ids into ``parts`` disjoint, near-equal, seeded parts."""
    order = list(qids)
    random.Random(seed).shuffle(order)
    return [order[i::parts] for i in range(parts)]


def parts_of(variant: int) -> tuple[int, int]:
    """(generation part, refinement part) indices of ``variant`` in the 2K-way partition."""
    return 2 * variant, 2 * variant + 1


def guide_of(variant: int, count: int, mode: str) -> int:
    """Whose draft ``variant`` learns to refine: the next variant (cross) or itself (self)."""
    return (variant + 1) % count if mode == "cross" else variant


def refiners_of(guide: int, count: int, mode: str) -> list[int]:
    """Who refines ``guide``'s draft: every variant (cross) or only the guide (self)."""
    return list(range(count)) if mode == "cross" else [guide]
