"""Held-out evaluation: direct answers or chain-of-thought (rationale, then answer given it)."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from coalition.data import prompts
from coalition.data.records import Example, Prediction
from coalition.data.tasks.base import Task
from coalition.engines.base import Engine, SamplingParams

Method = Literal["direct", "cot"]
ANSWER_TOKENS = 24  # the answer stage only needs the answer itself


def evaluate(
    engine: Engine,
    task: Task,
    examples: list[Example],
    method: Method,
    params: SamplingParams,
    adapter: str | None = None,
    chat: bool = True,
) -> list[Prediction]:
    """One prediction per example. ``cot`` writes a rationale, then answers given it (the
    same two steps COALITION's inference ends with); ``direct`` answers straight away."""
    tok = getattr(engine, "tokenizer", None)
    one = replace(params, n=1)
    if method == "direct":
        texts = [
            prompts.render(prompts.build("answer", ex.question, task.answer_format), tok, chat)
            for ex in examples
        ]
        outs = [g[0] for g in engine.generate(texts, one, adapter)]
        return [
            _prediction(task, ex, out.text, None, out.tokens)
            for ex, out in zip(examples, outs, strict=True)
        ]
    if method != "cot":
        raise ValueError(f"evaluate.method: {method!r}; allowed: direct, cot")
    rationale_prompts = [
        prompts.render(prompts.build("rationale", ex.question, task.answer_format), tok, chat)
        for ex in examples
    ]
    rationales = [g[0] for g in engine.generate(rationale_prompts, one, adapter)]
    answer_prompts = [
        prompts.render(
            prompts.build("answer_given_rationale", ex.question, task.answer_format, r.text),
            tok,
            chat,
        )
        for ex, r in zip(examples, rationales, strict=True)
    ]
    short = replace(one, max_new_tokens=ANSWER_TOKENS, temperature=0.0)
    answers = [g[0] for g in engine.generate(answer_prompts, short, adapter)]
    return [
        _prediction(task, ex, f"{prompts.ANSWER_PREFIX} {a.text}", r.text, r.tokens + a.tokens)
        for ex, r, a in zip(examples, rationales, answers, strict=True)
    ]


def _prediction(
    task: Task, ex: Example, output: str, rationale: str | None, tokens: int
) -> Prediction:
    extracted = task.extract(output)
    return Prediction(
        id=ex.id,
        question=ex.question,
        gold=ex.answer,
        output=output,
        extracted=extracted,
        correct=task.is_correct(extracted, ex),
        rationale=rationale,
        tokens=tokens,
    )
