"""The models of a two-model recipe (Fine-tune-CoT's teacher and student, SAIE's learner and
partner), by name, and the in-process implementation.

A :class:`Member` is a model path and whether the recipe trains it. Trained members are LoRA
adapters named after them (or, with ``mode: full``, full copies on their own engine); frozen
members are the plain model. Members on the same path share one engine, so a student and its
base, or a learner and a same-base partner, cost one model in memory.

:class:`LocalTeam` runs everything in this process (unit tests); ``actors.team.RayTeam`` hosts
each engine in a Ray actor and runs updates under Ray Train. Both are
:class:`coalition.groups.Generating`, so multi-agent discussion runs on either.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from coalition.engines import EngineSpec
from coalition.engines.base import LoraSpec
from coalition.groups.group import Group
from coalition.method import training
from coalition.method.variants import BASE, VariantHost


@dataclass(frozen=True)
class Member:
    """One model of a recipe: where its weights come from and whether the recipe trains it."""

    name: str
    path: str
    trained: bool = False


def host_name(member: Member, mode: str) -> str:
    """Which engine serves ``member``: one per path, except full-weight trained copies."""
    return f"{member.path}#{member.name}" if member.trained and mode == "full" else member.path


def adapter_of(member: Member) -> str:
    """The key a host serves ``member`` under (:data:`BASE`: the plain model)."""
    return member.name if member.trained else BASE


def check_members(members: Sequence[Member]) -> dict[str, Member]:
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise ValueError(f"member names must be unique: {names}")
    if any(m.trained and m.name == BASE for m in members):
        raise ValueError(f"a trained member cannot be called {BASE!r} (the plain model's name)")
    return {m.name: m for m in members}


class Team(Group):
    """A two-model recipe's group: its members by name, each on the engine of its path."""

    members: dict[str, Member]

    @abstractmethod
    def tokenizer_of(self, name: str) -> Any:
        """The tokenizer ``name`` reads (members on different paths may differ)."""

    @property
    def tokenizer(self) -> Any:
        """The first member's tokenizer (what an inference method renders prompts with)."""
        return self.tokenizer_of(next(iter(self.members)))

    def trained(self, name: str) -> Member:
        member = self.members[name]
        if not member.trained:
            raise ValueError(f"member {name!r} is frozen; only trained members take updates")
        return member


class LocalTeam(Team):
    """Every member on in-process engines; updates run in this process too."""

    def __init__(
        self,
        members: Sequence[Member],
        mode: str,
        spec: LoraSpec,
        engine: EngineSpec | None = None,
    ):
        self.members = check_members(members)
        self.mode, self.spec = mode, spec
        engine = engine or EngineSpec()
        self.dtype = engine.dtype
        self._hosts: dict[str, VariantHost] = {}
        for m in self.members.values():
            host = host_name(m, mode)
            if host not in self._hosts:
                m_mode = mode if m.trained else "lora"
                self._hosts[host] = VariantHost(
                    engine.open(m.path, lora=m_mode == "lora"), m_mode, spec
                )
        self._expected: dict[str, int] = {}

    def _host(self, name: str) -> VariantHost:
        return self._hosts[host_name(self.members[name], self.mode)]

    def tokenizer_of(self, name):
        return self._host(name).tokenizer

    def generate(self, jobs, params):
        return {
            name: self._host(name).generate(
                adapter_of(self.members[name]), prompts, params, self._expected.get(name)
            )
            for name, prompts in jobs.items()
        }

    def evaluate(self, names, task_spec, examples, method, params, chat):
        return {
            name: self._host(name).evaluate(
                adapter_of(self.members[name]),
                task_spec,
                examples,
                method,
                params,
                chat,
                self._expected.get(name),
            )
            for name in names
        }

    def train(self, kind, name, state, rows, settings):
        member = self.trained(name)
        return training.run_update(
            kind, member.path, self.mode, self.spec, state, rows, settings, self.dtype
        )

    def push(self, name, state, version):
        self.trained(name)
        served = self._host(name).install(name, state, version)
        if served != version:
            raise RuntimeError(f"{name}: pushed version {version} but host serves {served}")
        self._expected[name] = version

    def versions(self):
        return dict(self._expected)


def local_team(cfg: Any, members: Sequence[Member]) -> LocalTeam:
    """A recipe's team in this process (``ray.in_process: true``), with the torch threads one
    generator actor gets, so its numerics and samples match the Ray run's."""
    from coalition.groups.group import prepare_in_process
    from coalition.method.training import lora_spec

    prepare_in_process(cfg.ray.generator_cpus)
    return LocalTeam(members, cfg.variants.mode, lora_spec(cfg.variants.lora), EngineSpec.of(cfg))
