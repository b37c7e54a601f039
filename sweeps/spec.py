"""Sweeps over model families, sizes and COALITION settings: the sweep file's schema, its
expansion into one :class:`~coalition.run.config.Config` per trial, and each trial's Ray resources.

Pure (no Ray): ``sweeps/sweep.py`` turns what is described here into a Ray Tune run, and
:mod:`sweeps.results` turns the trials' reports into a table, a CSV, a plot and the
best config. A sweep file (``configs/sweeps/*.yaml``) names a base config, fixed overrides,
the models (family, size) and a search space over dotted config keys::

    name: smoke
    base: configs/smoke.yaml          # relative to the repository root, or absolute
    overrides: {task.n_test: 4}       # dotted keys, for every trial
    models:
      - {family: tiny, name_or_path: "builtin:tiny"}
    space:
      sro.beta: [0.1, 0.5]            # a list: grid values (categorical for optuna)
      sro.lr: {loguniform: [1.0e-5, 1.0e-3]}
    search: {algorithm: grid}         # grid | random | optuna

A trial's config is built in this order, later wins: base file → ``overrides`` → the first
``resources.by_size`` rule that fits the model's size → the model's own ``overrides`` (and its
``name_or_path``) → the trial's sampled values → ``run_dir`` (one per trial inside the sweep).
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from coalition.run import config as config_mod
from coalition.run.config import REPO_ROOT, Config, ConfigError

SCHEMA_VERSION = 1
MODEL_PARAM = "model"  # the search-space entry that picks the model (family, size)
DOMAIN_KINDS = ("grid", "choice", "uniform", "loguniform", "randint")
# keys a sweep sets itself (models pick the model, each trial gets its own run directory)
RESERVED_KEYS = ("run_dir", "model.name_or_path")
# sizes (billions of parameters) of models whose names do not say it
KNOWN_SIZES_B = {
    "builtin:tiny": 0.001,
    "builtin:smollm2-135m-instruct": 0.135,
    "phi-3-mini": 3.8,
    "phi-3.5-mini": 3.8,
    "phi-4-mini": 3.8,
    "phi-3-small": 7.4,
    "phi-3-medium": 14.0,
}
_SIZE_RE = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)([bBmM])(?![a-zA-Z])")


def _first_message(exc: Exception) -> str:
    """A domain's own validation error as one line."""
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        return f"{loc}: {msg}" if loc else msg
    return str(exc)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Domain(_Strict):
    """One search-space entry: grid values, a categorical choice, or a numeric range."""

    kind: Literal["grid", "choice", "uniform", "loguniform", "randint"]
    values: list[Any] = Field(min_length=1)

    @model_validator(mode="after")
    def _range_shape(self) -> Domain:
        if self.kind in ("uniform", "loguniform", "randint"):
            lo_hi = self.values
            if len(lo_hi) != 2 or not all(isinstance(v, int | float) for v in lo_hi):
                raise ValueError(f"{self.kind} takes [low, high] numbers (got {lo_hi!r})")
            if not lo_hi[0] < lo_hi[1]:
                raise ValueError(f"{self.kind}: low must be below high (got {lo_hi!r})")
            if self.kind == "loguniform" and lo_hi[0] <= 0:
                raise ValueError(f"loguniform: low must be above 0 (got {lo_hi!r})")
            if self.kind == "randint" and not all(isinstance(v, int) for v in lo_hi):
                raise ValueError(f"randint takes [low, high) integers (got {lo_hi!r})")
        return self

    def probes(self) -> list[Any]:
        """Values that stand for this domain when checking trial configs: every listed value,
        or a range's ends (``randint``'s high end is exclusive)."""
        if self.kind == "randint":
            return [self.values[0], self.values[1] - 1]
        return list(self.values)

    @classmethod
    def parse(cls, raw: Any) -> Domain:
        """A list means grid values; a mapping names one kind: ``{loguniform: [lo, hi]}``."""
        if isinstance(raw, Domain):
            return raw
        if isinstance(raw, list):
            return cls(kind="grid", values=raw)
        if isinstance(raw, dict) and set(raw) == {"kind", "values"}:  # as dumped
            return cls.model_validate(raw)
        if isinstance(raw, dict) and len(raw) == 1 and next(iter(raw)) in DOMAIN_KINDS:
            kind, values = next(iter(raw.items()))
            return cls(kind=kind, values=values if isinstance(values, list) else [values])
        raise ValueError(
            f"expected a list of values or a mapping with one of {', '.join(DOMAIN_KINDS)} "
            f"(got {raw!r}); write nested keys dotted, e.g. sro.beta"
        )


class ModelSpec(_Strict):
    """One model of the sweep: its family (a plot line), its size and any model-specific
    overrides (e.g. a lower learning rate for the big ones)."""

    family: str
    name_or_path: str
    name: str | None = None  # label in tables; default: the last part of name_or_path
    params_b: float | None = Field(None, gt=0)  # billions of parameters; default: from the name
    overrides: dict[str, Any] = Field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.name or self.name_or_path.rstrip("/").split("/")[-1].split(":")[-1]

    @property
    def size_b(self) -> float:
        if self.params_b is not None:
            return self.params_b
        size = model_size_b(self.name_or_path)
        if size is None:
            raise ValueError(
                f"cannot tell the size of {self.name_or_path!r} from its name; set params_b"
            )
        return size


class SizeRule(_Strict):
    """Settings (mostly ``ray.*``) for every model of at most ``up_to_b`` billion parameters."""

    up_to_b: float = Field(gt=0)
    overrides: dict[str, Any] = Field(default_factory=dict)


class SearchConfig(_Strict):
    """How trials are chosen: a grid, random samples, or Optuna's TPE (model-based)."""

    algorithm: Literal["grid", "random", "optuna"] = "grid"
    num_samples: int = Field(1, ge=1)  # grid: repeats of the grid; random/optuna: trials
    seed: int = 0


class SchedulerConfig(_Strict):
    """Early stopping on the per-round held-out accuracy (ASHA), or none (fifo)."""

    kind: Literal["asha", "fifo"] = "asha"
    grace_period: int = Field(1, ge=1)  # rounds before a trial can be stopped
    reduction_factor: float = Field(2.0, gt=1.0)


class ResourcesConfig(_Strict):
    """Per-trial resources (from the model size) and how many trials run at once."""

    driver_cpus: float = Field(0.5, gt=0.0)  # the trial's own process (the COALITION driver)
    by_size: list[SizeRule] = Field(default_factory=list)
    max_concurrent_trials: int | None = Field(None, ge=1)  # default: from the cluster

    @field_validator("by_size")
    @classmethod
    def _ascending(cls, rules: list[SizeRule]) -> list[SizeRule]:
        sizes = [r.up_to_b for r in rules]
        if sizes != sorted(sizes):
            raise ValueError(f"rules must go from small to large up_to_b (got {sizes})")
        return rules


class SweepRayConfig(_Strict):
    """The Ray the sweep driver joins (``address``/``RAY_ADDRESS``), or a local one."""

    address: str | None = None
    num_cpus: int | None = Field(None, ge=1)  # a local Ray's logical CPUs


class SweepConfig(_Strict):
    """A whole sweep file."""

    version: Literal[1] = SCHEMA_VERSION
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    base: str = "configs/default.yaml"
    run_dir: str | None = None  # default: runs/sweeps/<name>; holds Tune's state and results
    overrides: dict[str, Any] = Field(default_factory=dict)
    models: list[ModelSpec] = Field(min_length=1)
    space: dict[str, Domain] = Field(default_factory=dict)
    search: SearchConfig = Field(default_factory=SearchConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    max_failures: int = Field(0, ge=0)  # retries of a crashed trial (it resumes its run)
    ray: SweepRayConfig = Field(default_factory=SweepRayConfig)

    @field_validator("space", mode="before")
    @classmethod
    def _domains(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        out = {}
        for key, spec in raw.items():
            try:
                out[key] = Domain.parse(spec)
            except (ValueError, ValidationError) as exc:
                raise ValueError(f"{key}: {_first_message(exc)}") from None
        return out

    @model_validator(mode="after")
    def _consistent(self) -> SweepConfig:
        labels = [m.label for m in self.models]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"models: labels must be unique, {dupes} repeat; set name")
        for i, m in enumerate(self.models):
            try:
                m.size_b  # noqa: B018 - fails early when the size is unknown
            except ValueError as exc:
                raise ValueError(f"models[{i}]: {exc}") from None
        for where, keys in self._override_sources():
            for key in keys:
                if key in RESERVED_KEYS or key == MODEL_PARAM:
                    raise ValueError(
                        f"{where}.{key}: set by the sweep itself "
                        "(models pick the model; every trial gets its own run_dir)"
                    )
        if self.search.algorithm == "grid":
            ranged = [k for k, d in self.space.items() if d.kind != "grid"]
            if ranged:
                raise ValueError(
                    f"space.{ranged[0]}: search.algorithm grid takes lists of values only "
                    f"(got {self.space[ranged[0]].kind}); use search.algorithm random or optuna"
                )
        return self

    def _override_sources(self) -> list[tuple[str, list[str]]]:
        out = [("overrides", list(self.overrides)), ("space", list(self.space))]
        out += [(f"models[{i}].overrides", list(m.overrides)) for i, m in enumerate(self.models)]
        out += [
            (f"resources.by_size[{i}].overrides", list(r.overrides))
            for i, r in enumerate(self.resources.by_size)
        ]
        return out

    # ------------------------------------------------------------------ derived

    def model(self, label: str) -> ModelSpec:
        for m in self.models:
            if m.label == label:
                return m
        raise ConfigError(f"model {label!r}: not in this sweep; allowed: {self.labels()}")

    def labels(self) -> str:
        return ", ".join(m.label for m in self.models)

    def sweep_dir(self) -> Path:
        return Path(self.run_dir or Path("runs") / "sweeps" / self.name)

    def base_path(self) -> Path:
        path = Path(self.base)
        return path if path.is_absolute() else REPO_ROOT / path

    def size_rule(self, size_b: float) -> SizeRule | None:
        """The first rule whose ``up_to_b`` covers ``size_b`` (rules go small to large)."""
        for rule in self.resources.by_size:
            if size_b <= rule.up_to_b:
                return rule
        return None


# ---------------------------------------------------------------------- loading


def validate(raw: dict[str, Any]) -> SweepConfig:
    """A sweep file's mapping → :class:`SweepConfig`, or :class:`ConfigError` naming the key
    (the run config's validation, on this schema), every trial's config checked too."""
    sweep = config_mod.validate_as(SweepConfig, raw)
    check_trials(sweep)
    return sweep


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Command-line ``key=value`` overrides of a sweep file. Under ``space.`` and
    ``overrides.`` the rest of the key is one dotted config key (``space.sro.beta=[0.1]``)."""
    out = yaml.safe_load(yaml.safe_dump(raw)) or {}
    plain = []
    for text in overrides:
        keys, value = config_mod.parse_override(text)
        if keys[0] in ("space", "overrides") and len(keys) > 1:
            section = out.setdefault(keys[0], {})
            if not isinstance(section, dict):
                raise ConfigError(f"override {text!r}: {keys[0]} is not a mapping")
            section[".".join(keys[1:])] = value
        else:
            plain.append(text)
    return config_mod.apply_overrides(out, plain)


def load(path: Path, overrides: list[str] | None = None) -> SweepConfig:
    """Read, override and validate a sweep file (every trial's config is checked too)."""
    raw = config_mod.load_yaml(path)
    return validate(apply_overrides(raw, overrides or []))


def dump(sweep: SweepConfig) -> str:
    return yaml.safe_dump(sweep.model_dump(mode="json"), sort_keys=False)


# ---------------------------------------------------------------------- expansion


def model_size_b(name_or_path: str) -> float | None:
    """Billions of parameters from a model's name (``Qwen2.5-0.5B`` → 0.5, ``135M`` → 0.135),
    or from :data:`KNOWN_SIZES_B`; None when the name does not say."""
    key = name_or_path.lower()
    if key in KNOWN_SIZES_B:
        return KNOWN_SIZES_B[key]
    last = key.rstrip("/").split("/")[-1]
    for known, size in KNOWN_SIZES_B.items():
        if last.startswith(known):
            return size
    found = _SIZE_RE.findall(name_or_path.rstrip("/").split("/")[-1])
    if not found:
        return None
    number, unit = found[-1]
    return float(number) * (1.0 if unit.lower() == "b" else 1e-3)


def search_space(sweep: SweepConfig) -> dict[str, Domain]:
    """The trial parameters: ``model`` (a label) plus the sweep's space. Models are a grid for
    grid/random search (every model is tried) and a categorical choice for Optuna, which
    cannot grid; for the same reason Optuna takes grid lists as categorical choices."""
    optuna = sweep.search.algorithm == "optuna"
    labels = [m.label for m in sweep.models]
    space = {MODEL_PARAM: Domain(kind="choice" if optuna else "grid", values=labels)}
    for key, dom in sweep.space.items():
        space[key] = (
            Domain(kind="choice", values=dom.values) if optuna and dom.kind == "grid" else dom
        )
    return space


def trial_config(sweep: SweepConfig, params: dict[str, Any], run_dir: Path | str) -> Config:
    """The full config of the trial with sampled ``params`` (``model`` label + space keys)."""
    if MODEL_PARAM not in params:
        raise ConfigError(f"trial params: no {MODEL_PARAM!r} (got {sorted(params)})")
    model = sweep.model(params[MODEL_PARAM])
    raw = config_mod.load_yaml(sweep.base_path())
    layers: list[tuple[str, dict[str, Any]]] = [("overrides", sweep.overrides)]
    rule = sweep.size_rule(model.size_b)
    if rule is not None:
        layers.append((f"resources.by_size[up_to_b={rule.up_to_b}]", rule.overrides))
    layers.append((f"models[{model.label}]", {"model.name_or_path": model.name_or_path}))
    layers.append((f"models[{model.label}].overrides", model.overrides))
    layers.append(("space", {k: v for k, v in params.items() if k != MODEL_PARAM}))
    for where, values in layers:
        for key, value in values.items():
            try:
                config_mod.set_dotted(raw, key.split("."), value)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {key}: {exc}") from None
    raw["run_dir"] = str(run_dir)
    return config_mod.validate(raw)


def probe_params(sweep: SweepConfig, limit: int = 4096) -> list[dict[str, Any]]:
    """Parameter sets that stand for every trial the sweep can run: every combination of
    listed values and range ends (at most ``limit``), so bad keys and values and the biggest
    resource need show up before Ray starts."""
    space = search_space(sweep)
    keys = list(space)
    combos = itertools.product(*(space[k].probes() for k in keys))
    return [dict(zip(keys, values, strict=True)) for values in itertools.islice(combos, limit)]


def check_trials(sweep: SweepConfig) -> list[Config]:
    """Build the config of every probe trial; the first bad one stops with its source."""
    configs = []
    for params in probe_params(sweep):
        try:
            configs.append(trial_config(sweep, params, "/tmp/probe"))
        except ConfigError as exc:
            shown = {k: v for k, v in params.items() if k != MODEL_PARAM}
            raise ConfigError(f"trial {params[MODEL_PARAM]} {shown}: {exc}") from None
    return configs


# ---------------------------------------------------------------------- resources


@dataclass(frozen=True)
class TrialResources:
    """What one trial holds while it runs: its placement group (the trial's own process, then
    one bundle per generator and one for the scorer; these actors are created inside the
    trial and land in its group) and, outside it, the Ray Train workers of the updates that
    run at once (each ``TorchTrainer`` makes its own placement group)."""

    bundles: list[dict[str, float]]
    train: dict[str, float] = field(default_factory=dict)

    def total(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for part in [*self.bundles, self.train]:
            for key, value in part.items():
                out[key] = out.get(key, 0.0) + value
        return {k: v for k, v in out.items() if v > 0}


def _bundle(cpus: float, gpus: float) -> dict[str, float]:
    return {"CPU": cpus, **({"GPU": gpus} if gpus > 0 else {})}


def trial_resources(cfg: Config, driver_cpus: float) -> TrialResources:
    """Resources of one trial running ``cfg`` (see :class:`TrialResources`).

    The K generators and the scorer get K+1 equal bundles, each as large as the larger of
    the two: Ray puts an actor created inside the trial into *any* bundle with room, so with
    bundles sized per actor two 1-CPU generators can fill the scorer's 2-CPU bundle and leave
    the scorer nowhere to go (seen on Ray 2.60). With equal bundles, one per actor, an
    untouched bundle is always left for the next actor."""
    r, k = cfg.ray, cfg.variants.count
    bundles = [{"CPU": driver_cpus}]
    actor = _bundle(max(r.generator_cpus, r.scorer_cpus), r.generator_gpus)
    bundles += [dict(actor) for _ in range(k + 1)]
    # the warm-up trains every variant (and M_IFT for scorer ift_all) at once; rounds train K
    trainers = k + (1 if cfg.scorer == "ift_all" else 0)
    workers = trainers * r.train_workers
    train = _bundle(workers * r.train_cpus_per_worker, float(workers) if r.train_use_gpu else 0.0)
    return TrialResources(bundles, train)


def max_concurrent(
    cluster: dict[str, float], needs: list[TrialResources], explicit: int | None = None
) -> int:
    """How many trials run at once: ``explicit`` when given (``resources.max_concurrent_trials``,
    e.g. for a cluster that autoscales from zero GPUs), else as many of the largest trial as
    the cluster holds now, so that no trial's Ray Train workers wait on resources other
    trials hold (a wait that would never end); at least 1."""
    if explicit:
        return explicit
    worst: dict[str, float] = {}
    for need in needs:
        for key, value in need.total().items():
            worst[key] = max(worst.get(key, 0.0), value)
    fits = [math.floor(cluster.get(key, 0.0) / value + 1e-9) for key, value in worst.items()]
    return max(1, min(fits, default=1))
