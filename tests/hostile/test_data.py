"""Bad task data and task parameters: one line naming the file, row and field (or the
parameter), before Ray starts."""

from __future__ import annotations

import json

import pytest

from tests.hostile.conftest import job, refused


def rows(n: int, start: int = 0) -> str:
    return "".join(
        json.dumps({"question": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n"
        for i in range(start, start + n)
    )


def data_job(tmp_path, *args: str, **params: object):
    """jobs/evaluate.py on the ``jsonl`` task with exactly ``params``."""
    spec = json.dumps({k: str(v) for k, v in params.items()})
    run = f"run_dir={tmp_path / 'run'}"
    return job("evaluate", "task.name=jsonl", f"task.params={spec}", *args, run)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    refused(data_job(tmp_path, path=path), f"task file {path} has no rows")
    assert not (tmp_path / "run").exists()


def test_a_directory(tmp_path):
    refused(data_job(tmp_path, path=tmp_path), "is a directory; give a JSONL file")


def test_not_utf8_names_the_row(tmp_path):
    path = tmp_path / "latin1.jsonl"
    bad = '{"question": "caf\xe9?", "answer": "1"}\n'.encode("latin-1")
    path.write_bytes(rows(2).encode() + bad)
    refused(data_job(tmp_path, path=path), f"{path} row 3: not UTF-8")


def test_test_file_equal_to_train_file(tmp_path):
    path = tmp_path / "same.jsonl"
    path.write_text(rows(20))
    refused(data_job(tmp_path, path=path, test_path=path), "the test split", "is empty")


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("{not json", "row 3: not valid JSON"),
        ('["a", "list"]', "row 3: expected a JSON object"),
        ('{"question": "Q?"}', "row 3: field 'answer' (answer) is missing or empty"),
        ('{"question": "", "answer": "1"}', "row 3: field 'question' (question) is missing"),
    ],
)
def test_malformed_rows(tmp_path, line, says):
    path = tmp_path / "bad.jsonl"
    path.write_text(rows(2) + line + "\n" + rows(4, 10))
    refused(data_job(tmp_path, path=path), f"{path} {says}")


def test_a_number_task_with_a_non_number_answer(tmp_path):
    path = tmp_path / "nums.jsonl"
    path.write_text(rows(3) + json.dumps({"question": "Q?", "answer": "many"}) + "\n")
    done = data_job(tmp_path, path=path, answer_type="number")
    refused(done, f"{path} row 4: field 'answer' is not a number")


def test_a_question_longer_than_the_context_names_its_row(tmp_path):
    path = tmp_path / "long.jsonl"
    # thousands of tokens (the tiny model's context is 2,048)
    long = {"question": " ".join("x9q" for _ in range(1500)), "answer": "1"}
    path.write_text(rows(6) + json.dumps(long) + "\n" + rows(6, 20))
    done = data_job(tmp_path, "evaluate.split=train", path=path)
    refused(done, f"{path} row 7: the question is", "tokens")


def test_a_huge_question_is_refused_untokenized(tmp_path):
    path = tmp_path / "huge.jsonl"
    path.write_text(rows(4) + json.dumps({"question": "7" * 10_000_000, "answer": "1"}) + "\n")
    done = data_job(tmp_path, "evaluate.split=train", path=path)
    refused(done, f"{path} row 5: the question is 10000000 characters")


def test_jsonl_needs_a_path(tmp_path):
    refused(data_job(tmp_path), "task.params.path is required")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["task.params.min_terms=0"], "task.params for 'basic_arithmetic': min_terms must be"),
        (["task.params.operators=[x]"], "unsupported operator"),
        (["task.name=leg_counting"], "task.params for 'leg_counting'"),
        (["task.name=no_such_task"], "unknown task 'no_such_task'"),
        (["task.name=leg_counting", "task.params={}"], "has no gold rationales and builtin:tiny"),
        (
            ["task.name=leg_counting", "task.params={}", "warmup.rationales_from=gold"],
            "warmup.rationales_from: gold, but task 'leg_counting' has no gold rationales",
        ),
        (["task.n_train=10"], "task.n_train: 10 train questions, but warmup.n + pool = 16"),
        (["warmup.rationales_from=/nope"], "warmup.rationales_from: '/nope' is neither"),
    ],
)
def test_task_parameters(tmp_path, args, says):
    refused(job("train", *args, f"run_dir={tmp_path / 'run'}"), says)
    assert not (tmp_path / "run").exists()


def test_other_jobs_check_their_sizes():
    refused(job("distill", "distill.n=100"), "task.n_train: 24 train questions, but distill.n")
    refused(job("saie", "saie.pool=100"), "but warmup.n + saie.pool = 108")
