"""U = exp(mean log p(gold tokens | answer_given_rationale)), checked by hand and on the model."""

import math

import pytest
import torch

from coalition.data import prompts
from coalition.data.records import Example
from coalition.engines.base import TokenScore
from coalition.method import scoring


def test_utility_is_geometric_mean_probability():
    # gold tokens with probabilities 0.5, 0.25, 0.125 -> geometric mean 0.25
    logps = [math.log(0.5), math.log(0.25), math.log(0.125)]
    s = TokenScore(sum(logps), sum(logps) / 3, 3)
    assert scoring.utility(s) == pytest.approx(0.25)
    assert scoring.mean_utility([s, TokenScore(0.0, 0.0, 1)]) == pytest.approx((0.25 + 1.0) / 2)


def test_requests_for_u_and_u0(tiny_engine):
    ex = Example("1", "What is 2+3?", "5")
    prompt, target = scoring.request(ex, "2+3=5.", "fmt", tiny_engine.tokenizer)
    assert target == " 5" and prompt.endswith("assistant\nThe answer is") and "2+3=5." in prompt
    p0, t0 = scoring.request(ex, None, "fmt", tiny_engine.tokenizer)
    assert t0 == " 5" and p0.endswith("The answer is") and "Reasoning" not in p0


def test_u_from_engine_matches_manual_geometric_mean(tiny_engine):
    ex = Example("1", "What is 12+30?", "42")
    prompt, target = scoring.request(ex, "12+30=42.", "fmt", tiny_engine.tokenizer)
    [s] = tiny_engine.score([prompt], [target])
    tok = tiny_engine.tokenizer
    p_ids, t_ids = tok(prompt)["input_ids"], tok(target, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(tiny_engine.model(torch.tensor([p_ids + t_ids])).logits[0], -1)
    probs = [float(logp[len(p_ids) - 1 + j, t].exp()) for j, t in enumerate(t_ids)]
    geo = math.prod(probs) ** (1 / len(probs))
    assert scoring.utility(s) == pytest.approx(geo, rel=1e-4)
    assert prompts.ANSWER_PREFIX in prompt
