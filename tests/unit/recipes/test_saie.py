"""SAIE in process (LocalGroup, tiny model): remarks, targets, the learner's versions."""

from __future__ import annotations

import random

import pytest

from coalition.data.tasks import get_task
from coalition.engines.base import LoraSpec
from coalition.groups.layout import team_layout
from coalition.groups.local import LocalGroup
from coalition.recipes.saie import SAIE, Exchange, members, near_miss, stances
from coalition.run import config as config_mod
from coalition.run.rundir import read_records
from tests.conftest import SMOKE


def test_near_miss_is_wrong_and_plausible():
    rng = random.Random(0)
    for gold in ["7", "-13", "120"]:
        wrong = near_miss(gold, None, rng)
        assert wrong != gold and abs(int(wrong) - int(gold)) <= 10
    assert near_miss("B", ("A", "B", "C"), rng) in {"A", "C"}
    assert near_miss("yes", None, rng) == "not yes"


def test_stances_mix_exactly_by_ratio_and_are_seeded():
    qids = [f"q{i}" for i in range(10)]
    s = stances(qids, 0.3, seed=1)
    assert sorted(s.values()).count("adversarial") == 3
    assert s == stances(qids, 0.3, seed=1)
    assert len({tuple(stances(qids, 0.3, seed=k).values()) for k in range(6)}) > 1
    assert set(stances(qids, 0.0, 0).values()) == {"supportive"}


class Spy(LocalGroup):
    """The real in-process team, keeping every update's rows."""

    updates: list = []

    def train(self, kind, name, state, rows, s):
        self.updates.append((kind, name, state is None, rows))
        return super().train(kind, name, state, rows, s)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cfg = config_mod.load(
        SMOKE, ["rounds=1", "saie.pool=8", "saie.remark_tokens=8", "saie.batch_size=4"]
    )
    team = Spy(
        team_layout(members(cfg), "lora"),
        LoraSpec(r=4, alpha=8, target_modules=("q_proj", "v_proj")),
    )
    out = tmp_path_factory.mktemp("saie")
    return cfg, team, out, SAIE(cfg, team, out).run()


def test_a_round_trains_the_learner_on_gold_reasoning_given_the_remark(run):
    cfg, team, out, summary = run
    task = get_task(**SAIE(cfg, team, out).task_spec)
    pool = {ex.id: ex for ex in SAIE(cfg, team, out).pool(1)}
    xs = read_records(out / "round1" / "exchanges.jsonl", Exchange)
    assert len(xs) == 8 and sorted(x.stance for x in xs).count("adversarial") == 4
    for x in xs:
        ex = pool[x.qid]
        assert len(x.attempts) == cfg.saie.samples
        assert task.is_correct(x.argued, ex) == (x.stance == "supportive")
        # basic_arithmetic has worked rationales: the target is the gold one and gold answer
        assert x.target == f"{ex.rationale} The answer is {ex.answer}." or x.target.endswith(
            f"The answer is {ex.answer}."
        )
    (warm, rnd) = [u for u in team.updates if u[1] == "learner"]
    assert warm[2] and not rnd[2]  # the warm-up starts fresh, the round from the warm-up state
    rows = rnd[3]
    assert len(rows) == 8
    for row, x in zip(rows, [x for x in xs if x.target], strict=True):
        assert "Others said" in row["prompt"] and x.remark.strip() in row["prompt"]
        assert x.attempts[0].strip() in row["prompt"] and row["completion"] == x.target
    assert team.versions() == {"learner": 2}  # the partner stays frozen
    assert set(summary["accuracy"]) == {"warmup", "round1"}
    assert summary["exchanges"]["round1"]["trained_on"] == 8
    assert "round1" in summary["gain_over_warmup"]


def test_the_baseline_learns_the_same_targets_from_the_question_alone(run, tmp_path):
    """saie.baseline: the same rows and targets, but no attempt or remark in the prompt (plain
    SFT toward the gold reasoning, the paper's comparison), from the same start; evaluated on
    the same questions, after which the learner serves its own state again."""
    cfg, team, out, _ = run
    team.updates.clear()
    summary = SAIE(config_mod.override(cfg, {"saie.baseline": True}), team, tmp_path).run()
    (_, rnd, base) = [u for u in team.updates if u[1] == "learner"]
    xs = read_records(tmp_path / "round1" / "exchanges.jsonl", Exchange)
    assert xs == read_records(out / "round1" / "exchanges.jsonl", Exchange)  # same seeds
    assert [r["completion"] for r in base[3]] == [r["completion"] for r in rnd[3]]
    for row, x in zip(base[3], [x for x in xs if x.target], strict=True):
        assert "Others said" not in row["prompt"] and x.remark.strip() not in row["prompt"]
    assert (tmp_path / "states" / "baseline-v2.safetensors").exists()
    assert (tmp_path / "eval" / "round1-baseline-learner.jsonl").exists()
    assert "round1 SFT baseline" in summary["accuracy"]
    assert summary["over_baseline"]["round1"]["n"] == cfg.task.n_test
    assert team.versions() == {"learner": 2}
