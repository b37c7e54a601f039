"""The controller: routing labels from scored candidates, held-out routing accuracy, save/load."""

from __future__ import annotations

import pytest
import torch

from coalition.method import controller as C
from coalition.method.pairs import Candidate


def prompt_of(qid, draft):
    return f"solve {qid}" if draft is None else f"refine {qid}: {draft}"


def test_routing_examples_average_samples_and_need_every_variant():
    scored = [
        Candidate("q1", 0, "generate", "a", utility=0.2, sample=0),
        Candidate("q1", 0, "generate", "b", utility=0.4, sample=1),
        Candidate("q1", 1, "generate", "c", utility=0.5, sample=0),
        Candidate("q2", 0, "generate", "d", utility=0.1, sample=0),  # v1 missing: skipped
        Candidate("q1", 0, "refine", "r0", guide=1, utility=0.9),
        Candidate("q1", 1, "refine", "r1", guide=1, utility=0.3),
        Candidate("q2", 1, "refine", "r2", guide=0, utility=0.3),  # one refiner: skipped
    ]
    ex = C.routing_examples(scored, 2, prompt_of)
    assert [(e.qid, e.decision) for e in ex] == [("q1", "generate"), ("q1", "refine")]
    assert ex[0].utilities == pytest.approx((0.3, 0.5))
    assert ex[0].prompt == "solve q1"
    assert ex[1].utilities == (0.9, 0.3)
    assert ex[1].prompt == "refine q1: c"  # v1's first sample is the draft it handed on


def test_unscored_candidate_is_an_error():
    with pytest.raises(ValueError, match="not scored"):
        C.routing_examples([Candidate("q", 0, "generate", "a")], 2, prompt_of)


def test_best_set_keeps_ties():
    assert C.best_set([0.1, 0.5, 0.5]) == [1, 2]
    assert C.best_set([0.7, 0.2]) == [0]


def separable(n, seed=0):
    """Feature 0 says which variant is better; decisions alternate."""
    g = torch.Generator().manual_seed(seed)
    feats, examples = [], []
    for i in range(n):
        x = torch.randn(6, generator=g)
        better = int(x[0] > 0)
        u = (0.2, 0.8) if better else (0.8, 0.2)
        decision = "generate" if i % 2 == 0 else "refine"
        examples.append(C.RoutingExample(f"q{i // 2}", decision, f"p{i}", u))
        feats.append(x.tolist())
    return examples, feats


def test_fit_learns_a_separable_rule_and_reports_on_held_out_questions(tmp_path):
    examples, feats = separable(200)
    ctrl = C.fit(examples, feats, 2, holdout=0.25, seed=1)
    for decision in ("generate", "refine"):
        rep = ctrl.report[decision]
        assert rep.n_holdout == 25 and rep.n_train == 75
        assert rep.accuracy >= 0.9
        assert rep.chance == pytest.approx(0.5)
        assert rep.regret < 0.1
    ctrl.save(tmp_path / "c")
    again = C.Controller.load(tmp_path / "c")
    assert again.choose("generate", feats) == ctrl.choose("generate", feats)
    assert again.report == ctrl.report
    # the rule itself: feature 0 decides
    assert ctrl.choose("refine", [[3.0, 0, 0, 0, 0, 0], [-3.0, 0, 0, 0, 0, 0]]) == [1, 0]


def test_a_head_that_does_not_beat_the_majority_routes_by_the_majority(tmp_path):
    """Labels that no feature predicts: variant 1 is best 80% of the time at random, so the
    learned head cannot beat always choosing variant 1 on held-out questions; it falls back."""
    g = torch.Generator().manual_seed(0)
    examples, feats = [], []
    for i in range(200):
        u = (0.2, 0.8) if torch.rand(1, generator=g).item() < 0.8 else (0.8, 0.2)
        examples.append(C.RoutingExample(f"q{i}", "generate", f"p{i}", u))
        feats.append(torch.randn(6, generator=g).tolist())
    ctrl = C.fit(examples, feats, 2, holdout=0.3, seed=0)
    rep = ctrl.report["generate"]
    assert rep.routes == "majority" and rep.accuracy <= rep.majority
    assert set(ctrl.choose("generate", feats)) == {1}
    ctrl.save(tmp_path / "c")
    assert C.Controller.load(tmp_path / "c").report["generate"].routes == "majority"
    # a head that does beat it keeps routing
    sep, sep_feats = separable(200)
    assert {r.routes for r in C.fit(sep, sep_feats, 2, holdout=0.25).report.values()} == {"learned"}


def test_held_out_split_is_by_question():
    examples, feats = separable(40)
    ctrl = C.fit(examples, feats, 2, holdout=0.5, seed=0)
    total = sum(r.n_train + r.n_holdout for r in ctrl.report.values())
    assert total == 40
    assert ctrl.report["generate"].n_holdout == ctrl.report["refine"].n_holdout == 10


def test_a_decision_without_examples_has_no_head_and_routes_to_variant_0():
    examples, feats = separable(20)
    gen_only = [(e, f) for e, f in zip(examples, feats, strict=True) if e.decision == "generate"]
    ctrl = C.fit([e for e, _ in gen_only], [f for _, f in gen_only], 2, holdout=0.0)
    assert set(ctrl.heads) == {"generate"}
    assert ctrl.choose("refine", feats[:3]) == [0, 0, 0]


def test_fit_refuses_bad_input():
    with pytest.raises(ValueError, match="no routing examples"):
        C.fit([], [], 2)
    examples, feats = separable(4)
    with pytest.raises(ValueError, match="feature rows"):
        C.fit(examples, feats[:3], 2)
