"""jobs/bench.py gpu's measurements (benchmarks.perf) on the CPU with the tiny shape: the shapes
are the real models' sizes, the suite runs our engine and training paths end to end, and its
figures are consistent with the work it did."""

from __future__ import annotations

import pytest

from benchmarks import perf
from coalition.engines import EngineSpec


@pytest.mark.parametrize(
    "shape, params",
    # published sizes of Qwen2.5-0.5B/1.5B and SmolLM2-135M (tied embeddings)
    [("qwen2.5-0.5b", 494_032_768), ("qwen2.5-1.5b", 1_543_714_304), ("smollm2-135m", 134_515_008)],
)
def test_shapes_have_the_real_models_sizes(shape, params, tiny_path):
    from transformers import AutoTokenizer

    config = perf.shape_config(shape, AutoTokenizer.from_pretrained(tiny_path))
    assert perf.param_count(config) == params


def test_unknown_shape_names_the_allowed_ones(tiny_path):
    with pytest.raises(ValueError, match="allowed: qwen2.5-0.5b"):
        perf.shape_config("gpt-9", None)


def test_peak_flops_by_device_name():
    assert perf.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert perf.peak_flops("NVIDIA H200") == 989e12
    assert perf.peak_flops("cpu") is None


def test_suite_on_the_tiny_shape(tmp_path, tiny_path):
    work = perf.workload(4, 8, repeats=1)
    out = perf.suite(
        ["tiny"], tmp_path, EngineSpec(batch_size=4), work, dpo_batch=2, dpo_seq=32,
        dpo_steps=2, tokenizer_from=tiny_path, log=lambda _: None,
    )  # fmt: skip
    assert out["device"] == "cpu" and out["peak_flops"] is None
    r = out["shapes"]["tiny"]
    assert r["hf"]["generate_tokens_per_s"] > 0 and r["hf"]["score_tokens_per_s"] > 0
    assert r["hf"]["full_push_s"] > 0
    assert r["broadcast_push"]["backend"] == "gloo" and r["broadcast_push"]["seconds"] > 0
    d = r["dpo"]
    assert d["params"] == perf.param_count(perf.shape_config("tiny", _tok(tiny_path)))
    assert d["steps_timed"] == 2 and d["step_s"] > 0 and d["mfu"] is None
    # flops per second = tokens x (6N + attention) / step time
    expected = 2 * 2 * 32 * (6 * d["params"] + 12 * 4 * 128 * 32) / d["step_s"] / 1e12
    assert d["tflops"] == pytest.approx(expected, rel=0.02, abs=0.01)
    assert not (tmp_path / "models" / "tiny-float32").exists()  # random weights cleaned up


def _tok(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def test_decode_bound_is_the_slower_of_memory_and_compute():
    from types import SimpleNamespace

    config = SimpleNamespace(
        hidden_size=64, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2
    )
    params = 1_000_000
    # batch 1: reading 4 MB of fp32 weights at 1 GB/s (4 ms) is slower than 2 MFLOP at 1 TFLOP/s
    kv = 2 * 2 * 2 * 16 * 4  # keys and values, 2 layers, 2 heads of 16, fp32: bytes per token
    assert perf.decode_bound(config, 1, 10, params, 4, 1.0, 1.0) == pytest.approx(
        1 / ((4 * params + 10 * kv) / 1e9)
    )
    # the same model in bf16 reads half the bytes
    assert perf.decode_bound(config, 1, 10, params, 2, 1.0, 1.0) > 1.9 * perf.decode_bound(
        config, 1, 10, params, 4, 1.0, 1.0
    )
    # batch 4096 at 1 TFLOP/s: compute-bound, 2 FLOPs per weight per row
    assert perf.decode_bound(config, 4096, 0, params, 4, 1.0, 1000.0) == pytest.approx(
        4096 / (4096 * 2 * params / 1e12)
    )


def test_generation_bound_adds_the_prefill():
    from types import SimpleNamespace

    config = SimpleNamespace(
        hidden_size=64, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2
    )
    params, batch, prompt, new = 1_000_000, 64, 100, 50
    step = perf.decode_bound(config, batch, prompt + new / 2, params, 2, 1.0, 10.0)
    prefill_s = batch * prompt * 2 * params / 1e12  # compute-bound at 1 TFLOP/s
    assert prefill_s > params * 2 / 10e9  # (slower than one read of the weights)
    expected = batch * new / (prefill_s + new * batch / step)
    assert perf.generation_bound(config, batch, prompt, new, params, 2, 1.0, 10.0) == pytest.approx(
        expected
    )
    # no prompt: one read of the weights more than decoding alone
    alone = perf.decode_bound(config, 1, new / 2, params, 2, 1.0, 10.0)
    with_read = new / (params * 2 / 10e9 + new / alone)
    assert perf.generation_bound(config, 1, 0, new, params, 2, 1.0, 10.0) == pytest.approx(
        with_read
    )
