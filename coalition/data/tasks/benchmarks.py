"""Published reasoning benchmarks, loaded with ``datasets.load_dataset``.

Every task is a :class:`HubTask`: class attributes name the source (Hugging Face hub id, config,
the real split names behind our "train"/"test") and the answer kind, and one ``row_to_example``
per dataset maps a row of the source's own schema to an :class:`~coalition.data.records.Example`.

``task.params`` accepted by every benchmark:

* ``path``: another hub id in the same schema, or a local dataset folder
  (``load_dataset(path)``; a folder gets ``name=config`` only when ``config`` is given).
* ``config``: the hub config name (e.g. ``winogrande_l``, ``tracking_shuffled_objects_five_objects``).
* ``data_files``: ``{split: file or [files]}`` of local JSON/JSONL/Parquet/CSV files in the
  source's schema, loaded with ``load_dataset("json"|"parquet"|"csv", data_files=...)``.
  A key is matched against the source's real split name first (``validation``, ``test_r1``,
  ``auxiliary_train``...), then against ``train``/``test``; a single file is split 70/30.

plus per task: ``anli`` takes ``round`` (1, 2 or 3), ``mmlu`` takes ``subject``.

Splits: "train"/"test" map to the source's real splits; where the public test split is unlabeled
the labeled validation split is the test set; sources with a single split get a seeded 70/30
split. The test set never shares a question (whitespace/case-normalized text, options included)
with the train set. ``load`` returns a seeded sample of up to ``n_train``/``n_test`` examples.

Malformed rows raise :class:`TaskError` naming the source (hub id, config and split, or the
file), the 0-based row index and the field -- rows are never skipped silently.

Sources whose hub repo still holds only a loading script (which ``datasets`` 4+ refuses) are
read from the hub's automatic Parquet export (``refs/convert/parquet``) instead.
"""

from __future__ import annotations

import logging
import os
import random
import re
from abc import abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

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

log = logging.getLogger(__name__)

ANSWER_KINDS = ("number", "choice", "yesno", "text")
LETTERS = "ABCDEFGHIJ"
_COMMON_PARAMS = frozenset({"path", "config", "data_files"})
_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
_SCRIPT_REFUSED = "Dataset scripts are no longer supported"
_TRAIN_FRACTION = 0.7


# --------------------------------------------------------------------------- rows


class Row:
    """One source row with typed accessors whose errors name the source, the row and the field."""

    def __init__(self, data: dict[str, Any], source: str, index: int, split: str):
        self.data, self.source, self.index, self.split = data, source, index, split

    def error(self, name: str, problem: str) -> TaskError:
        return TaskError(f"{self.source} row {self.index}: field {name!r} {problem}")

    def raw(self, name: str) -> Any:
        value = self.data.get(name)
        if value is None:
            raise self.error(name, "is missing")
        return value

    def text(self, name: str) -> str:
        """A non-empty string field, stripped."""
        value = self.raw(name)
        if not isinstance(value, str):
            raise self.error(name, f"should be a string, got {type(value).__name__} {value!r}")
        if not value.strip():
            raise self.error(name, "is empty")
        return value.strip()

    def optional_text(self, name: str) -> str | None:
        value = self.data.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if not isinstance(value, str):
            raise self.error(name, f"should be a string, got {type(value).__name__} {value!r}")
        return value.strip()

    def strings(self, name: str, min_len: int = 1) -> list[str]:
        """A list field of non-empty strings with at least ``min_len`` items."""
        value = self.raw(name)
        if not isinstance(value, list | tuple) or len(value) < min_len:
            raise self.error(name, f"should be a list of at least {min_len} strings, got {value!r}")
        if not all(isinstance(v, str) and v.strip() for v in value):
            raise self.error(name, f"should hold non-empty strings, got {value!r}")
        return [v.strip() for v in value]

    def number(self, name: str, value: Any = None) -> str:
        """A numeric field (int, float or numeric string) as a normalized number string."""
        value = self.raw(name) if value is None else value
        norm = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            norm = normalize_number(repr(value))
        elif isinstance(value, str):
            norm = normalize_number(value)
        if norm is None:
            raise self.error(name, f"is not a number: {value!r}")
        return norm

    def index_of(self, name: str, n: int, base: int = 0) -> int:
        """An integer field (or digit string) in ``base .. base+n-1``, returned 0-based."""
        value = self.raw(name)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value.strip())
        if not isinstance(value, int) or isinstance(value, bool) or not base <= value < base + n:
            allowed = ", ".join(str(base + i) for i in range(n))
            raise self.error(name, f"should be one of {allowed}, got {value!r}")
        return value - base

    def boolean(self, name: str) -> bool:
        value = self.raw(name)
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in {"true", "false", "yes", "no"}:
            return value.strip().lower() in {"true", "yes"}
        raise self.error(name, f"should be a boolean, got {value!r}")


def render_choices(stem: str, options: list[str]) -> str:
    """``stem`` followed by "Answer Choices: (A) ... (B) ..." (the Zero-shot-CoT layout)."""
    choices = " ".join(f"({LETTERS[i]}) {text}" for i, text in enumerate(options))
    return f"{stem}\nAnswer Choices: {choices}"


def _question_key(question: str) -> str:
    return " ".join(question.lower().split())


# --------------------------------------------------------------------------- base class


@dataclass
class _Part:
    """One split to read: how to call ``load_dataset`` and how to name it in messages."""

    split: str
    source: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    hub: bool = False


class HubTask(Task):
    """A benchmark read with ``datasets.load_dataset``; subclasses map one row to an Example."""

    #: Hub dataset id (None: the source is ``default_data_files``).
    hub_id: ClassVar[str | None] = None
    #: Hub config name, or None for the default config.
    hub_config: ClassVar[str | None] = None
    #: Real split behind our "train"; None when the source has one split (split 70/30).
    train_split: ClassVar[str | None] = "train"
    #: Real split behind our "test" (the labeled one; validation where test is unlabeled).
    test_split: ClassVar[str] = "test"
    #: Non-hub default source: {real split: URL or file} read with the builder of its extension.
    default_data_files: ClassVar[dict[str, str] | None] = None
    #: "number" | "choice" | "yesno" | "text": how answers are extracted and compared.
    answer_kind: ClassVar[str] = "text"
    #: Choice letters the task can have (choice tasks).
    letters: ClassVar[str] = "ABCDE"
    #: Task-specific ``task.params`` keys on top of path / config / data_files.
    extra_params: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, n_train: int, n_test: int, seed: int, params: dict[str, Any]):
        super().__init__(n_train, n_test, seed, params)
        self.check_params(set(_COMMON_PARAMS | self.extra_params))
        if self.answer_kind not in ANSWER_KINDS:
            raise TaskError(
                f"task {self.name!r}: answer_kind {self.answer_kind!r} not in {ANSWER_KINDS}"
            )
        for key in ("path", "config"):
            value = self.params.get(key)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise TaskError(
                    f"task.params.{key} for {self.name!r} should be a non-empty string, got {value!r}"
                )
        files = self.params.get("data_files")
        if files is not None:
            if not isinstance(files, dict) or not files:
                raise TaskError(
                    f"task.params.data_files for {self.name!r} should map split names to files, got {files!r}"
                )
            for split, value in files.items():
                paths = value if isinstance(value, list) else [value]
                if not paths or not all(isinstance(p, str | os.PathLike) and str(p) for p in paths):
                    raise TaskError(
                        f"task.params.data_files[{split!r}] for {self.name!r} should be a file or a list of files"
                    )
        if files is not None and "path" in self.params:
            raise TaskError(f"task.params for {self.name!r}: give path or data_files, not both")
        self.config: str | None = self.params.get("config", self.hub_config)
        self.answer_format = self._answer_format()
        self._pools: tuple[list[Example], list[Example]] | None = None

    # ---- per-dataset hooks

    @abstractmethod
    def row_to_example(self, row: Row) -> Example:
        """The Example of one source row; raise ``row.error(...)`` on malformed data."""

    def splits(self) -> tuple[str | None, str]:
        """Real split names behind (train, test); train None for single-split sources."""
        return self.train_split, self.test_split

    def example(
        self, row: Row, question: str, answer: str, native_id: Any = None, **kw: Any
    ) -> Example:
        """An Example with a stable id and the row's provenance in ``meta``."""
        ident = (
            f"{self.name}-{native_id}"
            if native_id not in (None, "")
            else f"{self.name}-{row.split}-{row.index}"
        )
        meta = {"source": row.source, "row": row.index, **kw.pop("meta", {})}
        return Example(id=ident, question=question, answer=answer, meta=meta, **kw)

    def choice_example(
        self, row: Row, stem: str, options: list[str], gold: int, native_id: Any = None, **kw: Any
    ) -> Example:
        """A multiple-choice Example: options rendered in the question, gold answer a letter."""
        if len(options) > len(self.letters):
            raise row.error("options", f"has {len(options)} choices, more than {self.letters!r}")
        return self.example(
            row,
            render_choices(stem, options),
            LETTERS[gold],
            native_id,
            options=tuple(options),
            **kw,
        )

    # ---- answers

    def _answer_format(self) -> str:
        if self.answer_kind == "number":
            return "End with 'The answer is N.' where N is a number."
        if self.answer_kind == "choice":
            return (
                f"End with 'The answer is (X).' where X is the letter of the right choice "
                f"({self.letters[0]}-{self.letters[-1]})."
            )
        if self.answer_kind == "yesno":
            return "End with 'The answer is yes.' or 'The answer is no.'"
        return "End with 'The answer is X.'"

    def extract(self, text: str) -> str | None:
        if self.answer_kind == "number":
            return extract_number(text)
        if self.answer_kind == "choice":
            return extract_choice(text, self.letters)
        if self.answer_kind == "yesno":
            return extract_yes_no(text)
        return extract_text(text)

    def is_correct(self, predicted: str | None, example: Example) -> bool:
        if predicted is None:
            return False
        if self.answer_kind == "number":
            return numbers_equal(predicted, example.answer)
        if self.answer_kind == "choice":
            return predicted.strip().strip("()").upper() == example.answer
        return normalize_text(predicted) == normalize_text(example.answer)

    # ---- loading

    def load(self, split: str) -> list[Example]:
        if split not in ("train", "test"):
            raise TaskError(f"split must be 'train' or 'test', got {split!r}")
        train, test = self._pool()
        pool, n = (train, self.n_train) if split == "train" else (test, self.n_test)
        if n > len(pool):
            log.warning(
                "task %r: %s split has %d examples, fewer than the %d asked for",
                self.name,
                split,
                len(pool),
                n,
            )
        rng = random.Random(self.seed * 2 + (split == "test"))
        return rng.sample(pool, min(n, len(pool)))

    def _pool(self) -> tuple[list[Example], list[Example]]:
        """All train and test examples, test deduplicated against train (cached)."""
        if self._pools is None:
            train_part, test_part = self._parts()
            if train_part is None:
                train, test = self._split_one(self._read(test_part))
            else:
                train, test = self._read(train_part), self._read(test_part)
                seen = {_question_key(ex.question) for ex in train}
                test = [ex for ex in test if _question_key(ex.question) not in seen]
            self._pools = (train, test)
        return self._pools

    def _split_one(self, examples: list[Example]) -> tuple[list[Example], list[Example]]:
        """Seeded 70/30 split by question, so a repeated question lands on one side only."""
        groups: dict[str, list[Example]] = {}
        for ex in examples:
            groups.setdefault(_question_key(ex.question), []).append(ex)
        keys = list(groups)
        random.Random(self.seed).shuffle(keys)
        cut = int(round(_TRAIN_FRACTION * len(keys)))
        train = [ex for key in keys[:cut] for ex in groups[key]]
        test = [ex for key in keys[cut:] for ex in groups[key]]
        return train, test

    def _parts(self) -> tuple[_Part | None, _Part]:
        """What to read for (train, test); train None when one split is split 70/30."""
        train_split, test_split = self.splits()
        files = self.params.get("data_files")
        if files is None and "path" not in self.params and self.default_data_files:
            files = self.default_data_files
        if files is not None:
            return self._file_parts({str(k): v for k, v in files.items()}, train_split, test_split)
        path = self.params.get("path", self.hub_id)
        if path is None:  # pragma: no cover - every task has a hub id or default files
            raise TaskError(f"task {self.name!r} has no source; set task.params.path or data_files")
        local = os.path.isdir(path)
        config = self.params.get("config") if local else self.config

        def part(split: str) -> _Part:
            where = f"{path}" + (f" (config {config})" if config else "") + f" split {split!r}"
            return _Part(
                split, where, {"path": path, "name": config, "split": split}, hub=not local
            )

        return (part(train_split) if train_split else None), part(test_split)

    def _file_parts(
        self, files: dict[str, Any], train_split: str | None, test_split: str
    ) -> tuple[_Part | None, _Part]:
        def find(*names: str | None) -> str | None:
            return next((n for n in names if n and n in files), None)

        train_key, test_key = find(train_split, "train"), find(test_split, "test")
        if train_key and test_key and train_key != test_key:
            return self._file_part(train_key, files[train_key]), self._file_part(
                test_key, files[test_key]
            )
        if len(files) == 1:
            key = next(iter(files))
            return None, self._file_part(key, files[key])
        wanted = " and ".join(repr(n) for n in (train_split or "train", test_split))
        raise TaskError(
            f"task.params.data_files for {self.name!r}: expected splits {wanted} "
            f"(or 'train' and 'test', or a single file to split 70/30), got {sorted(files)}"
        )

    def _file_part(self, key: str, value: Any) -> _Part:
        paths = [str(p) for p in (value if isinstance(value, list) else [value])]
        builders = {_BUILDERS.get(Path(p.split("?")[0]).suffix.lower()) for p in paths}
        if None in builders or len(builders) != 1:
            raise TaskError(
                f"task.params.data_files[{key!r}] for {self.name!r}: files must all be one of "
                f"{', '.join(sorted(_BUILDERS))}, got {paths}"
            )
        for p in paths:
            if "://" not in p and not os.path.exists(p):
                raise TaskError(
                    f"task.params.data_files[{key!r}] for {self.name!r}: {p} does not exist"
                )
        split = re.sub(r"\W", "_", key)
        source = paths[0] if len(paths) == 1 else f"{paths[0]} (+{len(paths) - 1} more files)"
        data_files = {split: paths if len(paths) > 1 else paths[0]}
        return _Part(
            split, source, {"path": builders.pop(), "data_files": data_files, "split": split}
        )

    def _read(self, part: _Part) -> list[Example]:
        rows = self._load_rows(part)
        out = []
        for index, data in enumerate(rows):
            if not isinstance(data, dict):
                raise TaskError(
                    f"{part.source} row {index}: expected an object, got {type(data).__name__}"
                )
            out.append(self.row_to_example(Row(data, part.source, index, part.split)))
        return out

    def _load_rows(self, part: _Part) -> Any:
        import datasets  # lazy: keeps `import coalition.data.tasks` fast

        try:
            try:
                return datasets.load_dataset(**part.kwargs)
            except RuntimeError as exc:
                if not (part.hub and _SCRIPT_REFUSED in str(exc)):
                    raise
                # The repo holds a loading script: read the hub's Parquet export of it instead.
                path, config = part.kwargs["path"], part.kwargs.get("name") or "default"
                url = (
                    f"hf://datasets/{path}@refs%2Fconvert%2Fparquet/{config}/{part.split}/*.parquet"
                )
                log.info("%s has a loading script; reading its Parquet export %s", path, url)
                return datasets.load_dataset(
                    "parquet", data_files={part.split: url}, split=part.split
                )
        except TaskError:
            raise
        except Exception as exc:  # datasets raises many types; name the source either way
            hint = ""
            if isinstance(exc, ConnectionError) or "offline" in str(exc).lower():
                hint = " (no network? point task.params.data_files at local copies)"
            raise TaskError(
                f"task {self.name!r}: could not load {part.source}: {type(exc).__name__}: {exc}{hint}"
            ) from exc


# --------------------------------------------------------------------------- arithmetic

_CALCULATOR = re.compile(r"<<[^<>]*>>")


@register("gsm8k")
class GSM8K(HubTask):
    """GSM8K grade-school math. Hub ``openai/gsm8k`` config ``main``, splits train/test.

    Schema: ``question`` (str), ``answer`` (str: worked solution with ``<<a*b=c>>`` calculator
    annotations, ending in ``#### N``). Rationale = the text before ``####`` without annotations.
    """

    name = "gsm8k"
    hub_id, hub_config = "openai/gsm8k", "main"
    answer_kind = "number"

    def row_to_example(self, row: Row) -> Example:
        question, solution = row.text("question"), row.text("answer")
        if "####" not in solution:
            raise row.error("answer", "has no final '#### N' line")
        worked, final = solution.rsplit("####", 1)
        gold = normalize_number(final.strip())
        if gold is None:
            raise row.error(
                "answer", f"final answer after '####' is not a number: {final.strip()!r}"
            )
        rationale = _CALCULATOR.sub("", worked).strip() or None
        return self.example(row, question, gold, rationale=rationale)


@register("svamp")
class SVAMP(HubTask):
    """SVAMP arithmetic word problems. Hub ``ChilleD/SVAMP`` (default config), splits train/test.

    Schema: ``ID``, ``Body``, ``Question``, ``Equation``, ``Answer`` (float), ``Type``
    (the hub copy also has ``question_concat``). Question = Body + " " + Question; the
    equation and type go to ``meta``.
    """

    name = "svamp"
    hub_id = "ChilleD/SVAMP"
    answer_kind = "number"

    def row_to_example(self, row: Row) -> Example:
        question = f"{row.text('Body')} {row.text('Question')}"
        meta = {"equation": row.optional_text("Equation"), "type": row.optional_text("Type")}
        return self.example(row, question, row.number("Answer"), row.data.get("ID"), meta=meta)


@register("multiarith")
class MultiArith(HubTask):
    """MultiArith multi-step arithmetic. Hub ``ChilleD/MultiArith``, splits train/test.

    Schema: ``question`` (str), ``final_ans`` (numeric string).
    """

    name = "multiarith"
    hub_id = "ChilleD/MultiArith"
    answer_kind = "number"

    def row_to_example(self, row: Row) -> Example:
        return self.example(row, row.text("question"), row.number("final_ans"))


_ZERO_SHOT_COT = "https://raw.githubusercontent.com/kojima-takeshi188/zero_shot_cot/main/dataset"


class _MawpsJson(HubTask):
    """A MAWPS file in the original Zero-shot-CoT / Fine-tune-CoT JSON schema.

    No hub copy of this set could be confirmed, so the default source is the JSON file of the
    Zero-shot-CoT repository (github.com/kojima-takeshi188/zero_shot_cot), read with
    ``load_dataset("json", data_files=URL)``; ``path`` may name a hub dataset in this schema.
    Schema: a JSON list of ``{"iIndex": int, "sQuestion": str, "lSolutions": [number, ...],
    "lEquations": [str, ...]}``. One split → seeded 70/30 split.
    """

    hub_id = None
    train_split = None
    answer_kind = "number"

    def row_to_example(self, row: Row) -> Example:
        solutions = row.raw("lSolutions")
        if not isinstance(solutions, list | tuple) or not solutions:
            raise row.error(
                "lSolutions", f"should be a non-empty list of numbers, got {solutions!r}"
            )
        gold = row.number("lSolutions", solutions[0])
        equations = row.data.get("lEquations") or []
        meta = {"equations": [str(e) for e in equations]} if equations else {}
        return self.example(row, row.text("sQuestion"), gold, row.data.get("iIndex"), meta=meta)


@register("addsub")
class AddSub(_MawpsJson):
    """AddSub (Hosseini et al. 2014) addition/subtraction word problems, 395 items.

    Default source: ``https://raw.githubusercontent.com/kojima-takeshi188/zero_shot_cot/main/dataset/AddSub/AddSub.json`` (see :class:`_MawpsJson`).
    """

    name = "addsub"
    default_data_files = {"test": f"{_ZERO_SHOT_COT}/AddSub/AddSub.json"}


@register("singleeq")
class SingleEq(_MawpsJson):
    """SingleEq (Koncel-Kedziorski et al. 2015) single-equation word problems, 508 items.

    Default source: ``https://raw.githubusercontent.com/kojima-takeshi188/zero_shot_cot/main/dataset/SingleEq/questions.json`` (see :class:`_MawpsJson`).
    """

    name = "singleeq"
    default_data_files = {"test": f"{_ZERO_SHOT_COT}/SingleEq/questions.json"}


_LETTERED = re.compile(r"^\s*\(?([A-J])\)\s*(.*)$", re.DOTALL)


@register("aqua")
class AQuA(HubTask):
    """AQuA-RAT algebra word problems. Hub ``deepmind/aqua_rat`` config ``raw``, splits train/test.

    Schema: ``question`` (str), ``options`` (["A)21", "B)21.5", ...]), ``rationale`` (str),
    ``correct`` (letter).
    """

    name = "aqua"
    hub_id, hub_config = "deepmind/aqua_rat", "raw"
    answer_kind = "choice"
    letters = "ABCDE"

    def row_to_example(self, row: Row) -> Example:
        options = []
        for i, option in enumerate(row.strings("options", 2)):
            match = _LETTERED.match(option)
            if not match or match.group(1) != LETTERS[i]:
                raise row.error(
                    "options", f"item {i} should start with '{LETTERS[i]})', got {option!r}"
                )
            options.append(match.group(2).strip())
        correct = row.text("correct").strip("()").upper()
        if correct not in LETTERS[: len(options)]:
            raise row.error(
                "correct", f"should be one of {LETTERS[: len(options)]}, got {correct!r}"
            )
        return self.choice_example(
            row,
            row.text("question"),
            options,
            LETTERS.index(correct),
            rationale=row.optional_text("rationale"),
        )


# --------------------------------------------------------------------------- commonsense


@register("commonsense_qa")
class CommonsenseQA(HubTask):
    """CommonsenseQA. Hub ``tau/commonsense_qa``; the test split is unlabeled, so test = validation.

    Schema: ``id``, ``question``, ``question_concept``, ``choices`` ({``label``: ["A".."E"],
    ``text``: [...]}), ``answerKey`` (letter).
    """

    name = "commonsense_qa"
    hub_id = "tau/commonsense_qa"
    test_split = "validation"
    answer_kind = "choice"
    letters = "ABCDE"

    def row_to_example(self, row: Row) -> Example:
        choices = row.raw("choices")
        if not isinstance(choices, dict):
            raise row.error(
                "choices", f"should be an object with label and text lists, got {choices!r}"
            )
        labels, texts = choices.get("label"), choices.get("text")
        if (
            not isinstance(labels, list)
            or not isinstance(texts, list)
            or len(labels) != len(texts)
            or len(texts) < 2
        ):
            raise row.error(
                "choices", f"should hold equally long label and text lists, got {choices!r}"
            )
        if [str(label).strip() for label in labels] != list(LETTERS[: len(labels)]):
            raise row.error("choices", f"labels should be A, B, C... in order, got {labels!r}")
        if not all(isinstance(t, str) and t.strip() for t in texts):
            raise row.error("choices", f"texts should be non-empty strings, got {texts!r}")
        key = row.text("answerKey").upper()
        if key not in labels:
            raise row.error("answerKey", f"should be one of {labels}, got {key!r}")
        return self.choice_example(
            row,
            row.text("question"),
            [t.strip() for t in texts],
            labels.index(key),
            row.data.get("id"),
            meta={"concept": row.optional_text("question_concept")},
        )


@register("strategyqa")
class StrategyQA(HubTask):
    """StrategyQA implicit multi-hop yes/no questions. Hub ``ChilleD/StrategyQA``, splits train/test.

    Schema: ``qid``, ``term``, ``description``, ``question``, ``answer`` (bool), ``facts``
    ([str], joined as the rationale), ``decomposition`` ([str]).
    """

    name = "strategyqa"
    hub_id = "ChilleD/StrategyQA"
    answer_kind = "yesno"

    def row_to_example(self, row: Row) -> Example:
        facts = row.data.get("facts") or []
        if not isinstance(facts, list | tuple) or not all(isinstance(f, str) for f in facts):
            raise row.error("facts", f"should be a list of strings, got {facts!r}")
        rationale = " ".join(f.strip() for f in facts if f.strip()) or None
        return self.example(
            row,
            row.text("question"),
            "yes" if row.boolean("answer") else "no",
            row.data.get("qid"),
            rationale=rationale,
            meta={"term": row.optional_text("term")},
        )


_OPTION_LINE = re.compile(r"^\s*\(([A-J])\)\s*(.+?)\s*$", re.MULTILINE)


class _BigBenchHard(HubTask):
    """A multiple-choice BIG-Bench Hard task. Hub ``lukaemon/bbh`` (one config per task), whose
    only split is ``test`` → seeded 70/30 split.

    Schema: ``input`` (question with an "Options:" block of "(A) ..." lines), ``target`` ("(A)").
    The options are parsed out and re-rendered in the common "Answer Choices:" layout.
    """

    hub_id = "lukaemon/bbh"
    train_split = None
    answer_kind = "choice"

    def row_to_example(self, row: Row) -> Example:
        text = row.text("input")
        head, sep, tail = text.rpartition("Options:")
        block = tail if sep else text
        found = _OPTION_LINE.findall(block)
        if len(found) < 2:
            raise row.error("input", "has no '(A) ...' option lines")
        if [letter for letter, _ in found] != list(LETTERS[: len(found)]):
            raise row.error(
                "input",
                f"options should be lettered A, B, C... in order, got {[f[0] for f in found]}",
            )
        stem = head.strip() if sep else text[: _OPTION_LINE.search(text).start()].strip()
        if not stem:
            raise row.error("input", "has options but no question")
        target = row.text("target")
        match = re.fullmatch(r"\(?([A-J])\)?", target)
        if not match or match.group(1) not in LETTERS[: len(found)]:
            raise row.error("target", f"should be an option letter like '(A)', got {target!r}")
        return self.choice_example(row, stem, [t for _, t in found], LETTERS.index(match.group(1)))


@register("date_understanding")
class DateUnderstanding(_BigBenchHard):
    """BIG-Bench Hard date understanding (6 options). ``lukaemon/bbh`` config ``date_understanding``."""

    name = "date_understanding"
    hub_config = "date_understanding"
    letters = "ABCDEF"


@register("tracking_shuffled_objects")
class TrackingShuffledObjects(_BigBenchHard):
    """BIG-Bench Hard tracking shuffled objects. ``lukaemon/bbh`` config
    ``tracking_shuffled_objects_three_objects`` (``config`` may pick the five/seven variants).
    """

    name = "tracking_shuffled_objects"
    hub_config = "tracking_shuffled_objects_three_objects"
    letters = "ABC"

    def __init__(self, n_train: int, n_test: int, seed: int, params: dict[str, Any]):
        config = str(params.get("config", self.hub_config))
        counts = {"three": 3, "five": 5, "seven": 7}
        self.letters = LETTERS[: next((n for w, n in counts.items() if w in config), 7)]
        super().__init__(n_train, n_test, seed, params)


@register("winogrande")
class WinoGrande(HubTask):
    """WinoGrande pronoun/blank resolution. Hub ``allenai/winogrande`` config ``winogrande_xl``;
    the test split is unlabeled, so test = validation.

    Schema: ``sentence`` (with a ``_`` blank), ``option1``, ``option2``, ``answer`` ("1" or "2").
    """

    name = "winogrande"
    hub_id, hub_config = "allenai/winogrande", "winogrande_xl"
    test_split = "validation"
    answer_kind = "choice"
    letters = "AB"

    def row_to_example(self, row: Row) -> Example:
        sentence = row.text("sentence")
        stem = f"{sentence}\nWhich option correctly fills the blank (_)?"
        options = [row.text("option1"), row.text("option2")]
        return self.choice_example(row, stem, options, row.index_of("answer", 2, base=1))


@register("piqa")
class PIQA(HubTask):
    """PIQA physical commonsense. Hub ``ybisk/piqa`` config ``plain_text``; the test split is
    unlabeled, so test = validation. (While the repo holds only its loading script, the hub's
    Parquet export ``refs/convert/parquet`` is read instead.)

    Schema: ``goal``, ``sol1``, ``sol2``, ``label`` (0 or 1).
    """

    name = "piqa"
    hub_id, hub_config = "ybisk/piqa", "plain_text"
    test_split = "validation"
    answer_kind = "choice"
    letters = "AB"

    def row_to_example(self, row: Row) -> Example:
        stem = f"Goal: {row.text('goal')}\nWhich solution achieves the goal?"
        return self.choice_example(
            row, stem, [row.text("sol1"), row.text("sol2")], row.index_of("label", 2)
        )


@register("hellaswag")
class HellaSwag(HubTask):
    """HellaSwag sentence completion. Hub ``Rowan/hellaswag``; the test split is unlabeled, so
    test = validation.

    Schema: ``ind``, ``activity_label``, ``ctx_a``, ``ctx_b``, ``ctx``, ``endings`` ([4 str]),
    ``source_id``, ``split``, ``split_type``, ``label`` (string "0".."3").
    """

    name = "hellaswag"
    hub_id = "Rowan/hellaswag"
    test_split = "validation"
    answer_kind = "choice"
    letters = "ABCD"

    def row_to_example(self, row: Row) -> Example:
        endings = row.strings("endings", 2)
        stem = f"{row.text('ctx')}\nWhich ending is the most plausible continuation?"
        activity = row.optional_text("activity_label")
        return self.choice_example(
            row,
            stem,
            endings,
            row.index_of("label", len(endings)),
            row.data.get("ind"),
            meta={"activity": activity},
        )


_NLI_LABELS = ["entailment", "neutral", "contradiction"]


@register("anli")
class ANLI(HubTask):
    """Adversarial NLI. Hub ``facebook/anli`` (config ``plain_text``); ``round`` (1, 2, 3; default 1)
    picks splits ``train_r{n}`` / ``test_r{n}``.

    Schema: ``uid``, ``premise``, ``hypothesis``, ``label`` (0 entailment, 1 neutral,
    2 contradiction), ``reason`` (annotator's explanation, often empty; the rationale).
    Asked as a 3-way choice.
    """

    name = "anli"
    hub_id, hub_config = "facebook/anli", "plain_text"
    answer_kind = "choice"
    letters = "ABC"
    extra_params = frozenset({"round"})

    def __init__(self, n_train: int, n_test: int, seed: int, params: dict[str, Any]):
        super().__init__(n_train, n_test, seed, params)
        rnd = self.params.get("round", 1)
        if str(rnd) not in {"1", "2", "3"} or isinstance(rnd, bool):
            raise TaskError(f"task.params.round for 'anli' should be 1, 2 or 3, got {rnd!r}")
        self.round = int(rnd)

    def splits(self) -> tuple[str | None, str]:
        return f"train_r{self.round}", f"test_r{self.round}"

    def row_to_example(self, row: Row) -> Example:
        stem = (
            f"Premise: {row.text('premise')}\nHypothesis: {row.text('hypothesis')}\n"
            "Does the premise entail the hypothesis, contradict it, or neither?"
        )
        return self.choice_example(
            row,
            stem,
            list(_NLI_LABELS),
            row.index_of("label", 3),
            row.data.get("uid"),
            rationale=row.optional_text("reason"),
        )


@register("mmlu")
class MMLU(HubTask):
    """MMLU. Hub ``cais/mmlu`` config ``all``: train = ``auxiliary_train``, test = ``test``.
    ``subject`` (e.g. ``college_physics``) selects that config: train = its ``validation`` split.

    Schema: ``question``, ``subject`` (empty in auxiliary_train), ``choices`` ([4 str]),
    ``answer`` (int 0-3).
    """

    name = "mmlu"
    hub_id, hub_config = "cais/mmlu", "all"
    train_split = "auxiliary_train"
    answer_kind = "choice"
    letters = "ABCD"
    extra_params = frozenset({"subject"})

    def __init__(self, n_train: int, n_test: int, seed: int, params: dict[str, Any]):
        super().__init__(n_train, n_test, seed, params)
        subject = self.params.get("subject")
        if subject is not None:
            if not isinstance(subject, str) or not re.fullmatch(r"[a-z_]+", subject):
                raise TaskError(
                    f"task.params.subject for 'mmlu' should be a subject name like 'anatomy', got {subject!r}"
                )
            if "config" in self.params:
                raise TaskError("task.params for 'mmlu': give subject or config, not both")
            self.config = subject

    def splits(self) -> tuple[str | None, str]:
        if self.config == "all" or self.config is None:
            return "auxiliary_train", "test"
        return "validation", "test"

    def row_to_example(self, row: Row) -> Example:
        choices = row.strings("choices", 2)
        subject = row.optional_text("subject")
        answer = row.raw("answer")
        if isinstance(answer, str) and answer.strip().upper() in LETTERS[: len(choices)]:
            gold = LETTERS.index(answer.strip().upper())
        else:
            gold = row.index_of("answer", len(choices))
        return self.choice_example(
            row, row.text("question"), choices, gold, meta={"subject": subject}
        )
