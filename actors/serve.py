"""Ray Serve deployment of a trained COALITION run: the variants and the controller over HTTP.

Two deployments:

- ``VariantModels`` — one multi-adapter replica set: the frozen base with every variant's
  trained state (LoRA adapters, or full copies), generating for any variant and computing the
  base features the controller routes on. The same :class:`LocalWorkers` the tests use.
- ``Deliberator`` — the FastAPI ingress: auth, validation, request batching (``serve.batch``),
  then :func:`coalition.deliberation.deliberate` on the batch — the code path the evaluation
  suite measures — with the models reached through their deployment handle.

API: ``POST /v1/solve`` {question, options?} → answer, rationale, who generated and refined,
version, latency; ``GET /healthz``; ``GET /v1/info``; OpenAPI at ``/docs``.
"""

# no `from __future__ import annotations`: FastAPI resolves the route annotations at runtime

import asyncio
import hmac
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from coalition import config as config_mod
from coalition.config import ConfigError
from coalition.engines import EngineSpec
from coalition.engines.base import SamplingParams
from coalition.records import Example

TOKEN_ENV = "COALITION_SERVE_TOKEN"
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

        from coalition.checkpoints import load_state
        from coalition.models import resolve
        from coalition.recipes.coalition import trained_run
        from coalition.training import lora_spec, threads_for
        from coalition.workers import LocalWorkers

        cfg, self.version = trained_run(Path(run_dir))
        cfg = config_mod.override(cfg, overrides)
        torch.set_num_threads(threads_for(cfg.serve.model_cpus))
        self.workers = LocalWorkers(
            resolve(cfg.model.name_or_path),
            cfg.variants.mode,
            lora_spec(cfg.variants.lora),
            "base",
            cfg.variants.count,
            EngineSpec.of(cfg),
        )
        for k in range(cfg.variants.count):
            key = f"v{k}"
            state, _, _ = load_state(
                Path(run_dir) / "states" / f"{key}-v{self.version}.safetensors"
            )
            self.workers.push(key, state, self.version)

    def generate(self, jobs: dict[str | None, list[str]], params: SamplingParams) -> Any:
        return self.workers.generate(jobs, params)

    def features(self, prompts: list[str]) -> list[list[float]]:
        return self.workers.features(prompts)

    def versions(self) -> dict[str, int]:
        return self.workers.versions()

    def pid(self) -> int:
        return os.getpid()


class _HandleModels:
    """:class:`coalition.deliberation.Models` over the VariantModels handle (called from a
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

        from coalition.controller import Controller
        from coalition.deliberation import ControllerRouter, Fixed, RandomRouter
        from coalition.models import resolve
        from coalition.recipes.coalition import trained_run
        from coalition.tasks import from_config

        cfg, self.version = trained_run(Path(run_dir))
        self.cfg = cfg = config_mod.override(cfg, overrides)
        self.run_dir = str(run_dir)
        self.task = from_config(cfg.task)
        tok = AutoTokenizer.from_pretrained(resolve(cfg.model.name_or_path))
        self.models = _HandleModels(models, tok)
        keys = [f"v{k}" for k in range(cfg.variants.count)]
        routing = cfg.deliberation.routing
        ctrl_dir = Path(run_dir) / "controller"
        if routing == "controller" and not (ctrl_dir / "controller.json").exists():
            raise ConfigError(
                f"run_dir {run_dir}: no trained controller; train one with jobs/evaluate.py "
                "method=suite, or serve with deliberation.routing=fixed|random"
            )
        if routing == "controller":
            self.router = ControllerRouter(Controller.load(ctrl_dir), keys)
        elif routing == "random":
            self.router = RandomRouter(keys, cfg.deliberation.seed)
        else:
            self.router = Fixed("fixed roles", keys[0], keys[1 % len(keys)])
        self.params = SamplingParams(max_new_tokens=cfg.generation.max_new_tokens)
        self.token = cfg.serve.auth_token or os.environ.get(TOKEN_ENV) or None
        self.keys = keys
        self.solve_batch.set_max_batch_size(cfg.serve.max_batch_size)
        self.solve_batch.set_batch_wait_timeout_s(cfg.serve.batch_wait_s)

    def _denied(self, request: Request) -> JSONResponse | None:
        if self.token is None:
            return None
        given = request.headers.get("authorization", "")
        if given.startswith("Bearer ") and hmac.compare_digest(given[7:], self.token):
            return None
        return JSONResponse(
            {"error": "missing or wrong bearer token"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    @app.get("/healthz")
    def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/info")
    async def info(self, request: Request) -> Any:
        if denied := self._denied(request):
            return denied
        return {
            "model": self.cfg.model.name_or_path,
            "task": self.cfg.task.name,
            "variants": self.keys,
            "mode": self.cfg.variants.mode,
            "version": self.version,
            "versions": await self.models.handle.versions.remote(),
            "routing": self.router.name,
            "refine_turns": self.cfg.deliberation.refine_turns,
            "run_dir": self.run_dir,
        }

    @app.post("/v1/solve", response_model=SolveResponse)
    async def solve(self, body: SolveRequest, request: Request) -> Any:
        if denied := self._denied(request):
            return denied
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
        from coalition.deliberation import Steps, deliberate

        return deliberate(
            Steps(self.models, self.params),
            self.task,
            examples,
            self.router,
            self.cfg.deliberation.refine_turns,
            self.cfg.model.chat_template,
        )


def build(run_dir: str, overrides: dict[str, Any] | None = None) -> Any:
    """The Serve application of a trained run (``serve run`` config files name this)."""
    from actors.session import QUIET
    from coalition.recipes.coalition import trained_run

    overrides = dict(overrides or {})
    cfg, _ = trained_run(Path(run_dir))
    cfg = config_mod.override(cfg, overrides)
    models = VariantModels.options(
        num_replicas=cfg.serve.replicas,
        ray_actor_options={
            "num_cpus": cfg.serve.model_cpus,
            "num_gpus": cfg.serve.model_gpus,
            "runtime_env": {"env_vars": QUIET},
        },
        max_ongoing_requests=16,
    ).bind(str(run_dir), overrides)
    return Deliberator.options(
        ray_actor_options={"num_cpus": 0, "runtime_env": {"env_vars": QUIET}}
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
