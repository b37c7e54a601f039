"""Pair selection and the selective filter against hand-worked cases."""

import pytest

from coalition.method import pairs as P


def cand(variant, u, text=None, stage="generate", guide=None):
    return P.Candidate("q", variant, stage, text or f"r{variant}", guide=guide, utility=u)


def test_generation_pair_best_vs_worst_and_filter():
    cands = [cand(0, 0.2), cand(1, 0.7), cand(2, 0.4)]
    d = P.select_generation(cands, u0=0.5)
    assert d.kept and (d.best.variant, d.worst.variant) == (1, 0)
    # best not above U0: dropped with the filter, kept without it
    assert P.select_generation(cands, u0=0.7).reason == "best_not_above_u0"
    assert P.select_generation(cands, u0=0.9, use_filter=False).kept


def test_min_utility_floor_drops_pairs_whose_chosen_side_is_unlikely():
    # best 0.4 beats U0 = 0.1 and the worst, but stays under a 0.5 floor: a best-of-wrong pair
    cands = [cand(0, 0.05), cand(1, 0.4)]
    assert P.select_generation(cands, u0=0.1).kept
    assert P.select_generation(cands, u0=0.1, min_utility=0.5).reason == "best_below_min_utility"
    assert P.select_generation(cands, u0=0.1, min_utility=0.4).kept  # the floor is inclusive
    assert P.select_generation(cands, u0=0.1, use_filter=False, min_utility=0.5).kept
    draft = cand(1, 0.1, "draft")
    refs = [cand(0, 0.3, "a", "refine", 1), cand(1, 0.2, "b", "refine", 1)]
    assert P.select_refinement(refs, draft).kept
    d = P.select_refinement(refs, draft, min_utility=0.5)
    assert d.reason == "best_below_min_utility"
    assert P.select_refinement(refs, draft, use_filter=False, min_utility=0.5).kept


def test_generation_ties_and_too_few():
    assert P.select_generation([cand(0, 0.3), cand(1, 0.3)], u0=0.0).reason == "tie"
    assert P.select_generation([cand(0, 0.9, "same"), cand(1, 0.1, "same")], u0=0.0).reason == "tie"
    assert P.select_generation([cand(0, 0.3)], u0=0.0).reason == "too_few_candidates"


def test_refinement_pair_needs_best_above_draft():
    draft = cand(1, 0.5, "draft")
    refs = [cand(0, 0.6, "a", "refine", 1), cand(1, 0.3, "b", "refine", 1)]
    d = P.select_refinement(refs, draft)
    assert d.kept and (d.best.text, d.worst.text) == ("a", "b")
    low = [cand(0, 0.45, "a", "refine", 1), cand(1, 0.3, "b", "refine", 1)]
    assert P.select_refinement(low, draft).reason == "best_not_above_draft"
    assert P.select_refinement(low, draft, use_filter=False).kept


def test_single_refinement_is_paired_with_its_draft():
    draft = cand(0, 0.2, "draft")
    d = P.select_refinement([cand(0, 0.6, "better", "refine", 0)], draft)
    assert d.kept and (d.best.text, d.worst.text) == ("better", "draft")
    d = P.select_refinement([cand(0, 0.1, "worse", "refine", 0)], draft)
    assert d.reason == "best_not_above_draft"


def test_unscored_candidate_is_an_error():
    with pytest.raises(ValueError, match="not scored"):
        P.select_generation([cand(0, None), cand(1, 0.2)], 0.0)


def test_partition_is_disjoint_covering_and_seeded():
    qids = [f"q{i}" for i in range(23)]
    parts = P.partition(qids, 4, seed=7)
    flat = [q for p in parts for q in p]
    assert sorted(flat) == sorted(qids) and len(set(flat)) == 23
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert parts == P.partition(qids, 4, seed=7) and parts != P.partition(qids, 4, seed=8)


def test_roles():
    assert [P.parts_of(k) for k in range(3)] == [(0, 1), (2, 3), (4, 5)]
    assert P.guide_of(2, 3, "cross") == 0 and P.guide_of(2, 3, "self") == 2
    assert P.refiners_of(1, 3, "cross") == [0, 1, 2] and P.refiners_of(1, 3, "self") == [1]
