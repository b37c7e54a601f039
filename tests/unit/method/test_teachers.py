"""Fine-tune-CoT teachers: the two-stage prompts, EngineTeacher on the tiny HF engine, and
OpenAITeacher against a real local OpenAI-compatible server (retries, timeouts, fast 4xx)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from coalition.data import prompts
from coalition.engines.base import Generation, SamplingParams
from coalition.engines.hf import HFEngine
from coalition.method.teachers import (
    STEP,
    THEREFORE,
    CotSample,
    EngineTeacher,
    OpenAITeacher,
    Teacher,
    TeacherError,
    cot_prompt,
)
from tests.openai_server import MODEL, OpenAIServer

QUESTIONS = ["What is 2 + 3?", "Name a colour of the sky.", "How many legs has a spider?"]


@pytest.fixture(scope="module")
def engine(tiny_path: str) -> HFEngine:
    return HFEngine.from_pretrained(
        tiny_path, dtype="float32", device="cpu", batch_size=8, progress=False
    )


@pytest.fixture(scope="module")
def server(engine: HFEngine) -> Iterator[OpenAIServer]:
    with OpenAIServer(engine) as running:
        yield running


@pytest.fixture(autouse=True)
def clean(request: pytest.FixtureRequest) -> None:
    if "server" in request.fixturenames:
        request.getfixturevalue("server").reset()


def teacher(server: OpenAIServer, **kwargs) -> OpenAITeacher:
    options = {"max_new_tokens": 8, "answer_tokens": 4, "timeout_s": 2.0, "max_retries": 3}
    return OpenAITeacher(server.base_url, kwargs.pop("model", MODEL), **{**options, **kwargs})


# --------------------------------------------------------------------------- prompts


def test_cot_prompt_two_stages() -> None:
    assert cot_prompt("Q?") == prompts.Prompt(user="Q?", prefix=STEP)
    stage2 = cot_prompt("Q?", "  First add. Then done.\n")
    assert stage2.user == "Q?"
    assert stage2.prefix == f"{STEP} First add. Then done.\n{THEREFORE}"
    plain = prompts.render(stage2, None, chat=False)
    assert plain == f"Q?\n\nAnswer: {STEP} First add. Then done.\n{THEREFORE}"


def test_base_teacher_close_is_a_noop() -> None:
    class Fixed(Teacher):
        def write(self, questions, samples, temperature, seed):
            return [[CotSample("r", "a", 1)] * samples for _ in questions]

    fixed = Fixed()
    assert fixed.write(["q"], 2, 1.0, 0) == [[CotSample("r", "a", 1)] * 2]
    fixed.close()


# --------------------------------------------------------------------------- EngineTeacher


def test_engine_teacher_two_calls_on_the_real_engine(engine: HFEngine) -> None:
    calls: list[tuple[list[str], SamplingParams, list[list[Generation]]]] = []

    def generate(texts: list[str], params: SamplingParams) -> list[list[Generation]]:
        out = engine.generate(texts, params)
        calls.append((texts, params, out))
        return out

    tok = engine.tokenizer
    t = EngineTeacher(generate, tok, chat=True, max_new_tokens=10, answer_tokens=5, top_p=0.9)
    result = t.write(QUESTIONS, samples=3, temperature=1.0, seed=7)

    assert len(calls) == 2
    (texts1, params1, gens1), (texts2, params2, gens2) = calls
    assert texts1 == [prompts.render(cot_prompt(q), tok, True) for q in QUESTIONS]
    assert texts1[0].endswith(STEP) and "<|im_start|>assistant" in texts1[0]  # chat template
    assert params1 == SamplingParams(max_new_tokens=10, temperature=1.0, top_p=0.9, n=3, seed=7)
    assert params2.greedy and params2.n == 1 and params2.max_new_tokens == 5
    assert len(texts2) == len(QUESTIONS) * 3

    assert [len(samples) for samples in result] == [3, 3, 3]
    for i, samples in enumerate(result):
        for k, sample in enumerate(samples):
            rationale, answer = gens1[i][k], gens2[i * 3 + k][0]
            stage2 = texts2[i * 3 + k]
            assert stage2 == prompts.render(cot_prompt(QUESTIONS[i], rationale.text), tok, True)
            assert f"{STEP} {rationale.text.strip()}\n{THEREFORE}" in stage2
            assert QUESTIONS[i] in stage2
            assert sample == CotSample(
                rationale.text, answer.text, rationale.tokens + answer.tokens
            )
            assert 0 < sample.tokens <= 15
    # sampling at temperature 1 gives different rationales for one question
    assert len({s.rationale for s in result[0]}) > 1
    # the answer stage is greedy: re-running one stage-2 prompt alone gives the same answer
    again = engine.generate([texts2[4]], SamplingParams(max_new_tokens=5, temperature=0.0))
    assert again[0][0].text == result[1][1].answer


def test_engine_teacher_plain_layout_and_edge_cases(engine: HFEngine) -> None:
    seen: list[list[str]] = []

    def generate(texts: list[str], params: SamplingParams) -> list[list[Generation]]:
        seen.append(texts)
        return engine.generate(texts, params)

    t = EngineTeacher(generate, engine.tokenizer, chat=False, max_new_tokens=6, answer_tokens=3)
    assert t.write([], samples=2, temperature=1.0, seed=0) == []
    assert seen == []
    out = t.write(["Q?"], samples=1, temperature=0.0, seed=0)
    assert seen[0] == [f"Q?\n\nAnswer: {STEP}"]
    assert seen[1][0].startswith(f"Q?\n\nAnswer: {STEP} ") and seen[1][0].endswith(THEREFORE)
    assert len(out) == 1 and len(out[0]) == 1
    with pytest.raises(ValueError, match="samples"):
        t.write(["Q?"], samples=0, temperature=1.0, seed=0)


# --------------------------------------------------------------------------- OpenAITeacher


def stage1_text(server: OpenAIServer, api: str, question: str) -> str:
    """The text the server generates from in stage 1 (plain layout, or the chat template)."""
    if api == "completions":
        return prompts.render(cot_prompt(question), None, chat=False)
    message = [{"role": "user", "content": f"{question}\n\n{STEP}"}]
    return server.engine.tokenizer.apply_chat_template(
        message, tokenize=False, add_generation_prompt=True
    )


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_openai_teacher_shapes_and_order(server: OpenAIServer, api: str) -> None:
    t = teacher(server, api=api, concurrency=3)
    before = server.requests
    result = t.write(QUESTIONS, samples=2, temperature=1.0, seed=5)
    per_question = 2 if api == "completions" else 1 + 2
    assert server.requests - before == len(QUESTIONS) * per_question
    assert [len(samples) for samples in result] == [2, 2, 2]

    # order: each question's samples are what the (seeded) model samples for it alone, in order
    params = SamplingParams(max_new_tokens=8, temperature=1.0, n=2, seed=5)
    for q, samples in zip(QUESTIONS, result, strict=True):
        alone = server.engine.generate([stage1_text(server, api, q)], params)[0]
        assert [s.rationale for s in samples] == [g.text for g in alone]
        generated = sum(g.tokens for g in alone)  # stage 1, plus at most 4 per answer
        assert generated <= sum(s.tokens for s in samples) <= generated + 2 * 4
    assert len({tuple(s.rationale for s in samples) for samples in result}) == len(QUESTIONS)

    # stage 2 carries the rationale, "Therefore, the answer is", and is greedy
    path = f"/v1/{'completions' if api == 'completions' else 'chat/completions'}"
    stage2 = [b for p, b in server.received if p == path and b["max_tokens"] == 4]
    assert stage2 and all(b["temperature"] == 0 and b["max_tokens"] == 4 for b in stage2)
    if api == "completions":
        texts = [text for b in stage2 for text in b["prompt"]]
        assert len(texts) == len(QUESTIONS) * 2 and all(
            isinstance(b["prompt"], list) for b in stage2
        )
        assert all(THEREFORE in text and STEP in text for text in texts)
        for q, samples in zip(QUESTIONS, result, strict=True):  # one request per question
            expected = [
                prompts.render(cot_prompt(q, s.rationale), None, chat=False) for s in samples
            ]
            assert expected in [b["prompt"] for b in stage2]
    else:
        assert len(stage2) == len(QUESTIONS) * 2
        for b in stage2:
            user, assistant, ask = b["messages"]
            assert user["content"].endswith(STEP) and assistant["role"] == "assistant"
            assert ask["content"].startswith(THEREFORE)
        assert {b["messages"][1]["content"] for b in stage2} == {
            s.rationale for samples in result for s in samples
        }
    t.close()


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_openai_teacher_samples_n_rationales(server: OpenAIServer, api: str) -> None:
    t = teacher(server, api=api)
    out = t.write(QUESTIONS[:1], samples=4, temperature=1.0, seed=3)
    assert len(out) == 1 and len(out[0]) == 4
    assert len({s.rationale for s in out[0]}) > 1  # n samples, not one copied
    first = [b for _, b in server.received if b.get("n") == 4]
    assert len(first) == 1 and first[0]["temperature"] == 1.0 and first[0]["seed"] == 3
    assert first[0]["max_tokens"] == 8
    t.close()


@pytest.mark.parametrize(("status", "count"), [(500, 2), (429, 1), (503, 1)])
def test_openai_teacher_retries_server_errors(
    server: OpenAIServer, status: int, count: int
) -> None:
    t = teacher(server, max_retries=3)
    server.fail_next(count, status)
    before = server.requests
    out = t.write(QUESTIONS[:1], samples=2, temperature=1.0, seed=0)
    assert len(out[0]) == 2
    assert server.requests - before == count + 2  # the failures were retried, then both stages
    t.close()


def test_openai_teacher_retries_a_timeout(server: OpenAIServer) -> None:
    t = teacher(server, api="chat", timeout_s=1.0, max_retries=2)
    server.delay_next(1, 2.5)
    before, start = server.requests, time.monotonic()
    out = t.write(QUESTIONS[:1], samples=1, temperature=1.0, seed=0)
    assert len(out[0]) == 1
    assert time.monotonic() - start >= 1.0  # it did wait for the timeout
    assert server.requests - before == 1 + 2  # timed out, retried, then stage 2
    t.close()


def test_openai_teacher_persistent_failure_raises(server: OpenAIServer) -> None:
    t = teacher(server, max_retries=1)
    server.fail_next(100, 500)
    before, start = server.requests, time.monotonic()
    with pytest.raises(TeacherError) as err:
        t.write(QUESTIONS[:1], samples=2, temperature=1.0, seed=0)
    assert time.monotonic() - start < 5.0
    assert server.requests - before == 2  # one try and one retry
    message = str(err.value)
    assert server.base_url in message and MODEL in message and "500" in message
    assert "injected failure" in message and err.value.status == 500
    t.close()


def test_openai_teacher_unknown_model_fails_fast(server: OpenAIServer) -> None:
    t = teacher(server, model="no-such-model", max_retries=5)
    before, start = server.requests, time.monotonic()
    with pytest.raises(TeacherError) as err:
        t.write(QUESTIONS[:1], samples=2, temperature=1.0, seed=0)
    assert time.monotonic() - start < 1.5
    assert server.requests - before == 1  # a 404 is not retried
    message = str(err.value)
    assert "404" in message and "no-such-model" in message and "does not exist" in message
    assert server.base_url in message and err.value.status == 404
    t.close()


def test_openai_teacher_unreachable_endpoint() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    t = OpenAITeacher(url, MODEL, None, timeout_s=1.0, max_retries=1)
    start = time.monotonic()
    with pytest.raises(TeacherError, match="APIConnectionError") as err:
        t.write(["Q?"], samples=1, temperature=1.0, seed=0)
    assert url in str(err.value) and err.value.status is None
    assert time.monotonic() - start < 5.0
    t.close()
