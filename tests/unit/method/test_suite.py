"""The serving route: what ``deliberation.routing`` serves, chosen from the run's evaluation suite
and read back from its run directory."""

from __future__ import annotations

import json

import pytest

from coalition.method.suite import Route, best_measured, choose_route, router_for
from coalition.run.config import ConfigError, load
from coalition.run.rundir import RunDir
from tests.conftest import SMOKE

KEYS = ["v0", "v1"]


def _row(method: str, accuracy: float, tokens: float = 50.0) -> dict:
    lo, hi = accuracy - 0.05, accuracy + 0.05
    return {"method": method, "accuracy": accuracy, "ci95": [lo, hi], "n": 300,
            "tokens_per_question": tokens}  # fmt: skip


def _summary(version: int = 2, refine_turns: int = 1) -> dict:
    return {
        "method": "suite",
        "version": version,
        "refine_turns": refine_turns,
        "methods": [
            _row("base direct", 0.10),
            _row("base cot", 0.06),
            _row("v0 alone", 0.29, 40.0),
            _row("v1 alone", 0.30, 40.0),
            _row("v0 self-refine", 0.30, 80.0),
            _row("v1→v0 cross-refine", 0.31, 80.0),
            _row("random routing", 0.29, 80.0),
            _row("controller routing", 0.29, 80.0),
            _row("oracle", 0.40, 80.0),
        ],
    }


def test_the_best_measured_route_is_the_most_accurate_on_the_variants_then_the_cheapest():
    best = best_measured(_summary())
    assert best.method == "v1→v0 cross-refine"  # not the oracle, which no router can run
    assert "0.310 [0.260, 0.360] on 300" in best.why and "controller routing 0.290" in best.why
    tied = _summary()
    tied["methods"][5]["accuracy"] = 0.30  # now v1 alone ties two refine routes and costs less
    assert best_measured(tied).method == "v1 alone"


def test_auto_serves_the_suite_s_route_only_where_it_measured_what_is_served():
    assert choose_route("auto", _summary(), 2, 1, True).method == "v1→v0 cross-refine"
    for summary, version, turns, says in [
        (None, 2, 1, "no evaluation suite"),
        (_summary(version=1), 2, 1, "measured version 1, this serves 2"),
        (_summary(), 2, 2, "measured refine_turns=1, this serves 2"),
    ]:
        route = choose_route("auto", summary, version, turns, True)
        assert route.method == "controller routing" and says in route.why
        assert choose_route("auto", summary, version, turns, False).method == "fixed roles"


def test_a_forced_routing_ignores_the_suite():
    for routing, method in [("controller", "controller routing"), ("random", "random routing"),
                            ("fixed", "fixed roles")]:  # fmt: skip
        route = choose_route(routing, _summary(), 2, 1, True)
        assert route == Route(method, f"deliberation.routing={routing}")


def test_router_for_gives_each_route_its_turns_and_loads_the_controller_only_for_itself():
    def no_controller():
        raise AssertionError("the controller was loaded for a route that does not use it")

    router, turns = router_for(Route("v1 alone", ""), KEYS, 1, no_controller, 0)
    assert (router.name, turns) == ("v1 alone", 0)
    router, turns = router_for(Route("v1→v0 cross-refine", ""), KEYS, 1, no_controller, 0)
    assert (router.name, turns) == ("v1→v0 cross-refine", 1)
    assert router_for(Route("fixed roles", ""), KEYS, 2, no_controller, 0)[1] == 2
    with pytest.raises(ValueError, match="not a route"):
        router_for(Route("v7 alone", ""), KEYS, 1, no_controller, 0)


def test_the_run_directory_reads_the_suite_and_says_when_it_is_damaged(tmp_path):
    run = RunDir(tmp_path)
    assert run.suite() is None
    run.evaluation_dir.mkdir()
    run.suite_file.write_text(json.dumps(_summary()))
    assert best_measured(run.suite()).method == "v1→v0 cross-refine"
    run.suite_file.write_text('{"method": "suite", "versi')
    with pytest.raises(ConfigError, match="summary.json is damaged.*rerun the suite"):
        run.suite()
    run.suite_file.write_text(json.dumps({"method": "suite", "version": 2}))
    with pytest.raises(ConfigError, match="suite's summary is damaged"):
        best_measured(run.suite())


def test_a_run_expects_a_controller_once_its_rounds_are_scored(tmp_path):
    run = RunDir(tmp_path)
    assert not run.expects_controller(load(SMOKE))
    run.round_file(1, "scored.jsonl").parent.mkdir()
    run.round_file(1, "scored.jsonl").write_text("")
    assert run.expects_controller(load(SMOKE))
    assert not run.expects_controller(load(SMOKE, ["controller.enabled=false"]))
