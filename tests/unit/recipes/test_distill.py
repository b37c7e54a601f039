"""Fine-tune-CoT in process (LocalGroup, tiny model): keeping samples, a whole run, and a run
whose OpenAI-compatible teacher fails mid-way, then resumes without losing finished chunks."""

from __future__ import annotations

import json

import pytest

from coalition.data.records import Example
from coalition.data.tasks import get_task
from coalition.engines import EngineSpec
from coalition.engines.base import LoraSpec
from coalition.groups.layout import team_layout
from coalition.groups.local import LocalGroup
from coalition.method import warmup
from coalition.method.teachers import CotSample, OpenAITeacher, TeacherError, TeacherSample
from coalition.recipes.distill import Distill, build_teacher, judge, members
from coalition.run import config as config_mod
from coalition.run.rundir import read_records
from tests.conftest import SMOKE
from tests.openai_server import OpenAIServer

SMALL = [
    "teacher.model=builtin:tiny",
    "teacher.samples=2",
    "teacher.max_new_tokens=8",
    "teacher.answer_tokens=4",
    "teacher.chunk=2",
    "distill.n=4",
    "distill.filter=false",
    "distill.batch_size=4",
    "task.n_test=4",
    "generation.max_new_tokens=8",
]


def test_judge_keeps_samples_that_reach_gold_and_state_nothing_else():
    task = get_task("basic_arithmetic", 0, 1, 0, {})
    ex = Example("q", "2 + 3 =", "5")
    assert judge(task, ex, CotSample("2 + 3 = 5.", " 5.", 3), 0).kept
    assert not judge(task, ex, CotSample("2 + 3 = 6.", " 6.", 3), 0).kept
    # the right final answer after a rationale that states a wrong one is not a target
    assert not judge(task, ex, CotSample("So the answer is 6.", " 5.", 3), 0).kept
    assert not judge(task, ex, CotSample("  ", " 5.", 3), 0).kept
    assert judge(task, ex, CotSample("2 + 3 = 6.", " 6.", 3), 0, filter=False).kept


@pytest.fixture(scope="module")
def cfg():
    return config_mod.load(SMOKE, SMALL)


@pytest.fixture(scope="module")
def team(cfg):
    spec = LoraSpec(r=4, alpha=8, target_modules=("q_proj", "v_proj"))
    return LocalGroup(team_layout(members(cfg), "lora"), spec, EngineSpec(batch_size=8))


def test_a_local_teacher_run_trains_the_student(cfg, team, tmp_path):
    summary = Distill(cfg, team, build_teacher(cfg, team), tmp_path).run()
    samples = read_records(tmp_path / "teacher" / "samples.jsonl", TeacherSample)
    assert len(samples) == 4 * 2 and all(s.kept for s in samples)
    assert summary["teacher_samples"]["total"] == 8
    assert set(summary["accuracy"]) == {"teacher", "student"}
    assert summary["accuracy"]["student"]["student"]["n"] == 4
    rows = json.loads((tmp_path / "student" / "rows.json").read_text())
    # one row per mode per distinct rationale, each ending in the gold answer statement
    assert len(rows) == 2 * len({(s.qid, s.rationale) for s in samples})
    golds = {s.gold for s in samples}
    assert all(any(r["completion"].endswith(f"The answer is {g}.") or r["completion"] == f" {g}."
                   for g in golds) for r in rows)  # fmt: skip
    assert team.versions() == {"student": 1}
    # the kept rationales seed a COALITION warm-up by question text
    task = get_task(**Distill(cfg, team, build_teacher(cfg, team), tmp_path).task_spec)
    kept = warmup.distilled(tmp_path, task)
    questions = [ex for ex in task.load("train")[:4]]
    items, missing = warmup.from_rationales(questions, kept, seed=0, correct_drafts=1.0)
    assert missing == 0 and [it.rationale for it in items] == [kept[q.question] for q in questions]


def test_an_endpoint_that_fails_loses_no_finished_chunk_and_a_rerun_resumes(cfg, team, tmp_path):
    with OpenAIServer() as server:
        ocfg = config_mod.override(cfg, {"teacher.kind": "openai", "teacher.model": "tiny",
                                         "teacher.base_url": server.base_url,
                                         "teacher.max_retries": 1, "teacher.timeout_s": 5,
                                         "distill.evaluate_teacher": False})  # fmt: skip
        teacher = build_teacher(ocfg, team)
        assert isinstance(teacher, OpenAITeacher)
        run = Distill(ocfg, team, teacher, tmp_path)
        run.stage("teacher/chunk0000", lambda: run.write_chunk(0, run.chunks()[0]))
        first = (tmp_path / "teacher" / "chunks" / "0000.jsonl").read_text()
        server.fail_next(1000, 503)
        with pytest.raises(TeacherError, match=server.base_url):
            Distill(ocfg, team, teacher, tmp_path).run()
        assert not (tmp_path / "teacher" / "chunks" / "0001.jsonl").exists()
        server.reset()
        before = server.requests
        Distill(ocfg, team, teacher, tmp_path).run()
        # only the second chunk's two questions were asked again (stage 1 + stage 2 each)
        assert server.requests - before == 2 * 2
        assert (tmp_path / "teacher" / "chunks" / "0000.jsonl").read_text() == first
        assert len(read_records(tmp_path / "teacher" / "samples.jsonl", TeacherSample)) == 8
        teacher.close()
