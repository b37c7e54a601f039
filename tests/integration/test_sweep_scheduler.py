"""The sweep driver's Tune pieces on Tune's own code: every searcher draws valid trials, and
the ASHA scheduler stops a trial behind the others (in the shared Ray session)."""

from __future__ import annotations

import pytest

from sweeps import results as R
from sweeps import spec as S
from sweeps import sweep as driver
from tests.conftest import REPO

SWEEP = REPO / "configs" / "sweeps" / "smoke.yaml"


def test_asha_stops_trials_behind_at_a_round(ray_session, tmp_path):
    """The sweep's scheduler on real Tune with trials that report like ``run_trial`` (round 0
    after warm-up, then each round): a trial behind the others at a rung is stopped there."""
    from ray import tune

    # the better trials first (one at a time), so the later ones are behind at round 1
    sweep = S.load(
        SWEEP, ["overrides.rounds=4", "space.sro.beta=[0.5, 0.1]", "space.refine=[cross]"]
    )

    def trial(params):
        for r in range(5):  # accuracy = β: the β=0.1 trials are behind at every round
            tune.report(R.round_report(r, {"v0": {"accuracy": params["sro.beta"]}}))

    grid = tune.Tuner(
        trial,
        param_space=driver.tune_space(sweep),
        tune_config=tune.TuneConfig(
            metric=R.METRIC,
            mode="max",
            search_alg=driver.searcher(sweep, 1),  # one at a time: a fixed order
            scheduler=driver.scheduler(sweep, max_rounds=4),
            reuse_actors=True,  # one trial process for both: faster
        ),
        run_config=tune.RunConfig(name="asha", storage_path=str(tmp_path), verbose=0),
    ).fit()
    last = sorted((r.config["sro.beta"], r.metrics["round"]) for r in grid)
    assert last == [(0.1, 1), (0.5, 4)] and not grid.errors  # 0.1: stopped at the first rung


@pytest.mark.parametrize("algorithm", ["grid", "random", "optuna"])
def test_searchers_draw_trials_whose_configs_validate(algorithm):
    """Tune's own search code over our space: every drawn trial is a valid config."""
    from ray.tune.search.variant_generator import generate_variants

    over = [f"search.algorithm={algorithm}", "search.num_samples=3"]
    if algorithm != "grid":
        over.append("space.sro.lr={loguniform: [1.0e-5, 1.0e-3]}")
    sweep = S.load(SWEEP, over)
    space = driver.tune_space(sweep)
    if algorithm == "optuna":
        alg = driver.searcher(sweep, 2)
        assert alg.set_search_properties("accuracy", "max", space)
        drawn = [alg.suggest(f"t{i}") for i in range(2)]
        assert alg.suggest("t2") is None  # at most 2 trials at once
    else:
        assert driver.searcher(sweep, 2).max_concurrent == 2
        drawn = [spec for _, spec in generate_variants(space, random_state=0)]
    assert drawn and all(d is not None for d in drawn)
    for params in drawn:
        cfg = S.trial_config(sweep, params, "/tmp/t")
        assert cfg.sro.beta in (0.1, 0.5) and cfg.refine in ("cross", "none")
        if algorithm != "grid":
            assert 1e-5 <= cfg.sro.lr <= 1e-3
    if algorithm == "grid":
        assert sorted((d["sro.beta"], d["refine"]) for d in drawn) == [
            (0.1, "cross"), (0.1, "none"), (0.5, "cross"), (0.5, "none"),
        ]  # fmt: skip
