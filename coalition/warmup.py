"""Warm-up data: multi-mode instruction rows from rationales that reach the gold answer.

Rationales come from the dataset's gold rationales when it has them, otherwise from the base
model's own samples that reach the gold answer (``warmup.rationales_from``). Each question gives
one row per prompt mode; the refine row corrects a draft (a wrong sample of the model's, or the
rationale with one number changed, or — a ``correct_drafts`` share of the time — the correct
rationale itself, so the model also learns to keep what is right).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from coalition import prompts
from coalition.engines.base import Generation
from coalition.records import Example
from coalition.tasks.base import Task

_NUM = re.compile(r"-?\d+")
_RESULT = re.compile(r"= (-?\d+)")  # a step's result


@dataclass(frozen=True)
class Sourced:
    """A question with the rationale it is taught with and a draft for the refine mode."""

    example: Example
    rationale: str
    draft: str


def corrupt(rationale: str, rng: random.Random) -> str:
    """A plausible wrong draft: one step's result changed and carried into the steps after it
    (so the refiner must recompute steps, not just restate the last one); without numbers,
    the last sentence dropped."""
    results = list(_RESULT.finditer(rationale)) or list(_NUM.finditer(rationale))
    if not results:
        sentences = rationale.split(". ")
        return ". ".join(sentences[:-1]) if len(sentences) > 1 else rationale + " Maybe."
    m = rng.choice(results)
    old = m.group(m.lastindex or 0)
    wrong = str(int(old) + rng.choice([-10, -3, -2, -1, 1, 2, 3, 10]))
    start, end = m.span(m.lastindex or 0)
    rest = re.sub(rf"(?<![\d-]){re.escape(old)}(?!\d)", wrong, rationale[end:])
    return rationale[:start] + wrong + rest


def from_gold(
    examples: list[Example], seed: int, correct_drafts: float = 0.25
) -> tuple[list[Sourced], int]:
    """Questions with gold rationales (and how many lacked one)."""
    rng = random.Random(seed)
    out = []
    for ex in examples:
        if ex.rationale:
            keep = rng.random() < correct_drafts
            draft = ex.rationale if keep else corrupt(ex.rationale, rng)
            out.append(Sourced(ex, ex.rationale, draft))
    return out, len(examples) - len(out)


def from_samples(
    task: Task,
    examples: list[Example],
    samples: list[list[Generation]],
    seed: int,
    correct_drafts: float = 0.25,
) -> tuple[list[Sourced], int]:
    """Questions where one of the model's samples reached the gold answer (and how many had none)."""
    rng = random.Random(seed)
    out = []
    for ex, gens in zip(examples, samples, strict=True):
        right = [g.text for g in gens if task.is_correct(task.extract(g.text), ex)]
        wrong = [g.text for g in gens if g.text not in right]
        if right:
            if rng.random() < correct_drafts:
                draft = right[0]
            else:  # a wrong sample of its own when there is one, else a corrupted right one
                draft = wrong[0] if wrong else corrupt(right[0], rng)
            out.append(Sourced(ex, right[0], draft))
    return out, len(examples) - len(out)


def rows(
    items: list[Sourced], task: Task, modes: list[str], tokenizer: Any, chat: bool
) -> list[dict[str, str]]:
    """Prompt/completion rows, one per (question, mode)."""
    out = []
    for it in items:
        ex = it.example
        for mode in modes:
            reads = {"answer_given_rationale": it.rationale, "refine": it.draft}.get(mode)
            prompt = prompts.render(
                prompts.build(mode, ex.question, task.answer_format, reads), tokenizer, chat
            )  # type: ignore[arg-type]
            target = prompts.target(mode, ex.answer, it.rationale)  # type: ignore[arg-type]
            out.append({"prompt": prompt, "completion": target})
    return out
