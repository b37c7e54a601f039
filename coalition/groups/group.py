"""The one model-group interface: named models that generate, evaluate, train and take weight
pushes. Every recipe, deliberation, discussion and Serve talk to a group through it; each kind
(COALITION's :class:`coalition.groups.workers.Workers`, the two-model recipes'
:class:`coalition.groups.team.Team`) has an in-process implementation here and a Ray one in
``actors/``. Every group names its plain base model ``"base"``
(:data:`coalition.method.variants.BASE`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Protocol

from coalition.data.records import Example, Prediction
from coalition.engines.base import Generation, SamplingParams
from coalition.method.training import State, StepSettings


class Generating(Protocol):
    """What the inference methods (deliberation, discussion, Serve) need of a group: batched
    generation for several named models at once, and the tokenizer prompts are rendered with."""

    tokenizer: Any

    def generate(
        self, jobs: dict[str, list[str]], params: SamplingParams
    ) -> dict[str, list[list[Generation]]]: ...


class Group(ABC):
    """Generation, evaluation, updates and weight pushes for named models."""

    tokenizer: Any
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
    def versions(self) -> dict[str, int]:
        """The version each trained model is served at (the lowest, where several hosts serve it)."""

    def actor_versions(self) -> dict[str, dict[str, int]]:
        """What each serving host itself reports (one host in process)."""
        return {"local": self.versions()}

    def ready(self) -> None:  # noqa: B027 - optional hook
        """Wait until everything has started (in-process groups always have)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""


def prepare_in_process(generator_cpus: float) -> None:
    """Set this process up as a generator actor is (``ray.in_process``): its torch threads, so
    numerics and samples match the Ray run's, and no progress bars from TRL's datasets."""
    import datasets
    import torch

    from coalition.method.training import threads_for

    torch.set_num_threads(threads_for(generator_cpus))
    datasets.disable_progress_bars()
