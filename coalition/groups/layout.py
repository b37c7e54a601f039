"""Where a group's named models live: which engines (hosts) load which weights, which host
generates for each model and under which key, which hosts a push must reach, and which host
scores. The one description both group implementations (in process and on Ray) are built from.

Two builders, one per kind of run:

- :func:`coalition_layout` — COALITION's variants ``"v0" … "v{K-1}"``, the scorer's models
  (``"ift"`` with ``scorer: ift_all``) and the frozen ``"base"``. On Ray each variant has its own
  generator and the scorer its own host; in one process LoRA adapters share one engine.
- :func:`team_layout` — a two-model recipe's :class:`Member` s (Fine-tune-CoT, SAIE): one engine
  per weights path (a full-weight trained member gets its own), frozen members are the plain
  model, so a student and its base cost one model in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from coalition.method.variants import BASE, variant_key


@dataclass(frozen=True)
class Member:
    """One model of a two-model recipe: where its weights come from and whether it is trained."""

    name: str
    path: str
    trained: bool = False


@dataclass(frozen=True)
class Host:
    """One engine: the weights it loads and how it holds trained models (``lora``: adapters on
    the one base; ``full``: full weights). ``role`` picks the Ray actor and its CPUs."""

    path: str
    mode: str
    role: str = "generator"  # "generator" | "scorer"


@dataclass(frozen=True)
class Placement:
    """One named model: its weights path, whether it is trained, the key its hosts serve it
    under (:data:`BASE` for the plain model) and the hosts serving it (the first generates)."""

    name: str
    path: str
    trained: bool
    key: str
    hosts: tuple[str, ...]


@dataclass(frozen=True)
class Layout:
    hosts: dict[str, Host]
    models: dict[str, Placement]
    #: host → the models whose utilities it averages (the scorer's U); empty: no scorer
    scorer: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: the host whose frozen base embeds prompts (controller features); None: none
    features: str | None = None
    #: a model this layout cannot place → why (said when something asks for it)
    unplaced: dict[str, str] = field(default_factory=dict)

    def placement(self, name: str) -> Placement:
        if name in self.models:
            return self.models[name]
        raise ValueError(
            self.unplaced.get(name)
            or f"no model {name!r} in this group; it has {list(self.models)}"
        )

    def trained(self, name: str) -> Placement:
        p = self.placement(name)
        if not p.trained:
            raise ValueError(f"model {name!r} is frozen; only trained models take updates")
        return p

    def mode_of(self, name: str) -> str:
        """How ``name``'s generating host holds it (an update trains it the same way)."""
        return self.hosts[self.placement(name).hosts[0]].mode


def scorer_keys(kind: str, count: int) -> list[str]:
    """Which models' utilities the scorer averages: the base, every variant, or M_IFT."""
    if kind == "base":
        return [BASE]
    if kind == "variants_mean":
        return [variant_key(k) for k in range(count)]
    if kind == "ift_all":
        return ["ift"]
    raise ValueError(f"scorer: {kind!r}; allowed: ift_all, variants_mean, base")


def coalition_layout(path: str, mode: str, scorer: str, count: int, in_process: bool) -> Layout:
    """A COALITION run's models on ``path``: ``count`` variants held as ``mode``, the scorer's
    models (``scorer``: ift_all, variants_mean or base) and the base."""
    keys = [variant_key(k) for k in range(count)]
    scoring = scorer_keys(scorer, count)
    trained = keys + (["ift"] if scorer == "ift_all" else [])
    if in_process:
        # LoRA: every adapter on the one base engine; full: one engine per model
        hosts = {BASE: Host(path, mode)}
        where = {k: BASE if mode == "lora" else k for k in trained}
        hosts |= {h: Host(path, mode) for h in where.values() if h != BASE}
        models = {k: Placement(k, path, True, k, (where[k],)) for k in trained}
        models[BASE] = Placement(BASE, path, False, BASE, (BASE,))
        by_host: dict[str, list[str]] = {}
        for k in scoring:
            by_host.setdefault(models[k].hosts[0], []).append(k)
        return Layout(hosts, models, {h: tuple(ks) for h, ks in by_host.items()}, BASE)
    hosts = {k: Host(path, mode) for k in keys} | {"scorer": Host(path, mode, "scorer")}
    models = {k: Placement(k, path, True, k, (k, "scorer") if k in scoring else (k,)) for k in keys}
    if "ift" in trained:
        models["ift"] = Placement("ift", path, True, "ift", ("scorer",))
    # the base answers from the scorer (LoRA: adapters off); a full-weights scorer keeps the
    # base only while it scores with it
    unplaced = {}
    if mode == "lora" or scoring == [BASE]:
        models[BASE] = Placement(BASE, path, False, BASE, ("scorer",))
    else:
        unplaced[BASE] = "base-model generation needs variants.mode: lora or scorer: base"
    return Layout(
        hosts,
        models,
        {"scorer": tuple(scoring)},
        "scorer" if BASE in models else None,
        unplaced,
    )


def team_layout(members: Sequence[Member], mode: str) -> Layout:
    """A two-model recipe's ``members``; trained ones held as ``mode``. A host is named after
    the first member it serves."""
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise ValueError(f"member names must be unique: {names}")
    if any(m.trained and m.name == BASE for m in members):
        raise ValueError(f"a trained member cannot be called {BASE!r} (the plain model's name)")
    hosts: dict[str, Host] = {}
    engine_of: dict[str, str] = {}  # one engine per path, except full-weight trained copies
    models: dict[str, Placement] = {}
    for m in members:
        engine = f"{m.path}#{m.name}" if m.trained and mode == "full" else m.path
        if engine not in engine_of:
            engine_of[engine] = m.name
            hosts[m.name] = Host(m.path, mode if m.trained else "lora")
        key = m.name if m.trained else BASE
        models[m.name] = Placement(m.name, m.path, m.trained, key, (engine_of[engine],))
    return Layout(hosts, models)


def run_layout(cfg: Any, in_process: bool | None = None) -> Layout:
    """A COALITION run's layout from its config (``in_process`` defaults to ``ray.in_process``)."""
    from coalition.engines.models import resolve

    return coalition_layout(
        resolve(cfg.model.name_or_path),
        cfg.variants.mode,
        cfg.scorer,
        cfg.variants.count,
        cfg.ray.in_process if in_process is None else in_process,
    )
