"""SAIE (learning through supportive and adversarial interactions) as resumable stages.

A learner (trained) and a partner (frozen: the learner's own base, or another model). Warm-up
SFT first; then each round, on fresh train questions:

1. attempts — the learner writes ``saie.samples`` step-by-step attempts per question;
2. remarks  — the partner remarks on the first attempt, supportively (arguing for the gold
   answer) or adversarially (arguing for a plausible wrong one: the attempt's own wrong answer,
   else a near miss of the gold), mixed by ``saie.adversarial_ratio``;
3. data     — the target is the gold reasoning and answer given (question, attempt, remark), in
   the same prompt multi-agent discussion shows (``prompts.discuss``). Gold reasoning is the
   task's rationale, else one of the learner's attempts that reached the gold answer;
   questions with neither are skipped (counted);
4. update   — SFT of the learner from its round-start state under Ray Train, pushed to its actor;
5. eval     — held-out accuracy after the round, with a paired gain over the warm-up;
6. baseline — with ``saie.baseline``, the paper's comparison: plain SFT toward the same targets
   from the question alone, from the same start with the same rows and steps, evaluated on the
   same questions (``over_baseline`` in the summary: SAIE minus it, paired).
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from coalition.data import prompts
from coalition.data.records import Example
from coalition.engines import sampling
from coalition.engines.models import resolve
from coalition.groups.group import Group
from coalition.groups.layout import Member
from coalition.method import warmup
from coalition.method.training import settings_from
from coalition.method.variants import BASE
from coalition.recipes.base import Log, Recipe
from coalition.run import progress
from coalition.run.checkpoints import load_state
from coalition.run.config import Config
from coalition.run.preflight import check_train_size
from coalition.run.rundir import read_records, write_json, write_records

LEARNER, PARTNER = "learner", "partner"
BASELINE = "baseline"  # saved states of the plain-SFT baseline (``saie.baseline``)
BASELINE_VERSION = 1_000_000  # + round: the version the learner's adapter serves it under
_INT = re.compile(r"-?\d+")


@dataclass(frozen=True)
class Exchange:
    """One question of a round: the learner's attempts, the partner's remark, the target."""

    qid: str
    attempts: list[str]
    correct: list[bool]
    stance: str
    argued: str  # the answer the remark argues for
    remark: str
    target: str | None  # gold reasoning + answer (None: no gold reasoning, skipped)

    kind: ClassVar[str] = "saie_exchange"


def members(cfg: Config) -> list[Member]:
    """Learner (trained), partner (frozen; the learner's base unless ``saie.partner``), and the
    base for the before-training evaluation (all on one engine when they share a model)."""
    base = resolve(cfg.model.name_or_path)
    partner = resolve(cfg.saie.partner) if cfg.saie.partner else base
    return [Member(LEARNER, base, trained=True), Member(PARTNER, partner), Member(BASE, base)]


def near_miss(gold: str, options: tuple[str, ...] | None, rng: random.Random) -> str:
    """A plausible wrong answer: another option, a nearby integer, or the gold negated."""
    if options:
        others = [o for o in options if o.strip().lower() != gold.strip().lower()]
        if others:
            return rng.choice(others)
    if _INT.fullmatch(gold.strip()):
        return str(int(gold) + rng.choice([-10, -2, -1, 1, 2, 10]))
    return f"not {gold}"


def stances(qids: list[str], ratio: float, seed: int) -> dict[str, str]:
    """Supportive or adversarial per question: exactly round(ratio × n) adversarial, shuffled."""
    rng = random.Random(seed)
    n_adv = round(ratio * len(qids))
    labels = ["adversarial"] * n_adv + ["supportive"] * (len(qids) - n_adv)
    rng.shuffle(labels)
    return dict(zip(qids, labels, strict=True))


class SAIE(Recipe):
    """One SAIE run over a run directory."""

    def __init__(self, cfg: Config, team: Group, run_dir: Path, log: Log = progress.echo):
        super().__init__(cfg, team, run_dir, log)
        self.team = team
        self.tok = team.tokenizer_of(LEARNER)
        self.partner_tok = team.tokenizer_of(PARTNER)
        train = self.task.load("train")
        check_train_size(cfg, "saie", len(train))
        self.warm_qs = train[: cfg.warmup.n]
        self.pool_source = train[cfg.warmup.n :]

    def render(self, prompt: prompts.Prompt, tok: Any = None) -> str:
        return prompts.render(prompt, tok or self.tok, self.chat)

    def pool(self, r: int) -> list[Example]:
        """Round ``r``'s questions: the next ``saie.pool`` after the warm-up ones (cycling)."""
        src, n = self.pool_source, self.cfg.saie.pool
        start = ((r - 1) * n) % len(src)
        return [src[(start + i) % len(src)] for i in range(n)]

    def sync(self, version: int) -> None:
        if self.team.versions().get(LEARNER) != version:
            state, key, ver = load_state(self.dir.state(LEARNER, version))
            assert (key, ver) == (LEARNER, version), (key, ver)
            self.team.push(LEARNER, state, version)
            self.log(f"[push] {LEARNER} -> version {version}")

    # ------------------------------------------------------------------ warm-up

    def warmup_data(self) -> dict[str, Any]:
        cfg = self.cfg.warmup

        def sample_base(examples: list[Example], params: Any) -> list[Any]:
            texts = [self.rationale_prompt(ex) for ex in examples]
            return self.team.generate({BASE: texts}, params)[BASE]

        params = sampling(self.cfg.generation, self.cfg.seed)
        items, missing, source = warmup.source(
            cfg, self.task, self.warm_qs, sample_base, params, self.cfg.seed
        )
        rows = warmup.rows(items, self.task, cfg.modes, self.tok, self.chat)
        write_json(self.dir.warmup_file("rows.json"), rows)
        return {"source": source, "questions": len(items), "without_rationale": missing}

    def warmup_train(self) -> dict[str, Any]:
        rows = json.loads((self.dir.warmup_file("rows.json")).read_text())
        settings = settings_from(self.cfg.warmup, self.cfg.seed, self.dir.tensorboard("warmup"))
        state, metrics = self.team.train("sft", LEARNER, None, rows, settings)
        self.save(LEARNER, state, 1)
        return {"rows": len(rows), **metrics}

    def rationale_prompt(self, ex: Example) -> str:
        return self.render(prompts.build("rationale", ex.question, self.task.answer_format))

    # ------------------------------------------------------------------ a round

    def exchange(self, r: int) -> dict[str, Any]:
        """Attempts, remarks and targets of round ``r`` (one stage: remarks need attempts)."""
        s = self.cfg.saie
        pool = self.pool(r)
        seed = self.cfg.seed + 1000 * r
        params = replace(sampling(self.cfg.generation, seed), n=s.samples)
        attempts = self.team.generate(
            {LEARNER: [self.rationale_prompt(ex) for ex in pool]}, params
        )[LEARNER]
        rng = random.Random(seed)
        stance = stances([ex.id for ex in pool], s.adversarial_ratio, seed)
        argued, asks = [], []
        for ex, gens in zip(pool, attempts, strict=True):
            first = gens[0].text
            if stance[ex.id] == "supportive":
                claim = ex.answer
            else:  # its own wrong answer is the most plausible wrong one
                own = self.task.extract(first)
                wrong = own is not None and not self.task.is_correct(own, ex)
                claim = own if wrong else near_miss(ex.answer, ex.options, rng)
            argued.append(claim)
            asks.append(
                self.render(
                    prompts.remark(ex.question, first, stance[ex.id], claim), self.partner_tok
                )  # type: ignore[arg-type]
            )
        remark_params = replace(params, n=1, max_new_tokens=s.remark_tokens, seed=seed + 1)
        remarks = self.team.generate({PARTNER: asks}, remark_params)[PARTNER]
        records = []
        for ex, gens, claim, rem in zip(pool, attempts, argued, remarks, strict=True):
            texts = [g.text for g in gens]
            right = [self.task.is_correct(self.task.extract(t), ex) for t in texts]
            reasoning = ex.rationale or next(
                (t for t, ok in zip(texts, right, strict=True) if ok), None
            )
            target = prompts.target("rationale", ex.answer, reasoning) if reasoning else None
            records.append(Exchange(ex.id, texts, right, stance[ex.id], claim, rem[0].text, target))
        write_records(self.dir.round_file(r, "exchanges.jsonl"), records)
        used = [x for x in records if x.target]
        return {
            "questions": len(records),
            "trained_on": len(used),
            "skipped_no_reasoning": len(records) - len(used),
            "attempts_correct": sum(sum(x.correct) for x in records)
            / max(1, sum(len(x.correct) for x in records)),
            **{f"stance_{k}": v for k, v in Counter(x.stance for x in used).items()},
        }

    def update(self, r: int, baseline: bool = False) -> dict[str, Any]:
        """SFT of the learner from its round-start state toward the round's targets, given
        (question, attempt, remark); ``baseline``: the same from the question alone, saved as
        :data:`BASELINE` (the paper's comparison)."""
        pool = {ex.id: ex for ex in self.pool(r)}
        fmt = self.task.answer_format

        def prompt(x: Exchange) -> str:
            ex = pool[x.qid]
            if baseline:
                return self.rationale_prompt(ex)
            return self.render(prompts.discuss(ex.question, fmt, x.attempts[0], [x.remark]))

        rows = [
            {"prompt": prompt(x), "completion": x.target}
            for x in read_records(self.dir.round_file(r, "exchanges.jsonl"), Exchange)
            if x.target
        ]
        state, _, _ = load_state(self.dir.state(LEARNER, r))
        saved_as = BASELINE if baseline else LEARNER
        if not rows:
            self.save(saved_as, state, r + 1)
            return {"rows": 0, "skipped": True}
        tb = self.dir.tensorboard(f"round{r}" + ("-baseline" if baseline else ""))
        settings = settings_from(self.cfg.saie, self.cfg.seed + r, tb)
        new_state, metrics = self.team.train("sft", LEARNER, state, rows, settings)
        self.save(saved_as, new_state, r + 1)
        return {"rows": len(rows), **metrics}

    def evaluate_baseline(self, r: int) -> dict[str, Any]:
        """The baseline's held-out accuracy after round ``r``: served on the learner's adapter
        under a version of its own, then the learner's state goes back."""
        state, _, _ = load_state(self.dir.state(BASELINE, r + 1))
        self.team.push(LEARNER, state, BASELINE_VERSION + r)
        try:
            return self.evaluate(f"round{r}-baseline", [LEARNER])
        finally:
            self.sync(r + 1)

    # ------------------------------------------------------------------ the run

    def run(self) -> dict[str, Any]:
        if self.cfg.evaluate.include_base:
            self.stage("eval/base", lambda: self.evaluate("base", [BASE]))
        self.stage("warmup/data", self.warmup_data)
        self.stage("warmup/train", self.warmup_train)
        self.sync(1)
        self.stage("eval/warmup", lambda: self.evaluate("warmup", [LEARNER]))
        for r in range(1, self.cfg.rounds + 1):
            self.sync(r)
            self.stage(f"round{r}/exchange", lambda r=r: self.exchange(r))
            self.stage(f"round{r}/update", lambda r=r: self.update(r))
            self.sync(r + 1)
            self.stage(f"round{r}/eval", lambda r=r: self.evaluate(f"round{r}", [LEARNER]))
            if self.cfg.saie.baseline:
                self.stage(f"round{r}/baseline/update", lambda r=r: self.update(r, True))
                self.stage(f"round{r}/baseline/eval", lambda r=r: self.evaluate_baseline(r))
        return self.summarise()

    def summarise(self) -> dict[str, Any]:
        from coalition.run.plots import accuracy_per_round

        info = self.manifest.stages
        acc: dict[str, Any] = {}
        if "eval/base" in info:
            acc["base"] = info["eval/base"]["accuracy"]
        acc["warmup"] = info["eval/warmup"]["accuracy"]
        rounds = range(1, self.cfg.rounds + 1)
        for r in rounds:
            acc[f"round{r}"] = info[f"round{r}/eval"]["accuracy"]
            if f"round{r}/baseline/eval" in info:
                acc[f"round{r} SFT baseline"] = info[f"round{r}/baseline/eval"]["accuracy"]
        summary = {
            "job": "saie",
            "task": self.cfg.task.name,
            "model": self.cfg.model.name_or_path,
            "partner": self.cfg.saie.partner or self.cfg.model.name_or_path,
            "rounds": self.cfg.rounds,
            "method": self.cfg.evaluate.method,
            "accuracy": acc,
            "gain_over_warmup": {
                f"round{r}": self.gain(("warmup", LEARNER), (f"round{r}", LEARNER)) for r in rounds
            },
            "exchanges": {f"round{r}": _flat(info[f"round{r}/exchange"]) for r in rounds},
            # SAIE minus plain SFT on the same rows from the same start, same questions
            "over_baseline": {
                f"round{r}": self.gain((f"round{r}-baseline", LEARNER), (f"round{r}", LEARNER))
                for r in rounds
                if f"round{r}/baseline/eval" in info
            },
            "warmup": info["warmup/data"],
            "stage_seconds": {name: s.get("seconds") for name, s in info.items()},
            "versions": self.team.versions(),
        }
        write_json(self.dir.summary_file, summary)
        accuracy_per_round(acc, self.dir.accuracy_plot, title=f"SAIE on {self.cfg.task.name}")
        return summary


def _flat(info: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in info.items() if k not in ("finished_at", "seconds")}
