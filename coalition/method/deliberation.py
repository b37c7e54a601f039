"""Deliberated inference: a router picks who writes the rationale, then who refines it (for
``refine_turns`` turns); the last writer answers given the final rationale.

Routers: :class:`Fixed` (one variant alone, self-refine, cross-refine with fixed roles),
:class:`RandomRouter`, and :class:`ControllerRouter` (the trained controller). Every path runs
through :class:`Steps`, which batches the calls per model and memoises them, so comparing many
routers on the same questions pays for each distinct (model, prompt) once. Greedy decoding makes
a memoised step exactly what a fresh call would return. The same :func:`deliberate` serves
batches of HTTP requests in ``actors/serve.py``.
"""

from __future__ import annotations

import random
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import ClassVar, Protocol

from coalition.data import prompts
from coalition.data.records import Example
from coalition.data.tasks.base import Task
from coalition.engines.base import Generation, SamplingParams
from coalition.groups.group import Generating
from coalition.method.controller import Controller
from coalition.method.evaluation import ANSWER_TOKENS
from coalition.method.variants import BASE

Key = str  # a model of the group: a variant ("v0" …) or "base" (coalition.method.variants.BASE)


class Models(Generating, Protocol):
    """What deliberation needs: a model group's generation, and base-model features."""

    def features(self, prompts: list[str]) -> list[list[float]]: ...


@dataclass(frozen=True)
class Outcome:
    """One question's deliberation: who wrote and refined, the final rationale, the answer."""

    id: str
    question: str
    gold: str
    method: str
    generator: str
    refiners: list[str]
    rationale: str
    output: str
    extracted: str | None
    correct: bool
    tokens: int  # generated along the path
    seconds: float  # the path's share of batched wall time, summed over its steps

    kind: ClassVar[str] = "outcome"


class Steps:
    """Memoised, batched model calls; each item's cost is its share of its batch's wall time."""

    def __init__(self, models: Models, params: SamplingParams):
        self.models = models
        self.params = replace(params, n=1)
        self._gen: dict[tuple[Key, str, int], tuple[Generation, float]] = {}
        self._feat: dict[str, tuple[list[float], float]] = {}

    def generate(
        self, calls: Sequence[tuple[Key, str]], max_new_tokens: int | None = None
    ) -> list[tuple[Generation, float]]:
        """``(model, prompt)`` → (generation, seconds), calling models only for new pairs."""
        limit = max_new_tokens or self.params.max_new_tokens
        todo: dict[Key, list[str]] = {}
        for key, prompt in calls:
            if (key, prompt, limit) not in self._gen and prompt not in todo.get(key, []):
                todo.setdefault(key, []).append(prompt)
        if todo:
            start = time.perf_counter()
            outs = self.models.generate(todo, replace(self.params, max_new_tokens=limit))
            share = (time.perf_counter() - start) / sum(len(v) for v in todo.values())
            for key, texts in todo.items():
                for prompt, gens in zip(texts, outs[key], strict=True):
                    self._gen[(key, prompt, limit)] = (gens[0], share)
        return [self._gen[(key, prompt, limit)] for key, prompt in calls]

    def features(self, texts: Sequence[str]) -> list[tuple[list[float], float]]:
        todo = list(dict.fromkeys(t for t in texts if t not in self._feat))
        if todo:
            start = time.perf_counter()
            feats = self.models.features(todo)
            share = (time.perf_counter() - start) / len(todo)
            self._feat.update({t: (f, share) for t, f in zip(todo, feats, strict=True)})
        return [self._feat[t] for t in texts]


class Router(ABC):
    """Chooses a model per question for the writing step (turn 0) and each refine turn."""

    name: str
    uses_features: bool = False

    @abstractmethod
    def route(
        self, turn: int, previous: list[Key], features: list[list[float]] | None
    ) -> list[Key]:
        """One model per question; ``previous`` is who wrote the current draft (turn ≥ 1)."""


class Fixed(Router):
    """The same roles for every question: ``refiner="same"`` is self-refinement."""

    def __init__(self, name: str, generator: Key, refiner: Key | str = "same"):
        self.name, self.generator, self.refiner = name, generator, refiner

    def route(self, turn, previous, features):
        if turn == 0:
            return [self.generator] * len(previous)
        return list(previous) if self.refiner == "same" else [self.refiner] * len(previous)


class RandomRouter(Router):
    """A uniformly random variant for every step (seeded)."""

    def __init__(self, keys: list[str], seed: int = 0, name: str = "random routing"):
        self.name, self.keys, self.rng = name, keys, random.Random(seed)

    def route(self, turn, previous, features):
        return [self.rng.choice(self.keys) for _ in previous]


class ControllerRouter(Router):
    """The trained controller over the base model's features of the prompt at hand."""

    uses_features = True

    def __init__(self, controller: Controller, keys: list[str], name: str = "controller routing"):
        if controller.count != len(keys):
            raise ValueError(f"controller routes {controller.count} variants, run has {len(keys)}")
        self.name, self.ctrl, self.keys = name, controller, keys

    def route(self, turn, previous, features):
        assert features is not None
        decision = "generate" if turn == 0 else "refine"
        return [self.keys[i] for i in self.ctrl.choose(decision, features)]


def deliberate(
    steps: Steps,
    task: Task,
    examples: Sequence[Example],
    router: Router,
    refine_turns: int = 1,
    chat: bool = True,
) -> list[Outcome]:
    """Route, write, refine ``refine_turns`` times and answer, for a batch of questions."""
    tok = steps.models.tokenizer
    fmt = task.answer_format

    def render(mode: str, ex: Example, reads: str | None = None) -> str:
        return prompts.render(prompts.build(mode, ex.question, fmt, reads), tok, chat)  # type: ignore[arg-type]

    n = len(examples)
    cost = [0.0] * n
    tokens = [0] * n
    texts = [render("rationale", ex) for ex in examples]
    writers: list[Key] = [BASE] * n  # who wrote the draft so far (none yet)
    drafts: list[str] = [""] * n
    trail: list[list[str]] = [[] for _ in range(n)]
    for turn in range(refine_turns + 1):
        if turn:
            texts = [render("refine", ex, d) for ex, d in zip(examples, drafts, strict=True)]
        feats = None
        if router.uses_features:
            got = steps.features(texts)
            feats = [f for f, _ in got]
            cost = [c + s for c, (_, s) in zip(cost, got, strict=True)]
        writers = router.route(turn, writers, feats)
        outs = steps.generate(list(zip(writers, texts, strict=True)))
        for i, (gen, secs) in enumerate(outs):
            drafts[i] = gen.text
            tokens[i] += gen.tokens
            cost[i] += secs
            trail[i].append(writers[i])
    answer_texts = [
        render("answer_given_rationale", ex, d) for ex, d in zip(examples, drafts, strict=True)
    ]
    answers = steps.generate(list(zip(writers, answer_texts, strict=True)), ANSWER_TOKENS)
    return [
        _outcome(
            task,
            ex,
            router.name,
            trail[i],
            drafts[i],
            f"{prompts.ANSWER_PREFIX} {ans.text}",
            tokens[i] + ans.tokens,
            cost[i] + secs,
        )
        for i, (ex, (ans, secs)) in enumerate(zip(examples, answers, strict=True))
    ]


def _outcome(
    task: Task,
    ex: Example,
    method: str,
    trail: list[str],
    rationale: str,
    output: str,
    tokens: int,
    seconds: float,
) -> Outcome:
    """The record of one question's path (``trail``: writer, then refiners) and its answer."""
    extracted = task.extract(output)
    return Outcome(
        id=ex.id,
        question=ex.question,
        gold=ex.answer,
        method=method,
        generator=trail[0],
        refiners=trail[1:],
        rationale=rationale,
        output=output,
        extracted=extracted,
        correct=task.is_correct(extracted, ex),
        tokens=tokens,
        seconds=seconds,
    )


def direct(
    steps: Steps, task: Task, examples: Sequence[Example], key: Key, chat: bool = True
) -> list[Outcome]:
    """Answer straight away with one model (no rationale): the direct baseline."""
    tok = steps.models.tokenizer
    texts = [
        prompts.render(prompts.build("answer", ex.question, task.answer_format), tok, chat)
        for ex in examples
    ]
    name = key
    # the "answer" mode writes "The answer is …" itself
    return [
        _outcome(task, ex, f"{name} direct", [name], "", gen.text, gen.tokens, secs)
        for ex, (gen, secs) in zip(examples, steps.generate([(key, t) for t in texts]), strict=True)
    ]


def oracle(paths: Sequence[Sequence[Outcome]], name: str = "oracle") -> list[Outcome]:
    """Best of all paths per question (correct if any path is): an upper bound on routing.
    Its cost is every path's, since it needs them all."""
    out = []
    for per_q in zip(*paths, strict=True):
        pick = next((o for o in per_q if o.correct), per_q[0])
        out.append(
            replace(
                pick,
                method=name,
                tokens=sum(o.tokens for o in per_q),
                seconds=sum(o.seconds for o in per_q),
            )
        )
    return out
