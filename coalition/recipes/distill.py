"""Fine-tune-CoT (Ho et al., 2023) as resumable stages.

1. The teacher writes ``teacher.samples`` rationales per train question with two-stage zero-shot
   CoT (diverse reasoning at ``teacher.temperature``, greedy answer stage), chunk by chunk: each
   chunk is its own stage, so a failing endpoint or a kill loses at most the chunk in flight.
2. Samples whose answer is the gold one (and whose rationale states no other) are kept.
3. The student (``model``) is fine-tuned on them (SFT; LoRA or full) under Ray Train.
4. Teacher, student base and student are evaluated on held-out questions, with intervals.

The kept rationales can seed COALITION's warm-up: ``warmup.rationales_from: <this run_dir>``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from coalition.data import prompts
from coalition.data.records import Example, Prediction
from coalition.engines.models import resolve
from coalition.groups.group import Group
from coalition.groups.layout import Member
from coalition.method.teachers import (
    CotSample,
    EngineTeacher,
    OpenAITeacher,
    Teacher,
    TeacherSample,
)
from coalition.method.training import settings_from
from coalition.recipes.base import Log, Recipe
from coalition.run import progress, stats
from coalition.run.checkpoints import load_state
from coalition.run.config import Config, ConfigError
from coalition.run.preflight import check_train_size
from coalition.run.rundir import read_records, write_json, write_records


def members(cfg: Config) -> list[Member]:
    """The student (trained), its base (frozen, for the "before" evaluation), and the teacher
    when it is a local model (on the student's engine when it is the same model)."""
    student = resolve(cfg.model.name_or_path)
    out = [Member("base", student), Member("student", student, trained=True)]
    if cfg.teacher.kind == "hf":
        out.append(Member("teacher", resolve(cfg.teacher.model)))
    return out


def build_teacher(cfg: Config, team: Group) -> Teacher:
    """The teacher of ``cfg.teacher``: the team's "teacher" member, or an HTTP endpoint."""
    t = cfg.teacher
    if t.kind == "hf":
        return EngineTeacher(
            lambda texts, params: team.generate({"teacher": texts}, params)["teacher"],
            team.tokenizer_of("teacher"),
            cfg.model.chat_template,
            t.max_new_tokens,
            t.answer_tokens,
            t.top_p,
        )
    if not t.base_url:
        raise ConfigError("teacher.base_url: needed with teacher.kind: openai")
    return OpenAITeacher(
        t.base_url,
        t.model,
        os.environ.get(t.api_key_env),
        t.api,
        t.max_new_tokens,
        t.answer_tokens,
        t.top_p,
        t.timeout_s,
        t.max_retries,
        t.concurrency,
    )


def judge(
    task: Any, ex: Example, sample: CotSample, index: int, filter: bool = True
) -> TeacherSample:
    """Whether a teacher sample is kept: its answer matches gold, and its rationale does not
    itself state another answer (it becomes the student's target). ``filter=False`` keeps
    every non-empty sample."""
    extracted = task.extract(f"{prompts.ANSWER_PREFIX} {sample.answer.strip()}")
    stated = task.extract(sample.rationale)
    kept = bool(sample.rationale.strip()) and (
        not filter
        or (task.is_correct(extracted, ex) and (stated is None or task.is_correct(stated, ex)))
    )
    return TeacherSample(
        task.name,
        ex.id,
        ex.question,
        ex.answer,
        index,
        sample.rationale.strip(),
        sample.answer.strip(),
        extracted,
        kept,
        sample.tokens,
    )


class Distill(Recipe):
    """One Fine-tune-CoT run over a run directory."""

    def __init__(
        self, cfg: Config, team: Group, teacher: Teacher, run_dir: Path, log: Log = progress.echo
    ):
        super().__init__(cfg, team, run_dir, log)
        self.team, self.teacher = team, teacher
        train = self.task.load("train")
        check_train_size(cfg, "distill", len(train))
        self.questions = train[: cfg.distill.n]
        self.tok = team.tokenizer_of("student")

    # ------------------------------------------------------------------ teacher

    def chunks(self) -> list[list[Example]]:
        n = self.cfg.teacher.chunk
        return [self.questions[i : i + n] for i in range(0, len(self.questions), n)]

    def chunk_path(self, i: int) -> Path:
        return self.dir.teacher_chunk(i)

    def write_chunk(self, i: int, examples: list[Example]) -> dict[str, Any]:
        t = self.cfg.teacher
        written = self.teacher.write(
            [ex.question for ex in examples], t.samples, t.temperature, self.cfg.seed + i
        )
        records = [
            judge(self.task, ex, s, j, self.cfg.distill.filter)
            for ex, samples in zip(examples, written, strict=True)
            for j, s in enumerate(samples)
        ]
        write_records(self.chunk_path(i), records)
        return {"samples": len(records), "kept": sum(r.kept for r in records)}

    def collect(self) -> dict[str, Any]:
        records = [
            r
            for i in range(len(self.chunks()))
            for r in read_records(self.chunk_path(i), TeacherSample)
        ]
        write_records(self.dir.teacher_samples, records)
        questions = {r.qid for r in records if r.kept}
        return {
            "samples": len(records),
            "kept": sum(r.kept for r in records),
            "questions": len(self.questions),
            "questions_kept": len(questions),
            "tokens": sum(r.tokens for r in records),
        }

    def evaluate_teacher(self) -> dict[str, Any]:
        """The teacher's own held-out accuracy: one greedy two-stage zero-shot CoT sample."""
        written = self.teacher.write([ex.question for ex in self.test], 1, 0.0, self.cfg.seed)
        preds = []
        for ex, (s,) in zip(self.test, written, strict=True):
            r = judge(self.task, ex, s, 0)
            preds.append(
                Prediction(
                    ex.id,
                    ex.question,
                    ex.answer,
                    f"{prompts.ANSWER_PREFIX} {r.answer}",
                    r.extracted,
                    self.task.is_correct(r.extracted, ex),
                    r.rationale,
                    r.tokens,
                )
            )
        write_records(self.dir.eval_file("teacher", "teacher"), preds)
        acc = stats.accuracy([p.correct for p in preds], self.cfg.evaluate.bootstrap, self.cfg.seed)
        self.log(f"[eval] teacher: {acc}")
        return {
            "accuracy": {
                "teacher": {"accuracy": acc.accuracy, "ci95": [acc.ci_low, acc.ci_high], "n": acc.n}
            }
        }

    # ------------------------------------------------------------------ student

    def student_rows(self) -> dict[str, Any]:
        """SFT rows from the kept samples (each distinct rationale once per question)."""
        kept = [r for r in read_records(self.dir.teacher_samples, TeacherSample) if r.kept]
        seen: set[tuple[str, str]] = set()
        rows = []
        fmt = self.task.answer_format
        for r in kept:
            if (r.qid, r.rationale) in seen:
                continue
            seen.add((r.qid, r.rationale))
            for mode in self.cfg.distill.modes:
                reads = r.rationale if mode == "answer_given_rationale" else None
                prompt = prompts.render(
                    prompts.build(mode, r.question, fmt, reads), self.tok, self.chat
                )
                rows.append(
                    {"prompt": prompt, "completion": prompts.target(mode, r.gold, r.rationale)}
                )
        if not rows:
            raise ConfigError(
                f"distill: the teacher kept no rationale for any of {len(self.questions)} "
                "questions; raise teacher.samples or distill.n, or use a stronger teacher"
            )
        write_json(self.dir.student_file("rows.json"), rows)
        return {"rows": len(rows), "rationales": len(seen)}

    def train_student(self) -> dict[str, Any]:
        rows = json.loads((self.dir.student_file("rows.json")).read_text())
        settings = settings_from(self.cfg.distill, self.cfg.seed, self.dir.tensorboard("student"))
        state, metrics = self.team.train("sft", "student", None, rows, settings)
        self.save("student", state, 1)
        return {"rows": len(rows), **metrics}

    def push_student(self) -> None:
        if self.team.versions().get("student") != 1:
            state, key, version = load_state(self.dir.state("student", 1))
            self.team.push("student", state, version)
            self.log(f"[push] {key} -> version {version}")

    # ------------------------------------------------------------------ the run

    def run(self) -> dict[str, Any]:
        if self.cfg.evaluate.include_base:
            self.stage("eval/base", lambda: self.evaluate("base", ["base"]))
        for i, examples in enumerate(self.chunks()):
            self.stage(f"teacher/chunk{i:04d}", lambda i=i, ex=examples: self.write_chunk(i, ex))
        self.stage("teacher/samples", self.collect)
        if self.cfg.distill.evaluate_teacher:
            self.stage("eval/teacher", self.evaluate_teacher)
        self.stage("student/data", self.student_rows)
        self.stage("student/train", self.train_student)
        self.push_student()
        self.stage("eval/student", lambda: self.evaluate("student", ["student"]))
        return self.summarise()

    def summarise(self) -> dict[str, Any]:
        from coalition.run.plots import accuracy_per_round

        info = self.manifest.stages
        acc = {
            stage.split("/")[1]: info[stage]["accuracy"]
            for stage in ("eval/base", "eval/teacher", "eval/student")
            if stage in info
        }
        kept = info["teacher/samples"]
        summary: dict[str, Any] = {
            "job": "distill",
            "task": self.cfg.task.name,
            "student": self.cfg.model.name_or_path,
            "teacher": {"kind": self.cfg.teacher.kind, "model": self.cfg.teacher.model},
            "method": self.cfg.evaluate.method,
            "teacher_samples": {
                "kept": kept["kept"],
                "total": kept["samples"],
                "rate": kept["kept"] / max(1, kept["samples"]),
                "questions_kept": kept["questions_kept"],
                "questions": kept["questions"],
            },
            "accuracy": acc,
            "stage_seconds": {name: s.get("seconds") for name, s in info.items()},
        }
        if "base" in acc:
            summary["gain_over_base"] = self.gain(("base", "base"), ("student", "student"))
        write_json(self.dir.summary_file, summary)
        accuracy_per_round(
            {k: {k: v[k]} for k, v in acc.items()},
            self.dir.accuracy_plot,
            title=f"Fine-tune-CoT on {self.cfg.task.name}",
        )
        return summary
