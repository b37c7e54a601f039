import json

import pytest

from coalition.data.tasks import TaskError, get_task


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def test_split_fields_and_checking(tmp_path):
    rows = [{"q": f"What is {i}+1?", "a": str(i + 1), "why": f"{i}+1={i + 1}"} for i in range(20)]
    path = write(tmp_path / "mine.jsonl", rows)
    params = {
        "path": path,
        "question_field": "q",
        "answer_field": "a",
        "rationale_field": "why",
        "answer_type": "number",
    }
    task = get_task("jsonl", 100, 100, 0, params)
    train, test = task.load("train"), task.load("test")
    assert len(train) == 14 and len(test) == 6
    assert not {e.question for e in train} & {e.question for e in test}
    ex = test[0]
    assert ex.rationale and task.is_correct(task.extract(f"The answer is {ex.answer}.0"), ex)


def test_separate_test_file_and_text_answers(tmp_path):
    train = write(tmp_path / "tr.jsonl", [{"question": "Capital of France?", "answer": "Paris"}])
    test = write(tmp_path / "te.jsonl", [{"question": "Capital of Italy?", "answer": "Rome"}])
    task = get_task("jsonl", 5, 5, 0, {"path": train, "test_path": test})
    [ex] = task.load("test")
    assert task.is_correct(task.extract("The answer is rome."), ex)
    assert not task.is_correct(task.extract("The answer is Paris."), ex)


@pytest.mark.parametrize(
    "rows, message",
    [
        (
            [{"question": "a", "answer": "1"}, {"question": "b"}],
            r"bad.jsonl row 2: field 'answer' \(answer\) is missing",
        ),
        (["{not json"], r"bad.jsonl row 1: not valid JSON"),
        (["[1, 2]"], r"bad.jsonl row 1: expected a JSON object"),
        ([{"question": "", "answer": "1"}], r"bad.jsonl row 1: field 'question'"),
    ],
)
def test_malformed_rows_name_file_row_field(tmp_path, rows, message):
    path = write(tmp_path / "bad.jsonl", rows)
    with pytest.raises(TaskError, match=message):
        get_task("jsonl", 5, 5, 0, {"path": path}).load("train")


def test_number_answer_must_be_number(tmp_path):
    path = write(tmp_path / "n.jsonl", [{"question": "q", "answer": "seven"}])
    with pytest.raises(TaskError, match="n.jsonl row 1: field 'answer' is not a number"):
        get_task("jsonl", 5, 5, 0, {"path": path, "answer_type": "number"}).load("train")


def test_param_errors(tmp_path):
    with pytest.raises(TaskError, match="task.params.path is required"):
        get_task("jsonl", 5, 5, 0, {})
    with pytest.raises(TaskError, match="answer_type: 'float' not allowed"):
        get_task("jsonl", 5, 5, 0, {"path": "x", "answer_type": "float"})
    with pytest.raises(TaskError, match="does not exist"):
        get_task("jsonl", 5, 5, 0, {"path": str(tmp_path / "missing.jsonl")}).load("train")
