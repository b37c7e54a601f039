"""Ray Serve deployment of a trained COALITION run: the variants and the controller over HTTP.

Two deployments:

- ``VariantModels`` — one multi-adapter replica set: the frozen base with every variant's
  trained state (LoRA adapters, or full copies), generating for any variant and computing the
  base features the controller routes on. The same :class:`coalition.groups.local.LocalGroup` the tests use.
- ``Deliberator`` — the FastAPI ingress: auth, validation, request batching (``serve.batch``),
  then :func:`coalition.method.deliberation.deliberate` on the batch — the code path the evaluation
  suite measures — with the models reached through their deployment handle.

API: ``POST /v1/solve`` {question, options?} → answer, rationale, who generated and refined,
version, latency; ``GET /healthz``; ``GET /v1/info``; OpenAPI at ``/docs``. Every request but
health and docs passes :class:`Guard` first: the bearer token is checked and the body capped
before anything reads or parses it.
"""

# no `from __future__ import annotations`: FastAPI resolves the route annotations at runtime

import asyncio
import hmac
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from coalition.data.records import Example
from coalition.engines import EngineSpec
from coalition.engines.base import SamplingParams
from coalition.run import config as config_mod
from coalition.run.config import ConfigError

log = logging.getLogger("coalition.serve")


class SolveRequest(BaseModel):
    """A question, optionally with answer options (multiple choice)."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, description="the problem to solve")
    options: list[str] | None = Field(None, description="answer options, if multiple choice")


class SolveResponse(BaseModel):
    """The deliberation's answer and how it was reached."""

    id: str
    answer: str | None = Field(description="the extracted answer (null if none was found)")
    output: str = Field(description="the final answer text the model wrote")
    rationale: str
    generator: str
    refiners: list[str]
    version: int
    latency_ms: float


@serve.deployment
class VariantModels:
    """Every variant of the run on one base (LoRA) or one engine each (full)."""

    def __init__(self, run_dir: str, overrides: dict[str, Any]):
        import torch

        from coalition.engines.models import resolve
        from coalition.groups.layout import coalition_layout
        from coalition.groups.local import LocalGroup
        from coalition.method.training import lora_spec, threads_for
        from coalition.method.variants import variant_key
        from coalition.run.checkpoints import load_state
        from coalition.run.rundir import RunDir

        run = RunDir(run_dir)
        cfg, self.version = run.trained()
        cfg = config_mod.override(cfg, overrides)
        torch.set_num_threads(threads_for(cfg.serve.model_cpus))
        path, mode = resolve(cfg.model.name_or_path), cfg.variants.mode
        layout = coalition_layout(path, mode, "base", cfg.variants.count, in_process=True)
        self.workers = LocalGroup(layout, lora_spec(cfg.variants.lora), EngineSpec.of(cfg))
        for key in (variant_key(k) for k in range(cfg.variants.count)):
            state, _, _ = load_state(run.state(key, self.version))
            self.workers.push(key, state, self.version)

    def generate(self, jobs: dict[str, list[str]], params: SamplingParams) -> Any:
        return self.workers.generate(jobs, params)

    def features(self, prompts: list[str]) -> list[list[float]]:
        return self.workers.features(prompts)

    def versions(self) -> dict[str, int]:
        return self.workers.versions()

    def pid(self) -> int:
        return os.getpid()


class _HandleModels:
    """:class:`coalition.method.deliberation.Models` over the VariantModels handle (called from a
    worker thread, so blocking on ``.result()`` never stalls the ingress event loop)."""

    def __init__(self, handle: Any, tokenizer: Any):
        self.handle, self.tokenizer = handle, tokenizer

    def generate(self, jobs, params):
        return self.handle.generate.remote(jobs, params).result()

    def features(self, prompts):
        return self.handle.features.remote(prompts).result()


app = FastAPI(
    title="coalition",
    description="Deliberated reasoning with COALITION variants: a controller picks who writes "
    "and who refines each rationale.",
)


@dataclass
class GuardSettings:
    """What :class:`Guard` enforces; set by the Deliberator replica from its config (through a
    runtime import: Serve runs a pickled copy of the app and of the deployment class, so only
    this module's own globals are shared between the two)."""

    token: str | None = None
    max_body: int = 65536


GUARD = GuardSettings()


PUBLIC = {"/healthz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}


class Guard:
    """ASGI middleware on every route but the :data:`PUBLIC` ones: a missing or wrong bearer token is a 401 and a body over
    ``serve.max_body_bytes`` a 413, both before the body is read, parsed or validated (so an
    unauthenticated client can make the server do no work beyond reading the headers)."""

    def __init__(self, inner: Any):
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # lifespan, websocket (no routes use one)
            await self.inner(scope, receive, send)
            return
        path, root = scope["path"], scope.get("root_path", "")
        if root and path.startswith(root):  # under a route prefix (serve.run route_prefix)
            path = path[len(root) :] or "/"
        if path in PUBLIC:
            await self.inner(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        token = GUARD.token
        if token is not None and not bearer_matches(headers.get("authorization", ""), token):
            await _reply(send, 401, "missing or wrong bearer token", {"www-authenticate": "Bearer"})
            return
        limit = GUARD.max_body
        declared = headers.get("content-length", "")
        if declared and (not declared.isdigit() or int(declared) > limit):
            await _reply(send, 413, f"the body is over {limit} bytes (serve.max_body_bytes)")
            return
        body, more = b"", True  # read it here, counting, so a chunked body is capped too
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                await _reply(send, 413, f"the body is over {limit} bytes (serve.max_body_bytes)")
                return
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.inner(scope, replay, send)


def bearer_matches(header: str, token: str) -> bool:
    """``Authorization: Bearer <token>`` (the scheme is case-insensitive, RFC 7235), compared
    in constant time."""
    scheme, _, given = header.strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


async def _reply(send: Any, status: int, error: str, extra: dict[str, str] | None = None) -> None:
    body = json.dumps({"error": error}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


app.add_middleware(Guard)


@app.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return JSONResponse({"error": "the body is not valid JSON"}, status_code=400)
    parts = []
    for e in errors:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {e.get('msg')}")
    return JSONResponse({"error": "; ".join(parts)}, status_code=422)


@serve.deployment(max_ongoing_requests=64)
@serve.ingress(app)
class Deliberator:
    """The HTTP ingress: checks requests, batches them, deliberates, answers."""

    def __init__(self, models: Any, run_dir: str, overrides: dict[str, Any]):
        from transformers import AutoTokenizer

        from coalition.data.tasks import from_config
        from coalition.engines.models import resolve
        from coalition.method.controller import Controller, report_dict
        from coalition.method.suite import choose_route, router_for
        from coalition.method.variants import variant_key
        from coalition.run.preflight import PROMPT_OVERHEAD_TOKENS, context_of
        from coalition.run.rundir import RunDir

        run = RunDir(run_dir)
        cfg, self.version = run.trained()
        self.cfg = cfg = config_mod.override(cfg, overrides)
        self.run_name = Path(run_dir).name  # not the path: /v1/info is public to token holders
        self.task = from_config(cfg.task)
        path = resolve(cfg.model.name_or_path)
        self.tokenizer = tok = AutoTokenizer.from_pretrained(path)
        room = context_of(path) - 2 * cfg.generation.max_new_tokens - PROMPT_OVERHEAD_TOKENS
        self.max_tokens = max(1, min(cfg.serve.max_question_tokens, room))
        self.models = _HandleModels(models, tok)
        keys = [variant_key(k) for k in range(cfg.variants.count)]
        turns = cfg.deliberation.refine_turns
        self.route = choose_route(
            cfg.deliberation.routing, run.suite(), self.version, turns, run.expects_controller(cfg)
        )
        self.controller_report: dict[str, Any] | None = None

        def controller() -> Controller:
            ctrl = Controller.load(run.controller_dir)
            self.controller_report = report_dict(ctrl)  # which decisions fall back to majority
            return ctrl

        self.router, self.turns = router_for(
            self.route, keys, turns, controller, cfg.deliberation.seed
        )
        log.info("routing: %s (%s)", self.route.method, self.route.why)
        self.params = SamplingParams(max_new_tokens=cfg.generation.max_new_tokens)
        from actors import serve as this_module

        this_module.GUARD.token = cfg.serve.token()
        this_module.GUARD.max_body = cfg.serve.max_body_bytes
        self.auth = this_module.GUARD.token is not None
        self.keys = keys
        self.solve_batch.set_max_batch_size(cfg.serve.max_batch_size)
        self.solve_batch.set_batch_wait_timeout_s(cfg.serve.batch_wait_s)

    @app.get("/healthz")
    def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/info")
    async def info(self) -> Any:
        return {
            "model": self.cfg.model.name_or_path,
            "task": self.cfg.task.name,
            "variants": self.keys,
            "mode": self.cfg.variants.mode,
            "version": self.version,
            "versions": await self.models.handle.versions.remote(),
            "routing": self.router.name,
            "routing_why": self.route.why,
            "controller": self.controller_report,
            "refine_turns": self.turns,
            "run": self.run_name,
            "max_question_tokens": self.max_tokens,
            "auth": self.auth,
        }

    @app.post("/v1/solve", response_model=SolveResponse)
    async def solve(self, body: SolveRequest) -> Any:
        question = body.question
        if body.options:
            question += "\nOptions: " + " ".join(
                f"({chr(65 + i)}) {o}" for i, o in enumerate(body.options)
            )
        limit = self.cfg.serve.max_question_chars
        if len(question) > limit:
            return JSONResponse(
                {"error": f"question is {len(question)} characters; the limit is {limit}"},
                status_code=413,
            )
        tokens = len(self.tokenizer(question, add_special_tokens=False)["input_ids"])
        if tokens > self.max_tokens:
            return JSONResponse(
                {"error": f"question is {tokens} tokens; the limit is {self.max_tokens}"},
                status_code=413,
            )
        rid = uuid.uuid4().hex[:12]
        start = time.perf_counter()
        try:
            out = await self.solve_batch(Example(id=rid, question=question, answer=""))
        except Exception:
            log.exception("request %s failed", rid)
            return JSONResponse({"error": "internal error", "id": rid}, status_code=500)
        return SolveResponse(
            id=rid,
            answer=out.extracted,
            output=out.output,
            rationale=out.rationale,
            generator=out.generator,
            refiners=out.refiners,
            version=self.version,
            latency_ms=round(1000 * (time.perf_counter() - start), 1),
        )

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def solve_batch(self, examples: list[Example]) -> list[Any]:
        return await asyncio.to_thread(self._deliberate, examples)

    def _deliberate(self, examples: list[Example]) -> list[Any]:
        from coalition.method.deliberation import Steps, deliberate

        return deliberate(
            Steps(self.models, self.params),
            self.task,
            examples,
            self.router,
            self.turns,
            self.cfg.model.chat_template,
        )


def build(run_dir: str, overrides: dict[str, Any] | None = None) -> Any:
    """The Serve application of a trained run (``serve run`` config files name this)."""
    from actors.session import WORKER_ENV_VARS
    from coalition.run.rundir import RunDir

    overrides = dict(overrides or {})
    cfg, _ = RunDir(run_dir).trained()
    cfg = config_mod.override(cfg, overrides)
    models = VariantModels.options(
        num_replicas=cfg.serve.replicas,
        ray_actor_options={
            "num_cpus": cfg.serve.model_cpus,
            "num_gpus": cfg.serve.model_gpus,
            "runtime_env": {"env_vars": WORKER_ENV_VARS},
        },
        max_ongoing_requests=16,
    ).bind(str(run_dir), overrides)
    return Deliberator.options(
        ray_actor_options={"num_cpus": 0, "runtime_env": {"env_vars": WORKER_ENV_VARS}}
    ).bind(models, str(run_dir), overrides)


def app_builder(args: dict[str, Any]) -> Any:
    """For ``serve run``/``serve deploy`` config files: ``args: {run_dir: …, overrides: {…}}``."""
    if "run_dir" not in args:
        raise ConfigError("serve application args: run_dir is required")
    unknown = set(args) - {"run_dir", "overrides"}
    if unknown:
        raise ConfigError(
            f"serve application args: unknown {sorted(unknown)}; allowed: overrides, run_dir"
        )
    return build(args["run_dir"], args.get("overrides"))
