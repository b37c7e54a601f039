"""Bad config files, values and models: one line naming the key (or file) and what is
allowed, before anything is written or Ray starts."""

from __future__ import annotations

import pytest

from tests.hostile.conftest import job, refused

BAD_VALUES = [
    ("task.nam=x", "task.nam: unknown key 'nam' (did you mean 'name'?)"),
    ("sro.beta=nan", "sro.beta: Input should be a finite number"),
    ("generation.temperature=.inf", "generation.temperature: Input should be a finite number"),
    ("seed=-1", "seed: Input should be greater than or equal to 0"),
    (f"seed={2**40}", "seed: Input should be less than or equal to 4294967295"),
    ("task.n_test=1000000000000", "task.n_test: Input should be less than or equal to"),
    ("pool=0", "pool: Input should be greater than or equal to 1"),
    ("rounds=-1", "rounds: Input should be greater than or equal to 0"),
    ("model.device=gpu", "model.device: unknown device 'gpu'; allowed: auto, cpu, cuda"),
    ("model.device=cuda:3", "model.device: cuda:3 does not exist here"),
    ("model.dtype=float8", "model.dtype: Input should be"),
    ("variants.count=1", "variants.count: Input should be greater than or equal to 2"),
    ("ray.generator_cpus=0", "ray.generator_cpus: Input should be greater than 0"),
    ("task.n_test", "expected dotted key=value"),
    ("seed.x=1", "seed is a value, not a section"),
    ("model.name_or_path=builtin:nonexistent", "unknown builtin 'nonexistent'; allowed: builtin:"),
    ("model.name_or_path=/nonexistent/model", "/nonexistent/model does not exist"),
    ("model.name_or_path=nobody/no-such-model", "not in the HF cache, and HF_HUB_OFFLINE is set"),
    ("generation.max_new_tokens=8000", "leaves no room for a question"),
    ("variants.count=3 ray.num_cpus=4", "the run cannot fit: it needs 5 CPUs, the cluster has 4"),
    ("ray.train_use_gpu=true", "the run cannot fit: it needs 2 GPUs, the cluster has 0"),
]


@pytest.mark.parametrize(("override", "says"), BAD_VALUES)
def test_bad_values_are_one_line_before_anything_is_written(tmp_path, override, says):
    run_dir = tmp_path / "run"
    refused(job("train", *override.split(), f"run_dir={run_dir}"), says)
    assert not run_dir.exists()


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "is a directory, not a YAML file"),
        (b"seed: 1\n\xff\xfe bad", "not UTF-8 text"),
        (b"seed: [1,\n", "not valid YAML"),
        (b"- a list\n", "top level must be a mapping"),
        (b"", "does not exist"),
    ],
)
def test_bad_config_files(tmp_path, content, says):
    path = tmp_path / "cfg.yaml"
    if content is None:
        path.mkdir()
    elif content:
        path.write_bytes(content)
    done = job("train", "--config", path, f"run_dir={tmp_path / 'run'}", smoke=False)
    refused(done, f"config file {path}", says)
    assert not (tmp_path / "run").exists()


def test_model_paths_that_are_not_models(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    refused(job("train", f"model.name_or_path={empty}"), f"{empty} is empty")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("hi")
    refused(job("train", f"model.name_or_path={junk}"), f"{junk} has no config.json")
    afile = tmp_path / "model.bin"
    afile.write_bytes(b"x")
    refused(job("train", f"model.name_or_path={afile}"), f"{afile} is a file")


def test_other_jobs_check_their_other_models(tmp_path):
    refused(job("evaluate", f"model.adapter={tmp_path}"), "model.adapter:", "is empty")
    refused(job("distill", "teacher.model=builtin:huge"), "teacher.model: unknown builtin")
    refused(job("saie", "saie.partner=/no/partner"), "saie.partner: /no/partner does not exist")
    refused(job("distill", "teacher.kind=openai"), "teacher.base_url: needed")


def test_the_schema_never_echoes_a_token(tmp_path):
    line = refused(job("train", "serve.auth_token=hunter2"), "serve.auth_token", "16 characters")
    assert "hunter2" not in line
