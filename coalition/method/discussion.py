"""Multi-agent discussion inference: N agents answer, read each other's solutions for R rounds,
and the majority of their final answers is the answer.

Agents are models by key (COALITION variants, a SAIE learner, the base), reused cyclically when
there are more agents than models. Agents that share a model sample with their own seeds so
they do not all say the same thing. Each agent answers the way CoT evaluation does (rationale,
then the answer given it), so one greedy agent with no rounds is exactly ``method=cot``.

Round 0's majority is self-consistency (voting without discussion), so the record of every
round shows what the discussion itself adds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

from coalition.data import prompts
from coalition.data.records import Example
from coalition.data.tasks.base import Task
from coalition.engines.base import SamplingParams
from coalition.groups.group import Generating
from coalition.method.evaluation import ANSWER_TOKENS


@dataclass(frozen=True)
class Discussion:
    """One question's discussion: every agent's answer per round and the majority per round."""

    id: str
    question: str
    gold: str
    agents: list[str]
    answers: list[list[str | None]]  # [round][agent], extracted
    majority: list[str | None]  # per round
    correct: list[bool]  # the majority's, per round
    rationales: list[str]  # each agent's last solution
    tokens: int

    kind: ClassVar[str] = "discussion"


def majority(answers: Sequence[str | None]) -> str | None:
    """The most common answer (ignoring agents that stated none); ties go to the answer an
    earlier agent gave."""
    given = [a.strip() for a in answers if a is not None and a.strip()]
    if not given:
        return None
    counts = Counter(given)
    top = max(counts.values())
    return next(a for a in given if counts[a] == top)


def seats(agents: Sequence[str]) -> list[int]:
    """Each agent's occurrence index among agents on the same model (its sampling seed offset)."""
    seen: Counter = Counter()
    out = []
    for key in agents:
        out.append(seen[key])
        seen[key] += 1
    return out


def discuss(
    models: Generating,
    task: Task,
    examples: Sequence[Example],
    agents: Sequence[str],
    rounds: int,
    params: SamplingParams,
    chat: bool = True,
) -> list[Discussion]:
    """Run the discussion for a batch of questions; one batched call per (seat, round) for all
    agents that sample with the same seed, whatever model each runs."""
    if not agents:
        raise ValueError("discussion needs at least one agent")
    tok, fmt = models.tokenizer, task.answer_format
    n, seat = len(examples), seats(agents)
    one = replace(params, n=1)
    solutions: list[list[str]] = [[""] * len(agents) for _ in range(n)]
    answers: list[list[list[str | None]]] = [[] for _ in range(n)]
    tokens = [0] * n
    for rnd in range(rounds + 1):
        texts = []
        for i, ex in enumerate(examples):
            row = []
            for a in range(len(agents)):
                if rnd == 0:
                    p = prompts.build("rationale", ex.question, fmt)
                else:
                    others = [s for b, s in enumerate(solutions[i]) if b != a]
                    p = prompts.discuss(ex.question, fmt, solutions[i][a], others)
                row.append(prompts.render(p, tok, chat))
            texts.append(row)
        written = _call(models, agents, seat, texts, replace(one, seed=one.seed + 1000 * rnd))
        for i in range(n):
            for a, gen in enumerate(written[i]):
                solutions[i][a] = gen.text
                tokens[i] += gen.tokens
        asks = [
            [
                prompts.render(
                    prompts.build("answer_given_rationale", ex.question, fmt, solutions[i][a]),
                    tok,
                    chat,
                )
                for a in range(len(agents))
            ]
            for i, ex in enumerate(examples)
        ]
        greedy = replace(one, temperature=0.0, max_new_tokens=ANSWER_TOKENS)
        said = _call(models, agents, seat, asks, greedy)
        for i in range(n):
            tokens[i] += sum(g.tokens for g in said[i])
            answers[i].append([task.extract(f"{prompts.ANSWER_PREFIX} {g.text}") for g in said[i]])
    out = []
    for i, ex in enumerate(examples):
        votes = [majority(r) for r in answers[i]]
        out.append(
            Discussion(
                id=ex.id,
                question=ex.question,
                gold=ex.answer,
                agents=[k or "base" for k in agents],
                answers=answers[i],
                majority=votes,
                correct=[task.is_correct(v, ex) for v in votes],
                rationales=list(solutions[i]),
                tokens=tokens[i],
            )
        )
    return out


def _call(
    models: Generating,
    agents: Sequence[str],
    seat: list[int],
    texts: list[list[str]],
    params: SamplingParams,
) -> list[list]:
    """``texts[question][agent]`` → generations in the same shape. Agents in the same seat run
    on distinct models, so each seat is one ``generate`` call with one job per model."""
    out: list[list] = [[None] * len(agents) for _ in texts]
    for s in sorted(set(seat)):
        members = [a for a in range(len(agents)) if seat[a] == s]
        jobs = {agents[a]: [row[a] for row in texts] for a in members}
        gens = models.generate(jobs, replace(params, seed=params.seed + s))
        for a in members:
            for i, g in enumerate(gens[agents[a]]):
                out[i][a] = g[0]
    return out


def accuracy_by_round(results: Sequence[Discussion]) -> list[list[bool]]:
    """Per round, whether each question's majority was right (for intervals per round)."""
    rounds = len(results[0].correct) if results else 0
    return [[d.correct[r] for d in results] for r in range(rounds)]
