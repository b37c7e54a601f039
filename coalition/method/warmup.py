"""Warm-up data: multi-mode instruction rows from rationales that reach the gold answer.

Rationales come from the dataset's gold rationales when it has them, otherwise from the base
model's own samples that reach the gold answer, or from a Fine-tune-CoT teacher's kept
rationales (``warmup.rationales_from: <jobs/distill.py run dir>``). Each question gives
one row per prompt mode; the refine row corrects a draft (a wrong sample of the model's, or the
rationale with one number changed, or — a ``correct_drafts`` share of the time — the correct
rationale itself, so the model also learns to keep what is right).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from coalition.data import prompts
from coalition.data.records import Example
from coalition.data.tasks.base import Task
from coalition.engines.base import Generation, SamplingParams
from coalition.method.teachers import TeacherSample
from coalition.run.config import ConfigError, WarmupConfig
from coalition.run.rundir import RunDir, read_records

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
    return from_rationales(
        examples, {ex.question: ex.rationale for ex in examples}, seed, correct_drafts
    )


def from_rationales(
    examples: list[Example],
    rationales: dict[str, str | None],
    seed: int,
    correct_drafts: float = 0.25,
) -> tuple[list[Sourced], int]:
    """Questions with a known-correct rationale, looked up by question text (a dataset's gold
    ones, or a Fine-tune-CoT teacher's kept ones), and how many had none."""
    rng = random.Random(seed)
    out = []
    for ex in examples:
        rationale = rationales.get(ex.question)
        if rationale:
            keep = rng.random() < correct_drafts
            draft = rationale if keep else corrupt(rationale, rng)
            out.append(Sourced(ex, rationale, draft))
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


def source(
    cfg: WarmupConfig,
    task: Task,
    examples: list[Example],
    sample_base: Callable[[list[Example], SamplingParams], list[list[Generation]]],
    params: SamplingParams,
    seed: int,
) -> tuple[list[Sourced], int, str]:
    """The warm-up questions with their rationales, per ``warmup.rationales_from``: ``gold``,
    ``self`` (``sample_base`` samples the base model), a jobs/distill.py run directory, or
    ``auto`` (gold when every question has one, else self). Also: how many had none, and the
    source used."""
    how = cfg.rationales_from
    if how == "auto":
        how = "gold" if all(ex.rationale for ex in examples) else "self"
    if how == "gold":
        items, missing = from_gold(examples, seed, cfg.correct_drafts)
    elif how == "self":
        samples = sample_base(
            examples, replace(params, temperature=cfg.self_temperature, n=cfg.self_samples)
        )
        items, missing = from_samples(task, examples, samples, seed, cfg.correct_drafts)
    else:
        kept = distilled(Path(how), task)
        items, missing = from_rationales(examples, kept, seed, cfg.correct_drafts)
    if not items:
        raise ConfigError(
            f"warm-up: no usable rationale for any of {len(examples)} questions (source "
            f"{how}); use a task with gold rationales, more warmup.self_samples, or a "
            "jobs/distill.py run over these questions"
        )
    return items, missing, how


def distilled(run_dir: Path, task: Task) -> dict[str, str | None]:
    """A jobs/distill.py run's kept teacher rationales, by question text (first kept sample)."""
    path = RunDir(run_dir).teacher_samples
    if not path.exists():
        raise ConfigError(
            f"warmup.rationales_from: {run_dir} holds no finished jobs/distill.py teacher stage "
            f"({path} is missing)"
        )
    out: dict[str, str | None] = {}
    for s in read_records(path, TeacherSample):
        if s.kept and s.task == task.name:
            out.setdefault(s.question, s.rationale)
    if not out:
        raise ConfigError(
            f"warmup.rationales_from: {run_dir} kept no rationale for task {task.name!r}"
        )
    return out


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
