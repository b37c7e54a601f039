"""The one model-group interface: named models that generate, evaluate, score, embed, train
and take weight pushes. Every recipe, deliberation, discussion and Serve talk to a group
through it. Where each model lives is the group's :class:`coalition.groups.layout.Layout`;
two implementations run one: :class:`coalition.groups.local.LocalGroup` in this process and
``actors.group.RayGroup`` on Ray actors and Ray Train. Every group names its plain base model
``"base"`` (:data:`coalition.method.variants.BASE`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Protocol

from coalition.data.records import Example, Prediction
from coalition.engines.base import Generation, SamplingParams
from coalition.groups.layout import Layout, Placement
from coalition.method.training import State, StepSettings


class Generating(Protocol):
    """What the inference methods (deliberation, discussion, Serve) need of a group: batched
    generation for several named models at once, and the tokenizer prompts are rendered with."""

    tokenizer: Any

    def generate(
        self, jobs: dict[str, list[str]], params: SamplingParams
    ) -> dict[str, list[list[Generation]]]: ...


class Group(ABC):
    """Generation, evaluation, scoring, updates and weight pushes for the named models of
    ``layout``."""

    layout: Layout
    #: whether independent updates may run at once (they run in their own processes)
    parallel_updates: bool = False

    @abstractmethod
    def generate(
        self, jobs: dict[str, list[str]], params: SamplingParams
    ) -> dict[str, list[list[Generation]]]:
        """Generate for several models at once (name → prompts), each at its pushed version."""

    @abstractmethod
    def evaluate(
        self,
        names: list[str],
        task_spec: dict[str, Any],
        examples: list[Example],
        method: str,
        params: SamplingParams,
        chat: bool,
    ) -> dict[str, list[Prediction]]:
        """Held-out predictions of each model in ``names``."""

    @abstractmethod
    def utilities(self, prompts: list[str], targets: list[str]) -> list[float]:
        """The scorer's U for each (prompt, target), averaged over the layout's scorer models."""

    @abstractmethod
    def features(self, prompts: list[str]) -> list[list[float]]:
        """The frozen base model's pooled hidden state of each prompt (controller features)."""

    @abstractmethod
    def train(
        self,
        kind: str,
        name: str,
        state: State | None,
        rows: list[dict[str, str]],
        settings: StepSettings,
    ) -> tuple[State, dict[str, float]]:
        """One SFT or DPO update of model ``name`` starting from ``state``."""

    @abstractmethod
    def push(self, name: str, state: State, version: int) -> None:
        """Serve ``state`` as ``name`` at ``version`` on every host that serves it (each host
        confirms the version)."""

    @abstractmethod
    def tokenizer_of(self, name: str) -> Any:
        """The tokenizer ``name`` reads (models on different paths may differ)."""

    @abstractmethod
    def versions(self) -> dict[str, int]:
        """The version each pushed model is served at."""

    @property
    def tokenizer(self) -> Any:
        """The first model's tokenizer (what an inference method renders prompts with)."""
        return self.tokenizer_of(next(iter(self.layout.models)))

    def trained(self, name: str) -> Placement:
        """``name``'s placement; refuses a frozen model."""
        return self.layout.trained(name)

    def actor_versions(self) -> dict[str, dict[str, int]]:
        """What each host itself reports, by host."""
        return {"local": self.versions()}

    def ready(self) -> None:  # noqa: B027 - optional hook
        """Wait until everything has started (in-process groups always have)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""


def scorer_mean(columns: list[tuple[int, list[float]]]) -> list[float]:
    """The mean U over every scorer model from each host's mean over its ``count`` models."""
    if len(columns) == 1:
        return columns[0][1]
    total = sum(count for count, _ in columns)
    return [
        sum(count * u for count, u in zip((c for c, _ in columns), row, strict=True)) / total
        for row in zip(*(values for _, values in columns), strict=True)
    ]
