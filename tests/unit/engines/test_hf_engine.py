"""The HF engine on the tiny model: batching, scoring maths, sampling, adapters by version."""

import pytest
import torch

from coalition.engines.base import LoraSpec, SamplingParams

PROMPTS = [
    f"Question: what is {a} + {b}? Answer:" for a, b in [(1, 2), (13, 25), (7, 30), (2, 2), (19, 4)]
]
# prompts as the tasks make them: a long shared instruction, which the engine runs once a batch
INSTRUCTED = ["Read the question, add the numbers step by step, then give the sum. " + p
              for p in PROMPTS]  # fmt: skip


def test_batched_greedy_equals_one_by_one(tiny_engine):
    params = SamplingParams(max_new_tokens=12)
    batched = tiny_engine.generate(PROMPTS, params)
    single = [tiny_engine.generate([p], params)[0] for p in PROMPTS]
    assert [g[0].text for g in batched] == [g[0].text for g in single]
    assert all(g[0].tokens == 12 or g[0].finished for g in batched)


def test_sampling_n_and_seed(tiny_engine):
    params = SamplingParams(max_new_tokens=8, temperature=1.0, n=3, seed=5)
    a = tiny_engine.generate(PROMPTS[:2], params)
    assert [len(x) for x in a] == [3, 3]
    assert a == tiny_engine.generate(PROMPTS[:2], params)
    assert len({g.text for g in a[0]}) > 1  # a random model at T=1 does not repeat itself


@pytest.mark.parametrize("prompts", [PROMPTS, INSTRUCTED], ids=["own", "shared-prefix"])
def test_score_matches_manual_logprobs(tiny_engine, prompts):
    tok, model = tiny_engine.tokenizer, tiny_engine.model
    targets = [" 3", " 38 apples", " 37", " 4", " 23."]
    scores = tiny_engine.score(prompts, targets)
    for prompt, target, s in zip(prompts, targets, scores, strict=True):
        p_ids = tok(prompt)["input_ids"]
        t_ids = tok(target, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([p_ids + t_ids])).logits[0].float()
        logp = torch.log_softmax(logits, -1)
        manual = sum(float(logp[len(p_ids) - 1 + j, t]) for j, t in enumerate(t_ids))
        assert s.count == len(t_ids)
        assert s.sum == pytest.approx(manual, rel=1e-4, abs=1e-4)
        assert s.mean == pytest.approx(manual / len(t_ids), rel=1e-4, abs=1e-4)


def _random_lora_state(engine, spec, seed):
    """A LoRA state dict with non-zero B so the adapter actually changes outputs."""
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_config(engine.model.config)
    cfg = LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        target_modules=list(spec.target_modules),
        init_lora_weights=False,
    )
    peft = get_peft_model(base, cfg)
    return {k: v * 20 for k, v in get_peft_model_state_dict(peft).items()}


def test_adapters_by_name_and_version(tiny_engine, tmp_path):
    spec = LoraSpec(r=4, alpha=8)
    params = SamplingParams(max_new_tokens=10)
    base_before = tiny_engine.generate(PROMPTS, params)
    base_scores = tiny_engine.score(PROMPTS, [" 3"] * 5)

    tiny_engine.set_adapter("x", _random_lora_state(tiny_engine, spec, 1), version=1, spec=spec)
    tiny_engine.set_adapter("y", _random_lora_state(tiny_engine, spec, 2), version=1, spec=spec)
    assert tiny_engine.versions() == {"x": 1, "y": 1}
    out_a = tiny_engine.score(PROMPTS, [" 3"] * 5, adapter="x")
    out_b = tiny_engine.score(PROMPTS, [" 3"] * 5, adapter="y")
    assert [s.sum for s in out_a] != [s.sum for s in base_scores]
    assert [s.sum for s in out_a] != [s.sum for s in out_b]
    # the base is untouched by installed adapters
    assert tiny_engine.generate(PROMPTS, params) == base_before
    assert [s.sum for s in tiny_engine.score(PROMPTS, [" 3"] * 5)] == pytest.approx(
        [s.sum for s in base_scores]
    )

    # a new version replaces the weights of the same slot
    tiny_engine.set_adapter("x", _random_lora_state(tiny_engine, spec, 3), version=2, spec=spec)
    assert tiny_engine.versions()["x"] == 2
    assert [s.sum for s in tiny_engine.score(PROMPTS, [" 3"] * 5, adapter="x")] != [
        s.sum for s in out_a
    ]

    with pytest.raises(KeyError, match="adapter 'c' is not installed"):
        tiny_engine.generate(PROMPTS, params, adapter="c")


@pytest.mark.parametrize("prompts", [PROMPTS, INSTRUCTED], ids=["own", "shared-prefix"])
def test_adapter_score_matches_a_full_forward_of_the_adapted_model(tiny_engine, tiny_path, prompts):
    """Scoring runs the LM head on the target positions only, and a batch's shared prefix
    once; the log-probs are a full forward's through the same base and adapter."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    spec = LoraSpec(r=4, alpha=8)
    state = _random_lora_state(tiny_engine, spec, 7)
    tiny_engine.set_adapter("z", state, version=1, spec=spec)
    targets = [" 3", " 38 apples", " 37", " 4", " 23."]
    scores = tiny_engine.score(prompts, targets, adapter="z")
    cfg = LoraConfig(r=spec.r, lora_alpha=spec.alpha, target_modules=list(spec.target_modules))
    base = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=tiny_engine.model.dtype)
    reference = get_peft_model(base, cfg)
    set_peft_model_state_dict(reference, state)
    tok = tiny_engine.tokenizer
    for prompt, target, s in zip(prompts, targets, scores, strict=True):
        p_ids = tok(prompt)["input_ids"]
        t_ids = tok(target, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = reference(input_ids=torch.tensor([p_ids + t_ids])).logits[0].float()
        logp = torch.log_softmax(logits, -1)
        manual = sum(float(logp[len(p_ids) - 1 + j, t]) for j, t in enumerate(t_ids))
        assert s.sum == pytest.approx(manual, rel=1e-4, abs=1e-4)


def test_load_adapter_from_saved_dir(tiny_engine, tiny_path, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    peft = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_path),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    for name, p in peft.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.5)
    peft.save_pretrained(tmp_path / "adapter")
    with torch.no_grad():
        expected = peft(torch.tensor([tiny_engine.tokenizer(PROMPTS[0])["input_ids"]])).logits

    tiny_engine.load_adapter("saved", str(tmp_path / "adapter"), version=7)
    assert tiny_engine.versions() == {"saved": 7}
    ids = torch.tensor([tiny_engine.tokenizer(PROMPTS[0])["input_ids"]])
    with tiny_engine._using("saved") as model, torch.no_grad():
        got = model(ids).logits
    torch.testing.assert_close(got, expected)


def test_greedy_with_several_samples_repeats_the_one_answer(tiny_engine):
    from coalition.engines.base import SamplingParams

    outs = tiny_engine.generate(["a b", "c"], SamplingParams(max_new_tokens=5, n=3))
    assert [len(o) for o in outs] == [3, 3]
    one = tiny_engine.generate(["a b", "c"], SamplingParams(max_new_tokens=5))
    assert all(x == g for o, (g,) in zip(outs, one, strict=True) for x in o)


def test_ignore_eos_gives_fixed_length(tiny_engine):
    params = SamplingParams(max_new_tokens=10, ignore_eos=True)
    outs = tiny_engine.generate(PROMPTS, params)
    assert all(g[0].tokens == 10 and not g[0].finished for g in outs)


def test_generation_on_merged_weights_equals_unmerged(tiny_engine):
    """On a CPU an adapter generates on merged weights: same greedy outputs as PEFT's unmerged
    forward (fp32), the base weights untouched, and a new version is merged anew."""
    spec = LoraSpec(r=4, alpha=8, target_modules=("q_proj", "v_proj", "up_proj"))
    params = SamplingParams(max_new_tokens=12)
    assert tiny_engine.merge_for_generation  # the fixture runs on the CPU
    base_weights = {k: v.clone() for k, v in tiny_engine.model.state_dict().items()}
    base_out = tiny_engine.generate(PROMPTS, params)
    tiny_engine.set_adapter("x", _random_lora_state(tiny_engine, spec, 1), version=1, spec=spec)
    tiny_engine.set_adapter("y", _random_lora_state(tiny_engine, spec, 2), version=1, spec=spec)

    def both(adapter):
        tiny_engine.merge_for_generation = False
        unmerged = tiny_engine.generate(PROMPTS, params, adapter=adapter)
        tiny_engine.merge_for_generation = True
        return unmerged, tiny_engine.generate(PROMPTS, params, adapter=adapter)

    x_unmerged, x_merged = both("x")
    assert x_merged == x_unmerged and x_merged != base_out
    y_unmerged, y_merged = both("y")  # switching adapters re-merges
    assert y_merged == y_unmerged and y_merged != x_merged
    tiny_engine.set_adapter("x", _random_lora_state(tiny_engine, spec, 3), version=2, spec=spec)
    x2_unmerged, x2_merged = both("x")
    assert x2_merged == x2_unmerged and x2_merged != x_merged
    # the base itself: weights bit-identical, outputs as before any adapter
    assert tiny_engine.generate(PROMPTS, params) == base_out
    after = tiny_engine.model.state_dict()
    for name, weight in base_weights.items():
        key = name if name in after else name.replace(".weight", ".base_layer.weight")
        assert torch.equal(after[key], weight), name


def test_embed_is_the_mean_of_the_last_hidden_states(tiny_engine):
    """A prompt's features: the full model's last hidden states averaged over its tokens (the
    engine runs the backbone alone, in batches of unlike lengths)."""
    feats = tiny_engine.embed(INSTRUCTED)
    for prompt, f in zip(INSTRUCTED, feats, strict=True):
        ids = torch.tensor([tiny_engine.encode(prompt)])
        with torch.no_grad():
            hidden = tiny_engine.model(input_ids=ids, output_hidden_states=True).hidden_states[-1]
        assert f == pytest.approx(hidden[0].float().mean(0).tolist(), rel=1e-4, abs=1e-5)
