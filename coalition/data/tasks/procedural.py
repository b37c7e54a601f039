"""Procedural, offline tasks: reasoning-gym families plus coin flip and last-letter concatenation.

All are seeded; train and test are drawn from different seeds and the test set is deduplicated
against the train set, so the two never share a question.
"""

from __future__ import annotations

import ast
import json
import operator
import random
import re
from abc import abstractmethod
from typing import Any

from coalition.data.records import Example
from coalition.data.tasks.answers import (
    extract_number,
    extract_text,
    extract_yes_no,
    normalize_number,
    normalize_text,
    numbers_equal,
)
from coalition.data.tasks.base import Task, TaskError, register

_TEST_SEED_OFFSET = 1_000_003


class ProceduralTask(Task):
    """A task whose examples come from a seeded generator ``make(rng_seed, count)``."""

    @abstractmethod
    def make(self, seed: int, count: int) -> list[Example]:
        """``count`` examples generated from ``seed``."""

    def load(self, split: str) -> list[Example]:
        if split not in ("train", "test"):
            raise TaskError(f"split must be 'train' or 'test', got {split!r}")
        train = self.make(self.seed, self.n_train) if self.n_train else []
        if split == "train":
            return train
        seen = {ex.question for ex in train}
        # Over-generate so that dropping questions shared with train still leaves n_test.
        pool = self.make(self.seed + _TEST_SEED_OFFSET, 2 * self.n_test + 16)
        test = [ex for ex in pool if ex.question not in seen][: self.n_test]
        if len(test) < self.n_test:
            raise TaskError(
                f"task {self.name!r}: only {len(test)} test questions differ from the "
                f"{len(train)} train ones; lower task.n_test or task.n_train"
            )
        return test


# --------------------------------------------------------------------------- reasoning-gym


_EXPR = re.compile(r"[-+*/()\d\s.]+")
_OPS = {
    ast.Add: ("+", operator.add),
    ast.Sub: ("-", operator.sub),
    ast.Mult: ("*", operator.mul),
    ast.Div: ("/", operator.truediv),
}


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def arithmetic_steps(question: str) -> tuple[list[str], float] | None:
    """Worked steps ("5 - 3 = 2.") for the arithmetic expression in ``question``, innermost
    first, and the value; None when the question holds no plain expression."""
    candidates = [m.group().strip().rstrip(".") for m in _EXPR.finditer(question)]
    candidates = [
        c for c in candidates if any(ch.isdigit() for ch in c) and any(o in c for o in "+-*/")
    ]
    if not candidates:
        return None
    try:
        tree = ast.parse(max(candidates, key=len), mode="eval").body
    except SyntaxError:
        return None
    steps: list[str] = []

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            inner = walk(node.operand)
            if not isinstance(node.operand, ast.Constant):
                steps.append(f"-({_fmt(inner)}) = {_fmt(-inner)}.")
            return -inner
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = walk(node.left), walk(node.right)
            sym, fn = _OPS[type(node.op)]
            if sym == "/" and right == 0:
                raise ZeroDivisionError
            value = fn(left, right)
            steps.append(f"{_fmt(left)} {sym} {_fmt(right)} = {_fmt(value)}.")
            return value
        raise ValueError(f"unsupported expression node {type(node).__name__}")

    try:
        value = walk(tree)
    except (ValueError, ZeroDivisionError):
        return None
    return steps, value


class ReasoningGymTask(ProceduralTask):
    """A reasoning-gym dataset; answers are checked by the dataset's own ``score_answer``."""

    family: str = ""
    numeric: bool = True
    worked_steps: bool = False  # we can write gold rationales for plain arithmetic expressions

    def __init__(self, n_train: int, n_test: int, seed: int, params: dict[str, Any]):
        super().__init__(n_train, n_test, seed, params)
        # task.params are passed straight to reasoning-gym's dataset config (e.g. min_terms).
        self._gym_config = dict(params)
        self._scorers: dict[int, Any] = {}

    def _dataset(self, seed: int, size: int) -> Any:
        import reasoning_gym

        try:
            return reasoning_gym.create_dataset(
                self.family, size=size, seed=seed, **self._gym_config
            )
        except TypeError as exc:  # an unknown parameter
            raise TaskError(f"task.params for {self.name!r}: {exc}") from None
        except (AssertionError, ValueError) as exc:  # reasoning-gym checks ranges by assert
            raise TaskError(
                f"task.params for {self.name!r}: {exc or 'values out of range'}; "
                f"got {self._gym_config}"
            ) from None

    def make(self, seed: int, count: int) -> list[Example]:
        data = self._dataset(seed, max(count, 1))
        out = []
        for i in range(count):
            entry = data[i]
            # Keep the entry's metadata JSON-clean so examples can cross process boundaries.
            meta = json.loads(json.dumps(entry.get("metadata", {}), default=str))
            answer = str(entry["answer"])
            if self.numeric:
                answer = normalize_number(answer) or answer
            out.append(
                Example(
                    id=f"{self.name}-{seed}-{i}",
                    question=entry["question"],
                    answer=answer,
                    rationale=self.gold_rationale(entry["question"], answer),
                    meta={"rg_answer": str(entry["answer"]), "rg_metadata": meta},
                )
            )
        return out

    def gold_rationale(self, question: str, answer: str) -> str | None:
        """Worked steps for plain arithmetic families, kept only when they reach the gold answer."""
        if not self.worked_steps:
            return None
        worked = arithmetic_steps(question)
        if worked is None or not worked[0] or not numbers_equal(_fmt(worked[1]), answer):
            return None
        return " ".join(worked[0]) + f" The answer is {answer}."

    def extract(self, text: str) -> str | None:
        return extract_number(text) if self.numeric else extract_text(text)

    def is_correct(self, predicted: str | None, example: Example) -> bool:
        if predicted is None:
            return False
        if self.numeric:
            return numbers_equal(predicted, example.answer)
        scorer = self._scorer()
        entry = {
            "answer": example.meta.get("rg_answer", example.answer),
            "metadata": example.meta.get("rg_metadata", {}),
        }
        return float(scorer.score_answer(answer=predicted, entry=entry)) >= 1.0

    def _scorer(self) -> Any:
        if "ds" not in self._scorers:
            self._scorers["ds"] = self._dataset(self.seed, 1)
        return self._scorers["ds"]


def _gym(name: str, family: str, numeric: bool, answer_format: str, steps: bool = False) -> None:
    attrs = {
        "name": name,
        "family": family,
        "numeric": numeric,
        "answer_format": answer_format,
        "worked_steps": steps,
    }
    cls = type(f"Gym_{name}", (ReasoningGymTask,), attrs)
    register(name)(cls)


_NUM = "End with 'The answer is N.' where N is a number."
_gym("basic_arithmetic", "basic_arithmetic", True, _NUM, steps=True)
_gym("chain_sum", "chain_sum", True, _NUM, steps=True)
_gym("leg_counting", "leg_counting", True, _NUM)
_gym("gsm_symbolic", "gsm_symbolic", True, _NUM)
_gym("products", "products", True, _NUM, steps=True)


# --------------------------------------------------------------------------- our generators

_NAMES = (
    "Ka Sherrie Jamey Alyssa Maybelle Tom Elon Larry Kathy Jessica Eduardo Nina Ravi Chen "
    "Priya Omar Lena Diego Yuki Fatima Marco Sofia Ivan Aisha Pablo Mei Noah Zara Felix Ines"
).split()


@register("coin_flip")
class CoinFlip(ProceduralTask):
    """Fine-tune-CoT's coin flip: is the coin still heads up after some people (don't) flip it?"""

    name = "coin_flip"
    answer_format = "End with 'The answer is yes.' or 'The answer is no.'"

    def __init__(self, n_train: int, n_test: int, seed: int, params: dict[str, Any]):
        super().__init__(n_train, n_test, seed, params)
        self.check_params({"people"})
        self.people = int(self.params.get("people", 4))
        if self.people < 1:
            raise TaskError("task.params.people must be >= 1")

    def make(self, seed: int, count: int) -> list[Example]:
        rng = random.Random(seed)
        out = []
        for i in range(count):
            names = rng.sample(_NAMES, self.people)
            flips = [rng.random() < 0.5 for _ in names]
            heads = True
            sentences, steps = [], ["The coin starts heads up."]
            for name, flip in zip(names, flips, strict=True):
                sentences.append(f"{name} {'flips' if flip else 'does not flip'} the coin.")
                heads = heads != flip
                side = "heads" if heads else "tails"
                steps.append(
                    f"{name} flips it, so it is now {side} up."
                    if flip
                    else f"{name} does not flip it, so it stays {side} up."
                )
            answer = "yes" if heads else "no"
            question = "A coin is heads up. " + " ".join(sentences) + " Is the coin still heads up?"
            steps.append(f"The answer is {answer}.")
            out.append(Example(f"coin_flip-{seed}-{i}", question, answer, " ".join(steps)))
        return out

    def extract(self, text: str) -> str | None:
        return extract_yes_no(text)

    def is_correct(self, predicted: str | None, example: Example) -> bool:
        return predicted is not None and predicted == example.answer


@register("last_letter_concat")
class LastLetterConcat(ProceduralTask):
    """Fine-tune-CoT's last-letter concatenation of a few names."""

    name = "last_letter_concat"
    answer_format = "End with 'The answer is X.' where X is the concatenated letters."

    def __init__(self, n_train: int, n_test: int, seed: int, params: dict[str, Any]):
        super().__init__(n_train, n_test, seed, params)
        self.check_params({"words"})
        self.words = int(self.params.get("words", 3))
        if self.words < 1:
            raise TaskError("task.params.words must be >= 1")

    def make(self, seed: int, count: int) -> list[Example]:
        rng = random.Random(seed)
        out = []
        for i in range(count):
            names = rng.sample(_NAMES, self.words)
            letters = "".join(n[-1] for n in names)
            joined = " ".join(names)
            question = f'Take the last letters of each word in "{joined}" and concatenate them.'
            steps = [f'The last letter of "{n}" is "{n[-1]}".' for n in names]
            steps.append(f'Concatenating them gives "{letters}". The answer is {letters}.')
            out.append(Example(f"last_letter-{seed}-{i}", question, letters, " ".join(steps)))
        return out

    def extract(self, text: str) -> str | None:
        got = extract_text(text)
        return got.replace(" ", "").strip("\"'") if got is not None else None

    def is_correct(self, predicted: str | None, example: Example) -> bool:
        return predicted is not None and normalize_text(predicted) == example.answer.lower()
