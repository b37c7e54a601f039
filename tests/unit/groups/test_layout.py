"""Where each named model lives: COALITION's layouts on Ray and in one process, and a team's."""

import pytest

from coalition.groups.layout import Member, coalition_layout, team_layout
from coalition.method.variants import BASE


def test_on_ray_each_variant_has_its_generator_and_the_scorer_serves_what_it_averages():
    lay = coalition_layout("p", "lora", "variants_mean", 2, in_process=False)
    assert list(lay.hosts) == ["v0", "v1", "scorer"] and lay.hosts["scorer"].role == "scorer"
    assert lay.models["v0"].hosts == ("v0", "scorer")  # a push reaches both
    assert lay.models[BASE].hosts == ("scorer",) and lay.models[BASE].key == BASE
    assert lay.scorer == {"scorer": ("v0", "v1")} and lay.features == "scorer"
    ift = coalition_layout("p", "lora", "ift_all", 2, in_process=False)
    assert ift.models["v0"].hosts == ("v0",) and ift.models["ift"].hosts == ("scorer",)
    assert [p.name for p in ift.models.values() if p.trained] == ["v0", "v1", "ift"]


def test_a_full_weights_scorer_keeps_no_base_unless_it_scores_with_it():
    lay = coalition_layout("p", "full", "ift_all", 2, in_process=False)
    with pytest.raises(ValueError, match="variants.mode: lora or scorer: base"):
        lay.placement(BASE)
    assert lay.features is None
    assert BASE in coalition_layout("p", "full", "base", 2, in_process=False).models


def test_in_process_lora_shares_one_engine_and_full_weights_get_one_each():
    lora = coalition_layout("p", "lora", "variants_mean", 3, in_process=True)
    assert list(lora.hosts) == [BASE]
    assert {p.hosts for p in lora.models.values()} == {(BASE,)}
    assert lora.scorer == {BASE: ("v0", "v1", "v2")}
    full = coalition_layout("p", "full", "variants_mean", 2, in_process=True)
    assert list(full.hosts) == [BASE, "v0", "v1"] and full.mode_of("v1") == "full"
    assert full.scorer == {"v0": ("v0",), "v1": ("v1",)}  # each scored on its own engine


def test_a_team_shares_an_engine_per_path_and_refuses_bad_members():
    lay = team_layout(
        [Member("learner", "a", trained=True), Member("partner", "b"), Member(BASE, "a")], "lora"
    )
    assert list(lay.hosts) == ["learner", "partner"]
    assert lay.models[BASE].hosts == ("learner",) and lay.models[BASE].key == BASE
    assert lay.models["partner"].key == BASE  # frozen: the plain model of its path
    assert lay.scorer == {} and lay.features is None
    full = team_layout([Member(BASE, "a"), Member("student", "a", trained=True)], "full")
    assert list(full.hosts) == [BASE, "student"] and full.hosts[BASE].mode == "lora"
    assert full.mode_of("student") == "full"
    with pytest.raises(ValueError, match="frozen"):
        lay.trained("partner")
    with pytest.raises(ValueError, match="unique"):
        team_layout([Member("x", "a"), Member("x", "b")], "lora")
    with pytest.raises(ValueError, match="cannot be called"):
        team_layout([Member(BASE, "a", trained=True)], "lora")
    with pytest.raises(ValueError, match="no model 'teacher'.*learner"):
        lay.placement("teacher")
