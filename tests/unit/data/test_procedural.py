import pytest

from coalition.data.tasks import TaskError, get_task, task_names

GYM = ["basic_arithmetic", "chain_sum", "leg_counting", "gsm_symbolic", "products"]


@pytest.mark.parametrize("name", GYM + ["coin_flip", "last_letter_concat"])
def test_seeded_disjoint_splits_and_gold_is_correct(name):
    task = get_task(name, n_train=30, n_test=20, seed=3, params={})
    train, test = task.load("train"), task.load("test")
    assert len(train) == 30 and len(test) == 20
    assert not {e.question for e in train} & {e.question for e in test}
    assert [e.question for e in get_task(name, 30, 20, 3, {}).load("test")] == [
        e.question for e in test
    ]
    for ex in test[:5]:
        stated = f"Some reasoning first. The answer is {ex.answer}."
        assert task.is_correct(task.extract(stated), ex), (ex, task.extract(stated))
        assert not task.is_correct(task.extract("The answer is 987654321xyz."), ex)


def test_procedural_rationales_reach_gold():
    for name in ("coin_flip", "last_letter_concat"):
        task = get_task(name, 10, 5, 0, {})
        for ex in task.load("train"):
            assert task.is_correct(task.extract(ex.rationale), ex)


def test_coin_flip_logic():
    task = get_task("coin_flip", 50, 5, 0, {"people": 3})
    for ex in task.load("train"):
        flips = ex.question.count(" flips the coin")
        assert ex.answer == ("yes" if flips % 2 == 0 else "no")


def test_gym_params_pass_through_and_bad_params_error():
    task = get_task("basic_arithmetic", 5, 5, 0, {"min_terms": 2, "max_terms": 2, "max_digits": 1})
    assert all(len(e.question) < 30 for e in task.load("train"))
    with pytest.raises(TaskError, match="task.params"):
        get_task("basic_arithmetic", 5, 5, 0, {"bogus": 1}).load("train")
    with pytest.raises(TaskError, match=r"unknown key\(s\) \['words'\]"):
        get_task("coin_flip", 5, 5, 0, {"words": 1})


def test_registry_has_required_families():
    names = set(task_names())
    assert {
        "basic_arithmetic",
        "gsm_symbolic",
        "chain_sum",
        "leg_counting",
        "coin_flip",
        "last_letter_concat",
        "jsonl",
    } <= names
