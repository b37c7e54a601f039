"""Hub benchmark loaders, read offline from small fixture files in each source's real schema."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from coalition.data.records import Example
from coalition.data.tasks import get_task
from coalition.data.tasks.base import TaskError

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "hub"

# task -> {data_files key: fixture file}; keys are the source's real split names.
FILES = {
    "gsm8k": {"train": "train.jsonl", "test": "test.jsonl"},
    "svamp": {"train": "train.jsonl", "test": "test.jsonl"},
    "multiarith": {"train": "train.jsonl", "test": "test.jsonl"},
    "addsub": {"test": "AddSub.json"},
    "singleeq": {"test": "questions.json"},
    "aqua": {"train": "train.jsonl", "test": "test.jsonl"},
    "commonsense_qa": {"train": "train.jsonl", "validation": "validation.jsonl"},
    "strategyqa": {"train": "train.jsonl", "test": "test.jsonl"},
    "date_understanding": {"test": "test.jsonl"},
    "tracking_shuffled_objects": {"test": "test.jsonl"},
    "winogrande": {"train": "train.jsonl", "validation": "validation.jsonl"},
    "piqa": {"train": "train.jsonl", "validation": "validation.jsonl"},
    "hellaswag": {"train": "train.jsonl", "validation": "validation.jsonl"},
    "anli": {"train_r1": "train_r1.jsonl", "test_r1": "test_r1.jsonl"},
    "mmlu": {"auxiliary_train": "auxiliary_train.jsonl", "test": "test.jsonl"},
}
KINDS = {
    "gsm8k": "number",
    "svamp": "number",
    "multiarith": "number",
    "addsub": "number",
    "singleeq": "number",
    "strategyqa": "yesno",
}


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path_factory):
    """No network, and a throwaway datasets cache."""
    import datasets
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(
        datasets.config, "HF_DATASETS_CACHE", str(tmp_path_factory.getbasetemp() / "hf-cache")
    )


def data_files(name: str) -> dict[str, str]:
    return {split: str(FIXTURES / name / file) for split, file in FILES[name].items()}


def make(name: str, n_train: int = 100, n_test: int = 100, seed: int = 0, **params):
    return get_task(name, n_train, n_test, seed, {"data_files": data_files(name), **params})


def everything(name: str, **params) -> tuple[list[Example], list[Example]]:
    task = make(name, **params)
    return task.load("train"), task.load("test")


def find(examples: list[Example], fragment: str) -> Example:
    hits = [ex for ex in examples if fragment in ex.question]
    assert len(hits) == 1, f"{fragment!r}: {len(hits)} matches"
    return hits[0]


# --------------------------------------------------------------------------- all tasks


def test_every_benchmark_has_a_fixture():
    from coalition.data.tasks.base import registry
    from coalition.data.tasks.benchmarks import HubTask

    hub_tasks = {
        name
        for name, cls in registry().items()
        if isinstance(cls, type) and issubclass(cls, HubTask)
    }
    assert hub_tasks == set(FILES)


@pytest.mark.parametrize("name", sorted(FILES))
def test_loads_disjoint_sized_seeded_splits(name):
    full_train, full_test = everything(name)
    assert full_train and full_test
    assert {ex.question for ex in full_train}.isdisjoint(ex.question for ex in full_test)
    ids = [ex.id for ex in full_train + full_test]
    assert len(ids) == len(set(ids))

    task = make(name, n_train=4, n_test=2)
    train, test = task.load("train"), task.load("test")
    assert (len(train), len(test)) == (4, 2)
    assert {ex.id for ex in train} <= {ex.id for ex in full_train}
    assert {ex.id for ex in test} <= {ex.id for ex in full_test}
    again = make(name, n_train=4, n_test=2)
    assert again.load("train") == train and again.load("test") == test

    kind = KINDS.get(name, "choice")
    for ex in full_train + full_test:
        assert ex.question.strip() and ex.answer
        assert ex.meta["source"].startswith(str(FIXTURES / name))
        if kind == "choice":
            assert ex.options and ex.answer in "ABCDEFG"[: len(ex.options)]
            assert "\nAnswer Choices: (A) " in ex.question
            assert f"({ex.answer}) {ex.options['ABCDEFG'.index(ex.answer)]}" in ex.question
        elif kind == "yesno":
            assert ex.answer in ("yes", "no") and ex.options is None
        else:
            assert float(ex.answer) == float(ex.answer.strip()) and ex.options is None


@pytest.mark.parametrize("name", sorted(FILES))
def test_extraction_accepts_right_and_rejects_wrong(name):
    task = make(name, n_test=3)
    kind = KINDS.get(name, "choice")
    assert ("(X)" in task.answer_format) == (kind == "choice")
    for ex in task.load("test"):
        if kind == "number":
            right = f"Let's compute step by step: 2 + 3 = 5, then more work.\nThe answer is {ex.answer}."
            wrong = f"So the total is 2 + 3.\nThe answer is {float(ex.answer) + 1:g}."
        elif kind == "yesno":
            other = "no" if ex.answer == "yes" else "yes"
            right = f"Thinking it through, {other} seems unlikely. So the answer is {ex.answer}."
            wrong = f"So the answer is {other}."
        else:
            other = "A" if ex.answer != "A" else "B"
            right = f"Option ({other}) does not fit, so the answer is ({ex.answer})."
            wrong = f"The answer is ({other})."
        assert task.is_correct(task.extract(right), ex), right
        assert not task.is_correct(task.extract(wrong), ex), wrong
        assert not task.is_correct(None, ex)


# --------------------------------------------------------------------------- field mapping


def test_gsm8k_fields_and_dedupe():
    train, test = everything("gsm8k")
    ex = find(train, "Tom has 3 boxes")
    assert ex.answer == "12"
    assert ex.rationale == "Tom has 3*4=12 apples."
    pizza = find(train, "A pizza has 8 slices")
    assert pizza.rationale == "They eat 3*2=6 slices.\n8-6=2 slices remain."
    assert "<<" not in "".join(e.rationale or "" for e in train + test)
    assert find(test, "Lily earns").answer == "250"
    # The test file repeats a train question: it is dropped from test.
    assert len(test) == 5 and not [e for e in test if "Tom has 3 boxes" in e.question]


def test_svamp_multiarith_fields():
    train, test = everything("svamp")
    ex = find(test, "A jug has 2.5 liters")
    assert (
        ex.question
        == "A jug has 2.5 liters of juice. Tim adds 1.25 liters. How much juice is in the jug?"
    )
    assert ex.answer == "3.75" and ex.id == "svamp-chal-104"
    assert ex.meta["equation"] == "( 2.5 + 1.25 )" and ex.meta["type"] == "Addition"
    assert find(train, "Jack had 8 pens").answer == "13"

    train, test = everything("multiarith")
    ex = find(train, "A waiter had 14 customers")
    assert ex.question.startswith("A waiter") and ex.answer == "50" and ex.rationale is None


@pytest.mark.parametrize(
    ("name", "fragment", "answer"),
    [("addsub", "walnut trees", "55"), ("singleeq", "A rope", "2.5")],
)
def test_mawps_json_array_fields_and_70_30_split(name, fragment, answer):
    train, test = everything(name)
    assert (len(train), len(test)) == (7, 3)
    ex = find(train + test, fragment)
    assert ex.answer == answer and ex.id.startswith(f"{name}-") and ex.meta["equations"]
    # A different seed gives a different 70/30 partition.
    assert {e.id for e in make(name, seed=1).load("train")} != {e.id for e in train}


def test_aqua_fields():
    train, _ = everything("aqua")
    ex = find(train, "A train travels 120 km")
    assert ex.options == ("40", "50", "60", "70", "80")
    assert ex.question == (
        "A train travels 120 km in 2 hours. What is its speed in km/h?\n"
        "Answer Choices: (A) 40 (B) 50 (C) 60 (D) 70 (E) 80"
    )
    assert ex.answer == "C" and ex.rationale == "Speed = 120/2 = 60 km/h.\nAnswer: C"


def test_commonsense_qa_uses_validation_as_test():
    train, test = everything("commonsense_qa")
    ex = find(test, "What do you use to cut paper?")
    assert ex.options == ("spoon", "pillow", "scissors", "cup", "sock") and ex.answer == "C"
    assert ex.id == f"commonsense_qa-{12:032x}" and ex.meta["concept"] == "cut"
    assert len(train) == 6 and len(test) == 6


def test_strategyqa_fields():
    _, test = everything("strategyqa")
    ex = find(test, "Mount Everest")
    assert ex.answer == "yes" and ex.id == "strategyqa-q0102"
    assert ex.rationale == "Everest is 8849 m tall. The Eiffel Tower is 330 m tall."
    assert find(test, "Would a cat").answer == "no"
    assert find(test, "Is chess played").rationale is None


def test_bbh_options_are_parsed_out_of_the_input():
    train, test = everything("date_understanding")
    assert (len(train), len(test)) == (7, 3)
    ex = find(train + test, "Today is 03/14/2021")
    assert ex.options[0] == "03/04/2021" and len(ex.options) == 6 and ex.answer == "A"
    assert "Options:" not in ex.question
    assert ex.question.startswith(
        "Today is 03/14/2021. What is the date 10 days ago in MM/DD/YYYY?\nAnswer Choices: (A) 03/04/2021 (B)"
    )

    train, test = everything("tracking_shuffled_objects")
    ex = find(train + test, "(round 1)")
    assert ex.options == ("red ball", "green ball", "blue ball") and ex.answer == "B"
    assert ex.question.split("\nAnswer Choices:")[0].endswith(
        "At the end of the game, Alice has the"
    )
    five = make("tracking_shuffled_objects", config="tracking_shuffled_objects_five_objects")
    assert five.letters == "ABCDE" and "(A-E)" in five.answer_format


def test_winogrande_piqa_hellaswag_fields():
    train, test = everything("winogrande")
    ex = find(test, "Kyle asked Ben")
    assert ex.options == ("Kyle", "Ben") and ex.answer == "B"
    assert ex.question.startswith(
        "Kyle asked Ben for help because _ knew the answer.\nWhich option"
    )

    _, test = everything("piqa")
    ex = find(test, "How to make ice faster?")
    assert (
        ex.options == ("Use hot water in the tray.", "Use small, shallow trays.")
        and ex.answer == "B"
    )

    _, test = everything("hellaswag")
    ex = find(test, "A barber picks up scissors. He")
    assert ex.answer == "C" and ex.options[2] == "trims the customer's hair."
    assert ex.id == "hellaswag-103" and ex.meta["activity"] == "Cutting hair"


def test_anli_fields_and_round():
    train, test = everything("anli")
    ex = find(test, "Anna is a vegetarian")
    assert ex.options == ("entailment", "neutral", "contradiction") and ex.answer == "C"
    assert ex.rationale == "Vegetarians do not eat steak." and ex.id == "anli-r1-1002"
    assert "Hypothesis: Anna eats steak every day." in ex.question
    assert find(test, "The school has 500").rationale is None  # empty reason
    with pytest.raises(TaskError, match=r"'train_r2' and 'test_r2'"):
        make("anli", round=2).load("train")
    files = {"train_r2": data_files("anli")["train_r1"], "test_r2": data_files("anli")["test_r1"]}
    task = get_task("anli", 100, 100, 0, {"data_files": files, "round": "2"})
    assert len(task.load("test")) == 6


def test_mmlu_fields():
    train, test = everything("mmlu")
    ex = find(test, "Which organ pumps blood")
    assert ex.options == ("Lungs", "Liver", "Heart", "Kidney") and ex.answer == "C"
    assert ex.meta["subject"] == "anatomy"
    assert find(train, "chemical symbol for gold").meta["subject"] is None


# --------------------------------------------------------------------------- bad data and params


def _write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


GOOD_GSM8K = {"question": "What is 1 + 1?", "answer": "1+1=<<1+1=2>>2\n#### 2"}


@pytest.mark.parametrize(
    ("name", "good", "bad", "field"),
    [
        ("gsm8k", GOOD_GSM8K, {"question": "What is 2 + 2?", "answer": "It is 4."}, "answer"),
        ("gsm8k", GOOD_GSM8K, {"question": None, "answer": "#### 4"}, "question"),
        (
            "commonsense_qa",
            {
                "id": "a",
                "question": "Q1?",
                "choices": {"label": ["A", "B"], "text": ["x", "y"]},
                "answerKey": "A",
            },
            {
                "id": "b",
                "question": "Q2?",
                "choices": {"label": ["A", "B"], "text": ["x", "y"]},
                "answerKey": "F",
            },
            "answerKey",
        ),
        (
            "mmlu",
            {"question": "Q1?", "subject": "s", "choices": ["a", "b", "c", "d"], "answer": 0},
            {"question": "Q2?", "subject": "s", "choices": ["a", "b", "c", "d"], "answer": 7},
            "answer",
        ),
        (
            "svamp",
            {
                "ID": "1",
                "Body": "B.",
                "Question": "Q?",
                "Equation": "e",
                "Answer": 1.0,
                "Type": "t",
            },
            {"ID": "2", "Body": "", "Question": "Q?", "Equation": "e", "Answer": 1.0, "Type": "t"},
            "Body",
        ),
        (
            "aqua",
            {"question": "Q1?", "options": ["A)1", "B)2"], "rationale": "r", "correct": "A"},
            {"question": "Q2?", "options": ["A)1", "C)2"], "rationale": "r", "correct": "A"},
            "options",
        ),
        (
            "date_understanding",
            {"input": "Q1?\nOptions:\n(A) x\n(B) y", "target": "(A)"},
            {"input": "Q2?\nOptions:\n(A) x\n(B) y", "target": "(D)"},
            "target",
        ),
    ],
)
def test_malformed_row_names_file_row_and_field(tmp_path, name, good, bad, field):
    path = _write(tmp_path / f"{name}.jsonl", [good, good | {}, bad])
    task = get_task(name, 5, 5, 0, {"data_files": {"test": path}})
    with pytest.raises(TaskError) as err:
        task.load("train")
    message = str(err.value)
    assert path in message and "row 2" in message and repr(field) in message


def test_bad_params_are_refused():
    with pytest.raises(
        TaskError, match=r"unknown key\(s\) \['bogus'\].*allowed: config, data_files, path"
    ):
        get_task("gsm8k", 1, 1, 0, {"bogus": 1})
    with pytest.raises(TaskError, match="unknown key"):
        get_task("gsm8k", 1, 1, 0, {"round": 1})  # anli-only
    with pytest.raises(TaskError, match="round"):
        get_task("anli", 1, 1, 0, {"round": 5})
    with pytest.raises(TaskError, match="subject"):
        get_task("mmlu", 1, 1, 0, {"subject": "Not a subject!"})
    with pytest.raises(TaskError, match="data_files"):
        get_task("gsm8k", 1, 1, 0, {"data_files": "train.jsonl"})
    with pytest.raises(TaskError, match="path or data_files"):
        get_task("gsm8k", 1, 1, 0, {"path": "x/y", "data_files": {"test": "a.jsonl"}})
    with pytest.raises(TaskError, match="does not exist"):
        get_task("gsm8k", 1, 1, 0, {"data_files": {"test": "/nonexistent/test.jsonl"}}).load("test")
    with pytest.raises(TaskError, match="one of"):
        get_task("gsm8k", 1, 1, 0, {"data_files": {"test": __file__}}).load("test")
    with pytest.raises(TaskError, match="split must be"):
        make("gsm8k").load("validation")


# --------------------------------------------------------------------------- hub calls (faked)


class FakeHub:
    """Stands in for ``datasets.load_dataset``: records calls, serves fixture rows."""

    def __init__(self, name: str, fail: dict[str, Exception] | None = None):
        self.rows = {}
        for file in FILES[name].values():
            text = (FIXTURES / name / file).read_text()
            rows = (
                json.loads(text)
                if file.endswith(".json")
                else [json.loads(x) for x in text.splitlines()]
            )
            self.rows[Path(file).stem] = rows
        self.fail = fail or {}
        self.calls: list[dict] = []

    def __call__(self, path, name=None, split=None, data_files=None, **kw):
        self.calls.append({"path": path, "name": name, "split": split, "data_files": data_files})
        if path in self.fail:
            raise self.fail[path]
        if split in self.rows:
            return list(self.rows[split])
        similar = [rows for stem, rows in self.rows.items() if stem[:4] == split[:4]]
        return list(similar[0] if similar else next(iter(self.rows.values())))


@pytest.mark.parametrize(
    ("name", "params", "expected"),
    [
        ("gsm8k", {}, [("openai/gsm8k", "main", "train"), ("openai/gsm8k", "main", "test")]),
        ("svamp", {}, [("ChilleD/SVAMP", None, "train"), ("ChilleD/SVAMP", None, "test")]),
        (
            "multiarith",
            {},
            [("ChilleD/MultiArith", None, "train"), ("ChilleD/MultiArith", None, "test")],
        ),
        ("aqua", {}, [("deepmind/aqua_rat", "raw", "train"), ("deepmind/aqua_rat", "raw", "test")]),
        (
            "commonsense_qa",
            {},
            [("tau/commonsense_qa", None, "train"), ("tau/commonsense_qa", None, "validation")],
        ),
        (
            "strategyqa",
            {},
            [("ChilleD/StrategyQA", None, "train"), ("ChilleD/StrategyQA", None, "test")],
        ),
        ("date_understanding", {}, [("lukaemon/bbh", "date_understanding", "test")]),
        (
            "tracking_shuffled_objects",
            {},
            [("lukaemon/bbh", "tracking_shuffled_objects_three_objects", "test")],
        ),
        (
            "winogrande",
            {"config": "winogrande_l"},
            [
                ("allenai/winogrande", "winogrande_l", "train"),
                ("allenai/winogrande", "winogrande_l", "validation"),
            ],
        ),
        (
            "piqa",
            {},
            [("ybisk/piqa", "plain_text", "train"), ("ybisk/piqa", "plain_text", "validation")],
        ),
        (
            "hellaswag",
            {},
            [("Rowan/hellaswag", None, "train"), ("Rowan/hellaswag", None, "validation")],
        ),
        (
            "anli",
            {"round": 3},
            [
                ("facebook/anli", "plain_text", "train_r3"),
                ("facebook/anli", "plain_text", "test_r3"),
            ],
        ),
        ("mmlu", {}, [("cais/mmlu", "all", "auxiliary_train"), ("cais/mmlu", "all", "test")]),
        (
            "mmlu",
            {"subject": "anatomy"},
            [("cais/mmlu", "anatomy", "validation"), ("cais/mmlu", "anatomy", "test")],
        ),
        (
            "gsm8k",
            {"path": "someone/gsm8k-copy"},
            [("someone/gsm8k-copy", "main", "train"), ("someone/gsm8k-copy", "main", "test")],
        ),
    ],
)
def test_hub_sources_and_split_names(monkeypatch, name, params, expected):
    import datasets

    fake = FakeHub(name)
    monkeypatch.setattr(datasets, "load_dataset", fake)
    task = get_task(name, 3, 2, 0, params)
    assert len(task.load("train")) == 3 and len(task.load("test")) == 2
    assert [(c["path"], c["name"], c["split"]) for c in fake.calls] == expected
    assert expected[0][0] in task.load("test")[0].meta["source"]


@pytest.mark.parametrize(
    ("name", "url"),
    [("addsub", "/AddSub/AddSub.json"), ("singleeq", "/SingleEq/questions.json")],
)
def test_mawps_default_source_is_the_zero_shot_cot_json(monkeypatch, name, url):
    import datasets

    fake = FakeHub(name)
    monkeypatch.setattr(datasets, "load_dataset", fake)
    assert len(get_task(name, 5, 2, 0, {}).load("train")) == 5
    (call,) = fake.calls
    assert call["path"] == "json" and call["split"] == "test"
    assert call["data_files"]["test"].startswith(
        "https://raw.githubusercontent.com/kojima-takeshi188/zero_shot_cot/"
    )
    assert call["data_files"]["test"].endswith(url)


def test_script_only_repo_falls_back_to_the_parquet_export(monkeypatch):
    import datasets

    fake = FakeHub(
        "piqa",
        fail={
            "ybisk/piqa": RuntimeError("Dataset scripts are no longer supported, but found piqa.py")
        },
    )
    monkeypatch.setattr(datasets, "load_dataset", fake)
    assert len(get_task("piqa", 2, 2, 0, {}).load("test")) == 2
    parquet = [c for c in fake.calls if c["path"] == "parquet"]
    assert [c["data_files"] for c in parquet] == [
        {"train": "hf://datasets/ybisk/piqa@refs%2Fconvert%2Fparquet/plain_text/train/*.parquet"},
        {
            "validation": "hf://datasets/ybisk/piqa@refs%2Fconvert%2Fparquet/plain_text/validation/*.parquet"
        },
    ]


def test_load_failure_names_the_source(monkeypatch):
    import datasets

    fake = FakeHub(
        "gsm8k", fail={"openai/gsm8k": ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub")}
    )
    monkeypatch.setattr(datasets, "load_dataset", fake)
    with pytest.raises(TaskError, match=r"openai/gsm8k \(config main\) split 'train'.*data_files"):
        get_task("gsm8k", 1, 1, 0, {}).load("train")


def test_really_offline_hub_load_fails_cleanly():
    with pytest.raises(TaskError, match="could not load openai/gsm8k"):
        get_task("gsm8k", 1, 1, 0, {}).load("train")


def test_import_does_not_import_datasets():
    code = "import sys, coalition.data.tasks; print('datasets' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "False"


def test_data_files_keys_may_use_train_and_test(tmp_path):
    files = data_files("commonsense_qa")
    task = get_task(
        "commonsense_qa",
        100,
        100,
        0,
        {"data_files": {"train": files["train"], "test": files["validation"]}},
    )
    assert find(task.load("test"), "cut paper").answer == "C"
    with pytest.raises(TaskError, match=r"expected splits 'train' and 'validation'"):
        get_task(
            "commonsense_qa",
            1,
            1,
            0,
            {"data_files": {"dev": files["train"], "other": files["validation"]}},
        ).load("test")


def test_path_may_be_a_local_dataset_folder(tmp_path):
    for split in ("train", "test"):
        (tmp_path / f"{split}.jsonl").write_text(
            (FIXTURES / "strategyqa" / f"{split}.jsonl").read_text()
        )
    task = get_task("strategyqa", 100, 100, 0, {"path": str(tmp_path)})
    assert len(task.load("train")) == 6 and find(task.load("test"), "Would a cat").answer == "no"
