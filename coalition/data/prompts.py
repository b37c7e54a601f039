"""The four COALITION prompt modes, rendered with the model's chat template when it has one.

Modes:
  answer                  question → "The answer is X."
  rationale               question → step-by-step reasoning ending in the answer
  answer_given_rationale  question + rationale → answer (the scorer's mode for U)
  refine                  question + a rationale that may or may not be correct → a corrected one

A prompt is a user message plus an optional *assistant prefix* (the start of the reply the
model continues), so scoring can ask for the gold answer right after "The answer is".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Mode = Literal["answer", "rationale", "answer_given_rationale", "refine"]
MODES: tuple[Mode, ...] = ("answer", "rationale", "answer_given_rationale", "refine")

ANSWER_PREFIX = "The answer is"


@dataclass(frozen=True)
class Prompt:
    """A user message and the start of the assistant's reply."""

    user: str
    prefix: str = ""


def answer_statement(answer: str) -> str:
    """The canonical closing sentence every mode's target ends with."""
    return f"{ANSWER_PREFIX} {answer}."


def build(mode: Mode, question: str, answer_format: str, rationale: str | None = None) -> Prompt:
    """The prompt for ``mode``; ``rationale`` is required for the two modes that read one."""
    if mode in ("answer_given_rationale", "refine") and rationale is None:
        raise ValueError(f"prompt mode {mode!r} needs a rationale")
    if mode == "answer":
        return Prompt(f"Answer the question. {answer_format}\n\nQuestion: {question}")
    if mode == "rationale":
        return Prompt(
            f"Solve the problem step by step, then state the answer. {answer_format}\n\n"
            f"Question: {question}"
        )
    if mode == "answer_given_rationale":
        return Prompt(
            f"Read the reasoning and give the final answer. {answer_format}\n\n"
            f"Question: {question}\n\nReasoning: {rationale}",
            prefix=ANSWER_PREFIX,
        )
    if mode == "refine":
        return Prompt(
            "Here is a question and a step-by-step solution that may or may not be correct. "
            f"Check every step and write a corrected step-by-step solution. {answer_format}\n\n"
            f"Question: {question}\n\nSolution: {rationale}"
        )
    raise ValueError(f"unknown prompt mode {mode!r}; allowed: {', '.join(MODES)}")


def target(mode: Mode, answer: str, rationale: str | None = None) -> str:
    """The completion a model should produce for ``mode`` (used as the SFT target)."""
    if mode in ("answer",):
        return answer_statement(answer)
    if mode == "answer_given_rationale":
        return f" {answer}."
    if rationale is None:
        raise ValueError(f"the target for mode {mode!r} needs a rationale")
    text = rationale.strip()
    return text if ANSWER_PREFIX.lower() in text.lower() else f"{text} {answer_statement(answer)}"


def render(prompt: Prompt, tokenizer: Any | None = None, chat: bool = True) -> str:
    """The prompt as text: the chat template (user turn + generation prompt) when the tokenizer
    has one and ``chat`` is on, else a plain "Question/Answer" layout."""
    if chat and tokenizer is not None and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt.user}], tokenize=False, add_generation_prompt=True
        )
    else:
        text = f"{prompt.user}\n\nAnswer: "
    return text + prompt.prefix


def discuss(question: str, answer_format: str, own: str, others: list[str]) -> Prompt:
    """Question + the model's own earlier solution + what others said (their solutions in
    multi-agent discussion, a partner's remark in SAIE) → an updated solution. One prompt for
    both, so SAIE trains the learner on exactly what discussion inference shows it."""
    said = "\n\n".join(f"({i}) {text.strip()}" for i, text in enumerate(others, 1))
    return Prompt(
        "Here is a question, your earlier solution, and what others said about it. They may be "
        "right or wrong: check every step yourself and write an updated step-by-step solution. "
        f"{answer_format}\n\nQuestion: {question}\n\nYour solution: {own.strip()}\n\n"
        f"Others said:\n{said}"
    )


Stance = Literal["supportive", "adversarial"]


def remark(question: str, attempt: str, stance: Stance, answer: str) -> Prompt:
    """A partner's remark on a learner's attempt (SAIE): a supportive one argues for the gold
    ``answer`` and confirms the right steps; an adversarial one argues for the plausible wrong
    ``answer`` and attacks a step."""
    if stance == "supportive":
        ask = (
            f"The correct answer is {answer}. In two or three sentences, tell the student which "
            f"steps are right or wrong and argue that the answer is {answer}."
        )
    elif stance == "adversarial":
        ask = (
            f"In two or three sentences, argue convincingly that the answer is {answer}, "
            "pointing at a step of the solution you claim is wrong."
        )
    else:
        raise ValueError(f"remark stance {stance!r}; allowed: supportive, adversarial")
    return Prompt(
        f"A student solved this problem.\n\nQuestion: {question}\n\nStudent's solution: "
        f"{attempt.strip()}\n\n{ask}"
    )
