"""The ``jsonl`` task: a user's own file(s) of question/answer[/rationale] rows.

params:
  path: train file (or the only file, split 70/30 with the task seed)
  test_path: optional separate test file
  question_field / answer_field / rationale_field / id_field: column names
  answer_type: number | text | yesno | choice   (how answers are extracted and compared)
  choices: letters for answer_type=choice (default "ABCDE")
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from coalition.data.records import Example
from coalition.data.tasks.answers import (
    extract_choice,
    extract_number,
    extract_text,
    extract_yes_no,
    normalize_number,
    normalize_text,
    numbers_equal,
)
from coalition.data.tasks.base import Task, TaskError, register

_FORMATS = {
    "number": "End with 'The answer is N.' where N is a number.",
    "text": "End with 'The answer is X.'",
    "yesno": "End with 'The answer is yes.' or 'The answer is no.'",
    "choice": "End with 'The answer is (X).' where X is the letter of the right choice.",
}


def read_jsonl_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) pairs of a JSONL file; a bad line raises TaskError naming file and line."""
    if not path.exists():
        raise TaskError(f"task file {path} does not exist")
    if not path.is_file():
        raise TaskError(f"task file {path} is a directory; give a JSONL file")
    rows = []
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise TaskError(
                    f"{path} row {lineno}: not UTF-8 text (byte {exc.start} of the row)"
                ) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TaskError(f"{path} row {lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise TaskError(f"{path} row {lineno}: expected a JSON object")
            rows.append((lineno, row))
    if not rows:
        raise TaskError(f"task file {path} has no rows (it is empty)")
    return rows


@register("jsonl")
class JsonlTask(Task):
    """Examples from the user's JSONL file(s), with configurable field names."""

    name = "jsonl"

    def __init__(self, n_train: int, n_test: int, seed: int, params: dict[str, Any]):
        super().__init__(n_train, n_test, seed, params)
        self.check_params(
            {
                "path",
                "test_path",
                "question_field",
                "answer_field",
                "rationale_field",
                "id_field",
                "answer_type",
                "choices",
            }
        )
        if "path" not in self.params:
            raise TaskError("task.params.path is required for task 'jsonl'")
        self.answer_type = self.params.get("answer_type", "text")
        if self.answer_type not in _FORMATS:
            raise TaskError(
                f"task.params.answer_type: {self.answer_type!r} not allowed; "
                f"allowed: {', '.join(_FORMATS)}"
            )
        self.answer_format = _FORMATS[self.answer_type]
        self.letters = str(self.params.get("choices", "ABCDE"))
        self.origins: dict[str, str] = {}  # example id -> "file row N", for later errors
        self.fields = {
            "question": self.params.get("question_field", "question"),
            "answer": self.params.get("answer_field", "answer"),
            "rationale": self.params.get("rationale_field"),
            "id": self.params.get("id_field"),
        }

    def _read(self, path: Path) -> list[Example]:
        out = []
        for lineno, row in read_jsonl_rows(path):
            values = {}
            for role in ("question", "answer"):
                field = self.fields[role]
                value = row.get(field)
                if value is None or (isinstance(value, str) and not value.strip()):
                    raise TaskError(
                        f"{path} row {lineno}: field {field!r} ({role}) is missing or empty"
                    )
                values[role] = str(value).strip()
            rationale = None
            if self.fields["rationale"]:
                rationale = row.get(self.fields["rationale"])
                rationale = str(rationale) if rationale is not None else None
            ident = (
                str(row[self.fields["id"]]) if self.fields["id"] in row else f"{path.stem}-{lineno}"
            )
            answer = values["answer"]
            if self.answer_type == "number":
                norm = normalize_number(answer)
                if norm is None:
                    raise TaskError(
                        f"{path} row {lineno}: field {self.fields['answer']!r} is not a number: {answer!r}"
                    )
                answer = norm
            out.append(Example(ident, values["question"], answer, rationale))
            self.origins[ident] = f"{path} row {lineno}"
        return out

    def origin(self, example: Example) -> str:
        return self.origins.get(example.id) or super().origin(example)

    def load(self, split: str) -> list[Example]:
        main = self._read(Path(self.params["path"]))
        if self.params.get("test_path"):
            train, test = main, self._read(Path(self.params["test_path"]))
        else:
            order = list(range(len(main)))
            random.Random(self.seed).shuffle(order)
            cut = int(round(0.7 * len(main)))
            train = [main[i] for i in order[:cut]]
            test = [main[i] for i in order[cut:]]
        seen = {ex.question for ex in train}
        test = [ex for ex in test if ex.question not in seen]
        if split == "test" and not test:
            where = self.params.get("test_path") or f"30% of {self.params['path']}"
            raise TaskError(
                f"task.params: the test split ({where}) is empty once questions that also "
                "appear in the train file are removed; give a test_path with other questions"
            )
        return train[: self.n_train] if split == "train" else test[: self.n_test]

    def extract(self, text: str) -> str | None:
        if self.answer_type == "number":
            return extract_number(text)
        if self.answer_type == "yesno":
            return extract_yes_no(text)
        if self.answer_type == "choice":
            return extract_choice(text, self.letters)
        return extract_text(text)

    def is_correct(self, predicted: str | None, example: Example) -> bool:
        if predicted is None:
            return False
        if self.answer_type == "number":
            return numbers_equal(predicted, example.answer)
        return normalize_text(predicted) == normalize_text(example.answer)
