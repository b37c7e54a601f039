"""Connecting to Ray: the cluster named by ``ray.address`` / ``RAY_ADDRESS`` (or the one a
``ray job submit`` runs under), else a local Ray sized for the run's actors and trainers."""

from __future__ import annotations

import logging
import os

from coalition.config import Config

# for actors and trainer workers: model-loading and dataset progress bars off
QUIET = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "VLLM_LOGGING_LEVEL": "WARNING",  # vLLM logs each engine start and reload at INFO
}


# Ray Train's PlacementGroupCleaner asks the state API whether its controller lives, every
# second, and warns when it cannot answer. A local Ray here starts without the dashboard that
# serves that API, so the warning would repeat for as long as a trainer lives (and drown the
# run's own progress lines); the cleaner only matters after an ungraceful controller death.
NOISY_LOGGERS = ("ray.train.v2._internal.execution.controller.placement_group_cleaner",)


def quiet_workers() -> None:
    """Ray's ``worker_process_setup_hook``: silence the warnings above in every worker."""
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def init_ray(cfg: Config) -> None:
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if ray.is_initialized():
        return
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        return
    r = cfg.ray
    trainers = cfg.variants.count + (cfg.scorer == "ift_all")  # one per model, all at once
    need = (
        cfg.variants.count * r.generator_cpus
        + r.scorer_cpus
        + trainers * r.train_workers * r.train_cpus_per_worker
    )
    cpus = r.num_cpus or max(os.cpu_count() or 1, int(need + 0.999))
    ray.init(
        num_cpus=cpus,
        include_dashboard=False,
        log_to_driver=True,
        runtime_env={"worker_process_setup_hook": quiet_workers},
    )
