"""Ray-backed :class:`Team`: a GeneratorActor per engine (members on one path share it), updates
under Ray Train (a persistent TorchTrainer per trained member), weights pushed through the
object store and confirmed by the actor. Calls to a restarted actor are replayed and retried."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ray

from actors.hosts import GeneratorActor
from actors.persistent import PersistentTrainer, persistent_trainer
from actors.resilient import HostHandle, gather, started
from actors.session import QUIET
from actors.training import train_with
from coalition.engines import EngineSpec
from coalition.engines.base import SamplingParams
from coalition.groups.team import Member, Team, adapter_of, check_members, host_name
from coalition.method.training import State, StepSettings, lora_spec
from coalition.run.config import Config


class RayTeam(Team):
    """The production team of ``jobs/distill.py`` and ``jobs/saie.py``."""

    parallel_updates = True

    def __init__(
        self,
        cfg: Config,
        members: Sequence[Member],
        storage: Path,
        log: Callable[[str], None] = print,
        trainers: bool = True,
    ):
        from transformers import AutoTokenizer

        self.cfg, self.storage, self.log = cfg, Path(storage), log
        self.members = check_members(members)
        self.mode = cfg.variants.mode
        self.spec = lora_spec(cfg.variants.lora)
        self.chunk = cfg.ray.chunk_size
        r = cfg.ray
        self._hosts: dict[str, HostHandle] = {}
        self._tokenizers: dict[str, Any] = {}
        for m in self.members.values():
            host = host_name(m, self.mode)
            if host in self._hosts:
                continue
            actor = GeneratorActor.options(
                num_cpus=r.generator_cpus,
                num_gpus=r.generator_gpus,
                max_restarts=r.max_restarts,
                runtime_env={"env_vars": QUIET},
            ).remote(
                m.path,
                self.mode if m.trained else "lora",
                self.spec,
                EngineSpec.of(cfg),
                r.generator_cpus,
            )
            self._hosts[host] = HostHandle(actor, f"generator[{m.name}]", r.max_retries, log)
            self._tokenizers[m.path] = AutoTokenizer.from_pretrained(m.path)
        self._expected: dict[str, int] = {}
        self.trainers: dict[str, PersistentTrainer] = {}
        if trainers and r.trainer == "persistent":  # start-up overlaps the first stages
            for m in self.members.values():
                if m.trained:
                    self.trainers[m.name] = persistent_trainer(
                        cfg, m.name, m.path, self.mode, self.spec, self.storage
                    )
        started(list(self._hosts.values()), r.start_timeout_s)

    def _host(self, name: str) -> HostHandle:
        return self._hosts[host_name(self.members[name], self.mode)]

    def tokenizer_of(self, name):
        return self._tokenizers[self.members[name].path]

    def _split(self, items: list[Any]) -> list[list[Any]]:
        return [items[i : i + self.chunk] for i in range(0, len(items), self.chunk)] or [[]]

    def generate(self, jobs, params: SamplingParams):
        calls, owners, sizes = [], [], []
        for name, prompts in jobs.items():
            expect = self._expected.get(name)
            for part in self._split(prompts):
                adapter = adapter_of(self.members[name])
                calls.append(self._host(name).generate(adapter, part, params, expect))
                owners.append(name)
                sizes.append(len(part) * params.n)
        out: dict[str, list[Any]] = {name: [] for name in jobs}
        for name, result in zip(owners, gather(calls, sizes, "generations"), strict=True):
            out[name].extend(result)
        return out

    def evaluate(self, names, task_spec, examples, method, params, chat):
        calls, owners, sizes = [], [], []
        for name in names:
            expect = self._expected.get(name)
            for part in self._split(examples):
                adapter = adapter_of(self.members[name])
                host = self._host(name)
                calls.append(host.evaluate(adapter, task_spec, part, method, params, chat, expect))
                owners.append(name)
                sizes.append(len(part))
        out: dict[str, list[Any]] = {name: [] for name in names}
        for name, result in zip(owners, gather(calls, sizes, "questions"), strict=True):
            out[name].extend(result)
        return out

    def train(self, kind, name, state, rows, s: StepSettings):
        member = self.trained(name)
        return train_with(
            self.cfg, self.trainers, name, member.path, self.mode, self.spec, self.storage,
            kind, state, rows, s, list(self._hosts.values()),
        )  # fmt: skip

    def push(self, name: str, state: State, version: int) -> None:
        self.trained(name)
        host = self._host(name)
        ref = ray.put(state)
        install = host.install(name, ref, version)
        host.remember(f"state:{name}", install)
        served = install.result()
        if served != version:
            raise RuntimeError(f"{name}: pushed version {version}, actor serves {served}")
        self._expected[name] = version

    def versions(self) -> dict[str, int]:
        return dict(self._expected)

    def close(self) -> None:
        for trainer in self.trainers.values():
            trainer.close()
        for host in self._hosts.values():
            ray.kill(host.actor, no_restart=True)


def start_team(cfg: Config, members: Sequence[Member], run_dir: Path, job: str) -> Team:
    """Ray (local, or the cluster ``ray.address`` names) and a two-model recipe's team on it:
    what jobs/distill.py and jobs/saie.py run on; with ``ray.in_process`` the same recipe on an
    in-process team, and Ray never starts."""
    from actors.session import init_ray
    from coalition.groups.team import local_team

    if cfg.ray.in_process:
        return local_team(cfg, members)
    init_ray(cfg, job)
    return RayTeam(cfg, members, Path(run_dir) / "ray_train")
