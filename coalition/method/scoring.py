"""The utility U of a rationale: how likely it makes the gold answer.

U(r) = exp(mean over gold-answer tokens of log p(token | answer_given_rationale(q, r))),
the per-token geometric-mean probability of the gold answer; U0 is the same with no rationale
(the question alone, answered directly).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from coalition.data import prompts
from coalition.data.records import Example
from coalition.engines.base import TokenScore


def utility(score: TokenScore) -> float:
    """exp(mean token log-prob): the geometric-mean probability of the target's tokens."""
    return math.exp(score.mean)


def mean_utility(scores: Sequence[TokenScore]) -> float:
    """U averaged over several scorer models (``scorer: variants_mean``)."""
    return sum(utility(s) for s in scores) / len(scores)


def request(
    example: Example,
    rationale: str | None,
    answer_format: str,
    tokenizer: Any = None,
    chat: bool = True,
) -> tuple[str, str]:
    """(prompt, target) whose target log-probs give U(rationale), or U0 when rationale is None."""
    if rationale is None:
        base = prompts.build("answer", example.question, answer_format)
        prompt = prompts.Prompt(base.user, prefix=prompts.ANSWER_PREFIX)
    else:
        prompt = prompts.build("answer_given_rationale", example.question, answer_format, rationale)
    return prompts.render(prompt, tokenizer, chat), f" {example.answer}"
