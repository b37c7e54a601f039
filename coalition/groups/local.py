"""The in-process group: every host of the layout an engine in this process, updates run
here too. Tests, Serve's replicas, the one-process benchmark and ``ray.in_process`` runs use it;
``actors.group.RayGroup`` is the same calls on Ray."""

from __future__ import annotations

from typing import Any

from coalition.engines import EngineSpec
from coalition.engines.base import LoraSpec
from coalition.groups.group import Group, scorer_mean
from coalition.groups.layout import Layout
from coalition.method import training
from coalition.method.variants import VariantHost


class LocalGroup(Group):
    """The layout's hosts on in-process engines, each opened on first use."""

    def __init__(self, layout: Layout, spec: LoraSpec, engine: EngineSpec | None = None):
        self.layout, self.spec = layout, spec
        self.engine = engine or EngineSpec()
        self._hosts: dict[str, VariantHost] = {}
        self._expected: dict[str, int] = {}

    def _host(self, host: str) -> VariantHost:
        if host not in self._hosts:
            h = self.layout.hosts[host]
            engine = self.engine.open(h.path, lora=h.mode == "lora")
            self._hosts[host] = VariantHost(engine, h.mode, self.spec)
        return self._hosts[host]

    def _serving(self, name: str) -> tuple[VariantHost, str]:
        p = self.layout.placement(name)
        return self._host(p.hosts[0]), p.key

    def tokenizer_of(self, name):
        return self._serving(name)[0].tokenizer

    def generate(self, jobs, params):
        out = {}
        for name, prompts in jobs.items():
            host, key = self._serving(name)
            out[name] = host.generate(key, prompts, params, self._expected.get(name))
        return out

    def evaluate(self, names, task_spec, examples, method, params, chat):
        out = {}
        for name in names:
            host, key = self._serving(name)
            expect = self._expected.get(name)
            out[name] = host.evaluate(key, task_spec, examples, method, params, chat, expect)
        return out

    def utilities(self, prompts, targets):
        if not self.layout.scorer:
            raise ValueError("this group has no scorer")
        return scorer_mean(
            [
                (len(keys), self._host(host).utilities(list(keys), prompts, targets))
                for host, keys in self.layout.scorer.items()
            ]
        )

    def features(self, prompts):
        if self.layout.features is None:
            raise ValueError("this group has no base model to embed prompts with")
        return self._host(self.layout.features).features(prompts)

    def train(self, kind, name, state, rows, settings):
        p = self.trained(name)
        mode = self.layout.mode_of(name)
        return training.run_update(
            kind, p.path, mode, self.spec, state, rows, settings, self.engine.dtype
        )

    def push(self, name, state, version):
        p = self.trained(name)
        for host in p.hosts:
            served = self._host(host).install(p.key, state, version)
            if served != version:
                raise RuntimeError(f"{name}: pushed version {version} but {host} serves {served}")
        self._expected[name] = version

    def versions(self):
        return dict(self._expected)


def prepare_in_process(generator_cpus: float) -> None:
    """Set this process up as a generator actor is (``ray.in_process``): its torch threads, so
    numerics and samples match the Ray run's, and no progress bars from TRL's datasets."""
    import datasets
    import torch

    torch.set_num_threads(training.threads_for(generator_cpus))
    datasets.disable_progress_bars()


def in_process(cfg: Any, layout: Layout) -> LocalGroup:
    """A run's group in this process (``ray.in_process: true``), with the torch threads one
    generator actor gets, so its numerics and samples match the Ray run's."""
    prepare_in_process(cfg.ray.generator_cpus)
    return LocalGroup(layout, training.lora_spec(cfg.variants.lora), EngineSpec.of(cfg))
