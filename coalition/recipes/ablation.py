"""Training ablations that share one warm-up: arms, what each may share, and the table.

An ablation run directory holds one COALITION run per arm under ``arms/<name>/``. Every arm
changes only round-level keys (:data:`ROUND_KEYS`), so all arms start from the same warm-up:
the first arm (the reference) computes it, the others adopt its stages (outputs linked, not
recomputed). Arms whose settings agree up to a round-1 stage also adopt that stage from the
earliest arm that ran it, e.g. ``update: rft`` reuses the reference's candidates and pairs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coalition.run import config as config_mod
from coalition.run import stats
from coalition.run.config import Config, ConfigError
from coalition.run.rundir import Manifest, RunDir

# what an arm may change: everything after the warm-up
ROUND_KEYS = (
    "rounds",
    "pool",
    "samples",
    "refine",
    "filter",
    "filter_min_utility",
    "pairs",
    "update",
    "scorer",
    "sro",
    "generation.temperature",
    "generation.top_p",
)

# round 1's stages in order, each with the keys (added to the ones before) its outputs depend
# on; an arm that agrees with an earlier arm on all of them adopts that stage
ROUND1_CHAIN: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("round1/generate", ("pool", "samples", "generation")),
    ("round1/refine", ("refine",)),
    ("round1/score", ("scorer",)),
    ("round1/pairs", ("filter", "filter_min_utility", "pairs")),
    ("round1/update/", ("update", "sro")),
    ("round1/eval", ()),
)
WARMUP_STAGES = ("eval/base", "warmup/data", "warmup/train/", "eval/warmup")


def flat(overrides: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested ``{sro: {lr: 1e-4}}`` and dotted ``{"sro.lr": 1e-4}`` both as dotted keys."""
    out: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def arm_configs(cfg: Config) -> dict[str, Config]:
    """Each arm's full config: the base config with the arm's overrides (round-level keys
    only; anything else would need its own warm-up and is refused naming the key)."""
    out: dict[str, Config] = {}
    for name, overrides in cfg.ablate.arms.items():
        dotted = flat(overrides or {})
        for key in dotted:
            if not any(key == k or key.startswith(k + ".") for k in ROUND_KEYS):
                raise ConfigError(
                    f"ablate.arms.{name}: {key} would change the shared warm-up; an arm may "
                    f"change: {', '.join(ROUND_KEYS)}"
                )
        try:
            arm = config_mod.override(cfg, dotted)
        except ConfigError as exc:
            raise ConfigError(f"ablate.arms.{name}: {exc}") from None
        if (arm.scorer == "ift_all") != (cfg.scorer == "ift_all"):
            raise ConfigError(
                f"ablate.arms.{name}: scorer ift_all trains its own warm-up model; set it in "
                "the base config for every arm or for none"
            )
        out[name] = arm
    return out


def _value(cfg: Config, dotted: str) -> Any:
    node: Any = cfg.model_dump(mode="json")
    for part in dotted.split("."):
        node = node[part]
    return node


def shared_stages(arm: Config, earlier: Config) -> list[str]:
    """The round-1 stage names (``/``-ending ones are prefixes) ``arm`` can adopt from an
    earlier arm: those whose settings, and all settings of the stages before, agree."""
    out: list[str] = []
    keys: list[str] = []
    for stage, added in ROUND1_CHAIN:
        keys += added
        if any(_value(arm, k) != _value(earlier, k) for k in keys):
            break
        out.append(stage)
    return out


def score_sources(arm: Config, done: list[ArmResult]) -> list[Path]:
    """The earlier arms whose round-1 utilities hold for ``arm``: every arm starts round 1 from
    the same warm-up, so a candidate's U depends only on the scorer (an arm that refines
    differently rescores its new refinements, not the shared drafts)."""
    return [earlier.dir for earlier in done if earlier.cfg.scorer == arm.scorer]


def adopt(target: Path, source: Path, prefixes: list[str] | tuple[str, ...]) -> list[str]:
    """Adopt into run ``target`` every stage of run ``source`` named by ``prefixes`` (exact
    names, or prefixes ending in ``/``) that ``target`` has not finished; returns their names."""
    mine, theirs = Manifest(target), Manifest(source)
    taken = []
    for stage in theirs.stages:
        wanted = any(stage == p or (p.endswith("/") and stage.startswith(p)) for p in prefixes)
        if wanted and not mine.done(stage):
            mine.adopt(stage, theirs)
            taken.append(stage)
    return taken


@dataclass(frozen=True)
class ArmResult:
    """A finished (or partly finished) arm: its config and run directory."""

    name: str
    cfg: Config
    dir: Path


def _correct(run_dir: Path, tag: str, key: str) -> dict[str, float] | None:
    try:
        return {p.id: float(p.correct) for p in RunDir(run_dir).predictions(tag, key)}
    except FileNotFoundError:
        return None


def _answers(run_dir: Path, tag: str, key: str) -> dict[str, str | None]:
    return {p.id: p.extracted for p in RunDir(run_dir).predictions(tag, key)}


def table(arms: list[ArmResult], n_boot: int, seed: int) -> dict[str, Any]:
    """Per arm and stage (warm-up, round 1, …): the variants' mean accuracy with its bootstrap
    interval, the paired change over the warm-up and over the reference arm (the first) at the
    same stage, the variants' disagreement on held-out questions, and pairs kept."""
    ref = arms[0]
    keys = [f"v{k}" for k in range(ref.cfg.variants.count)]

    def mean_correct(arm: ArmResult, tag: str) -> dict[str, float] | None:
        cols = [_correct(arm.dir, tag, k) for k in keys]
        if any(c is None for c in cols):
            return None
        ids = sorted(cols[0])  # type: ignore[arg-type]
        return {i: sum(c[i] for c in cols) / len(cols) for i in ids}  # type: ignore[index]

    def paired(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
        ids = sorted(before)
        d = stats.paired_difference([before[i] for i in ids], [after[i] for i in ids], n_boot, seed)
        return {"delta": d.delta, "ci95": [d.ci_low, d.ci_high], "n": d.n}

    warm = mean_correct(ref, "warmup")
    rows: list[dict[str, Any]] = []
    if warm is None:
        return {"reference": ref.name, "rows": rows}
    rows.append(_row("warm-up (no round)", "warmup", warm, None, None, ref, keys, n_boot, seed))
    for arm in arms:
        for r in range(1, arm.cfg.rounds + 1):
            tag = f"round{r}"
            now = mean_correct(arm, tag)
            if now is None:
                continue
            ref_now = mean_correct(ref, tag)
            vs_ref = paired(ref_now, now) if ref_now is not None and arm is not ref else None
            rows.append(
                _row(arm.name, tag, now, paired(warm, now), vs_ref, arm, keys, n_boot, seed)
            )
    return {"reference": ref.name, "rows": rows}


def _row(
    name: str,
    tag: str,
    correct: dict[str, float],
    vs_warmup: dict[str, Any] | None,
    vs_reference: dict[str, Any] | None,
    arm: ArmResult,
    keys: list[str],
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    acc = stats.accuracy(list(correct.values()), n_boot, seed)
    answers = [_answers(arm.dir, tag, k) for k in keys]
    ids = sorted(answers[0])
    disagree = sum(len({a[i] for a in answers}) > 1 for i in ids) / max(1, len(ids))
    return {
        "arm": name,
        "stage": tag,
        "accuracy": acc.accuracy,
        "ci95": [acc.ci_low, acc.ci_high],
        "n": acc.n,
        "vs_warmup": vs_warmup,
        "vs_reference": vs_reference,
        "disagreement": disagree,
        "pairs": _pairs_kept(arm.dir, tag, keys) if tag != "warmup" else None,
    }


def _pairs_kept(run_dir: Path, tag: str, keys: list[str]) -> list[int] | None:
    path = run_dir / "manifest.json"
    stage = f"{tag}/pairs"
    stages = json.loads(path.read_text()).get("stages", {}) if path.exists() else {}
    if stage not in stages:
        return None
    return [int(stages[stage]["pairs"][k]["kept"]) for k in keys]


def _ci(value: dict[str, Any] | None) -> str:
    if value is None:
        return "—"
    lo, hi = value["ci95"]
    return f"{value['delta']:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def rows_for_print(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The table as header and string rows (terminal and markdown)."""
    header = [
        "arm",
        "stage",
        "accuracy [95% CI]",
        "vs warm-up (paired)",
        f"vs {result['reference']} (paired)",
        "disagree",
        "pairs v0/v1…",
    ]
    rows = []
    for r in result["rows"]:
        lo, hi = r["ci95"]
        rows.append(
            [
                r["arm"],
                r["stage"],
                f"{r['accuracy']:.3f} [{lo:.3f}, {hi:.3f}]",
                _ci(r["vs_warmup"]),
                _ci(r["vs_reference"]),
                f"{r['disagreement']:.2f}",
                "/".join(map(str, r["pairs"])) if r["pairs"] else "—",
            ]
        )
    return header, rows


def markdown(result: dict[str, Any]) -> str:
    header, rows = rows_for_print(result)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def plot_input(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{stage: {arm: {accuracy, ci95}}}`` for :func:`coalition.run.plots.accuracy_per_round`; the
    warm-up is every arm's starting point."""
    out: dict[str, dict[str, Any]] = {}
    arms = [r["arm"] for r in result["rows"] if r["stage"] != "warmup"]
    for r in result["rows"]:
        if r["stage"] == "warmup":
            out["warmup"] = {a: r for a in dict.fromkeys(arms)}
        else:
            out.setdefault(r["stage"], {})[r["arm"]] = r
    return out
