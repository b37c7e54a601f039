import subprocess
import sys

import pytest
import yaml

from coalition.run import config
from coalition.run.config import ConfigError
from tests.conftest import REPO, SMOKE


def test_default_file_matches_schema_and_overrides_apply():
    cfg = config.load(None, ["task.n_test=5", "generation.temperature=0.7", "run_dir=/tmp/x"])
    assert cfg.task.n_test == 5 and cfg.generation.temperature == 0.7 and cfg.run_dir == "/tmp/x"
    assert cfg.model.name_or_path == "builtin:smollm2-135m-instruct"


def test_smoke_config_uses_tiny_model():
    assert config.load(SMOKE).model.name_or_path == "builtin:tiny"


@pytest.mark.parametrize(
    "override, expected",
    [
        (
            "task.nam=x",
            "task.nam: unknown key 'nam' (did you mean 'name'?); allowed: n_test, n_train, name, params, seed",
        ),
        ("modle.dtype=float32", "modle: unknown key 'modle' (did you mean 'model'?)"),
        (
            "model.dtype=float8",
            "model.dtype: Input should be 'float32', 'bfloat16', 'float16' or 'auto'",
        ),
        ("task.name=gsm8kk", "task.name: unknown task 'gsm8kk' (did you mean 'gsm8k'?)"),
        ("task.n_test=0", "task.n_test: Input should be greater than or equal to 1"),
        (
            "generation.max_new_tokens=abc",
            "generation.max_new_tokens: Input should be a valid integer",
        ),
    ],
)
def test_bad_values_name_key_and_allowed(override, expected):
    with pytest.raises(ConfigError) as err:
        config.load(SMOKE, [override])
    assert expected in str(err.value)


def test_override_into_value_is_an_error():
    with pytest.raises(ConfigError, match="seed is a value, not a section"):
        config.load(SMOKE, ["seed.x=1"])


def test_override_needs_equals():
    with pytest.raises(ConfigError, match="expected dotted key=value"):
        config.load(SMOKE, ["task.n_test"])


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(bad)


def test_dump_roundtrips(tmp_path):
    cfg = config.load(SMOKE, ["task.params.max_digits=2"])
    path = tmp_path / "c.yaml"
    path.write_text(config.dump(cfg))
    assert config.load(path) == cfg


def test_job_exits_2_with_one_line_and_no_traceback():
    proc = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "evaluate.py"), "--config", str(SMOKE), "task.nmae=3"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "task.nmae" in lines[0] and "did you mean 'name'" in lines[0]
    assert "Traceback" not in proc.stderr


def test_warmup_rationales_from_names_a_source_or_a_distill_run(tmp_path):
    from coalition.run.cli import check_combination

    check_combination(config.load(None, [f"warmup.rationales_from={tmp_path}"]))
    with pytest.raises(ConfigError, match="warmup.rationales_from: 'gould'"):
        check_combination(config.load(None, ["warmup.rationales_from=gould"]))


def test_new_recipe_sections_refuse_unknown_keys():
    with pytest.raises(
        ConfigError, match="teacher.sample: unknown key 'sample' .did you mean 'samples'"
    ):
        config.load(None, ["teacher.sample=3"])
    with pytest.raises(ConfigError, match="saie.adversarial_ratio"):
        config.load(None, ["saie.adversarial_ratio=1.5"])


def test_engine_choice_and_vllm_adapter_rank():
    with pytest.raises(ConfigError, match="engine: Input should be 'auto', 'hf' or 'vllm'"):
        config.load(SMOKE, ["engine=vlm"])
    with pytest.raises(ConfigError, match="variants.lora.r=32 exceeds vllm.max_lora_rank=16"):
        config.load(SMOKE, ["engine=vllm", "variants.lora.r=32"])
    assert config.load(SMOKE, ["engine=vllm", "vllm.max_lora_rank=32", "variants.lora.r=32"])


def test_full_push_resolution_and_its_trainer_requirement():
    with pytest.raises(ConfigError, match="ray.full_push=collective.*ray.trainer=persistent"):
        config.load(SMOKE, ["ray.full_push=collective", "ray.trainer=per_update"])
    full = ["variants.mode=full", "scorer=base"]
    assert not config.load(SMOKE, full).collective_push()  # auto on CPUs: object store
    assert config.load(SMOKE, [*full, "ray.full_push=collective"]).collective_push()
    gpus = ["ray.train_use_gpu=true", "ray.generator_gpus=0.5"]
    assert config.load(SMOKE, [*full, *gpus]).collective_push()  # auto with GPUs: broadcast
    assert not config.load(SMOKE, gpus).collective_push()  # LoRA: always the object store


@pytest.mark.parametrize("path", sorted((REPO / "configs").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    if "sweeps" in path.parts or path.name == "app.yaml":
        pytest.skip("not a job config (sweep or Serve app)")
    cfg = config.load(path)
    if "gpu" in path.parts:
        assert cfg.engine == "vllm"  # GPU recipes generate and score on vLLM


def test_a_key_an_earlier_version_wrote_still_reads_from_a_run_but_not_from_a_user(tmp_path):
    from coalition.run.rundir import RunDir

    raw = config.load_yaml(SMOKE)
    raw.setdefault("generation", {})["seed"] = 7  # what runs made before its removal hold
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    assert RunDir(tmp_path).config() == config.load(SMOKE)
    assert raw["generation"]["seed"] == 7  # dropping it copies
    with pytest.raises(
        ConfigError, match=r"generation\.seed: this key was removed: .*top-level seed"
    ):
        config.load(tmp_path / "config.yaml")
