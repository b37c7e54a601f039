"""What a job checks before it writes a file or starts Ray: the models load, the task's data
loads and is large enough, no question overflows the model's context, warm-up rationales can
exist, the devices exist, and the run fits the machine. Each problem is one
:class:`ConfigError` (or :class:`TaskError`) line naming the setting, file or row.

These checks cost seconds; finding the same problems after Ray and the trainers have started
costs a minute and buries the message in Ray's output.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from coalition.data import tasks
from coalition.data.records import Example
from coalition.data.tasks.base import Task, TaskError
from coalition.engines.models import BUILTIN_PREFIX, check_model, resolve
from coalition.run.config import Config, ConfigError

Notice = Callable[[str], None]

# prompt text around a question (instructions, chat template, the answer format) in tokens
PROMPT_OVERHEAD_TOKENS = 128


class ResourceTimeout(ConfigError):
    """An actor or trainer did not start in time: the cluster lacks what the run needs."""


@dataclass(frozen=True)
class Need:
    """Ray resources a job asks for, with what asks for them (for a clear refusal)."""

    cpus: float
    gpus: float
    parts: tuple[str, ...]

    def text(self) -> str:
        return "; ".join(self.parts)


def check(cfg: Config, job: str, notice: Notice = print) -> None:
    """Every check a job can make before it starts (``job``: train, ablate, distill, saie,
    evaluate)."""
    if job == "ablate":  # every arm is a train run from one warm-up: check the widest arm
        from coalition.recipes.ablation import arm_configs

        cfg = max(arm_configs(cfg).values(), key=lambda arm: arm.pool)
        job = "train"
    paths = model_paths(cfg, job)
    task = tasks.from_config(cfg.task)
    train, test = load_splits(task, cfg, job)
    check_context(cfg, task, train + test, paths[0])
    if job in ("train", "saie"):
        check_rationales(cfg, task, train[: cfg.warmup.n], notice)
    check_devices(cfg)
    check_fits(cfg, need(cfg, job), local_cpus(cfg))


def model_paths(cfg: Config, job: str) -> list[str]:
    """Resolve every model the job loads (the job's own first); refuse one that cannot load."""
    paths = [resolve(cfg.model.name_or_path)]
    if cfg.model.adapter:
        check_model(cfg.model.adapter, "model.adapter", needs="adapter_config.json")
    if job == "distill" and cfg.teacher.kind == "hf":
        paths.append(resolve(cfg.teacher.model, "teacher.model"))
    if job == "distill" and cfg.teacher.kind == "openai" and not cfg.teacher.base_url:
        raise ConfigError("teacher.base_url: needed with teacher.kind: openai")
    if job == "saie" and cfg.saie.partner:
        paths.append(resolve(cfg.saie.partner, "saie.partner"))
    return paths


def train_needed(cfg: Config, job: str) -> tuple[int, str]:
    """How many train questions ``job`` uses, and the settings that say so."""
    if job == "train":
        return cfg.warmup.n + cfg.pool, "warmup.n + pool"
    if job == "saie":
        return cfg.warmup.n + cfg.saie.pool, "warmup.n + saie.pool"
    if job == "distill":
        return cfg.distill.n, "distill.n"
    return 0, ""


def check_train_size(cfg: Config, job: str, available: int) -> None:
    need_n, what = train_needed(cfg, job)
    if available < need_n:
        raise ConfigError(
            f"task.n_train: {available} train questions, but {what} = {need_n}; raise "
            f"task.n_train or lower {what.replace(' + ', '/')}"
        )


def load_splits(task: Task, cfg: Config, job: str) -> tuple[list[Example], list[Example]]:
    """Both splits, as the job will read them; any failure of the task's own code (a
    library's assertion on a parameter, say) becomes one line naming the task."""
    try:
        train = task.load("train")
        test = task.load("test")
    except (TaskError, ConfigError):
        raise
    except Exception as exc:  # noqa: BLE001 - third-party task code: any failure is the data's
        raise TaskError(
            f"task {cfg.task.name!r} with task.params={cfg.task.params}: could not load "
            f"({type(exc).__name__}: {exc})"
        ) from None
    check_train_size(cfg, job, len(train))
    split = cfg.evaluate.split if job == "evaluate" else "test"
    if not (train if split == "train" else test):
        raise TaskError(f"task {cfg.task.name!r}: the {split} split is empty; raise task.n_{split}")
    return train, test


def context_of(path: str) -> int:
    """The model's context length in tokens."""
    from transformers import AutoConfig

    conf = AutoConfig.from_pretrained(path)
    return int(getattr(conf, "max_position_embeddings", 0) or 2048)


def check_context(cfg: Config, task: Task, examples: list[Example], path: str) -> None:
    """A question whose prompt and generations cannot fit the model's context is a data
    error naming its file and row (a refine prompt holds a draft of up to max_new_tokens, then
    generates as many again)."""
    from transformers import AutoTokenizer

    limit = context_of(path) - 2 * cfg.generation.max_new_tokens - PROMPT_OVERHEAD_TOKENS
    if limit < 1:
        raise ConfigError(
            f"generation.max_new_tokens: {cfg.generation.max_new_tokens} leaves no room for a "
            f"question in the model's context of {context_of(path)} tokens"
        )
    tok = AutoTokenizer.from_pretrained(path)
    for ex in examples:  # no vocabulary has tokens of 64+ characters: refused untokenized
        if len(ex.question) > 64 * limit:
            raise TaskError(_too_long(task, ex, f"{len(ex.question)} characters", limit))
    lengths = tok([ex.question for ex in examples], add_special_tokens=False)["input_ids"]
    for ex, ids in zip(examples, lengths, strict=True):
        if len(ids) > limit:
            raise TaskError(_too_long(task, ex, f"{len(ids)} tokens", limit))


def _too_long(task: Task, ex: Example, size: str, limit: int) -> str:
    return (
        f"{task.origin(ex)}: the question is {size}; with the prompt and "
        f"generation.max_new_tokens it must stay within {limit} tokens of the model's context"
    )


def check_rationales(cfg: Config, task: Task, warm: list[Example], notice: Notice) -> None:
    """Warm-up rationales must be able to exist: the task's own, a distill run's, or the
    model's right samples. A random-weight model writes none, so it needs the task's own."""
    source = cfg.warmup.rationales_from
    if not warm or source not in ("auto", "gold", "self"):
        return
    gold = sum(bool(ex.rationale) for ex in warm)
    if source == "gold" and gold == 0:
        raise ConfigError(
            f"warmup.rationales_from: gold, but task {task.name!r} has no gold rationales; use "
            "auto or self (the model's own right samples) or a jobs/distill.py run directory"
        )
    uses_samples = source == "self" or (source == "auto" and gold < len(warm))
    if not uses_samples:
        return
    if cfg.model.name_or_path == f"{BUILTIN_PREFIX}tiny":
        raise ConfigError(
            f"task {task.name!r} has no gold rationales and builtin:tiny is a random-weight "
            "model that cannot write one reaching a gold answer; use a task with gold "
            "rationales (basic_arithmetic, chain_sum, coin_flip, last_letter_concat), a real "
            "model, or warmup.rationales_from=<a jobs/distill.py run directory>"
        )
    notice(
        f"warm-up: task {task.name!r} has no gold rationales for {len(warm) - gold} of "
        f"{len(warm)} questions; the base model's own right samples are used "
        f"(warmup.self_samples={cfg.warmup.self_samples}), and the warm-up stops if it writes none"
    )


def check_devices(cfg: Config) -> None:
    """A named device must exist on this machine (a cluster's devices are its own)."""
    device = cfg.model.device
    if device in ("auto", "cpu") or _on_cluster(cfg):
        return
    import torch

    if device.startswith("cuda"):
        count = torch.cuda.device_count()
        index = int(device.partition(":")[2] or 0)
        if index >= count:
            have = f"{count} CUDA device(s)" if count else "no CUDA device"
            raise ConfigError(f"model.device: {device} does not exist here ({have}); use auto")
    elif device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("model.device: mps is not available on this machine; use auto")


def _on_cluster(cfg: Config) -> bool:
    return bool(cfg.ray.address or os.environ.get("RAY_ADDRESS"))


def hosts(cfg: Config, job: str) -> int:
    """How many generator actors (engines) the job starts."""
    if job in ("train", "suite"):
        return cfg.variants.count + 1  # one per variant and the scorer
    if job == "serve":
        return cfg.serve.replicas
    if job == "discussion":
        return 1
    if job == "distill":
        own = 2 if cfg.variants.mode == "full" else 1  # student (and its base, if full copies)
        return own + (cfg.teacher.kind == "hf" and cfg.teacher.model != cfg.model.name_or_path)
    if job == "saie":
        own = 2 if cfg.variants.mode == "full" else 1
        partner = cfg.saie.partner and cfg.saie.partner != cfg.model.name_or_path
        return own + bool(partner)
    return 0


def need(cfg: Config, job: str) -> Need:
    """The Ray resources ``job`` asks for at once: its engines and one trainer per trained
    model (persistent trainers hold theirs for the whole run)."""
    r = cfg.ray
    engines = hosts(cfg, job)
    trainers = {"train": cfg.variants.count + (cfg.scorer == "ift_all"), "distill": 1, "saie": 1}
    n_train = trainers.get(job, 0)
    gen_cpus = engines * r.generator_cpus
    if job in ("train", "suite"):  # the scorer has its own size
        gen_cpus += r.scorer_cpus - r.generator_cpus
    if job == "serve":
        gen_cpus = engines * cfg.serve.model_cpus
    train_cpus = n_train * r.train_workers * r.train_cpus_per_worker
    parts = []
    if engines:
        keys = {
            "train": "ray.generator_cpus, ray.scorer_cpus",
            "suite": "ray.generator_cpus, ray.scorer_cpus",
            "serve": "serve.replicas, serve.model_cpus",
        }
        parts.append(
            f"{engines} engine actor(s): {gen_cpus:g} CPU ({keys.get(job, 'ray.generator_cpus')})"
        )
    if n_train:
        parts.append(
            f"{n_train} trainer(s) × {r.train_workers} worker(s) × "
            f"{r.train_cpus_per_worker:g} CPU = {train_cpus:g} CPU "
            "(ray.train_workers, ray.train_cpus_per_worker)"
        )
    gen_gpus = cfg.serve.model_gpus if job == "serve" else r.generator_gpus
    gpus = engines * gen_gpus + (n_train * r.train_workers if r.train_use_gpu else 0)
    return Need(gen_cpus + train_cpus, gpus, tuple(parts))


def local_cpus(cfg: Config) -> float | None:
    """The CPUs a local Ray of this job will have (None: sized to the need, or a cluster's)."""
    if _on_cluster(cfg):
        return None
    return cfg.ray.num_cpus


def check_fits(cfg: Config, want: Need, cpus: float | None, gpus: float | None = None) -> None:
    """Refuse a run whose actors and trainers cannot all be placed at once: it would wait for
    resources forever. ``cpus``/``gpus``: what the Ray cluster has (None: not known yet, or
    sized to fit)."""
    if gpus is None and not _on_cluster(cfg) and want.gpus > 0:
        gpus = float(_local_gpus())
    short = []
    if cpus is not None and want.cpus > cpus + 1e-9:
        short.append(f"{want.cpus:g} CPUs, the cluster has {cpus:g} (ray.num_cpus)")
    if gpus is not None and want.gpus > gpus + 1e-9:
        short.append(f"{want.gpus:g} GPUs, the cluster has {gpus:g}")
    if short:
        raise ConfigError(
            f"the run cannot fit: it needs {' and '.join(short)}: {want.text()}. Lower those "
            "settings (fractional CPUs are allowed), variants.count, or give Ray more"
        )


def _local_gpus() -> int:
    import torch

    return torch.cuda.device_count()
