"""The task interface and registry: a task yields examples and owns answer extraction/comparison."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from coalition.data.records import Example


class TaskError(ValueError):
    """Bad task data or parameters; the message names the file, row and field where it can."""


class Task(ABC):
    """A source of examples with a disjoint train/test split and its own answer checking."""

    name: str = ""
    #: Tells the model how to state its final answer (appended to prompts).
    answer_format: str = "End with 'The answer is X.'"

    def __init__(self, n_train: int, n_test: int, seed: int, params: dict[str, Any]):
        self.n_train, self.n_test, self.seed = n_train, n_test, seed
        self.params = dict(params)

    @abstractmethod
    def load(self, split: str) -> list[Example]:
        """Examples of ``split`` ("train" or "test"); the two never share a question."""

    @abstractmethod
    def extract(self, text: str) -> str | None:
        """The final answer stated in a model output, or None when there is none."""

    @abstractmethod
    def is_correct(self, predicted: str | None, example: Example) -> bool:
        """Whether an extracted answer matches the example's gold answer."""

    def origin(self, example: Example) -> str:
        """Where ``example`` comes from, for error messages (a file's row where known)."""
        return f"task {self.name!r} question {example.id}"

    def check_params(self, allowed: set[str]) -> None:
        """Refuse unknown ``task.params`` keys, naming them and the allowed ones."""
        unknown = set(self.params) - allowed
        if unknown:
            raise TaskError(
                f"task.params: unknown key(s) {sorted(unknown)} for task {self.name!r}; "
                f"allowed: {', '.join(sorted(allowed)) or '(none)'}"
            )


_REGISTRY: dict[str, Callable[..., Task]] = {}


def register(name: str) -> Callable[[Callable[..., Task]], Callable[..., Task]]:
    """Register a task factory under ``name``."""

    def deco(factory: Callable[..., Task]) -> Callable[..., Task]:
        if name in _REGISTRY:
            raise ValueError(f"task {name!r} registered twice")
        _REGISTRY[name] = factory
        return factory

    return deco


def registry() -> dict[str, Callable[..., Task]]:
    return _REGISTRY
