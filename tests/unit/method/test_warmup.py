import random

from coalition.data.records import Example
from coalition.data.tasks import get_task
from coalition.data.tasks.procedural import arithmetic_steps
from coalition.engines.base import Generation
from coalition.method import warmup


def test_arithmetic_steps_innermost_first():
    steps, value = arithmetic_steps("Calculate ( 56 + -33 ) - 84 * 2.")
    assert steps == ["56 + -33 = 23.", "84 * 2 = 168.", "23 - 168 = -145."] and value == -145
    assert arithmetic_steps("How many legs do 3 cats have?") is None


def test_corrupt_changes_a_step_result_and_carries_it_forward():
    gold = "21 + 70 = 91. 91 + 70 = 161. The answer is 161."
    outs = {warmup.corrupt(gold, random.Random(seed)) for seed in range(20)}
    assert gold not in outs
    # an early step's error is carried into the next step, which is left unrecomputed
    early = [o for o in outs if not o.startswith("21 + 70 = 91.")]
    assert early and all(o.endswith("+ 70 = 161. The answer is 161.") for o in early)
    for o in early:
        wrong = o.split("= ")[1].split(".")[0]
        assert o.startswith(f"21 + 70 = {wrong}. {wrong} + 70") and wrong != "91"
    # a final step's error reaches the stated answer
    late = [o for o in outs if o.startswith("21 + 70 = 91.")]
    assert late and all(o.split("= ")[2].split(".")[0] == o.split()[-1][:-1] for o in late)
    assert warmup.corrupt("Heads, then tails", random.Random(0)) != "Heads, then tails"


def test_rows_from_gold_cover_every_mode(tiny_engine):
    task = get_task("basic_arithmetic", 4, 1, 0, {"min_terms": 2, "max_terms": 2})
    items, missing = warmup.from_gold(task.load("train"), seed=0)
    assert missing == 0 and len(items) == 4
    rows = warmup.rows(
        items,
        task,
        ["answer", "rationale", "answer_given_rationale", "refine"],
        tiny_engine.tokenizer,
        True,
    )
    assert len(rows) == 16
    ex = items[0].example
    assert rows[0]["completion"] == f"The answer is {ex.answer}."
    assert rows[1]["completion"] == ex.rationale
    assert rows[2]["completion"] == f" {ex.answer}." and rows[2]["prompt"].endswith("The answer is")
    assert items[0].draft in rows[3]["prompt"] and rows[3]["completion"] == ex.rationale


def test_self_sampled_rationales_keep_only_correct():
    task = get_task("coin_flip", 2, 1, 0, {})
    exs = [Example("a", "q1", "yes"), Example("b", "q2", "no")]
    samples = [
        [
            Generation("flip... The answer is no.", 5, True),
            Generation("so The answer is yes.", 5, True),
        ],
        [Generation("The answer is yes.", 4, True)],
    ]
    items, missing = warmup.from_samples(task, exs, samples, seed=0)
    assert missing == 1 and [it.example.id for it in items] == ["a"]
    assert items[0].rationale == "so The answer is yes."


def test_correct_drafts_share_is_respected():
    task = get_task("basic_arithmetic", 200, 1, 0, {"min_terms": 2, "max_terms": 3})
    examples = task.load("train")
    kept = lambda items: sum(it.draft == it.rationale for it in items) / len(items)  # noqa: E731
    assert kept(warmup.from_gold(examples, 0, correct_drafts=0.0)[0]) == 0.0
    assert kept(warmup.from_gold(examples, 0, correct_drafts=1.0)[0]) == 1.0
    assert 0.15 < kept(warmup.from_gold(examples, 0, correct_drafts=0.25)[0]) < 0.35
