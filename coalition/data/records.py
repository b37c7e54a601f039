"""Typed records that cross a boundary (actor calls, files on disk), with a schema version."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Example:
    """One task item: a question with its gold answer and, where the data has one, a worked rationale."""

    id: str
    question: str
    answer: str
    rationale: str | None = None
    options: tuple[str, ...] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    kind: ClassVar[str] = "example"


@dataclass(frozen=True)
class Prediction:
    """A model's output on one example, as evaluated."""

    id: str
    question: str
    gold: str
    output: str
    extracted: str | None
    correct: bool
    rationale: str | None = None
    tokens: int = 0

    kind: ClassVar[str] = "prediction"


def to_row(record: Any) -> dict[str, Any]:
    """A dataclass record as a JSON-ready dict tagged with its kind and schema version."""
    row = dataclasses.asdict(record)
    row["_kind"] = record.kind
    row["_schema"] = SCHEMA_VERSION
    return row


def from_row(cls: type, row: dict[str, Any], where: str = "") -> Any:
    """Rebuild a record from :func:`to_row` output, refusing other kinds or schema versions."""
    row = dict(row)
    kind, schema = row.pop("_kind", cls.kind), row.pop("_schema", SCHEMA_VERSION)
    if kind != cls.kind or schema != SCHEMA_VERSION:
        raise ValueError(
            f"{where}: expected a {cls.kind!r} record of schema {SCHEMA_VERSION}, "
            f"got {kind!r} schema {schema}"
        )
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(row) - names
    if unknown:
        raise ValueError(f"{where}: unknown fields {sorted(unknown)} for {cls.kind!r}")
    if "options" in row and row["options"] is not None:
        row["options"] = tuple(row["options"])
    return cls(**row)
