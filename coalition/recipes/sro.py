"""The COALITION recipe as resumable stages: warm-up, then rounds of
generate → refine → score → select pairs → SRO (DPO) → push → evaluate.

Every stage writes its outputs into the run directory atomically and is then recorded in the
manifest; a rerun with the same ``run_dir`` skips finished stages and reads their outputs back,
so a crash or ``kill -9`` loses at most the stage in flight. Generation is seeded per stage, so a
resumed run reaches the same pairs as an uninterrupted one.

The recipe only talks to :class:`coalition.groups.group.Group`; whether those are Ray actors and
Ray Train jobs or in-process engines is the caller's choice.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from coalition.data import prompts
from coalition.data.records import Example
from coalition.engines import sampling
from coalition.groups.group import Group
from coalition.method import controller as C
from coalition.method import pairs as P
from coalition.method import scoring, warmup
from coalition.method.training import settings_from
from coalition.method.variants import BASE, variant_key
from coalition.recipes.base import Log, Recipe
from coalition.run import progress, stats
from coalition.run.checkpoints import load_state
from coalition.run.config import Config
from coalition.run.preflight import check_train_size
from coalition.run.rundir import RunDir, read_records, write_json, write_records

OnEval = Callable[[int, dict[str, Any]], None]


class Run(Recipe):
    """One COALITION run over a run directory (stages, resume, metrics, summary)."""

    def __init__(
        self,
        cfg: Config,
        workers: Group,
        run_dir: Path,
        log: Log = progress.echo,
        on_eval: OnEval | None = None,
        scores_from: list[Path] | None = None,
    ):
        """``on_eval(round, accuracy)`` is called after the warm-up (round 0) and each round's
        held-out evaluation, also for stages a resumed run reads back (e.g. to report to Tune).
        ``scores_from``: runs whose round-1 utilities hold for this run too (an ablation's
        earlier arms: the same warm-up and scorer); a candidate they scored is not rescored."""
        super().__init__(cfg, workers, run_dir, log)
        self.on_eval = on_eval
        self.scores_from = scores_from or []
        self.K = cfg.variants.count
        self.keys = [variant_key(k) for k in range(self.K)]
        self.tok = workers.tokenizer
        train = self.task.load("train")
        check_train_size(cfg, "train", len(train))
        self.warm_qs = train[: cfg.warmup.n]
        self.pool_source = train[cfg.warmup.n :]

    def sync(self, version: int) -> None:
        """Make every variant (and M_IFT) serve its saved state of ``version``."""
        wanted = {key: version for key in self.keys}
        if self.cfg.scorer == "ift_all":
            wanted["ift"] = 1
        self.dir.serve_states(self.workers, wanted, self.log)

    def render(self, mode: str, ex: Example, reads: str | None = None) -> str:
        prompt = prompts.build(mode, ex.question, self.task.answer_format, reads)  # type: ignore[arg-type]
        return prompts.render(prompt, self.tok, self.chat)

    # ------------------------------------------------------------------ warm-up

    def warmup_items(self) -> dict[str, Any]:
        cfg = self.cfg.warmup

        def sample_base(examples: list[Example], params: Any) -> list[Any]:
            texts = [self.render("rationale", ex) for ex in examples]
            return self.workers.generate({BASE: texts}, params)[BASE]

        params = sampling(self.cfg.generation, self.cfg.seed)
        items, missing, source = warmup.source(
            cfg, self.task, self.warm_qs, sample_base, params, self.cfg.seed
        )
        parts = P.partition([it.example.id for it in items], self.K, self.cfg.seed)
        by_id = {it.example.id: it for it in items}
        for k, ids in enumerate(parts):
            rows = warmup.rows([by_id[i] for i in ids], self.task, cfg.modes, self.tok, self.chat)
            write_json(self.dir.warmup_file(f"rows-{self.keys[k]}.json"), rows)
        if self.cfg.scorer == "ift_all":
            rows = warmup.rows(items, self.task, cfg.modes, self.tok, self.chat)
            write_json(self.dir.warmup_file("rows-ift.json"), rows)
        return {"source": source, "questions": len(items), "without_rationale": missing}

    def warmup_train(self, key: str) -> dict[str, Any]:
        rows = json.loads((self.dir.warmup_file(f"rows-{key}.json")).read_text())
        salt = self.keys.index(key) if key in self.keys else self.K
        settings = settings_from(
            self.cfg.warmup, self.cfg.seed + salt, self.dir.tensorboard(f"warmup-{key}")
        )
        state, metrics = self.workers.train("sft", key, None, rows, settings)
        self.save(key, state, 1)
        return {"rows": len(rows), **metrics}

    # ------------------------------------------------------------------ a round

    def pool(self, r: int) -> list[Example]:
        """Round ``r``'s questions: the next ``pool`` train questions after warm-up (cycling)."""
        src, n = self.pool_source, self.cfg.pool
        start = ((r - 1) * n) % len(src)
        return [src[(start + i) % len(src)] for i in range(n)]

    def layout(self, r: int) -> tuple[list[list[str]], dict[str, int], dict[str, int]]:
        """2K disjoint parts; per question the variant that learns from it (gen or refine;
        with ``pairs: all`` every variant learns from every generation pair)."""
        pool = self.pool(r)
        parts = P.partition([ex.id for ex in pool], 2 * self.K, self.cfg.seed + r)
        gen_owner, ref_owner = {}, {}
        for k in range(self.K):
            g, f = P.parts_of(k)
            gen_owner.update({q: k for q in parts[g]})
            ref_owner.update({q: k for q in parts[f]})
        return parts, gen_owner, ref_owner

    def round_params(self, r: int, salt: int) -> Any:
        return replace(sampling(self.cfg.generation, self.cfg.seed + 1000 * r + salt), n=1)

    def generate(self, r: int) -> dict[str, Any]:
        pool = self.pool(r)
        texts = [self.render("rationale", ex) for ex in pool]
        params = replace(self.round_params(r, 1), n=self.cfg.samples)
        outs = self.workers.generate({key: texts for key in self.keys}, params)
        cands = [
            P.Candidate(ex.id, k, "generate", g.text, tokens=g.tokens, sample=j)
            for k, key in enumerate(self.keys)
            for i, ex in enumerate(pool)
            for j, g in enumerate(outs[key][i])
        ]
        write_records(self.dir.round_file(r, "drafts.jsonl"), cands)
        return {"candidates": len(cands), "versions": self.workers.versions()}

    def refine(self, r: int) -> dict[str, Any]:
        if self.cfg.refine == "none":
            write_records(self.dir.round_file(r, "refinements.jsonl"), [])
            return {"candidates": 0}
        pool = {ex.id: ex for ex in self.pool(r)}
        drafts = {(c.qid, c.variant): c for c in self._read(r, "drafts") if c.sample == 0}
        _, _, ref_owner = self.layout(r)
        jobs: dict[str, list[str]] = {key: [] for key in self.keys}
        meta: dict[str, list[tuple[str, int]]] = {key: [] for key in self.keys}
        for qid, owner in sorted(ref_owner.items()):
            guide = P.guide_of(owner, self.K, self.cfg.refine)
            draft = drafts[(qid, guide)].text
            for k in P.refiners_of(guide, self.K, self.cfg.refine):
                jobs[self.keys[k]].append(self.render("refine", pool[qid], draft))
                meta[self.keys[k]].append((qid, guide))
        jobs = {k: v for k, v in jobs.items() if v}
        outs = self.workers.generate(jobs, self.round_params(r, 2))
        cands = [
            P.Candidate(
                qid, self.keys.index(key), "refine", g[0].text, guide=guide, tokens=g[0].tokens
            )
            for key, gens in outs.items()
            for (qid, guide), g in zip(meta[key], gens, strict=True)
        ]
        write_records(self.dir.round_file(r, "refinements.jsonl"), cands)
        return {"candidates": len(cands)}

    def score(self, r: int) -> dict[str, Any]:
        pool = {ex.id: ex for ex in self.pool(r)}
        cands = self._read(r, "drafts") + self._read(r, "refinements")
        known, known_u0 = self.known_utilities(r)
        todo = [key for key in dict.fromkeys((c.qid, c.text) for c in cands) if key not in known]
        todo_u0 = [qid for qid in pool if qid not in known_u0]
        fmt = self.task.answer_format
        reqs = [scoring.request(pool[qid], text, fmt, self.tok, self.chat) for qid, text in todo]
        reqs += [scoring.request(pool[qid], None, fmt, self.tok, self.chat) for qid in todo_u0]
        utils = self.workers.utilities([p for p, _ in reqs], [t for _, t in reqs]) if reqs else []
        known.update(zip(todo, utils, strict=False))
        known_u0.update(zip(todo_u0, utils[len(todo) :], strict=True))
        scored = [replace(c, utility=known[(c.qid, c.text)]) for c in cands]
        write_records(self.dir.round_file(r, "scored.jsonl"), scored)
        write_json(self.dir.round_file(r, "u0.json"), {qid: known_u0[qid] for qid in pool})
        mean_u = sum(c.utility or 0.0 for c in scored) / max(1, len(scored))
        return {"scored": len(scored), "requests": len(reqs), "mean_u": mean_u}

    def known_utilities(self, r: int) -> tuple[dict[tuple[str, str], float], dict[str, float]]:
        """U of each (question, text) and U0 of each question that ``scores_from`` runs
        computed in round ``r`` (round 1 only: later rounds start from different weights)."""
        known: dict[tuple[str, str], float] = {}
        u0: dict[str, float] = {}
        for run in self.scores_from if r == 1 else []:
            source = RunDir(run)
            if not source.round_file(1, "scored.jsonl").exists():
                continue
            for c in read_records(source.round_file(1, "scored.jsonl"), P.Candidate):
                if c.utility is not None:
                    known[(c.qid, c.text)] = c.utility
            u0.update(json.loads(source.round_file(1, "u0.json").read_text()))
        return known, u0

    def select(self, r: int) -> dict[str, Any]:
        pool = {ex.id: ex for ex in self.pool(r)}
        scored = read_records(self.dir.round_file(r, "scored.jsonl"), P.Candidate)
        u0 = json.loads((self.dir.round_file(r, "u0.json")).read_text())
        _, gen_owner, ref_owner = self.layout(r)
        by_qid: dict[str, list[P.Candidate]] = {}
        refs: dict[str, list[P.Candidate]] = {}
        for c in scored:
            (by_qid if c.stage == "generate" else refs).setdefault(c.qid, []).append(c)
        # the draft a guide hands on for refinement is its first sample
        drafts = {(c.qid, c.variant): c for cs in by_qid.values() for c in cs if c.sample == 0}
        floor = self.cfg.filter_min_utility
        kept: list[P.Pair] = []
        reasons: dict[str, Counter] = {key: Counter() for key in self.keys}
        for qid, owner in sorted(gen_owner.items()):
            d = P.select_generation(by_qid[qid], u0[qid], self.cfg.filter, floor)
            learners = range(self.K) if self.cfg.pairs == "all" else [owner]
            for k in learners:
                reasons[self.keys[k]][f"generate:{d.reason}"] += 1
                if d.kept:
                    kept.append(self._pair(k, "generate", self.render("rationale", pool[qid]), d))
        if self.cfg.refine != "none":
            for qid, k in sorted(ref_owner.items()):
                guide = P.guide_of(k, self.K, self.cfg.refine)
                draft = drafts[(qid, guide)]
                d = P.select_refinement(refs.get(qid, []), draft, self.cfg.filter, floor)
                reasons[self.keys[k]][f"refine:{d.reason}"] += 1
                if d.kept:
                    kept.append(
                        self._pair(k, "refine", self.render("refine", pool[qid], draft.text), d)
                    )
        write_records(self.dir.round_file(r, "pairs.jsonl"), kept)
        counts = {
            key: {"kept": sum(p.variant == k for p in kept), **dict(sorted(reasons[key].items()))}
            for k, key in enumerate(self.keys)
        }
        return {"pairs": counts}

    @staticmethod
    def _pair(k: int, stage: str, prompt: str, d: P.Decision) -> P.Pair:
        assert d.best is not None and d.worst is not None
        return P.Pair(
            d.best.qid,
            k,
            stage,
            prompt,
            d.best.text,
            d.worst.text,
            float(d.best.utility or 0.0),
            float(d.worst.utility or 0.0),
        )

    def update(self, r: int, k: int) -> dict[str, Any]:
        key = self.keys[k]
        rows = [
            {"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}
            for p in read_records(self.dir.round_file(r, "pairs.jsonl"), P.Pair)
            if p.variant == k
        ]
        state, _, _ = load_state(self.dir.state(key, r))  # the variant at round start
        if not rows:
            self.save(key, state, r + 1)  # nothing to learn: same weights, next version
            return {"pairs": 0, "skipped": True}
        settings = settings_from(
            self.cfg.sro, self.cfg.seed + 1000 * r + k, self.dir.tensorboard(f"round{r}-{key}")
        )
        if self.cfg.update == "rft":  # the same chosen rationales as SFT targets, no rejected side
            rows = [{"prompt": x["prompt"], "completion": x["chosen"]} for x in rows]
        kind = "dpo" if self.cfg.update == "sro" else "sft"
        new_state, metrics = self.workers.train(kind, key, state, rows, settings)
        self.save(key, new_state, r + 1)
        return {"pairs": len(rows), "update": self.cfg.update, **metrics}

    # ------------------------------------------------------------------ controller

    def routing_examples(self) -> list[C.RoutingExample]:
        """Every finished round's routing decisions (who should write, who should refine)."""
        out: list[C.RoutingExample] = []
        for r in range(1, self.cfg.rounds + 1):
            path = self.dir.round_file(r, "scored.jsonl")
            if not path.exists():
                continue
            pool = {ex.id: ex for ex in self.pool(r)}

            def prompt_of(qid: str, draft: str | None, pool=pool) -> str:
                if draft is None:
                    return self.render("rationale", pool[qid])
                return self.render("refine", pool[qid], draft)

            out += C.routing_examples(read_records(path, P.Candidate), self.K, prompt_of)
        return out

    def train_controller(self) -> dict[str, Any]:
        """Fit the controller on the base model's features of every routing decision, save
        it in ``run_dir/controller/`` with its held-out routing accuracy."""
        examples = self.routing_examples()
        feats = self.workers.features([e.prompt for e in examples])
        c = self.cfg.controller
        ctrl = C.fit(
            examples, feats, self.K, c.holdout, c.weight_decay, c.steps, c.lr, self.cfg.seed
        )
        ctrl.save(self.dir.controller_dir)
        write_records(self.dir.controller_dir / "examples.jsonl", examples)
        report = C.report_dict(ctrl)
        for decision, rep in report.items():
            self.log(f"[controller] {decision}: {_routing_line(rep)}")
        return {"examples": len(examples), "routing": report}

    def controller_stage(self) -> str:
        """The stage name: the controller is refit when a resumed run adds rounds."""
        return f"controller/rounds{self.cfg.rounds}"

    def _read(self, r: int, name: str) -> list[P.Candidate]:
        return read_records(self.dir.round_file(r, f"{name}.jsonl"), P.Candidate)

    # ------------------------------------------------------------------ the run

    def run(self) -> dict[str, Any]:
        if self.cfg.evaluate.include_base:
            self.stage("eval/base", lambda: self.evaluate("base", [BASE]))
        self.stage("warmup/data", self.warmup_items)
        warm_keys = self.keys + (["ift"] if self.cfg.scorer == "ift_all" else [])
        self.stages(
            [(f"warmup/train/{key}", lambda key=key: self.warmup_train(key)) for key in warm_keys]
        )
        self.sync(1)
        self._evaluated(
            0, self.stage("eval/warmup", lambda: self.evaluate("warmup", list(self.keys)))
        )
        for r in range(1, self.cfg.rounds + 1):
            self.round(r)
        if self.cfg.controller.enabled and self.cfg.rounds:
            self.stage(self.controller_stage(), self.train_controller)
        return self.summarise()

    def round(self, r: int) -> None:
        """Round ``r``: the variants serve version r, and serve r+1 when it ends."""
        self.sync(r)
        self.stage(f"round{r}/generate", lambda: self.generate(r))
        self.stage(f"round{r}/refine", lambda: self.refine(r))
        self.stage(f"round{r}/score", lambda: self.score(r))
        self.stage(f"round{r}/pairs", lambda: self.select(r))
        self.stages(
            [
                (f"round{r}/update/{self.keys[k]}", lambda k=k: self.update(r, k))
                for k in range(self.K)
            ]
        )
        self.sync(r + 1)
        info = self.stage(f"round{r}/eval", lambda: self.evaluate(f"round{r}", list(self.keys)))
        self._evaluated(r, info)

    def _evaluated(self, r: int, info: dict[str, Any]) -> None:
        if self.on_eval is not None:
            self.on_eval(r, info["accuracy"])

    def gains(self) -> dict[str, dict[str, Any]]:
        """Per round: each variant's accuracy change over its warm-up on the same questions,
        and the variants' mean, with paired-bootstrap 95% intervals (the learning signal)."""

        def correct(tag: str, key: str) -> dict[str, float]:
            return {p.id: float(p.correct) for p in self.dir.predictions(tag, key)}

        warm = {key: correct("warmup", key) for key in self.keys}
        ids = sorted(warm[self.keys[0]])
        out: dict[str, dict[str, Any]] = {}
        for r in range(1, self.cfg.rounds + 1):
            after = {key: correct(f"round{r}", key) for key in self.keys}
            cols = {
                key: ([warm[key][i] for i in ids], [after[key][i] for i in ids])
                for key in self.keys
            }
            cols["mean"] = (
                [sum(warm[k][i] for k in self.keys) / self.K for i in ids],
                [sum(after[k][i] for k in self.keys) / self.K for i in ids],
            )
            out[f"round{r}"] = {}
            for name, (b, a) in cols.items():
                d = stats.paired_difference(b, a, self.cfg.evaluate.bootstrap, self.cfg.seed)
                out[f"round{r}"][name] = {"delta": d.delta, "ci95": [d.ci_low, d.ci_high], "n": d.n}
        return out

    def summarise(self) -> dict[str, Any]:
        from coalition.run.plots import accuracy_per_round

        info = self.manifest.stages
        acc: dict[str, dict[str, Any]] = {}
        if "eval/base" in info:
            acc["base"] = info["eval/base"]["accuracy"]
        acc["warmup"] = info["eval/warmup"]["accuracy"]
        for r in range(1, self.cfg.rounds + 1):
            acc[f"round{r}"] = info[f"round{r}/eval"]["accuracy"]
        summary = {
            "job": "train",
            "task": self.cfg.task.name,
            "model": self.cfg.model.name_or_path,
            "variants": self.K,
            "rounds": self.cfg.rounds,
            "method": self.cfg.evaluate.method,
            "accuracy": acc,
            "gain_over_warmup": self.gains(),
            "pairs": {
                f"round{r}": info[f"round{r}/pairs"]["pairs"] for r in range(1, self.cfg.rounds + 1)
            },
            "warmup": info["warmup/data"],
            "controller": info.get(self.controller_stage(), {}).get("routing"),
            "stage_seconds": {name: s.get("seconds") for name, s in info.items()},
            "versions": self.workers.versions(),
            "actor_versions": self.workers.actor_versions(),
        }
        write_json(self.dir.summary_file, summary)
        accuracy_per_round(acc, self.dir.accuracy_plot, title=f"COALITION on {self.cfg.task.name}")
        return summary


def _routing_line(rep: dict[str, Any]) -> str:
    if rep["accuracy"] is None:
        return f"{rep['n_train']} train decisions, none held out"
    fallback = (
        "; routes by the majority choice: the head did not beat it"
        if rep.get("routes") == "majority"
        else ""
    )
    return (
        f"held-out routing accuracy {rep['accuracy']:.2f} (majority {rep['majority']:.2f}, "
        f"chance {rep['chance']:.2f}; n={rep['n_holdout']}, train {rep['n_train']}){fallback}"
    )
