"""Model groups: the named models a recipe generates, scores and trains with, in one process or
behind Ray actors (the Ray side lives in actors/). Every group names its plain base model
``"base"`` (:data:`coalition.method.variants.BASE`)."""

from __future__ import annotations

from typing import Any, Protocol

from coalition.engines.base import Generation, SamplingParams


class Generating(Protocol):
    """What every model group offers the inference methods (deliberation, discussion, Serve):
    batched generation for several named models at once, and the tokenizer prompts are
    rendered with."""

    tokenizer: Any

    def generate(
        self, jobs: dict[str, list[str]], params: SamplingParams
    ) -> dict[str, list[list[Generation]]]: ...


def prepare_in_process(generator_cpus: float) -> None:
    """Set this process up as a generator actor is (``ray.in_process``): its torch threads, so
    numerics and samples match the Ray run's, and no progress bars from TRL's datasets."""
    import datasets
    import torch

    from coalition.method.training import threads_for

    torch.set_num_threads(threads_for(generator_cpus))
    datasets.disable_progress_bars()
