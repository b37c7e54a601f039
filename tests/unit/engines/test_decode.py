"""The lean decoder against transformers' generate (the reference) on the tiny model: greedy
outputs equal with padding, early stops, LoRA variants and pushed versions; sampling seeded,
and drawn only from the top-p nucleus."""

import pytest
import torch

from coalition.engines.base import LoraSpec, SamplingParams
from coalition.engines.decode import (
    Decoder,
    _pick,
    prefill_groups,
    shared_prefix,
)
from coalition.engines.hf import HFEngine
from tests.unit.engines.test_hf_engine import INSTRUCTED, PROMPTS, _random_lora_state

SPEC = LoraSpec(r=4, alpha=8, target_modules=("q_proj", "v_proj", "gate_proj", "down_proj"))


@pytest.fixture
def pair(tiny_path):
    """Two engines on the tiny model (fp32): the lean decoder's and the reference's."""
    lean = HFEngine.from_pretrained(tiny_path, device="cpu", batch_size=3, progress=False)
    ref = HFEngine.from_pretrained(
        tiny_path, device="cpu", batch_size=3, progress=False, decoder="hf"
    )
    assert lean.lean and not ref.lean
    return lean, ref


def texts(out):
    return [[g.text for g in gens] for gens in out]


def test_greedy_equals_generate_across_padded_batches(pair):
    lean, ref = pair
    params = SamplingParams(max_new_tokens=24)
    prompts = PROMPTS + ["1", "Question: a much longer prompt, " * 6 + "what now?"]
    assert texts(lean.generate(prompts, params)) == texts(ref.generate(prompts, params))


def test_a_shared_prompt_prefix_runs_once_and_changes_no_output(pair):
    """The instruction every prompt of a batch starts with is prefilled once and its cache
    copied to every row: greedy outputs still equal generate's, samples those of a decoder
    that prefills each row whole."""
    lean, ref = pair
    assert shared_prefix([lean.encode(p) for p in INSTRUCTED[:3]]) >= 8
    greedy = SamplingParams(max_new_tokens=24)
    assert texts(lean.generate(INSTRUCTED, greedy)) == texts(ref.generate(INSTRUCTED, greedy))
    sampled = SamplingParams(max_new_tokens=16, temperature=1.0, top_p=0.95, n=2, seed=3)
    shared = lean.generate(INSTRUCTED, sampled)
    lean.share_prefix = False
    assert shared == lean.generate(INSTRUCTED, sampled)


def test_prompts_of_unlike_lengths_prefill_in_groups_and_change_no_output(pair):
    """A batch of prompts of unlike lengths prefills in groups of 16 rows, each padded to its
    own longest: greedy outputs still equal generate's, samples those of one group."""
    lean, ref = pair
    prompts = [f"{INSTRUCTED[i % 3]} {'and more words ' * (i % 11)}?" for i in range(20)]
    own = sorted((len(lean.encode(p)) for p in prompts), reverse=True)
    assert len(prefill_groups(own)) == 2 and prefill_groups([9] * 20) == [(0, 20)]
    lean.batch_size = ref.batch_size = 20
    greedy = SamplingParams(max_new_tokens=12)
    assert texts(lean.generate(prompts, greedy)) == texts(ref.generate(prompts, greedy))
    sampled = SamplingParams(max_new_tokens=12, temperature=1.0, top_p=0.95, seed=4)
    grouped = lean.generate(prompts, sampled)
    lean.batch_size = 5  # batches of 5 rows: one group each
    assert grouped == lean.generate(prompts, sampled)


def test_scores_on_the_lean_decoder_equal_the_reference(pair):
    """Scoring runs on the lean decoder too (shared prefix once, rows of unlike lengths in
    groups, the LM head on the target positions only): the reference's log-probs, with and
    without an adapter."""
    lean, ref = pair
    prompts = [f"{INSTRUCTED[i % 3]} {'and more words ' * (i % 11)}?" for i in range(20)]
    targets = [" 3", " 38 apples", " 37 and then some", " 4", " 23."] * 4
    lean.batch_size = ref.batch_size = 20
    for engine in (lean, ref):
        engine.set_adapter("x", _random_lora_state(engine, SPEC, 1), version=1, spec=SPEC)
    for adapter in (None, "x"):
        got, want = lean.score(prompts, targets, adapter), ref.score(prompts, targets, adapter)
        assert [s.count for s in got] == [s.count for s in want]
        assert [s.sum for s in got] == pytest.approx([s.sum for s in want], rel=1e-4, abs=1e-4)


def test_the_shared_prefix_leaves_every_prompt_a_token_of_its_own():
    base = list(range(10))
    assert shared_prefix([base + [1, 2], base + [1, 3]]) == 11
    assert shared_prefix([base, base + [5]]) == 9  # the shorter one keeps its last token
    assert shared_prefix([base + [1]]) == 0  # nothing to share with
    assert shared_prefix([[1] + base, [2] + base]) == 0
    assert shared_prefix([base[:5] + [1], base[:5] + [2]]) == 0  # too short to pay


def test_greedy_with_adapters_and_new_versions_equals_generate(pair):
    lean, ref = pair
    params = SamplingParams(max_new_tokens=16)
    # a new version must not reuse fused weights, nor the same version number pushed again
    # with other weights (each arm of an ablation has its own "version 2")
    for version, seed in ((1, 3), (2, 4), (2, 5)):
        state = _random_lora_state(lean, SPEC, seed)
        for engine in pair:
            engine.set_adapter("v0", state, version, SPEC)
        assert texts(lean.generate(PROMPTS, params, "v0")) == texts(
            ref.generate(PROMPTS, params, "v0")
        )
        assert texts(lean.generate(PROMPTS, params)) == texts(ref.generate(PROMPTS, params))
    assert texts(lean.generate(PROMPTS, params, "v0")) != texts(lean.generate(PROMPTS, params))


def test_full_weights_loaded_in_place_are_seen(tiny_path):
    lean = HFEngine.from_pretrained(tiny_path, device="cpu", progress=False)
    ref = HFEngine.from_pretrained(tiny_path, device="cpu", progress=False, decoder="hf")
    params = SamplingParams(max_new_tokens=12)
    before = texts(lean.generate(PROMPTS, params))
    torch.manual_seed(0)
    state = {k: v + 0.05 * torch.randn_like(v) for k, v in lean.model.state_dict().items()}
    for engine in (lean, ref):
        engine.set_weights(state, 2)
    after = texts(lean.generate(PROMPTS, params))
    assert after != before and after == texts(ref.generate(PROMPTS, params))


def test_rows_that_stop_early_leave_the_batch_without_changing_the_others(tiny_engine):
    """Each row samples from its own seeded generator, so a row's output is the same in a
    batch as alone; with a token one row emits as end-of-sequence, rows stop at different
    steps and the others go on unchanged."""
    model, tok = tiny_engine.model, tiny_engine.tokenizer
    ids = [tiny_engine.encode(p) for p in PROMPTS]
    dec = Decoder()

    def run(prompts, eos):
        return dec.generate(model, "base", prompts, 12, eos, tok.pad_token_id, 1.0, 1.0, 1, 3)

    free = run(ids, set())
    assert free == [run([i], set())[0] for i in ids]
    stop = free[0][2]  # the first row stops at its third token (or earlier)
    together = run(ids, {stop})
    assert together == [run([i], {stop})[0] for i in ids]
    for full, cut in zip(free, together, strict=True):
        assert cut == (full[: full.index(stop) + 1] if stop in full else full)
    assert len({len(o) for o in together}) > 1


def test_sampling_is_seeded_and_draws_n(pair):
    lean, _ = pair
    params = SamplingParams(max_new_tokens=8, temperature=1.0, top_p=0.9, n=3, seed=5)
    a = lean.generate(PROMPTS[:2], params)
    assert [len(x) for x in a] == [3, 3] and a == lean.generate(PROMPTS[:2], params)
    assert len({g.text for g in a[0]}) > 1
    other = lean.generate(PROMPTS[:2], SamplingParams(**{**params.__dict__, "seed": 6}))
    assert other != a


def test_top_p_draws_only_from_the_nucleus():
    gen = [torch.Generator().manual_seed(r) for r in range(4000)]
    probs = torch.tensor([0.5, 0.3, 0.1] + [0.1 / 997] * 997)
    logits = probs.log().repeat(4000, 1)
    drawn = _pick(logits, 1.0, 0.85, gen)  # nucleus: the first three (0.5 + 0.3 < 0.85)
    counts = torch.bincount(drawn, minlength=1000)[:3].float() / len(drawn)
    assert int(drawn.max()) <= 2
    assert counts.tolist() == pytest.approx([0.5 / 0.9, 0.3 / 0.9, 0.1 / 0.9], abs=0.03)
    flat = torch.zeros(2, 5000)  # the mass lies beyond the first candidates: all are sorted
    assert int(_pick(flat, 1.0, 0.99, gen[:2]).max()) < 5000
    assert _pick(logits[:3], 0.0, 1.0, gen[:3]).tolist() == [0, 0, 0]


def test_ignore_eos_runs_the_full_length(pair):
    lean, _ = pair
    out = lean.generate(PROMPTS[:2], SamplingParams(max_new_tokens=9, ignore_eos=True))
    assert all(g[0].tokens == 9 or g[0].finished for g in out)


def test_an_unsupported_model_falls_back_to_generate(tiny_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from coalition.engines.hf import lean_applies

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64))
    assert not lean_applies("auto", model, torch.device("cpu"))
    with pytest.raises(ValueError, match="generation.decoder: lean supports llama"):
        lean_applies("lean", model, torch.device("cpu"))


def test_samples_do_not_depend_on_the_batching(tiny_path):
    """Each row draws from a generator seeded by the call's seed, its prompt and its draw, so
    the engine's batch size (or an actor's chunk) does not change what is sampled."""
    params = SamplingParams(max_new_tokens=10, temperature=1.0, top_p=0.95, n=2, seed=11)
    outs = []
    for batch in (1, 2, 5):
        engine = HFEngine.from_pretrained(tiny_path, device="cpu", batch_size=batch, progress=False)
        outs.append(texts(engine.generate(PROMPTS, params)))
    assert outs[0] == outs[1] == outs[2]


def test_embed_equals_the_backbones_mean_hidden_state(pair):
    """The controller's features on the lean decoder (the shared prefix once, groups of unlike
    lengths, no LM head) equal the reference's full backbone pass."""
    lean, ref = pair
    prompts = [f"{INSTRUCTED[i % 3]} {'and more words ' * (i % 11)}?" for i in range(20)]
    lean.batch_size = ref.batch_size = 20
    assert shared_prefix([lean.encode(p) for p in prompts]) >= 8
    got, want = lean.embed(prompts), ref.embed(prompts)
    for g, w in zip(got, want, strict=True):
        assert g == pytest.approx(w, rel=1e-4, abs=1e-5)
