"""Sweep files, their expansion into trial configs, per-trial resources and the results
(table, CSV, plot, best config) — the pure side of sweeps, no Ray."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from coalition.run import config
from coalition.run.config import ConfigError
from sweeps import results as R
from sweeps import spec as S
from tests.conftest import REPO

SWEEPS = REPO / "configs" / "sweeps"
SMOKE_SWEEP = SWEEPS / "smoke.yaml"


def base(**extra) -> dict:
    """A small valid sweep over the tiny model (as a mapping, to be changed per test)."""
    raw = {
        "name": "t",
        "base": "configs/smoke.yaml",
        "models": [{"family": "tiny", "name_or_path": "builtin:tiny"}],
        "space": {"sro.beta": [0.1, 0.5]},
    }
    raw.update(extra)
    return raw


# ---------------------------------------------------------------------- files in the repo


def test_smoke_sweep_expands_to_four_tiny_trials_each_with_its_run_dir():
    sweep = S.load(SMOKE_SWEEP)
    configs = S.check_trials(sweep)
    assert sorted((c.sro.beta, c.refine) for c in configs) == [
        (0.1, "cross"), (0.1, "none"), (0.5, "cross"), (0.5, "none"),
    ]  # fmt: skip
    cfg = S.trial_config(sweep, {"model": "tiny", "sro.beta": 0.5, "refine": "none"}, "/x/t1")
    assert cfg.model.name_or_path == "builtin:tiny" and cfg.run_dir == "/x/t1"
    assert (cfg.sro.beta, cfg.refine, cfg.rounds, cfg.task.n_test) == (0.5, "none", 1, 4)
    assert sweep.sweep_dir() == Path("runs/sweeps/smoke")


@pytest.mark.parametrize("name", ["smoke.yaml", "local.yaml", "gpu-families.yaml"])
def test_every_sweep_file_validates(name):
    sweep = S.load(SWEEPS / name)
    assert S.check_trials(sweep)


def test_gpu_sweep_covers_families_and_sizes_with_resources_growing_with_size():
    sweep = S.load(SWEEPS / "gpu-families.yaml")
    sizes = {
        m.family: sorted(x.size_b for x in sweep.models if x.family == m.family)
        for m in sweep.models
    }
    assert sizes == {
        "qwen2.5": [0.5, 1.5, 7.0, 14.0],
        "llama3.2": [1.0, 3.0],
        "mistral": [7.0],
        "phi3.5": [3.8],
    }
    need = {}
    for m in sweep.models:
        cfg = S.trial_config(sweep, {"model": m.label, "sro.beta": 0.1, "sro.lr": 1e-5,
                                     "refine": "cross"}, "/r")  # fmt: skip
        assert cfg.ray.train_use_gpu and cfg.ray.generator_gpus > 0
        need[m.size_b] = S.trial_resources(cfg, sweep.resources.driver_cpus).total()
    assert need[0.5]["GPU"] < need[7.0]["GPU"]  # small models share GPUs
    assert need[0.5]["CPU"] < need[7.0]["CPU"] < need[14.0]["CPU"]
    assert sweep.search.algorithm == "random" and sweep.scheduler.kind == "asha"


# ---------------------------------------------------------------------- schema errors


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"serach": {}}, "serach: unknown key 'serach' (did you mean 'search'?); allowed: base,"),
        (
            {"search": {"algorithm": "bayes"}},
            "search.algorithm: Input should be 'grid', 'random' or 'optuna'",
        ),
        (
            {"models": [{"famly": "x", "name_or_path": "builtin:tiny"}]},
            "models[0].famly: unknown key 'famly' (did you mean 'family'?); allowed: family,",
        ),
        (
            {"space": {"sro.betta": [0.1]}},
            "trial tiny {'sro.betta': 0.1}: sro.betta: unknown key 'betta' (did you mean 'beta'?)",
        ),
        (
            {"space": {"refine": ["cross", "sideways"]}},
            "refine: Input should be 'cross', 'self' or 'none'",
        ),
        (
            {"space": {"sro.lr": {"loguniform": [1e-5, 1e-3]}}},
            "space.sro.lr: search.algorithm grid takes lists of values only (got loguniform)",
        ),
        (
            {"space": {"sro.lr": {"loguniform": [0, 1e-3]}}, "search": {"algorithm": "random"}},
            "sro.lr: loguniform: low must be above 0",
        ),
        ({"space": {"sro": {"beta": [0.1]}}}, "write nested keys dotted, e.g. sro.beta"),
        ({"overrides": {"run_dir": "/x"}}, "overrides.run_dir: set by the sweep itself"),
        (
            {"models": [{"family": "x", "name_or_path": "org/mystery-model"}]},
            "models[0]: cannot tell the size of 'org/mystery-model' from its name; set params_b",
        ),
        (
            {"models": [{"family": "a", "name_or_path": "builtin:tiny"}] * 2},
            "models: labels must be unique, ['tiny'] repeat; set name",
        ),
        ({"base": "configs/nope.yaml"}, "configs/nope.yaml does not exist"),
        ({"name": "a b"}, "name: String should match pattern"),
    ],
)
def test_sweep_errors_name_the_key_and_what_is_allowed(change, expected):
    with pytest.raises(ConfigError) as err:
        S.validate(base(**change))
    assert expected in str(err.value)


def test_cli_overrides_reach_space_and_sections():
    raw = S.apply_overrides(
        base(), ["space.sro.beta=[0.3]", "overrides.task.n_test=2", "resources.driver_cpus=1"]
    )
    sweep = S.validate(raw)
    assert sweep.space["sro.beta"].values == [0.3]
    assert sweep.overrides == {"task.n_test": 2} and sweep.resources.driver_cpus == 1.0


# ---------------------------------------------------------------------- expansion


@pytest.mark.parametrize(
    "name, size",
    [
        ("Qwen/Qwen2.5-0.5B-Instruct", 0.5),
        ("Qwen/Qwen2.5-14B-Instruct", 14.0),
        ("meta-llama/Llama-3.2-1B-Instruct", 1.0),
        ("meta-llama/Llama-3.2-3B-Instruct", 3.0),
        ("mistralai/Mistral-7B-Instruct-v0.3", 7.0),
        ("microsoft/Phi-3.5-mini-instruct", 3.8),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", 0.135),
        ("builtin:smollm2-135m-instruct", 0.135),
        ("builtin:tiny", 0.001),
        ("/models/ckpt", None),
    ],
)
def test_model_size_from_its_name(name, size):
    assert S.model_size_b(name) == size


def test_search_space_grid_versus_optuna():
    grid = S.search_space(S.validate(base()))
    assert grid["model"].kind == "grid" and grid["sro.beta"].kind == "grid"
    opt = S.search_space(
        S.validate(base(search={"algorithm": "optuna", "num_samples": 3},
                        space={"sro.beta": [0.1, 0.5], "sro.lr": {"loguniform": [1e-5, 1e-3]}}))
    )  # fmt: skip
    assert opt["model"].kind == "choice" and opt["sro.beta"].kind == "choice"  # optuna can't grid
    assert opt["sro.lr"].kind == "loguniform"


def test_layers_apply_in_order_size_rule_then_model_then_sampled():
    sweep = S.validate(
        base(
            overrides={"sro.lr": 1e-4, "ray.scorer_cpus": 0.25},
            models=[
                {"family": "tiny", "name_or_path": "builtin:tiny", "overrides": {"sro.lr": 2e-4}},
                {"family": "tiny", "name": "big", "name_or_path": "builtin:tiny", "params_b": 7},
            ],
            resources={
                "by_size": [
                    {"up_to_b": 1, "overrides": {"sro.lr": 9e-4, "ray.scorer_cpus": 0.75}},
                    {"up_to_b": 8, "overrides": {"ray.scorer_cpus": 1.5}},
                ]
            },
            space={"sro.beta": [0.1, 0.5], "ray.generator_cpus": [0.25]},
        )
    )
    small = S.trial_config(
        sweep, {"model": "tiny", "sro.beta": 0.5, "ray.generator_cpus": 0.25}, "/r"
    )
    # the model's own override beats the size rule, which beats the sweep-wide one
    assert (small.sro.lr, small.ray.scorer_cpus, small.sro.beta) == (2e-4, 0.75, 0.5)
    big = S.trial_config(sweep, {"model": "big", "sro.beta": 0.1, "ray.generator_cpus": 0.25}, "/r")
    assert (big.sro.lr, big.ray.scorer_cpus, big.ray.generator_cpus) == (1e-4, 1.5, 0.25)
    with pytest.raises(ConfigError, match="model 'nope': not in this sweep; allowed: tiny, big"):
        S.trial_config(sweep, {"model": "nope"}, "/r")


# ---------------------------------------------------------------------- resources


def test_trial_resources_hold_actors_in_the_group_and_train_workers_beside_it():
    cfg = config.load(REPO / "configs/smoke.yaml")  # 2 variants, 0.5 CPU actors, 1 CPU trainers
    need = S.trial_resources(cfg, driver_cpus=0.5)
    assert need.bundles == [{"CPU": 0.5}, {"CPU": 0.5}, {"CPU": 0.5}, {"CPU": 0.5}]
    assert need.train == {"CPU": 2.0} and need.total() == {"CPU": 4.0}
    ift = S.trial_resources(cfg.model_copy(update={"scorer": "ift_all"}), 0.5)
    assert ift.train == {"CPU": 3.0}  # the warm-up also trains M_IFT at the same time
    gpu = cfg.model_copy(
        update={"ray": cfg.ray.model_copy(update={"generator_gpus": 0.5, "train_use_gpu": True})}
    )
    g = S.trial_resources(gpu, 1.0)
    assert g.bundles[1] == {"CPU": 0.5, "GPU": 0.5} and g.train == {"CPU": 2.0, "GPU": 2.0}
    assert g.total()["GPU"] == 3.5


def test_actor_bundles_cannot_fragment():
    """Actors land in any bundle with room: with bundles sized per actor (1, 1, 2 CPUs) two
    generators can fill the scorer's; equal bundles always leave one free for the next."""
    cfg = config.load(REPO / "configs/default.yaml")  # generators 1 CPU, scorer 2
    need = S.trial_resources(cfg, driver_cpus=0.5)
    actors = need.bundles[1:]
    assert len(actors) == cfg.variants.count + 1 and all(b == {"CPU": 2.0} for b in actors)
    # worst case: every generator goes to the same bundle while it has room
    free = [b["CPU"] for b in actors]
    for size in [cfg.ray.generator_cpus] * cfg.variants.count + [cfg.ray.scorer_cpus]:
        fits = [i for i, f in enumerate(free) if f >= size]
        assert fits, "an actor found no bundle"
        free[min(fits, key=lambda i: free[i])] -= size  # tightest fit, like the failure seen


def test_max_concurrent_leaves_room_for_every_trials_train_workers():
    small = S.TrialResources([{"CPU": 1}, {"CPU": 1}], {"CPU": 1})
    large = S.TrialResources([{"CPU": 1}, {"CPU": 1, "GPU": 1}], {"CPU": 2, "GPU": 2})
    assert S.max_concurrent({"CPU": 6}, [small]) == 2
    assert S.max_concurrent({"CPU": 5.9}, [small]) == 1
    assert S.max_concurrent({"CPU": 64, "GPU": 8}, [small, large]) == 2  # GPUs limit
    assert S.max_concurrent({"CPU": 8}, [large]) == 1  # no GPUs yet (autoscaling): one
    assert S.max_concurrent({"CPU": 8}, [large], explicit=4) == 4


# ---------------------------------------------------------------------- results


def acc(*values: float) -> dict:
    return {f"v{i}": {"accuracy": v, "ci95": [0, 1], "n": 10} for i, v in enumerate(values)}


def test_round_report_is_the_mean_over_variants():
    row = R.round_report(2, acc(0.2, 0.6))
    assert row == {
        "round": 2, "accuracy": pytest.approx(0.4), "accuracy_best_variant": 0.6,
        "accuracy_v0": 0.2, "accuracy_v1": 0.6,
    }  # fmt: skip


def results() -> list[R.TrialResult]:
    return [
        R.TrialResult("a", "tiny", "tiny", 0.001, {"sro.beta": 0.1}, "TERMINATED",
                      {0: 0.1, 1: 0.3}, 61.0),
        R.TrialResult("b", "SmolLM2", "smollm2", 0.135, {"sro.beta": 0.5}, "TERMINATED",
                      {0: 0.4, 1: 0.35}, 200.0),
        R.TrialResult("c", "SmolLM2-b", "smollm2", 0.36, {"sro.beta": 0.1}, "TERMINATED",
                      {0: 0.2}, 90.0),  # stopped early by ASHA after the warm-up
        R.TrialResult("d", "tiny", "tiny", 0.001, {"sro.beta": 0.5}, "ERROR", {}, 3.0, "boom"),
    ]  # fmt: skip


def test_best_round_and_best_trial():
    a, b, c, d = results()
    assert (a.best_round, a.best_accuracy) == (1, 0.3)
    assert (b.best_round, b.best_accuracy) == (0, 0.4)
    assert d.best_round is None and R.best(results()).trial == "b"
    tie = R.TrialResult("t", "m", "f", 1.0, {}, "TERMINATED", {0: 0.5, 1: 0.5})
    assert tie.best_round == 0  # the earlier round on ties
    assert R.best([d]) is None


def test_table_csv_and_markdown(tmp_path):
    header, rows = R.table(results())
    assert header == ["trial", "family", "model", "params_b", "sro.beta", "acc_r0", "acc_r1",
                      "best_round", "best_acc", "wall_s", "status"]  # fmt: skip
    assert rows[0] == ["a", "tiny", "tiny", "0.001", "0.1", "0.100", "0.300", "1", "0.300", "61",
                       "TERMINATED"]  # fmt: skip
    assert rows[2][6] == "" and rows[3][-4:] == ["", "", "3", "ERROR"]
    R.write_csv(results(), tmp_path / "r.csv")
    back = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert [r["trial"] for r in back] == ["a", "b", "c", "d"] and back[1]["acc_r0"] == "0.400"
    md = R.markdown(results()).splitlines()
    assert md[0].startswith("| trial | family |") and len(md) == 2 + 4


def test_plot_accuracy_vs_size(tmp_path):
    R.plot_accuracy_vs_size(results(), tmp_path / "p.png", title="t")
    data = (tmp_path / "p.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    R.plot_accuracy_vs_size([], tmp_path / "empty.png")  # no finished trial: still a plot
    assert (tmp_path / "empty.png").stat().st_size > 1000


def test_best_config_reruns_the_best_trial_at_its_best_round(tmp_path):
    sweep = S.load(SMOKE_SWEEP)
    top = R.TrialResult("x1", "tiny", "tiny", 0.001, {"sro.beta": 0.5, "refine": "none"},
                        "TERMINATED", {0: 0.25, 1: 0.5})  # fmt: skip
    cfg = S.trial_config(sweep, {"model": "tiny", **top.params}, tmp_path / "trial")
    R.write_best(top, cfg, tmp_path / "best.yaml", "smoke")
    text = (tmp_path / "best.yaml").read_text()
    assert text.startswith(
        "# Best trial of sweep smoke: x1 (tiny), held-out accuracy 0.500 at round 1"
    )
    again = config.load(tmp_path / "best.yaml")  # a valid config for jobs/train.py
    assert (again.sro.beta, again.refine, again.rounds, again.run_dir) == (0.5, "none", 1, None)
    assert again.model.name_or_path == "builtin:tiny"


# ---------------------------------------------------------------------- the command line


ENV = {**os.environ, "RAY_ADDRESS": ""}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "sweeps/sweep.py"), *args],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_cli_config_error_is_one_line_and_exit_2(tmp_path):
    proc = run_cli("--config", str(SMOKE_SWEEP), f"run_dir={tmp_path}", "space.sro.betta=[1]")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: trial tiny") and "did you mean 'beta'" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "tune").exists()


def test_cli_refuses_to_resume_a_sweep_with_other_settings(tmp_path):
    sweep = S.load(SMOKE_SWEEP, [f"run_dir={tmp_path}"])
    (tmp_path / "sweep.yaml").write_text(S.dump(sweep))
    proc = run_cli("--config", str(SMOKE_SWEEP), f"run_dir={tmp_path}", "space.sro.beta=[0.3]")
    assert proc.returncode == 2 and "space.sro.beta.values differ" in proc.stderr, proc.stderr
    data = yaml.safe_load((tmp_path / "sweep.yaml").read_text())
    assert data["space"]["sro.beta"]["values"] == [0.1, 0.5]  # left as it was
    assert json.loads(json.dumps(data))["version"] == S.SCHEMA_VERSION
