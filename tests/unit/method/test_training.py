"""SFT and DPO steps (TRL + PEFT) on the tiny model, in process."""

import math

import pytest
import torch

from coalition.engines.base import LoraSpec
from coalition.engines.hf import HFEngine
from coalition.method import training

SPEC = LoraSpec(r=4, alpha=8, target_modules=("q_proj", "v_proj"))
SFT_ROWS = [{"prompt": f"Q: {i} plus one? A:", "completion": f" {i + 1}."} for i in range(12)]
DPO_ROWS = [
    {"prompt": f"Q: {i} plus one? A:", "chosen": f" {i + 1}.", "rejected": f" {i + 5}."}
    for i in range(8)
]


def test_sft_learns_the_completions(tiny_path, tmp_path):
    spec = LoraSpec(
        r=8,
        alpha=16,
        target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"),
    )
    settings = training.StepSettings(
        lr=3e-2, epochs=8, batch_size=4, seed=1, log_dir=str(tmp_path / "tb")
    )
    state, metrics = training.run_update("sft", tiny_path, "lora", spec, None, SFT_ROWS, settings)
    assert metrics["loss_last"] < metrics["loss_first"] - 0.5, metrics
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))  # TensorBoard curves
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in state.items())


def test_dpo_reference_is_round_start_adapter_and_margin_grows(tiny_path):
    warm, _ = training.run_update(
        "sft",
        tiny_path,
        "lora",
        SPEC,
        None,
        SFT_ROWS,
        training.StepSettings(lr=1e-2, epochs=2, batch_size=4),
    )
    # (at 2e-2 some batch orders overshoot and end where they started: seen on 2 of 6 seeds)
    settings = training.StepSettings(lr=1e-2, epochs=4, batch_size=4, beta=0.1, seed=2)
    new, metrics = training.run_update("dpo", tiny_path, "lora", SPEC, warm, DPO_ROWS, settings)
    # the first step's policy equals its reference (the loaded adapter), so the loss is ln 2;
    # whether it learned is read over every row below (the last batch's loss is 4 rows' noise)
    assert math.isclose(metrics["loss_first"], math.log(2), rel_tol=1e-4)

    engine = HFEngine.from_pretrained(tiny_path, device="cpu", progress=False)
    engine.set_adapter("before", warm, 1, SPEC)
    engine.set_adapter("after", new, 2, SPEC)
    prompts = [r["prompt"] for r in DPO_ROWS]

    def margin(adapter):
        chosen = engine.score(prompts, [r["chosen"] for r in DPO_ROWS], adapter)
        rejected = engine.score(prompts, [r["rejected"] for r in DPO_ROWS], adapter)
        return sum(c.sum - r.sum for c, r in zip(chosen, rejected, strict=True))

    assert margin("after") > margin("before")


def test_lean_dpo_batches_pairs_of_alike_length(tiny_path, tmp_path):
    """TRL pads a batch's sequences to its longest; the lean trainer's batches group pairs of
    alike length (in random groups), so an epoch computes fewer padded positions."""
    from datasets import Dataset
    from trl import DPOTrainer

    rows = [
        {"prompt": f"Q: {i} plus one? A:", "chosen": f" {i + 1}." + " So it is." * (8 * (i % 2)),
         "rejected": f" {i + 5}."}
        for i in range(32)
    ]  # fmt: skip
    settings = training.StepSettings(batch_size=4, seed=3)
    positions = {}
    for cls in (DPOTrainer, training.lean_dpo_trainer(DPOTrainer)):
        model, tok = training.load_trainable(tiny_path, "lora", SPEC, None)
        trainer = cls(
            model=model,
            args=training.dpo_args(settings, str(tmp_path / cls.__name__)),
            train_dataset=Dataset.from_list(rows),
            processing_class=tok,
        )
        batches = list(trainer.get_train_dataloader())
        assert sum(len(b["input_ids"]) for b in batches) == 2 * len(rows)  # every pair, once
        positions[cls] = sum(b["input_ids"].numel() for b in batches)
    plain, lean = positions.values()
    assert lean < 0.85 * plain, (lean, plain)


def test_full_mode_updates_every_weight(tiny_path):
    settings = training.StepSettings(lr=1e-3, epochs=1, batch_size=4)
    state, metrics = training.run_update("dpo", tiny_path, "full", SPEC, None, DPO_ROWS, settings)
    assert math.isclose(metrics["loss_first"], math.log(2), rel_tol=1e-4)
    engine = HFEngine.from_pretrained(tiny_path, device="cpu", progress=False)
    before = {k: v.clone() for k, v in engine.model.state_dict().items()}
    engine.set_weights(state, version=3)
    assert engine.versions() == {"weights": 3}
    changed = [k for k, v in engine.model.state_dict().items() if not torch.equal(v, before[k])]
    assert len(changed) > 10


def test_dpo_with_nll_term_raises_the_chosen_likelihood(tiny_path):
    warm, _ = training.run_update(
        "sft", tiny_path, "lora", SPEC, None, SFT_ROWS, training.StepSettings(lr=1e-2, epochs=2)
    )
    engine = HFEngine.from_pretrained(tiny_path, device="cpu", progress=False)
    prompts, chosen = [r["prompt"] for r in DPO_ROWS], [r["chosen"] for r in DPO_ROWS]
    engine.set_adapter("warm", warm, 1, SPEC)
    before = sum(s.sum for s in engine.score(prompts, chosen, "warm"))
    settings = training.StepSettings(lr=2e-2, epochs=4, batch_size=4, seed=2, nll_weight=1.0)
    new, metrics = training.run_update("dpo", tiny_path, "lora", SPEC, warm, DPO_ROWS, settings)
    # DPO starts at ln 2; the NLL of the chosen side is added on top
    assert metrics["loss_first"] > math.log(2) + 0.1
    engine.set_adapter("rpo", new, 2, SPEC)
    assert sum(s.sum for s in engine.score(prompts, chosen, "rpo")) > before


def test_labels_only_scoring_on_cpu_gives_the_same_log_probs(tiny_path):
    """TRL's fused LM head scores every position off Triton devices; on a CPU we score only the
    labelled ones: the same per-token log-probs and loss, and gradients flow."""
    from trl.trainer import utils

    model, _ = training.load_trainable(tiny_path, "lora", SPEC, None)
    utils.add_fused_lm_head(model.get_base_model())
    torch.manual_seed(0)
    ids = torch.randint(5, 500, (3, 17))
    labels = ids.clone()
    labels[:, :9] = -100
    labels[2, 12:] = -100

    def run():
        out = model(input_ids=ids, labels=labels, fused_lm_head=True)
        out.loss.backward()
        grad = next(p.grad for n, p in model.named_parameters() if "lora_B" in n).clone()
        model.zero_grad()
        return out.log_probs.detach(), out.loss.detach(), grad

    original = utils._use_triton
    try:
        utils._use_triton = lambda device: False  # TRL's own choice on a CPU
        every = run()
        training._score_labels_only_on_cpu()
        assert utils._use_triton(torch.device("cpu"))
        labelled = run()
    finally:
        utils._use_triton = original
    for a, b in zip(every, labelled, strict=True):
        assert torch.allclose(a, b, atol=1e-6), (a - b).abs().max()


def _prefix_batch(right: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Four rows sharing their first 12 tokens, of different lengths, padded; labels on each
    row's last tokens only (as TRL labels completions)."""
    torch.manual_seed(1)
    common = torch.randint(5, 500, (12,))
    rows = [torch.cat([common, torch.randint(5, 500, (n,))]) for n in (9, 5, 14, 7)]
    width = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, r in enumerate(rows):
        span = slice(0, len(r)) if right else slice(width - len(r), width)
        ids[i, span], mask[i, span] = r, 1
        labels[i, span] = torch.where(torch.arange(len(r)) >= 14, r, -100)
    return ids, mask, labels


def _pair_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A DPO batch as TRL lays it out: three pairs' chosen rows, then their rejected rows, each
    prompt + completion, right-padded; every prompt starts with the same 10 tokens, a pair's
    two rows share their prompt, and one pair's completions also share their first 3 tokens.
    Labels on the completions. Its prefix tree has 10 + 6 + 4 + 8 + 5 + 7 + 3 + 6 + 3 + 2 + 4
    nodes."""
    torch.manual_seed(2)
    common = torch.randint(5, 500, (10,))
    prompts = [torch.cat([common, torch.randint(5, 500, (n,))]) for n in (6, 4, 8)]
    start = torch.randint(5, 500, (3,))
    chosen = [torch.randint(5, 500, (5,)), torch.randint(5, 500, (7,)), torch.cat([start, torch.randint(5, 500, (6,))])]  # fmt: skip
    rejected = [torch.randint(5, 500, (3,)), torch.randint(5, 500, (2,)), torch.cat([start, torch.randint(5, 500, (4,))])]  # fmt: skip
    rows = [(p, c) for p, c in zip(prompts * 2, chosen + rejected, strict=True)]
    width = max(len(p) + len(c) for p, c in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, (p, c) in enumerate(rows):
        n = len(p) + len(c)
        ids[i, :n], mask[i, :n] = torch.cat([p, c]), 1
        labels[i, len(p) : n] = c
    return ids, mask, labels


@pytest.mark.parametrize("path", ["tree", "prefix", "pairs"])
def test_shared_prompt_prefix_gives_the_same_log_probs_and_gradients(tiny_path, path, monkeypatch):
    """The lean training forward runs a batch's shared leading tokens once: as its prefix tree
    (one packed row, each distinct prefix once, no padding) or, where the tree would not pay,
    the common prefix as a batch of one whose keys and values every row reuses. Either way the
    same log-probs, loss and LoRA gradients as the plain forward; a left-padded batch takes the
    plain forward."""
    from trl.trainer import utils

    from tests.conftest import lora_state

    model, _ = training.load_trainable(tiny_path, "lora", SPEC, lora_state(tiny_path, 3))
    causal = model.get_base_model()
    utils.add_fused_lm_head(causal)
    body = causal.base_model
    assert getattr(body.forward, "_coalition_shared", False)
    shapes: list[tuple[int, ...]] = []
    body.embed_tokens.register_forward_hook(lambda m, a, out: shapes.append(tuple(a[0].shape)))

    def run(ids, mask, labels):
        out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
        out.loss.backward()
        grads = [p.grad.clone() for n, p in model.named_parameters() if p.grad is not None]
        model.zero_grad()
        return [out.log_probs.detach(), out.loss.detach(), *grads]

    if path == "prefix":
        monkeypatch.setattr(training, "TREE_MAX", 0)
    batches = {
        "tree": [(_prefix_batch(), [(1, 12 + 9 + 5 + 14 + 7)])],
        "prefix": [(_prefix_batch(), [(1, 12), (4, 14)])],
        "pairs": [(_pair_batch(), [(1, 10 + 6 + 4 + 8 + 5 + 7 + 3 + 6 + 3 + 2 + 4)])],
    }[path]
    left = _prefix_batch(right=False)
    for (ids, mask, labels), want in [*batches, (left, [tuple(left[0].shape)])]:
        shapes.clear()
        shared = run(ids, mask, labels)
        assert shapes == want
        body.forward = type(body).forward.__get__(body)  # the plain forward, for reference
        try:
            plain = run(ids, mask, labels)
        finally:
            del body.forward
            training.share_prompt_prefix(model)
        assert len(shared) == len(plain) > 2
        # within fp32 rounding: eager attention's softmax runs in fp32 over a row's keys (the
        # packed row has more, masked). In fp64 with an fp64 softmax the two agree to 3e-8; in
        # fp32 the tree's gradients are nearer fp64's than the plain forward's (a wrong mask
        # is off by the gradient's size)
        for a, b in zip(shared, plain, strict=True):
            assert (a - b).abs().max() <= 1e-5 + 2e-4 * b.abs().max(), (a - b).abs().max()


def test_shared_prompt_prefix_follows_a_deep_copy(tiny_path):
    """A full-weight DPO update's reference is a deep copy: its wrapped forward must run the
    copy's weights, not the trained model's."""
    import copy

    model, _ = training.load_trainable(tiny_path, "full", SPEC, None)
    ref = copy.deepcopy(model)
    assert ref.base_model.forward.__self__ is ref.base_model
    ids, mask, _ = _prefix_batch()
    with torch.no_grad():
        before = ref(input_ids=ids, attention_mask=mask).logits
        for p in model.parameters():
            p.add_(0.5)
        after = ref(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(before, after)
