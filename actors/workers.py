"""Ray-backed :class:`Workers`: a GeneratorActor per variant, a ScorerActor, Ray Train updates,
weights pushed through the object store (versioned, confirmed by each actor)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from actors.hosts import GeneratorActor, ScorerActor
from actors.persistent import PersistentTrainer, persistent_trainer
from actors.resilient import HostHandle, gather, started
from actors.session import QUIET
from actors.training import train_with
from coalition.engines import EngineSpec
from coalition.engines.base import SamplingParams
from coalition.engines.weightsync import Channel, fingerprint, host_store
from coalition.groups.workers import Workers, scorer_keys
from coalition.method.training import State, StepSettings, lora_spec
from coalition.method.variants import BASE, variant_key
from coalition.run.config import Config


class PushChannels:
    """The driver's rendezvous store for broadcast pushes (started on first use) and a fresh
    channel name per group."""

    def __init__(self, timeout_s: float, backend: str):
        self.timeout_s, self.backend = timeout_s, backend
        self._store: Any = None
        self.host = ""
        self._count = 0

    def channel(self, key: str, world: int) -> Channel:
        if self._store is None:
            self.host = ray.util.get_node_ip_address()
            self._store = host_store(self.host, self.timeout_s)
        self._count += 1
        return Channel(
            f"{key}-{self._count}", self.host, self._store.port, world, self.backend,
            self.timeout_s,
        )  # fmt: skip


class RayWorkers(Workers):
    """The production workers of ``jobs/train.py``."""

    parallel_updates = True  # each update is its own TorchTrainer run

    def __init__(
        self,
        cfg: Config,
        base_path: str,
        storage: Path,
        log: Callable[[str], None] = print,
        trainers: bool = True,
    ):
        """``trainers=False`` for jobs that only generate (evaluation): no Ray Train workers."""
        from transformers import AutoTokenizer

        self.cfg, self.base_path, self.storage, self.log = cfg, base_path, Path(storage), log
        self.mode = cfg.variants.mode
        self.spec = lora_spec(cfg.variants.lora)
        self.scorer_keys = scorer_keys(cfg.scorer, cfg.variants.count)
        self.tokenizer = AutoTokenizer.from_pretrained(base_path)
        self.chunk = cfg.ray.chunk_size
        r = cfg.ray
        common = (base_path, self.mode, self.spec, EngineSpec.of(cfg))
        self.gens: dict[str, HostHandle] = {}
        for k in range(cfg.variants.count):
            key = variant_key(k)
            actor = GeneratorActor.options(
                num_cpus=r.generator_cpus,
                num_gpus=r.generator_gpus,
                max_restarts=r.max_restarts,
                runtime_env={"env_vars": QUIET},
            ).remote(*common, r.generator_cpus)
            self.gens[key] = HostHandle(actor, f"generator[{key}]", r.max_retries, log)
        actor = ScorerActor.options(
            num_cpus=r.scorer_cpus,
            num_gpus=r.generator_gpus,
            max_restarts=r.max_restarts,
            runtime_env={"env_vars": QUIET},
        ).remote(*common, r.scorer_cpus)
        self.scorer = HostHandle(actor, "scorer", r.max_retries, log)
        self._expected: dict[str, int] = {}
        self.pushes = {"broadcast": 0}  # how many pushes went by broadcast (for checks)
        self._channels: dict[str, Channel] = {}
        self.push_channels = PushChannels(
            r.push_timeout_s, "nccl" if r.train_use_gpu and r.generator_gpus > 0 else "gloo"
        )
        self.trainers: dict[str, PersistentTrainer] = {}
        if (
            trainers and r.trainer == "persistent"
        ):  # started now, so their start-up overlaps other stages
            keys = [variant_key(k) for k in range(cfg.variants.count)]
            for key in keys + (["ift"] if cfg.scorer == "ift_all" else []):
                self.trainers[key] = persistent_trainer(
                    cfg, key, base_path, self.mode, self.spec, self.storage
                )
        started([*self.gens.values(), self.scorer], r.start_timeout_s)

    def ready(self) -> None:
        """Wait for the trainers' workers (benchmarks time a warm system)."""
        for trainer in self.trainers.values():
            trainer.ready()

    # the base model answers from the scorer (LoRA: adapters disabled); a full-weights scorer
    # keeps the base only while it scores with it
    def _host_for(self, key: str) -> HostHandle:
        if key != BASE:
            return self.gens[key]
        if self.mode == "lora" or self.scorer_keys == [BASE]:
            return self.scorer
        raise ValueError("base-model generation needs variants.mode: lora or scorer: base")

    def _chunks(self, prompts: list[str]) -> list[list[str]]:
        return [prompts[i : i + self.chunk] for i in range(0, len(prompts), self.chunk)] or [[]]

    def generate(self, jobs, params: SamplingParams):
        calls, owners, sizes = [], [], []
        for key, prompts in jobs.items():
            for chunk in self._chunks(prompts):
                expect = self._expected.get(key)
                calls.append(self._host_for(key).generate(key, chunk, params, expect))
                owners.append(key)
                sizes.append(len(chunk) * params.n)
        out: dict[str, list[Any]] = {key: [] for key in jobs}
        for key, result in zip(owners, gather(calls, sizes, "generations"), strict=True):
            out[key].extend(result)
        return out

    def utilities(self, prompts, targets):
        starts = range(0, len(prompts), self.chunk)
        calls = [
            self.scorer.utilities(
                self.scorer_keys, prompts[i : i + self.chunk], targets[i : i + self.chunk]
            )
            for i in starts
        ]
        sizes = [len(prompts[i : i + self.chunk]) for i in starts]
        return [u for part in gather(calls, sizes, "scores") for u in part]

    def features(self, prompts):
        host = self._host_for(BASE)  # the frozen base
        calls = [host.features(chunk) for chunk in self._chunks(prompts)]
        return [f for part in gather(calls) for f in part]

    def evaluate(self, keys, task_spec, examples, method, params, chat):
        calls, owners, sizes = [], [], []
        for key in keys:
            expect = self._expected.get(key)
            for i in range(0, len(examples), self.chunk):
                chunk = examples[i : i + self.chunk]
                host = self._host_for(key)
                calls.append(host.evaluate(key, task_spec, chunk, method, params, chat, expect))
                owners.append(key)
                sizes.append(len(chunk))
        out: dict[str, list[Any]] = {key: [] for key in keys}
        for key, result in zip(owners, gather(calls, sizes, "questions"), strict=True):
            out[key].extend(result)
        return out

    def train(self, kind: str, key: str, state: State | None, rows, settings: StepSettings):
        return train_with(
            self.cfg, self.trainers, key, self.base_path, self.mode, self.spec, self.storage,
            kind, state, rows, settings, [*self.gens.values(), self.scorer],
        )  # fmt: skip

    def push(self, key: str, state: State, version: int) -> None:
        hosts = ([self.gens[key]] if key in self.gens else []) + (
            [self.scorer] if key in self.scorer_keys else []
        )
        if self._broadcast(key, hosts, state, version):
            # a restarted actor gets the state replayed through the object store
            for host in hosts:
                host.remember(f"state:{key}", host.install(key, state, version))
        else:
            ref = ray.put(state)  # one copy in the object store, shared by every receiving actor
            for host in hosts:
                host.remember(f"state:{key}", host.install(key, ref, version))
            served = gather([h.install(key, ref, version) for h in hosts])
            if any(v != version for v in served):
                raise RuntimeError(f"{key}: pushed version {version}, actors serve {served}")
        self._expected[key] = version

    def _broadcast(self, key: str, hosts: list[HostHandle], state: State, version: int) -> bool:
        """Push full weights straight from ``key``'s trainer to ``hosts`` (``ray.full_push``);
        ``False`` when that cannot be done (the trainer lacks this state, or the broadcast
        failed: then the caller uses the object store and the next broadcast meets afresh)."""
        trainer = self.trainers.get(key)
        if not (self.cfg.collective_push() and trainer is not None and hosts):
            return False
        channel = self._channels.get(key)
        if channel is None or channel.world != len(hosts) + 1:
            channel = self._channels[key] = self.push_channels.channel(key, len(hosts) + 1)
        timeout = self.cfg.ray.push_timeout_s
        start = time.monotonic()
        seq = trainer.push(key, channel, version, fingerprint(state))
        refs = [h.receive(key, channel, rank, version).submit() for rank, h in enumerate(hosts, 1)]
        try:
            served = ray.get(refs, timeout=2 * timeout + 30)
            sent = trainer.wait(seq, timeout=2 * timeout + 30)
        except Exception as exc:  # noqa: BLE001 - any failure: fall back, meet afresh next time
            self.log(f"[push] {key}: broadcast failed ({type(exc).__name__}: {exc}); object store")
            self._channels.pop(key, None)
            return False
        if "error" in sent:
            self.log(f"[push] {key}: broadcast failed ({sent['error']}); object store")
            self._channels.pop(key, None)
            return False
        if not sent["sent"]:
            return False  # the trainer holds another state (e.g. a resumed run's first push)
        if any(v != version for v in served):
            raise RuntimeError(f"{key}: broadcast version {version}, actors serve {served}")
        self.pushes["broadcast"] += 1
        self.log(f"[push] {key}: broadcast from its trainer in {time.monotonic() - start:.2f}s")
        return True

    def versions(self) -> dict[str, int]:
        return dict(self._expected)

    def actor_versions(self) -> dict[str, dict[str, int]]:
        """What each actor itself reports (for checks and the summary)."""
        names = list(self.gens) + ["scorer"]
        hosts = list(self.gens.values()) + [self.scorer]
        return dict(zip(names, gather([h.versions() for h in hosts]), strict=True))

    def close(self) -> None:
        for trainer in self.trainers.values():
            trainer.close()
        for h in [*self.gens.values(), self.scorer]:
            ray.kill(h.actor, no_restart=True)


def start_workers(cfg: Config, run_dir: Path) -> Workers:
    """Ray (local, or the cluster ``ray.address`` names) and a COALITION run's workers on it:
    what jobs/train.py and jobs/ablate.py run their recipes on; with ``ray.in_process`` the
    same recipe on in-process workers, and Ray never starts."""
    from actors.session import init_ray
    from coalition.engines.models import resolve
    from coalition.groups.workers import local_workers

    if cfg.ray.in_process:
        return local_workers(cfg)

    init_ray(cfg, "train")
    return RayWorkers(cfg, resolve(cfg.model.name_or_path), Path(run_dir) / "ray_train")
