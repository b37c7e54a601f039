import json

import pytest
import torch

from coalition.data.records import Example, Prediction
from coalition.run import stats
from coalition.run.rundir import Manifest, atomic_write, read_records, write_json, write_records


def test_bootstrap_interval_contains_mean_and_is_seeded():
    correct = [True] * 30 + [False] * 70
    a = stats.accuracy(correct, n_boot=2000, seed=1)
    assert a.accuracy == pytest.approx(0.3)
    assert a.ci_low < 0.3 < a.ci_high
    # binomial SE is ~0.046, so the 95% interval is about ±0.09
    assert 0.15 < a.ci_high - a.ci_low < 0.22
    assert stats.accuracy(correct, n_boot=2000, seed=1) == a


def test_all_correct_has_degenerate_interval():
    a = stats.accuracy([True] * 5)
    assert (a.accuracy, a.ci_low, a.ci_high) == (1.0, 1.0, 1.0)


def test_paired_difference_is_tighter_than_independent_intervals():
    # 100 questions; "after" fixes 12 wrong answers and breaks 2 right ones: +0.10
    before = [1.0] * 30 + [0.0] * 70
    after = [1.0] * 28 + [0.0] * 2 + [1.0] * 12 + [0.0] * 58
    d = stats.paired_difference(before, after, n_boot=2000, seed=0)
    assert d.delta == pytest.approx(0.10)
    assert 0.0 < d.ci_low < 0.10 < d.ci_high
    # independent intervals of 0.30 and 0.40 overlap; the paired one excludes zero
    assert stats.accuracy(after, 2000).ci_low < stats.accuracy(before, 2000).ci_high
    with pytest.raises(ValueError, match="aligned"):
        stats.paired_difference([1.0], [1.0, 0.0])


def test_records_roundtrip_with_schema(tmp_path):
    ex = [Example("1", "q?", "4", "because", ("a", "b"), {"k": 1})]
    write_records(tmp_path / "e.jsonl", ex)
    row = json.loads((tmp_path / "e.jsonl").read_text())
    assert row["_kind"] == "example" and row["_schema"] == 1
    assert read_records(tmp_path / "e.jsonl", Example) == ex
    with pytest.raises(ValueError, match="expected a 'prediction' record"):
        read_records(tmp_path / "e.jsonl", Prediction)


def test_bad_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(
        '{"id": "1", "question": "q", "answer": "a", "_kind": "example", "_schema": 1}\n{oops\n'
    )
    with pytest.raises(ValueError, match=r"p.jsonl:2: not valid JSON"):
        read_records(path, Example)


def test_atomic_write_leaves_no_temp_and_manifest_persists(tmp_path):
    atomic_write(tmp_path / "a.txt", "x")
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
    m = Manifest(tmp_path)
    assert not m.done("warmup")
    m.mark("warmup", n=3)
    assert Manifest(tmp_path).done("warmup") and Manifest(tmp_path).info("warmup")["n"] == 3


def test_json_files_hold_floats_without_binary_noise(tmp_path):
    mean = (0.273 + 0.323) / 2  # 0.29800000000000004 in binary
    write_json(tmp_path / "s.json", {"mean": mean, "ci": (0.1 + 0.2, 1e-15), "n": 300, "ok": True})
    text = (tmp_path / "s.json").read_text()
    assert '"mean": 0.298,' in text and "0.3," in text and "1e-15" in text
    assert json.loads(text) == {"mean": 0.298, "ci": [0.3, 1e-15], "n": 300, "ok": True}


def test_a_finished_stage_whose_outputs_are_gone_or_damaged_is_redone(tmp_path):
    from coalition.recipes.base import Recipe
    from coalition.run import config
    from coalition.run.checkpoints import save_state
    from tests.conftest import SMOKE

    class Quiet:
        parallel_updates = False

    recipe = Recipe(config.load(SMOKE), Quiet(), tmp_path, log=lambda _: None)
    calls = []

    def stage():
        calls.append(1)
        atomic_write(tmp_path / "round1" / "pairs.jsonl", "x\n")
        save_state(tmp_path / "states" / "v0-v2.safetensors", {"w": torch.ones(64)}, "v0", 2)
        return {"n": 1}

    recipe.stage("round1/pairs", stage)
    assert Manifest(tmp_path).outputs["round1/pairs"] == [
        "round1/pairs.jsonl",
        "states/v0-v2.safetensors",
    ]
    Recipe(config.load(SMOKE), Quiet(), tmp_path).stage("round1/pairs", stage)
    assert len(calls) == 1  # intact: skipped
    (tmp_path / "round1" / "pairs.jsonl").unlink()
    Recipe(config.load(SMOKE), Quiet(), tmp_path).stage("round1/pairs", stage)
    assert len(calls) == 2  # an output missing: redone
    state = tmp_path / "states" / "v0-v2.safetensors"
    state.write_bytes(state.read_bytes()[:100])
    Recipe(config.load(SMOKE), Quiet(), tmp_path).stage("round1/pairs", stage)
    assert len(calls) == 3  # a truncated state: redone
    assert Manifest(tmp_path).damaged("round1/pairs") is None


def test_run_directory_owners(tmp_path):
    from coalition.run.rundir import mark_owner, owner

    assert owner(tmp_path / "none") is None and owner(tmp_path) is None
    (tmp_path / "config.yaml").write_text("seed: 1\n")
    assert owner(tmp_path) is None  # a config but no finished stage: nothing to protect
    Manifest(tmp_path).mark("eval/base")
    mark_owner(tmp_path, "saie")
    assert owner(tmp_path) == "saie"
    (tmp_path / "run.json").unlink()
    (tmp_path / "states").mkdir()
    (tmp_path / "states" / "v0-v1.safetensors").write_bytes(b"")
    assert owner(tmp_path) == "train"  # a run from before run.json, by what it holds
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert owner(other) == "foreign"


def test_run_dir_owns_the_layout_and_reads_a_trained_run(tmp_path):
    from coalition.run.checkpoints import save_state
    from coalition.run.config import ConfigError, dump, load
    from coalition.run.rundir import RunDir, mark_owner
    from tests.conftest import SMOKE

    run = RunDir(tmp_path / "run")
    with pytest.raises(ConfigError, match="does not exist"):
        run.trained()
    run.path.mkdir()
    atomic_write(run.config_file, dump(load(SMOKE)))
    mark_owner(run.path, "train")
    Manifest(run.path).mark("warmup/data")
    with pytest.raises(ConfigError, match="no trained variants yet"):
        run.trained()
    state = {"w": torch.zeros(2)}
    for version in (1, 2):
        for key in ("v0", "v1"):
            save_state(run.state(key, version), state, key, version)
    save_state(run.state("v0", 3), state, "v0", 3)  # v1 has no version 3: not served
    cfg, version = run.trained()
    assert version == 2 and cfg.variants.count == 2
    assert run.state("v1", 2) == run.path / "states" / "v1-v2.safetensors"
    assert run.round_file(1, "pairs.jsonl") == run.path / "round1" / "pairs.jsonl"
    rows = [Prediction("q1", "1+1", "2", "2", "2", True)]
    write_records(run.eval_file("round1", "v0"), rows)
    assert run.predictions("round1", "v0") == rows
    mark_owner(run.path, "saie")
    with pytest.raises(ConfigError, match="holds a jobs/saie.py run"):
        run.trained()


def test_a_finished_controller_stage_is_kept_on_resume_and_redone_when_cut(tmp_path):
    # the controller's safetensors is not a model state: it must still count as intact
    from coalition.method import controller as C
    from coalition.recipes.base import Recipe
    from coalition.run import config
    from tests.conftest import SMOKE
    from tests.unit.method.test_controller import separable

    class Quiet:
        parallel_updates = False

    calls = []

    def stage():
        calls.append(1)
        examples, feats = separable(40)
        C.fit(examples, feats, 2, holdout=0.25, seed=1).save(tmp_path / "controller")

    for _ in range(2):
        Recipe(config.load(SMOKE), Quiet(), tmp_path, log=lambda _: None).stage("ctrl", stage)
    assert len(calls) == 1
    weights = tmp_path / "controller" / "controller.safetensors"
    weights.write_bytes(weights.read_bytes()[:60])
    Recipe(config.load(SMOKE), Quiet(), tmp_path, log=lambda _: None).stage("ctrl", stage)
    assert len(calls) == 2
