"""Ablation arms: what an arm may change, which stages it shares, adoption and the table."""

from __future__ import annotations

import os

import pytest

from coalition.data.records import Prediction
from coalition.recipes import ablation
from coalition.run import config
from coalition.run.config import ConfigError
from coalition.run.rundir import Manifest, recording, write_json, write_records
from tests.conftest import REPO, SMOKE

ABLATIONS = REPO / "configs" / "ablations"


def arms_of(**arms):
    return ablation.arm_configs(config.load(SMOKE, [f"ablate.arms={arms}"]))


def test_nested_and_dotted_overrides_are_the_same_arm():
    assert ablation.flat({"sro": {"lr": 1e-4}, "pool": 8}) == {"sro.lr": 1e-4, "pool": 8}
    a = arms_of(x={"sro": {"lr": 3e-4}}, y={"sro.lr": 3e-4})
    assert a["x"].sro.lr == a["y"].sro.lr == 3e-4


def test_an_arm_may_not_change_the_shared_warmup():
    with pytest.raises(ConfigError, match=r"ablate.arms.bad: warmup.n would change the shared"):
        arms_of(default={}, bad={"warmup.n": 4})
    with pytest.raises(ConfigError, match=r"ablate.arms.bad: refine: Input should be .cross."):
        arms_of(default={}, bad={"refine": "sideways"})
    with pytest.raises(ConfigError, match="ift_all"):
        arms_of(default={}, bad={"scorer": "ift_all"})
    with pytest.raises(ConfigError, match="arm name"):
        config.load(SMOKE, ["ablate.arms={'../up': {}}"])


def test_shared_stages_follow_the_chain_of_settings():
    a = arms_of(default={}, rft={"update": "rft"}, own={"refine": "self"},
                all={"pairs": "all"}, hot={"generation.temperature": 0.7})  # fmt: skip
    ref = a["default"]
    through_pairs = ["round1/generate", "round1/refine", "round1/score", "round1/pairs"]
    assert ablation.shared_stages(a["rft"], ref) == through_pairs
    assert ablation.shared_stages(a["own"], ref) == ["round1/generate"]
    assert ablation.shared_stages(a["all"], ref) == through_pairs[:3]
    assert ablation.shared_stages(a["hot"], ref) == []
    assert ablation.shared_stages(ref, ref)[-2:] == ["round1/update/", "round1/eval"]


def test_adopt_links_outputs_and_records_the_origin(tmp_path):
    src, dst = tmp_path / "a", tmp_path / "b"
    with recording() as outs:
        write_json(src / "round1" / "u0.json", {"q": 0.5})
    Manifest(src).mark("round1/score", outs, seconds=3.0)
    Manifest(src).mark("round1/pairs", [], seconds=0.1)
    taken = ablation.adopt(dst, src, ["round1/score", "warmup/train/"])
    assert taken == ["round1/score"]
    assert os.path.samefile(src / "round1" / "u0.json", dst / "round1" / "u0.json")
    mine = Manifest(dst)
    assert mine.info("round1/score")["adopted_from"] == "../a"
    assert mine.damaged("round1/score") is None and not mine.done("round1/pairs")
    assert ablation.adopt(dst, src, ["round1/score"]) == []  # already its own


def _preds(path, correct, answers=None):
    rows = [
        Prediction(str(i), "q", "1", "o", (answers or {}).get(i, "1" if c else "0"), c)
        for i, c in enumerate(correct)
    ]
    write_records(path, rows)


def test_table_pairs_every_arm_with_the_warmup_and_the_reference(tmp_path):
    a = arms_of(default={}, rft={"update": "rft"})
    n = 40
    warm = [i < 10 for i in range(n)]
    for name, after in (
        ("default", [i < 14 for i in range(n)]),
        ("rft", [i < 12 for i in range(n)]),
    ):
        d = tmp_path / name
        for key in ("v0", "v1"):
            _preds(d / "eval" / f"warmup-{key}.jsonl", warm)
            _preds(d / "eval" / f"round1-{key}.jsonl", after, {39: key})  # they differ on one
        Manifest(d).mark("round1/pairs", [], pairs={"v0": {"kept": 5}, "v1": {"kept": 7}})
    arms = [ablation.ArmResult(k, a[k], tmp_path / k) for k in ("default", "rft")]
    result = ablation.table(arms, n_boot=200, seed=0)
    rows = {(r["arm"], r["stage"]): r for r in result["rows"]}
    assert rows[("warm-up (no round)", "warmup")]["accuracy"] == pytest.approx(0.25)
    d = rows[("default", "round1")]
    assert d["vs_warmup"]["delta"] == pytest.approx(0.10) and d["vs_reference"] is None
    assert d["pairs"] == [5, 7] and d["disagreement"] == pytest.approx(1 / n)
    r = rows[("rft", "round1")]
    assert r["vs_reference"]["delta"] == pytest.approx(-0.05)
    md = ablation.markdown(result)
    assert "| rft | round1 |" in md and "vs default (paired)" in md
    plot = ablation.plot_input(result)
    assert set(plot["warmup"]) == {"default", "rft"} and set(plot["round1"]) == {"default", "rft"}


def test_ablation_configs_load_and_extend_their_base():
    for path in ABLATIONS.glob("*.yaml"):
        cfg = config.load(path)
        arms = ablation.arm_configs(cfg)
        assert len(arms) >= 2, path
    smoke = config.load(ABLATIONS / "smoke.yaml")
    assert smoke.model.name_or_path == "builtin:tiny"  # from ../smoke.yaml
    # the first arm as written is the reference, also after overrides
    assert list(ablation.arm_configs(config.load(ABLATIONS / "smoke.yaml", ["pool=8"]))) == [
        "default",
        "rft",
        "self",
        "all_pairs",
    ]


def test_extends_merges_sections_and_refuses_a_loop(tmp_path):
    (tmp_path / "base.yaml").write_text("pool: 8\nsro: {lr: 0.001, epochs: 2}\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nsro: {epochs: 3}\n")
    cfg = config.load(tmp_path / "child.yaml")
    assert (cfg.pool, cfg.sro.lr, cfg.sro.epochs) == (8, 0.001, 3)
    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        config.load(tmp_path / "loop.yaml")
    (tmp_path / "gone.yaml").write_text("extends: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="nowhere.yaml does not exist"):
        config.load(tmp_path / "gone.yaml")
