"""Fine-tune-CoT teachers: a model that writes rationales with two-stage zero-shot CoT.

Fine-tune-CoT (Ho et al. 2023) distils reasoning from a teacher that is only *prompted*:

  stage 1  "{question} Let's think step by step."           → a sampled rationale (D per question)
  stage 2  stage-1 text + rationale + "Therefore, the answer is" → a short greedy answer

The student is then fine-tuned on the rationales whose stage-2 answer is correct. A
:class:`Teacher` runs both stages for a batch of questions and returns, per question, its D
:class:`CotSample` s in order. Two teachers share that interface:

- :class:`EngineTeacher` wraps any batched generation function (an in-process ``HFEngine``'s
  ``generate``, or a Ray actor call), so a local model can teach without a server.
- :class:`OpenAITeacher` talks to any OpenAI-compatible endpoint (OpenAI, ``vllm serve``,
  llama.cpp's server, …) with the official ``openai`` client, whose own retries (exponential
  backoff on connection errors, timeouts, 408/409/429 and 5xx) make it robust to a busy server;
  when the client gives up, the failure surfaces as one :class:`TeacherError` that names the
  endpoint, the model and the server's message.

This module does not import Ray: callers decide where a teacher runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from coalition.data import prompts
from coalition.data.prompts import Prompt
from coalition.engines.base import Generation, SamplingParams


@dataclass(frozen=True)
class TeacherSample:
    """One teacher rationale for a train question, its answer, and whether it is kept."""

    task: str
    qid: str
    question: str
    gold: str
    sample: int
    rationale: str
    answer: str
    extracted: str | None
    kept: bool
    tokens: int

    kind: ClassVar[str] = "teacher_sample"


STEP = "Let's think step by step."
THEREFORE = "Therefore, the answer is"
# the chat API's stage-2 user turn (a chat model needs to be told to answer briefly)
CHAT_ANSWER_REQUEST = f"{THEREFORE} ... (reply with the answer only)"


def cot_prompt(question: str, rationale: str | None = None) -> Prompt:
    """Stage 1 (no rationale) asks for step-by-step reasoning; stage 2 appends the rationale and
    "Therefore, the answer is" so the model continues with the answer."""
    if rationale is None:
        return Prompt(user=question, prefix=STEP)
    return Prompt(user=question, prefix=f"{STEP} {rationale.strip()}\n{THEREFORE}")


@dataclass(frozen=True)
class CotSample:
    """One teacher sample: the rationale, the raw text generated after "Therefore, the answer
    is", and the tokens generated over both stages."""

    rationale: str
    answer: str
    tokens: int


class TeacherError(RuntimeError):
    """The teacher's endpoint failed after its retries (or at once, for a non-retryable 4xx)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class Teacher(ABC):
    """Writes Fine-tune-CoT samples for a batch of questions."""

    @abstractmethod
    def write(
        self, questions: list[str], samples: int, temperature: float, seed: int
    ) -> list[list[CotSample]]:
        """For each question (in order), ``samples`` CotSamples."""

    def close(self) -> None:
        """Release what the teacher holds (connections); a no-op by default."""
        return None


def _check(samples: int) -> None:
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")


def _split(total: int, parts: int) -> list[int]:
    """``total`` tokens shared fairly among ``parts`` samples (the remainder goes first)."""
    return [total // parts + (1 if k < total % parts else 0) for k in range(parts)]


Generate = Callable[[list[str], SamplingParams], list[list[Generation]]]


class EngineTeacher(Teacher):
    """A teacher over any batched ``generate(prompts, params)``: one call per stage."""

    def __init__(
        self,
        generate: Generate,
        tokenizer: Any,
        chat: bool,
        max_new_tokens: int,
        answer_tokens: int,
        top_p: float = 1.0,
    ):
        self.generate = generate
        self.tokenizer = tokenizer
        self.chat = chat
        self.max_new_tokens = max_new_tokens
        self.answer_tokens = answer_tokens
        self.top_p = top_p

    def _render(self, question: str, rationale: str | None = None) -> str:
        return prompts.render(cot_prompt(question, rationale), self.tokenizer, self.chat)

    def write(
        self, questions: list[str], samples: int, temperature: float, seed: int
    ) -> list[list[CotSample]]:
        _check(samples)
        if not questions:
            return []
        stage1 = self.generate(
            [self._render(q) for q in questions],
            SamplingParams(
                n=samples,
                temperature=temperature,
                seed=seed,
                max_new_tokens=self.max_new_tokens,
                top_p=self.top_p,
            ),
        )
        pairs = [(i, k) for i in range(len(questions)) for k in range(samples)]
        stage2 = self.generate(
            [self._render(questions[i], stage1[i][k].text) for i, k in pairs],
            SamplingParams(n=1, temperature=0.0, max_new_tokens=self.answer_tokens, seed=seed),
        )
        out: list[list[CotSample]] = [[] for _ in questions]
        for (i, k), answers in zip(pairs, stage2, strict=True):
            rationale, answer = stage1[i][k], answers[0]
            out[i].append(CotSample(rationale.text, answer.text, rationale.tokens + answer.tokens))
        return out


class OpenAITeacher(Teacher):
    """A teacher behind an OpenAI-compatible endpoint; questions go out in parallel.

    ``api="completions"`` sends the plain-layout text (stage 1: one request per question with
    ``n`` samples; stage 2: one request per question whose ``prompt`` lists its samples' texts);
    ``api="chat"`` sends messages, stage 2 as one greedy request per sample.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        api: Literal["completions", "chat"] = "completions",
        max_new_tokens: int = 128,
        answer_tokens: int = 16,
        top_p: float = 1.0,
        timeout_s: float = 60.0,
        max_retries: int = 5,
        concurrency: int = 4,
    ):
        from openai import OpenAI

        if api not in ("completions", "chat"):
            raise ValueError(f"api must be 'completions' or 'chat', got {api!r}")
        self.base_url, self.model, self.api = base_url, model, api
        self.max_new_tokens, self.answer_tokens, self.top_p = max_new_tokens, answer_tokens, top_p
        self.max_retries = max_retries
        self.concurrency = max(1, concurrency)
        self.client = OpenAI(
            base_url=base_url,
            api_key=api_key or "EMPTY",
            timeout=timeout_s,
            max_retries=max_retries,
        )

    def write(
        self, questions: list[str], samples: int, temperature: float, seed: int
    ) -> list[list[CotSample]]:
        _check(samples)
        one = self._completions if self.api == "completions" else self._chat
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="teacher")
        try:
            futures = [pool.submit(one, q, samples, temperature, seed) for q in questions]
            return [f.result() for f in futures]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        self.client.close()

    # ------------------------------------------------------------------ one question

    def _completions(
        self, question: str, samples: int, temperature: float, seed: int
    ) -> list[CotSample]:
        text = prompts.render(cot_prompt(question), None, chat=False)
        first = self._call(
            self.client.completions.create,
            prompt=text,
            n=samples,
            temperature=temperature,
            top_p=self.top_p,
            seed=seed,
            max_tokens=self.max_new_tokens,
        )
        rationales = self._texts(first, samples, lambda c: c.text)
        second = self._call(
            self.client.completions.create,
            prompt=[prompts.render(cot_prompt(question, r), None, chat=False) for r in rationales],
            temperature=0,
            max_tokens=self.answer_tokens,
        )
        answers = self._texts(second, samples, lambda c: c.text)
        tokens = [
            a + b
            for a, b in zip(
                _split(_used(first), samples), _split(_used(second), samples), strict=True
            )
        ]
        return [
            CotSample(r.strip(), a.strip(), t)
            for r, a, t in zip(rationales, answers, tokens, strict=True)
        ]

    def _chat(self, question: str, samples: int, temperature: float, seed: int) -> list[CotSample]:
        user = {"role": "user", "content": f"{question}\n\n{STEP}"}
        first = self._call(
            self.client.chat.completions.create,
            messages=[user],
            n=samples,
            temperature=temperature,
            top_p=self.top_p,
            seed=seed,
            max_tokens=self.max_new_tokens,
        )
        rationales = self._texts(first, samples, lambda c: c.message.content or "")
        out = []
        for rationale, tokens in zip(rationales, _split(_used(first), samples), strict=True):
            second = self._call(
                self.client.chat.completions.create,
                messages=[
                    user,
                    {"role": "assistant", "content": rationale},
                    {"role": "user", "content": CHAT_ANSWER_REQUEST},
                ],
                n=1,
                temperature=0,
                max_tokens=self.answer_tokens,
            )
            (answer,) = self._texts(second, 1, lambda c: c.message.content or "")
            out.append(CotSample(rationale.strip(), answer.strip(), tokens + _used(second)))
        return out

    # ------------------------------------------------------------------ helpers

    def _call(self, create: Callable[..., Any], **kwargs: Any) -> Any:
        """One request (the client retries it); a final failure becomes a TeacherError."""
        import openai

        try:
            return create(model=self.model, **kwargs)
        except openai.APIError as err:
            status = getattr(err, "status_code", None)
            body = err.body.get("message") if isinstance(err.body, dict) else None
            detail = f"HTTP {status}: {body or err.message}" if status else repr(err.message)
            raise TeacherError(
                f"teacher endpoint {self.base_url} (model {self.model!r}) failed "
                f"[{type(err).__name__}] {detail} (the client retries connection errors, "
                f"timeouts, 408/409/429 and 5xx up to {self.max_retries} times)",
                status=status,
            ) from err

    def _texts(self, response: Any, expected: int, text: Callable[[Any], str]) -> list[str]:
        """The choices' texts in ``choice.index`` order (checking the server sent them all)."""
        choices = sorted(response.choices or [], key=lambda c: c.index)
        if [c.index for c in choices] != list(range(expected)):
            raise TeacherError(
                f"teacher endpoint {self.base_url} (model {self.model!r}) returned choices "
                f"{[c.index for c in choices]}, expected indices 0..{expected - 1} "
                "(does the server support n > 1?)"
            )
        return [text(c) for c in choices]


def _used(response: Any) -> int:
    """``usage.completion_tokens`` when the server reports it, else 0."""
    usage = getattr(response, "usage", None)
    return int(getattr(usage, "completion_tokens", 0) or 0)
