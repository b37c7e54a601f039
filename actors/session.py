"""Connecting to Ray: the cluster named by ``ray.address`` / ``RAY_ADDRESS`` (or the one a
``ray job submit`` runs under), else a local Ray sized for the run's actors and trainers."""

from __future__ import annotations

import logging
import math
import os
import secrets

from coalition.run.config import Config

AUTH_MODE_ENV = "RAY_AUTH_MODE"
log = logging.getLogger("coalition.session")

# for actors and trainer workers: model-loading and dataset progress bars off
QUIET = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "VLLM_LOGGING_LEVEL": "WARNING",  # vLLM logs each engine start and reload at INFO
    # libraries' own bars in workers (TRL's reference log-probs) garble the driver's log; the
    # driver shows one progress line per stage instead (tqdm reads TQDM_* defaults at import)
    "TQDM_DISABLE": "1",
}

# glibc hands every freed buffer above its mmap threshold back to the kernel and faults fresh
# zeroed pages in for the next one; a decoding step's activations and logits did that at every
# step (millions of minor faults an evaluation, docs/benchmarks.md). Buffers up to 32 MiB
# (glibc's largest threshold on 64-bit) stay in the heap and the heap's top is not trimmed, so
# they are reused. A trainer still gives memory back after each update (release_memory).
ALLOCATOR = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(16 << 30)}

# the environment of every actor, trainer worker and replica this project starts
WORKER_ENV_VARS = {**QUIET, **ALLOCATOR}


# Ray Train's PlacementGroupCleaner asks the state API whether its controller lives, every
# second, and warns when it cannot answer. A local Ray here starts without the dashboard that
# serves that API, so the warning would repeat for as long as a trainer lives (and drown the
# run's own progress lines); the cleaner only matters after an ungraceful controller death.
NOISY_LOGGERS = ("ray.train.v2._internal.execution.controller.placement_group_cleaner",)


def quiet_workers() -> None:
    """Ray's ``worker_process_setup_hook``: silence the warnings above in every worker."""
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


# No Prometheus exporters: nothing here reads them, and they would listen on every interface
# without auth (the autoscaler's and dashboard's metrics ports, the agent's export port).
LOCAL_SYSTEM_CONFIG = {"enable_metrics_collection": False}


def init_ray(cfg: Config, job: str = "train") -> None:
    """Connect to the cluster ``ray.address`` / ``RAY_ADDRESS`` names, or start a local Ray
    sized for ``job``'s actors and trainers; either way refuse (one line) a run that cannot
    fit, since its last actor or trainer would wait for resources forever.

    A local Ray keeps Ray's token authentication on, with a fresh random token that only this
    process and its children know: Ray's servers listen on every interface (this Ray version
    has no loopback-only option), and without the token none of them accepts a call."""
    import ray

    from coalition.run import preflight

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return
    want = preflight.need(cfg, job)
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        have = ray.cluster_resources()
        preflight.check_fits(cfg, want, have.get("CPU", 0.0), have.get("GPU", 0.0))
        return
    local_token_auth()
    r = cfg.ray
    cpus = r.num_cpus or max(os.cpu_count() or 1, math.ceil(want.cpus - 1e-9))
    preflight.check_fits(cfg, want, cpus)
    ray.init(
        num_cpus=cpus,
        include_dashboard=False,
        log_to_driver=True,
        runtime_env={"worker_process_setup_hook": quiet_workers},
        _system_config=LOCAL_SYSTEM_CONFIG,
    )


def local_token_auth() -> None:
    """Token auth for the local Ray about to start, unless ``RAY_AUTH_MODE`` says otherwise
    (then a warning): a per-process token in the environment, never written to disk."""
    mode = os.environ.get(AUTH_MODE_ENV, "token").lower()
    if mode != "token":
        log.warning(
            "%s=%s: the local Ray accepts calls from anyone who can reach this machine's "
            "ports; unset it to keep token auth on",
            AUTH_MODE_ENV,
            mode,
        )
        return
    os.environ[AUTH_MODE_ENV] = "token"
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    # Ray reads its config once, at import: refresh it so this process sees token mode too
    from ray._raylet import Config as RayConfig

    RayConfig.initialize("")
