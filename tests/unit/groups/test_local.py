"""The in-process group on the tiny model: a push reaches every host serving the model, the
scorer's U is the mean over its models wherever they live, frozen models take no updates."""

import pytest
import torch

from coalition.engines import EngineSpec
from coalition.engines.base import LoraSpec, SamplingParams
from coalition.engines.hf import HFEngine
from coalition.groups.layout import Member, coalition_layout, team_layout
from coalition.groups.local import LocalGroup
from coalition.method.scoring import mean_utility
from coalition.method.variants import BASE

SPEC = LoraSpec(r=4, alpha=8, target_modules=("q_proj", "v_proj"))


def full_state(tiny_path: str, seed: int) -> dict:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    return {k: v + 0.05 * torch.randn_like(v) for k, v in model.state_dict().items()}


def test_full_weights_scorer_mean_is_the_mean_of_each_variants_own_utility(tiny_path):
    layout = coalition_layout(tiny_path, "full", "variants_mean", 2, in_process=True)
    group = LocalGroup(layout, SPEC, EngineSpec(batch_size=4))
    states = [full_state(tiny_path, s) for s in (1, 2)]
    for k, state in enumerate(states):
        group.push(f"v{k}", state, 1)
    prompts, targets = ["Question: 2 + 3?\nAnswer:", "Question: 1 + 1?\nAnswer:"], [" 5", " 2"]
    own = []
    for state in states:
        engine = HFEngine.from_pretrained(tiny_path, device="cpu", batch_size=4, progress=False)
        engine.set_weights(state, 1)
        own.append([mean_utility([s]) for s in engine.score(prompts, targets)])
    expected = [(a + b) / 2 for a, b in zip(*own, strict=True)]
    assert group.utilities(prompts, targets) == pytest.approx(expected, rel=1e-6)
    assert group.versions() == {"v0": 1, "v1": 1}
    params = SamplingParams(max_new_tokens=6)
    out = group.generate({"v0": prompts, "v1": prompts, BASE: prompts}, params)
    assert out["v0"] != out["v1"] and out[BASE] != out["v0"]


def test_a_team_pushes_only_trained_members_and_names_missing_ones(tiny_path):
    layout = team_layout(
        [Member("student", tiny_path, trained=True), Member(BASE, tiny_path)], "lora"
    )
    group = LocalGroup(layout, SPEC, EngineSpec(batch_size=4))
    assert group.tokenizer_of(BASE) is group.tokenizer  # one engine for both
    with pytest.raises(ValueError, match="frozen"):
        group.push(BASE, {}, 1)
    with pytest.raises(ValueError, match="no scorer"):
        group.utilities(["a"], ["b"])
    with pytest.raises(ValueError, match="no model 'teacher'"):
        group.generate({"teacher": ["a"]}, SamplingParams(max_new_tokens=2))
