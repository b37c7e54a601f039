"""Multi-agent discussion on the tiny model with two random LoRA variants (in-process)."""

from __future__ import annotations

import pytest

from coalition.data.tasks import get_task
from coalition.engines.base import SamplingParams
from coalition.method.discussion import discuss, majority, seats
from tests.conftest import two_variant_workers

PARAMS = SamplingParams(max_new_tokens=10)
SPEC = {
    "name": "basic_arithmetic",
    "n_train": 0,
    "n_test": 5,
    "seed": 0,
    "params": {"max_digits": 1},
}


class Recording:
    """The real workers, with every call's prompts kept (to check what agents were shown)."""

    def __init__(self, workers):
        self.workers, self.tokenizer, self.calls = workers, workers.tokenizer, []

    def generate(self, jobs, params):
        outs = self.workers.generate(jobs, params)
        self.calls.append((jobs, params, outs))
        return outs

    def features(self, prompts):
        return self.workers.features(prompts)


@pytest.fixture(scope="module")
def workers(tiny_path):
    return two_variant_workers(tiny_path)


@pytest.fixture(scope="module")
def task_and_examples():
    task = get_task(**SPEC)
    return task, task.load("test")


def test_majority_ignores_silence_and_breaks_ties_by_the_earlier_agent():
    assert majority(["3", None, "4", "4"]) == "4"
    assert majority(["5", "4", None]) == "5"
    assert majority([None, " "]) is None


def test_seats_count_agents_per_model():
    assert seats(["v0", "v1", "v0", "base", "v0"]) == [0, 0, 1, 0, 2]


def test_one_greedy_agent_without_rounds_is_cot_evaluation(workers, task_and_examples):
    task, examples = task_and_examples
    out = discuss(workers, task, examples, ["v1"], 0, PARAMS)
    preds = workers.evaluate(["v1"], SPEC, examples, "cot", PARAMS, True)["v1"]
    assert [d.rationales[0] for d in out] == [p.rationale for p in preds]
    assert [d.answers[0][0] for d in out] == [p.extracted for p in preds]
    assert [d.correct[0] for d in out] == [p.correct for p in preds]


def test_agents_read_each_others_solutions_and_vote(workers, task_and_examples):
    task, examples = task_and_examples
    models = Recording(workers)
    sampled = SamplingParams(max_new_tokens=10, temperature=1.0, seed=3)
    out = discuss(models, task, examples, ["v0", "v1", "v0"], 2, sampled)
    assert all(len(d.answers) == 3 and all(len(r) == 3 for r in d.answers) for d in out)
    assert all(d.majority[r] == majority(d.answers[r]) for d in out for r in range(3))
    # per round: seat 0 (v0 and v1 in one call) and seat 1 (the second v0) write, then answer
    assert len(models.calls) == 3 * 4
    writes = [c for c in models.calls if c[1].temperature > 0]
    assert len({c[1].seed for c in writes}) == 6  # every (round, seat) samples with its own seed
    # in round 1 the first agent (v0, seat 0) sees its own and the other two agents' round-0
    # solutions to question 0: v1's from the seat-0 call, the second v0's from the seat-1 call
    own = writes[0][2]["v0"][0][0].text
    v1 = writes[0][2]["v1"][0][0].text
    second_v0 = writes[1][2]["v0"][0][0].text
    shown = writes[2][0]["v0"][0]
    assert "Others said" in shown
    assert f"Your solution: {own.strip()}" in shown
    assert f"(1) {v1.strip()}" in shown and f"(2) {second_v0.strip()}" in shown
    assert out[0].tokens > 0
