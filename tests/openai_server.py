"""A real, local OpenAI-compatible HTTP server for tests, generating with the tiny HF engine.

It speaks ``POST /v1/completions`` and ``POST /v1/chat/completions`` (and ``GET /v1/models``)
with OpenAI's JSON shapes, answers an unknown model with a 404 and an OpenAI-style error body,
and can inject failures: ``fail_next(count, status)`` answers the next requests with an error,
``delay_next(count, seconds)`` sleeps before answering (to trip client timeouts). ``requests``
counts every request received; ``received`` keeps the (path, JSON body) of each one answered.

    with OpenAIServer() as server:
        OpenAI(base_url=server.base_url, api_key="x").completions.create(...)
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from coalition.engines.base import SamplingParams
from coalition.engines.hf import HFEngine

MODEL = "tiny"


class OpenAIServer:
    """An OpenAI-compatible server on 127.0.0.1 (a free port), served from a daemon thread."""

    def __init__(self, engine: HFEngine | None = None, model: str = MODEL):
        if engine is None:
            from coalition.engines.models import tiny_path

            engine = HFEngine.from_pretrained(
                str(tiny_path()), dtype="float32", device="cpu", batch_size=8, progress=False
            )
        self.engine = engine
        self.model = model
        self.requests = 0
        self.received: list[tuple[str, dict[str, Any]]] = []
        self._failures: list[int] = []  # statuses to answer, one per coming request
        self._delays: list[float] = []  # seconds to sleep, one per coming request
        self._state = threading.Lock()
        self._engine_lock = threading.Lock()  # the engine is not thread-safe
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the server is not running")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> OpenAIServer:
        server = self

        class Handler(_Handler):
            owner = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ failure injection

    def fail_next(self, count: int, status: int = 500) -> None:
        """Answer the next ``count`` requests with HTTP ``status`` and an error body."""
        with self._state:
            self._failures.extend([status] * count)

    def delay_next(self, count: int, seconds: float) -> None:
        """Sleep ``seconds`` before answering each of the next ``count`` requests."""
        with self._state:
            self._delays.extend([seconds] * count)

    def reset(self) -> None:
        """Forget pending failures and delays and the received log."""
        with self._state:
            self._failures.clear()
            self._delays.clear()
            self.received.clear()

    def _admit(self) -> tuple[int | None, float]:
        """Count a request and take its injected failure status and delay, if any."""
        with self._state:
            self.requests += 1
            status = self._failures.pop(0) if self._failures else None
            delay = self._delays.pop(0) if status is None and self._delays else 0.0
            return status, delay

    # ------------------------------------------------------------------ generation

    def _generate(self, prompts: list[str], body: dict[str, Any], default_max: int) -> Any:
        params = SamplingParams(
            max_new_tokens=int(
                body.get("max_completion_tokens") or body.get("max_tokens") or default_max
            ),
            temperature=float(body.get("temperature", 1.0)),
            top_p=float(body.get("top_p", 1.0)),
            n=int(body.get("n") or 1),
            seed=int(body.get("seed") or 0),
        )
        with self._engine_lock:  # the server answers on several threads
            generations = self.engine.generate(prompts, params)
        prompt_tokens = sum(len(self.engine.encode(p)) for p in prompts)
        return generations, prompt_tokens

    def completions(self, body: dict[str, Any]) -> dict[str, Any]:
        prompt = body.get("prompt", "")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        generations, prompt_tokens = self._generate(prompts, body, default_max=16)
        flat = [g for gens in generations for g in gens]  # prompt-major, as OpenAI orders them
        choices = [
            {"index": i, "text": g.text, "logprobs": None, "finish_reason": _finish(g)}
            for i, g in enumerate(flat)
        ]
        return self._response("text_completion", choices, generations, prompt_tokens)

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        tokenizer = self.engine.tokenizer
        text = tokenizer.apply_chat_template(
            body.get("messages", []), tokenize=False, add_generation_prompt=True
        )
        generations, prompt_tokens = self._generate([text], body, default_max=64)
        choices = [
            {
                "index": k,
                "message": {"role": "assistant", "content": g.text},
                "logprobs": None,
                "finish_reason": _finish(g),
            }
            for k, g in enumerate(generations[0])
        ]
        return self._response("chat.completion", choices, generations, prompt_tokens)

    def _response(
        self, kind: str, choices: list[dict[str, Any]], generations: Any, prompt_tokens: int
    ) -> dict[str, Any]:
        completion_tokens = sum(g.tokens for gens in generations for g in gens)
        return {
            "id": f"cmpl-{uuid.uuid4().hex[:12]}",
            "object": kind,
            "created": int(time.time()),
            "model": self.model,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


def _finish(generation: Any) -> str:
    return "stop" if generation.finished else "length"


def error_body(message: str, kind: str, code: str | int | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class _Handler(BaseHTTPRequestHandler):
    owner: OpenAIServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout): nothing to answer

    def _client_gone(self) -> bool:
        """Whether the client closed the connection (readable, with nothing left to read)."""
        ready, _, _ = select.select([self.connection], [], [], 0)
        try:
            return bool(ready) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            model = {"id": self.owner.model, "object": "model", "created": 0, "owned_by": "test"}
            self._send(200, {"object": "list", "data": [model]})
        else:
            self._send(404, error_body(f"no route {self.path}", "not_found_error"))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        status, delay = self.owner._admit()
        if status is not None:
            message = f"injected failure (HTTP {status})"
            self._send(status, error_body(message, "server_error", status))
            return
        if delay:
            time.sleep(delay)
            if self._client_gone():  # it timed out while we slept: answer nothing
                self.close_connection = True
                return
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError as err:
            self._send(400, error_body(f"invalid JSON: {err}", "invalid_request_error"))
            return
        route = self.path.rstrip("/")
        with self.owner._state:
            self.owner.received.append((route, body))
        if body.get("model") != self.owner.model:
            message = f"The model `{body.get('model')}` does not exist."
            self._send(404, error_body(message, "invalid_request_error", "model_not_found"))
            return
        answer = {
            "/v1/completions": self.owner.completions,
            "/v1/chat/completions": self.owner.chat,
        }
        if route not in answer:
            self._send(404, error_body(f"no route {self.path}", "not_found_error"))
            return
        try:
            payload = answer[route](body)
        except Exception as err:  # the engine failed: a 500, as a real server would answer
            self._send(500, error_body(f"{type(err).__name__}: {err}", "server_error"))
            return
        self._send(200, payload)
