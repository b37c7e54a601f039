"""The Ray group: each host of the layout a restartable actor (GeneratorActor or ScorerActor),
updates under Ray Train (a persistent TorchTrainer per trained model), weights pushed through
the object store or broadcast from the trainer, versioned and confirmed by every actor. Calls
to a restarted actor are replayed and retried (:mod:`actors.resilient`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from actors.hosts import GeneratorActor, ScorerActor
from actors.persistent import PersistentTrainer, persistent_trainer
from actors.resilient import Call, HostHandle, gather, started
from actors.session import WORKER_ENV_VARS
from actors.training import train_with
from coalition.engines import EngineSpec
from coalition.engines.weightsync import Channel, fingerprint, host_store
from coalition.groups.group import Group, scorer_mean
from coalition.groups.layout import Layout
from coalition.method.training import State, lora_spec
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


class RayGroup(Group):
    """The production group of every job: train, ablate, distill, saie, suite, discussion,
    sweeps."""

    parallel_updates = True  # each update runs in its own trainer processes

    def __init__(
        self,
        cfg: Config,
        layout: Layout,
        storage: Path,
        log: Callable[[str], None] = print,
        trainers: bool = True,
    ):
        """``trainers=False`` for jobs that only generate (evaluation): no Ray Train workers."""
        from transformers import AutoTokenizer

        self.cfg, self.layout, self.storage, self.log = cfg, layout, Path(storage), log
        self.spec = lora_spec(cfg.variants.lora)
        self.chunk = cfg.ray.chunk_size
        r = cfg.ray
        self.hosts: dict[str, HostHandle] = {}
        for name, h in layout.hosts.items():
            cls, cpus = (ScorerActor, r.scorer_cpus) if h.role == "scorer" else (
                GeneratorActor, r.generator_cpus
            )  # fmt: skip
            actor = cls.options(
                num_cpus=cpus,
                num_gpus=r.generator_gpus,
                max_restarts=r.max_restarts,
                runtime_env={"env_vars": WORKER_ENV_VARS},
            ).remote(h.path, h.mode, self.spec, EngineSpec.of(cfg), cpus)
            label = "scorer" if h.role == "scorer" else f"generator[{name}]"
            self.hosts[name] = HostHandle(actor, label, r.max_retries, log)
        self._tokenizers = {
            path: AutoTokenizer.from_pretrained(path)
            for path in dict.fromkeys(h.path for h in layout.hosts.values())
        }
        self._expected: dict[str, int] = {}
        self.pushes = {"broadcast": 0}  # how many pushes went by broadcast (for checks)
        self._channels: dict[str, Channel] = {}
        self.push_channels = PushChannels(
            r.push_timeout_s, "nccl" if r.train_use_gpu and r.generator_gpus > 0 else "gloo"
        )
        self.trainers: dict[str, PersistentTrainer] = {}
        if trainers and r.trainer == "persistent":  # started now: start-up overlaps the stages
            for p in layout.models.values():
                if p.trained:
                    self.trainers[p.name] = persistent_trainer(
                        cfg, p.name, p.path, layout.mode_of(p.name), self.spec, self.storage
                    )
        started(list(self.hosts.values()), r.start_timeout_s)

    def ready(self) -> None:
        """Wait for the trainers' workers (benchmarks time a warm system)."""
        for trainer in self.trainers.values():
            trainer.ready()

    def _chunks(self, items: list[Any]) -> list[list[Any]]:
        return [items[i : i + self.chunk] for i in range(0, len(items), self.chunk)] or [[]]

    def _fan_out(
        self, jobs: dict[str, list[Any]], call: Callable[..., Call], per_item: int, unit: str
    ) -> dict[str, list[Any]]:
        """``call(host, key, chunk, expect)`` for every chunk of each model's items on its
        generating host, all in flight at once (different actors work in parallel); each
        model's results in order."""
        calls, owners, sizes = [], [], []
        for name, items in jobs.items():
            p = self.layout.placement(name)
            host, expect = self.hosts[p.hosts[0]], self._expected.get(name)
            for chunk in self._chunks(items):
                calls.append(call(host, p.key, chunk, expect))
                owners.append(name)
                sizes.append(len(chunk) * per_item)
        return _collect(list(jobs), owners, gather(calls, sizes, unit))

    def generate(self, jobs, params):
        def call(host: HostHandle, key: str, chunk: list[str], expect: int | None) -> Call:
            return host.generate(key, chunk, params, expect)

        return self._fan_out(jobs, call, params.n, "generations")

    def evaluate(self, names, task_spec, examples, method, params, chat):
        def call(host: HostHandle, key: str, chunk: list[Any], expect: int | None) -> Call:
            return host.evaluate(key, task_spec, chunk, method, params, chat, expect)

        return self._fan_out(dict.fromkeys(names, examples), call, 1, "questions")

    def utilities(self, prompts, targets):
        if not self.layout.scorer:
            raise ValueError("this group has no scorer")
        calls, owners, sizes = [], [], []
        for host, keys in self.layout.scorer.items():
            for i in range(0, len(prompts), self.chunk):
                part = prompts[i : i + self.chunk]
                calls.append(
                    self.hosts[host].utilities(list(keys), part, targets[i : i + self.chunk])
                )
                owners.append(host)
                sizes.append(len(part))
        per_host = _collect(list(self.layout.scorer), owners, gather(calls, sizes, "scores"))
        return scorer_mean([(len(self.layout.scorer[h]), u) for h, u in per_host.items()])

    def features(self, prompts):
        if self.layout.features is None:
            raise ValueError("this group has no base model to embed prompts with")
        host = self.hosts[self.layout.features]
        return [
            f for part in gather([host.features(c) for c in self._chunks(prompts)]) for f in part
        ]

    def tokenizer_of(self, name):
        return self._tokenizers[self.layout.placement(name).path]

    def train(self, kind, name, state, rows, settings):
        p = self.trained(name)
        return train_with(
            self.cfg, self.trainers, name, p.path, self.layout.mode_of(name), self.spec,
            self.storage, kind, state, rows, settings, list(self.hosts.values()),
        )  # fmt: skip

    def push(self, name: str, state: State, version: int) -> None:
        p = self.trained(name)
        hosts = [self.hosts[h] for h in p.hosts]
        if self._broadcast(name, hosts, state, version):
            # a restarted actor gets the state replayed through the object store
            for host in hosts:
                host.remember(f"state:{name}", host.install(p.key, state, version))
        else:
            ref = ray.put(state)  # one copy in the object store, shared by every receiving actor
            installs = [host.install(p.key, ref, version) for host in hosts]
            for host, install in zip(hosts, installs, strict=True):
                host.remember(f"state:{name}", install)
            served = gather(installs)
            if any(v != version for v in served):
                raise RuntimeError(f"{name}: pushed version {version}, actors serve {served}")
        self._expected[name] = version

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
        """What each host actor itself reports, by host (for checks and the summary)."""
        return dict(
            zip(self.hosts, gather([h.versions() for h in self.hosts.values()]), strict=True)
        )

    def close(self) -> None:
        for trainer in self.trainers.values():
            trainer.close()
        for host in self.hosts.values():
            ray.kill(host.actor, no_restart=True)


def _collect(names: list[str], owners: list[str], results: list[Any]) -> dict[str, list[Any]]:
    """Each name's chunk results, concatenated in submission order."""
    out: dict[str, list[Any]] = {name: [] for name in names}
    for name, result in zip(owners, results, strict=True):
        out[name].extend(result)
    return out


def start_group(cfg: Config, layout: Layout, run_dir: Path, job: str) -> Group:
    """Ray (local, or the cluster ``ray.address`` names) and the run's group on it; with
    ``ray.in_process`` the same group in this process, and Ray never starts."""
    from actors.session import init_ray
    from coalition.groups.local import in_process

    if cfg.ray.in_process:
        return in_process(cfg, layout)
    init_ray(cfg, job)
    return RayGroup(cfg, layout, Path(run_dir) / "ray_train")
