"""Deliberated inference on the tiny model with two random LoRA variants (in-process workers):
fixed roles reproduce plain CoT evaluation, routers route, the memo pays once per step."""

from __future__ import annotations

import pytest

from coalition.data.tasks import get_task
from coalition.engines.base import SamplingParams
from coalition.method import controller as C
from coalition.method.deliberation import (
    ControllerRouter,
    Fixed,
    RandomRouter,
    Steps,
    deliberate,
    direct,
    oracle,
)
from coalition.method.evaluation import evaluate
from coalition.method.suite import compare, rows, run_suite
from coalition.method.variants import BASE
from tests.conftest import two_variant_workers

PARAMS = SamplingParams(max_new_tokens=12)
SPEC = {
    "name": "basic_arithmetic",
    "n_train": 0,
    "n_test": 6,
    "seed": 0,
    "params": {"max_digits": 1},
}


@pytest.fixture(scope="module")
def workers(tiny_path):
    return two_variant_workers(tiny_path)


@pytest.fixture(scope="module")
def task_and_examples():
    task = get_task(**SPEC)
    return task, task.load("test")


def test_a_variant_alone_is_exactly_cot_evaluation(workers, task_and_examples):
    task, examples = task_and_examples
    outs = deliberate(Steps(workers, PARAMS), task, examples, Fixed("v1 alone", "v1"), 0)
    preds = workers.evaluate(["v1"], SPEC, examples, "cot", PARAMS, True)["v1"]
    assert [o.rationale for o in outs] == [p.rationale for p in preds]
    assert [o.correct for o in outs] == [p.correct for p in preds]
    assert all(o.generator == "v1" and o.refiners == [] for o in outs)


def test_direct_matches_direct_evaluation(workers, task_and_examples, tiny_engine):
    task, examples = task_and_examples
    outs = direct(Steps(workers, PARAMS), task, examples, BASE)
    preds = evaluate(tiny_engine, task, examples, "direct", PARAMS)
    assert [o.output for o in outs] == [p.output for p in preds]


def test_refine_turns_and_roles(workers, task_and_examples):
    task, examples = task_and_examples
    steps = Steps(workers, PARAMS)
    cross = deliberate(steps, task, examples, Fixed("x", "v0", "v1"), 2)
    assert all(o.generator == "v0" and o.refiners == ["v1", "v1"] for o in cross)
    self_ = deliberate(steps, task, examples, Fixed("s", "v1", "same"), 1)
    assert all(o.generator == "v1" and o.refiners == ["v1"] for o in self_)
    rnd = deliberate(steps, task, examples, RandomRouter(["v0", "v1"], seed=3), 1)
    assert {o.generator for o in rnd} <= {"v0", "v1"}
    assert all(o.tokens > 0 and o.seconds >= 0 for o in cross + self_ + rnd)


def test_controller_router_follows_the_controller(workers, task_and_examples):
    task, examples = task_and_examples
    steps = Steps(workers, PARAMS)
    # a controller that learned "v1 writes, v0 refines" from every prompt it saw
    texts = [f"prompt {i}" for i in range(8)]
    feats = workers.features(texts)
    ex = [C.RoutingExample(f"q{i}", "generate", t, (0.1, 0.9)) for i, t in enumerate(texts)]
    ex += [C.RoutingExample(f"q{i}", "refine", t, (0.9, 0.1)) for i, t in enumerate(texts)]
    ctrl = C.fit(ex, feats + feats, 2, holdout=0.0)
    outs = deliberate(steps, task, examples, ControllerRouter(ctrl, ["v0", "v1"]), 1)
    assert all(o.generator == "v1" and o.refiners == ["v0"] for o in outs)
    with pytest.raises(ValueError, match="routes 2 variants"):
        ControllerRouter(ctrl, ["v0", "v1", "v2"])


def test_steps_memoise_each_model_prompt_pair(workers, task_and_examples):
    task, examples = task_and_examples
    steps = Steps(workers, PARAMS)
    first = deliberate(steps, task, examples, Fixed("a", "v0", "v1"), 1)
    calls = len(steps._gen)
    again = deliberate(steps, task, examples, Fixed("b", "v0", "v1"), 1)
    assert len(steps._gen) == calls  # nothing new to compute
    assert [o.rationale for o in again] == [o.rationale for o in first]


def test_suite_has_every_method_and_the_oracle_bounds_them(workers, task_and_examples):
    task, examples = task_and_examples
    results = run_suite(
        Steps(workers, PARAMS), task, examples, ["v0", "v1"], None, 1, log=lambda _: None
    )
    assert list(results) == [
        "base direct",
        "base cot",
        "v0 alone",
        "v1 alone",
        "v0 self-refine",
        "v1 self-refine",
        "v0→v1 cross-refine",
        "v1→v0 cross-refine",
        "random routing",
        "oracle",
    ]
    best = max(
        sum(o.correct for o in v) for k, v in results.items() if k != "oracle" and "base" not in k
    )
    assert sum(o.correct for o in results["oracle"]) >= best
    table = rows(results, 50, 0)
    assert [r.method for r in table] == list(results) and all(r.n == len(examples) for r in table)
    vs = compare(results, "random routing", 50, 0)
    assert "random routing" not in vs and vs["oracle"]["delta"] <= 0


def test_oracle_is_correct_when_any_path_is(task_and_examples, workers):
    task, examples = task_and_examples
    steps = Steps(workers, PARAMS)
    a = deliberate(steps, task, examples, Fixed("a", "v0"), 0)
    b = deliberate(steps, task, examples, Fixed("b", "v1"), 0)
    o = oracle([a, b])
    assert [x.correct for x in o] == [p.correct or q.correct for p, q in zip(a, b, strict=True)]
    assert [x.tokens for x in o] == [p.tokens + q.tokens for p, q in zip(a, b, strict=True)]
