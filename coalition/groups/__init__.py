"""Model groups: the named models a recipe generates, scores and trains with, in one process or behind Ray actors (the Ray side lives in actors/)."""


def prepare_in_process(generator_cpus: float) -> None:
    """Set this process up as a generator actor is (``ray.in_process``): its torch threads, so
    numerics and samples match the Ray run's, and no progress bars from TRL's datasets."""
    import datasets
    import torch

    from coalition.method.training import threads_for

    torch.set_num_threads(threads_for(generator_cpus))
    datasets.disable_progress_bars()
