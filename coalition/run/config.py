"""Config schema (pydantic) and loading: YAML file + dotted ``key=value`` overrides.

Every job reads the same schema, so any config file runs any job. Unknown keys, wrong types
and wrong values are errors that name the key path and what is allowed.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO_ROOT / "configs" / "default.yaml"


class ConfigError(ValueError):
    """A config problem, phrased as one line for the user (key path, what is allowed)."""


# Seeds go to Python, NumPy and torch generators; NumPy's take 32 bits.
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
# Upper bounds on counts are there to refuse typos (an extra zero or three) before any work.
Count = Annotated[int, Field(ge=0, le=10_000_000)]
MIN_TOKEN_CHARS = 16


class _Strict(BaseModel):
    # inf/nan are refused everywhere: no setting means anything with them
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ModelConfig(_Strict):
    """Which model to load and how."""

    name_or_path: str = "builtin:smollm2-135m-instruct"
    # auto: bfloat16 where the device computes it natively (CUDA, AVX512-BF16/AMX CPUs), else
    # fp32; the shipped configs set it, left out it is float32 (exact, the tests' reference)
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    trust_remote_code: bool = False
    adapter: str | None = None
    chat_template: bool = True

    @field_validator("device")
    @classmethod
    def _device_form(cls, device: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device):
            raise ValueError(f"unknown device {device!r}; allowed: auto, cpu, cuda, cuda:N, mps")
        return device


class TaskConfig(_Strict):
    """Which task, how many train/test items, and task-specific parameters."""

    name: str = "basic_arithmetic"
    n_train: int = Field(200, ge=0, le=10_000_000)
    n_test: int = Field(100, ge=1, le=10_000_000)
    seed: Seed = 0
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known_task(cls, name: str) -> str:
        from coalition.data.tasks import task_names

        names = task_names()
        if name not in names:
            raise ValueError(_unknown("task", name, names))
        return name


class GenerationConfig(_Strict):
    """Sampling parameters for the generators."""

    max_new_tokens: int = Field(128, ge=1, le=8192)
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=1024)
    batch_size: int = Field(16, ge=1, le=65536)
    # HF engine's decoding loop: lean (coalition/engines/decode.py: fused projections, a
    # preallocated KV cache; Llama-family models on CPU), hf (transformers' generate, the
    # reference), auto (lean where it applies)
    decoder: Literal["auto", "lean", "hf"] = "auto"


class EvaluateConfig(_Strict):
    """What ``jobs/evaluate.py`` measures: one model (direct, cot); over a trained run
    directory, every inference method side by side (suite); or multi-agent discussion."""

    method: Literal["direct", "cot", "suite", "discussion"] = "cot"
    split: Literal["train", "test"] = "test"
    bootstrap: int = Field(1000, ge=0)
    include_base: bool = True  # jobs/train.py: also evaluate the base model before warm-up


class LoraConfig(_Strict):
    """LoRA adapter shape for ``variants.mode: lora``."""

    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(
        default_factory=lambda: [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ]
    )


class VariantsConfig(_Strict):
    """The K variants: LoRA adapters on one frozen base (default) or full copies (the paper)."""

    count: int = Field(2, ge=2, le=16)
    mode: Literal["lora", "full"] = "lora"
    lora: LoraConfig = Field(default_factory=LoraConfig)


class StepConfig(_Strict):
    """Optimiser settings shared by SFT and DPO updates."""

    lr: float = Field(2e-4, gt=0.0, le=1.0)
    epochs: float = Field(1.0, gt=0.0, le=10_000)
    batch_size: int = Field(8, ge=1, le=65536)
    grad_accum: int = Field(1, ge=1, le=65536)
    max_length: int = Field(512, ge=16, le=1_048_576)
    weight_decay: float = Field(0.0, ge=0.0)
    warmup_ratio: float = Field(0.0, ge=0.0, le=1.0)


class WarmupConfig(StepConfig):
    """Multi-mode instruction fine-tuning of each variant on its own split of the warm-up data."""

    n: Count = 128
    modes: list[Literal["answer", "rationale", "answer_given_rationale", "refine"]] = Field(
        default_factory=lambda: ["answer", "rationale", "answer_given_rationale", "refine"]
    )
    # auto | gold | self, or a jobs/distill.py run directory (its kept teacher rationales)
    rationales_from: str = "auto"
    self_samples: int = Field(4, ge=1, le=1024)
    self_temperature: float = Field(0.7, ge=0.0)
    # share of refine-mode rows whose draft is already right (the rest are wrong drafts): too
    # many teach the refiner to copy its input, which makes refinement pairs identical ties
    correct_drafts: float = Field(0.25, ge=0.0, le=1.0)


class SROConfig(StepConfig):
    """Selective Rationale Optimisation: one DPO update per variant per round."""

    lr: float = Field(5e-5, gt=0.0)
    batch_size: int = Field(4, ge=1)
    beta: float = Field(0.1, gt=0.0)
    loss_type: Literal["sigmoid", "ipo", "hinge"] = "sigmoid"
    # weight of an NLL term on the chosen rationale (0: plain DPO, as in the paper). Iterative
    # RPO (Pang et al., 2024) found DPO alone lowers the chosen likelihood on reasoning tasks.
    nll_weight: float = Field(0.0, ge=0.0)
    # compute the reference model's log-probs in one pass before training (saves a reference
    # forward per step in every epoch after the first; same values)
    precompute_ref: bool = True


class TeacherConfig(_Strict):
    """Fine-tune-CoT's teacher (``jobs/distill.py``): a local HF model through a Ray actor, or
    any OpenAI-compatible endpoint (OpenAI, ``vllm serve``, llama.cpp's server, …)."""

    kind: Literal["hf", "openai"] = "hf"
    # hf: an HF id, a local path or builtin:…; openai: the endpoint's model name
    model: str = "builtin:smollm2-135m-instruct"
    base_url: str | None = None  # openai: e.g. http://127.0.0.1:8000/v1
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this variable (unset: none)
    api: Literal["completions", "chat"] = "completions"
    samples: int = Field(4, ge=1, le=1024)  # D: rationales per question (diverse reasoning)
    temperature: float = Field(0.7, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(128, ge=1)
    answer_tokens: int = Field(16, ge=1)
    chunk: int = Field(16, ge=1)  # questions per cached chunk (resume granularity)
    timeout_s: float = Field(60.0, gt=0.0)
    max_retries: int = Field(5, ge=0)
    concurrency: int = Field(4, ge=1)


class DistillConfig(StepConfig):
    """Fine-tune-CoT: the student (``model``) is fine-tuned on the teacher's kept rationales."""

    n: int = Field(128, ge=1, le=10_000_000)  # train questions the teacher writes for
    # the student's rows per kept sample: question → rationale + answer (the paper), and the
    # answer given the rationale (so two-step CoT evaluation reads the student's own answer)
    modes: list[Literal["answer", "rationale", "answer_given_rationale"]] = Field(
        default_factory=lambda: ["rationale", "answer_given_rationale"]
    )
    evaluate_teacher: bool = True
    # keep only samples that reach the gold answer (the paper); false keeps every sample
    # (an ablation, and what lets a random test model produce rows)
    filter: bool = True


class SAIEConfig(StepConfig):
    """SAIE: the learner is trained through a frozen partner's supportive or adversarial
    remarks on its attempts (``jobs/saie.py``)."""

    partner: str | None = None  # an HF id/path/builtin:…; null: the learner's frozen base
    adversarial_ratio: float = Field(0.5, ge=0.0, le=1.0)
    pool: int = Field(64, ge=1, le=10_000_000)  # questions per round
    samples: int = Field(
        2, ge=1, le=1024
    )  # attempts per question (a right one is the target when the
    # task has no gold rationale)
    remark_tokens: int = Field(64, ge=1)
    # also train the paper's baseline each round: plain SFT toward the same targets from the
    # question alone (no attempt, no remark), same start, rows and steps; evaluated beside it
    baseline: bool = False


class DiscussionConfig(_Strict):
    """Multi-agent discussion inference (``jobs/evaluate.py method=discussion``)."""

    agents: int = Field(3, ge=1, le=16)
    rounds: int = Field(2, ge=0, le=8)
    temperature: float = Field(0.7, ge=0.0)  # agents on one model need it to differ


class RayConfig(_Strict):
    """Where and how the Ray pieces run (``address: null`` starts a local Ray)."""

    address: str | None = None
    # true: no Ray at all; every model and update runs in this one process (the in-process
    # groups), so a whole round can be stepped through in a debugger. Same seeds, same pairs.
    in_process: bool = False
    num_cpus: int | None = Field(None, ge=1, le=1_000_000)
    generator_cpus: float = Field(1.0, gt=0.0)
    scorer_cpus: float = Field(1.0, gt=0.0)
    generator_gpus: float = Field(0.0, ge=0.0)
    train_workers: int = Field(1, ge=1, le=100_000)
    train_cpus_per_worker: float = Field(1.0, gt=0.0)
    train_use_gpu: bool = False
    # persistent: one long-lived TorchTrainer per model serves every update (no ~30 s start-up
    # per update); per_update: a fresh TorchTrainer each time (frees its GPUs in between)
    trainer: Literal["persistent", "per_update"] = "persistent"
    # how full weights (variants.mode: full) reach the engines: via the object store, or
    # broadcast from the persistent trainer's rank-0 worker (NCCL on GPUs, gloo on CPUs); auto:
    # broadcast when trainer and generators have GPUs. LoRA adapters always go by object store.
    full_push: Literal["auto", "object_store", "collective"] = "auto"
    push_timeout_s: float = Field(120.0, gt=0.0)  # deadline of every wait of a broadcast push
    # deadline for an actor or a trainer's workers to start: past it the cluster is too small
    # or busy, and the job stops saying so instead of waiting for resources forever
    start_timeout_s: float = Field(600.0, gt=0.0)
    max_restarts: int = Field(3, ge=-1)
    max_retries: int = Field(3, ge=0)
    chunk_size: int = Field(32, ge=1)


class ControllerConfig(_Strict):
    """The router trained on the rounds' scored candidates (``coalition/method/controller.py``)."""

    enabled: bool = True  # jobs/train.py trains it after the last round
    holdout: float = Field(0.2, ge=0.0, lt=1.0)  # share of questions kept out to report on
    weight_decay: float = Field(1e-2, ge=0.0)
    steps: int = Field(300, ge=1)
    lr: float = Field(1e-2, gt=0.0)


class DeliberationConfig(_Strict):
    """Deliberated inference (evaluation suite and Serve)."""

    refine_turns: int = Field(1, ge=0, le=8)
    # what Serve routes by; auto: the route the run's evaluation suite measured best, else the
    # run's controller, else fixed roles (coalition/method/suite.choose_route)
    routing: Literal["auto", "controller", "random", "fixed"] = "auto"
    seed: Seed = 0


class ServeConfig(_Strict):
    """``jobs/serve.py``: where the HTTP API listens, who may call it, request limits."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # bearer token required on /v1/*; null reads COALITION_SERVE_TOKEN (unset: no auth, said
    # loudly at start, and only on a loopback host). At least 16 characters, no spaces.
    auth_token: str | None = None
    max_question_chars: int = Field(4000, ge=1)
    # the question's length in the model's tokens (413 above it); also capped by the context
    max_question_tokens: int = Field(512, ge=1)
    max_body_bytes: int = Field(65536, ge=256)  # a larger request body is refused unread (413)
    max_batch_size: int = Field(8, ge=1)
    batch_wait_s: float = Field(0.05, ge=0.0)
    replicas: int = Field(1, ge=1)
    model_cpus: float = Field(1.0, gt=0.0)
    model_gpus: float = Field(0.0, ge=0.0)

    @field_validator("auth_token")
    @classmethod
    def _token_strength(cls, token: str | None) -> str | None:
        if token is not None and (problem := token_problem(token)):
            raise ValueError(problem)
        return token

    def token(self) -> str | None:
        """The bearer token /v1/* requires: ``auth_token``, else ``COALITION_SERVE_TOKEN``
        (None: no auth). A set but empty or weak variable is an error, never "no auth"."""
        if self.auth_token is not None:
            return self.auth_token
        env = os.environ.get(SERVE_TOKEN_ENV)
        if env is None:
            return None
        if problem := token_problem(env):
            raise ConfigError(f"{SERVE_TOKEN_ENV} (environment): {problem}")
        return env


SERVE_TOKEN_ENV = "COALITION_SERVE_TOKEN"


def token_problem(token: str) -> str | None:
    """Why ``token`` cannot be a bearer token (None: it can). It must be long enough not to be
    guessed and a plain header value; an empty one (an unset ``$TOKEN`` in a script) must
    never mean "no auth"."""
    if len(token) < MIN_TOKEN_CHARS:
        what = "empty" if not token else f"{len(token)} characters long"
        return (
            f"the token is {what}; it needs at least {MIN_TOKEN_CHARS} characters (e.g. "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'); leave it unset to "
            "serve without auth on 127.0.0.1"
        )
    if not re.fullmatch(r"[\x21-\x7e]+", token):
        return "the token may hold only printable ASCII, without spaces"
    return None


class VLLMConfig(_Strict):
    """How ``engine: vllm`` starts vLLM (ignored by the HF engine)."""

    # share of GPU memory for weights + KV cache; several engines (and a trainer) share a GPU
    gpu_memory_utilization: float = Field(0.35, gt=0.0, le=1.0)
    max_model_len: int = Field(2048, ge=16)
    max_num_seqs: int = Field(256, ge=1)
    max_loras: int = Field(4, ge=1)  # adapters resident at once
    max_lora_rank: int = Field(16, ge=1)
    enforce_eager: bool = False  # CUDA graphs off (always off on CPU)
    # offload weights and drop the KV cache while a colocated trainer runs (GPU only)
    sleep_during_training: bool = False
    kv_cache_gib: int = Field(1, ge=1)  # CPU build only: KV cache size


class BenchConfig(_Strict):
    """What ``jobs/bench.py`` measures."""

    prompts: int = Field(32, ge=1)
    new_tokens: int = Field(32, ge=1)
    run: str | None = None  # serve: the jobs/train.py run directory to serve
    requests: int = Field(200, ge=1)  # serve: requests per setting
    concurrency: int = Field(16, ge=1)  # serve: requests in flight at once
    # gpu: random-weight model shapes (benchmarks.perf.SHAPES), DPO step size, timing repeats
    shapes: list[str] = Field(default_factory=lambda: ["qwen2.5-0.5b", "qwen2.5-1.5b"])
    dpo_batch: int = Field(8, ge=1)
    dpo_seq: int = Field(512, ge=8)
    dpo_steps: int = Field(6, ge=0)
    repeats: int = Field(3, ge=1)


class AblateConfig(_Strict):
    """jobs/ablate.py: training arms that share one warm-up. Each arm is dotted overrides of
    the round-level keys (``coalition.recipes.ablation.ROUND_KEYS``); the first arm is the reference
    every other is compared to."""

    arms: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"default": {}})

    @field_validator("arms")
    @classmethod
    def _arm_names(cls, arms: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if not arms:
            raise ValueError("needs at least one arm (the reference), e.g. {default: {}}")
        for name in arms:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
                raise ValueError(
                    f"arm name {name!r}: letters, digits, '_', '.', '-' (a directory name)"
                )
        return arms


class Config(_Strict):
    """The whole config; each job reads the sections it needs."""

    seed: Seed = 0
    run_dir: str | None = None
    # auto: vLLM where the generators get a GPU and vLLM is installed, else hf (the job says
    # which in one line, and why)
    engine: Literal["auto", "hf", "vllm"] = "hf"
    vllm: VLLMConfig = Field(default_factory=VLLMConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    task: TaskConfig = Field(default_factory=TaskConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    bench: BenchConfig = Field(default_factory=BenchConfig)
    # COALITION (jobs/train.py)
    rounds: int = Field(1, ge=0, le=1000)
    pool: int = Field(64, ge=1, le=10_000_000)
    # rationales each variant writes per pool question (the paper: 1); more give the
    # best-vs-worst generation pair more contrast and fewer identical-text ties
    samples: int = Field(1, ge=1, le=1024)
    refine: Literal["cross", "self", "none"] = "cross"
    filter: bool = True
    # with the filter on, also drop pairs whose chosen side has U below this floor (0: the
    # paper's filter alone); keeps best-of-wrong rationales from being taught as preferred
    filter_min_utility: float = Field(0.0, ge=0.0, le=1.0)
    # which generation pairs a variant learns from: its own part of the 2K-way split (the
    # paper), or every question's (K times the pairs, the same ones for every variant)
    pairs: Literal["split", "all"] = "split"
    # sro: DPO (+ NLL) on the pairs; rft: SFT on the chosen sides only (the rejection-sampling
    # baseline: the same rationales and steps, without the rejected side)
    update: Literal["sro", "rft"] = "sro"
    scorer: Literal["ift_all", "variants_mean", "base"] = "variants_mean"
    variants: VariantsConfig = Field(default_factory=VariantsConfig)
    warmup: WarmupConfig = Field(default_factory=WarmupConfig)
    sro: SROConfig = Field(default_factory=SROConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    controller: ControllerConfig = Field(default_factory=ControllerConfig)
    deliberation: DeliberationConfig = Field(default_factory=DeliberationConfig)
    discussion: DiscussionConfig = Field(default_factory=DiscussionConfig)
    # Fine-tune-CoT (jobs/distill.py) and SAIE (jobs/saie.py)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    saie: SAIEConfig = Field(default_factory=SAIEConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    ablate: AblateConfig = Field(default_factory=AblateConfig)

    @model_validator(mode="after")
    def _vllm_fits_adapters(self) -> Config:
        if self.engine == "vllm" and self.variants.mode == "lora":
            r, cap = self.variants.lora.r, self.vllm.max_lora_rank
            if r > cap:
                raise ValueError(
                    f"variants.lora.r={r} exceeds vllm.max_lora_rank={cap}; raise "
                    "vllm.max_lora_rank (vLLM sizes its adapter slots by it)"
                )
        return self

    @model_validator(mode="after")
    def _push_needs_persistent_trainer(self) -> Config:
        if self.ray.full_push == "collective" and self.ray.trainer != "persistent":
            raise ValueError(
                "ray.full_push=collective broadcasts from the trainer that made the update; "
                "it needs ray.trainer=persistent (allowed with per_update: object_store, auto)"
            )
        return self

    def collective_push(self) -> bool:
        """Whether full-weight pushes are broadcast (``ray.full_push``, resolved)."""
        r = self.ray
        if self.variants.mode != "full" or r.trainer != "persistent":
            return False
        if r.full_push == "auto":
            return r.train_use_gpu and r.generator_gpus > 0
        return r.full_push == "collective"


def _unknown(what: str, value: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(value, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {what} {value!r}{hint}; allowed: {', '.join(sorted(allowed))}"


def _model_at(loc: tuple[Any, ...], schema: type[BaseModel]) -> type[BaseModel] | None:
    """The schema class that owns the field at ``loc`` (list indices skipped; for listing the
    allowed keys)."""
    model: Any = schema
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        inner = getattr(ann, "__args__", None)  # X | None, list[X]
        cls = inner[0] if inner and isinstance(inner[0], type) else ann
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
            return None
        model = cls
    return model


_M = TypeVar("_M", bound=BaseModel)
SECRETS = {"auth_token"}  # never echoed back in an error


def _path(loc: tuple[Any, ...]) -> str:
    """``("models", 0, "family")`` → ``models[0].family``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


# Keys earlier versions wrote into run directories, and why they went. A run directory made
# before their removal still reads (the key is dropped); a config a user writes names the reason.
RETIRED: dict[str, str] = {
    "generation.seed": "it was never used; sampling follows the top-level seed",
}


def drop_retired(raw: dict[str, Any]) -> dict[str, Any]:
    """A saved run's config without the :data:`RETIRED` keys (a copy; ``raw`` is not changed)."""
    out = copy.deepcopy(raw)
    for dotted in RETIRED:
        *parents, leaf = dotted.split(".")
        node: Any = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return out


def _describe(err: dict[str, Any], schema: type[BaseModel]) -> str:
    """One line for one problem: the key path, what is wrong, and what is allowed or given."""
    loc = tuple(err["loc"])
    path = _path(loc)
    if err["type"] == "extra_forbidden" and schema is Config and path in RETIRED:
        return f"{path}: this key was removed: {RETIRED[path]}"
    if err["type"] == "extra_forbidden":
        owner = _model_at(loc[:-1], schema)
        allowed = sorted(owner.model_fields) if owner else []
        return f"{path}: {_unknown('key', str(loc[-1]), allowed)}"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "value_error" and not loc:
        return msg
    got = err.get("input")
    hidden = isinstance(got, dict | list) or (loc and loc[-1] in SECRETS)
    return f"{path}: {msg}" + ("" if hidden else f" (got {got!r})")


def validate_as(schema: type[_M], raw: dict[str, Any]) -> _M:
    """Validate a plain dict into ``schema`` (the run config, a sweep file), raising
    :class:`ConfigError` that names the first problem: a misspelt key before the right key it
    leaves missing."""
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise ConfigError(_describe(errors[0], schema) + more) from None


def validate(raw: dict[str, Any]) -> Config:
    """Validate a plain dict into a :class:`Config`, raising :class:`ConfigError` on problems."""
    return validate_as(Config, raw)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` → (["a", "b"], value parsed as YAML)."""
    key, sep, value = text.partition("=")
    if not sep or not key or any(not p for p in key.split(".")):
        raise ConfigError(f"override {text!r}: expected dotted key=value, e.g. task.n_test=50")
    try:
        parsed = yaml.safe_load(value) if value != "" else ""
    except yaml.YAMLError:
        parsed = value
    return key.split("."), parsed


def set_dotted(raw: dict[str, Any], keys: list[str], value: Any) -> None:
    """``raw[a][b][c] = value`` for keys ``[a, b, c]`` (sections created; a mapping value
    replaces that section)."""
    node = raw
    for i, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(keys[: i + 1])} is a value, not a section")
        node = child
    node[keys[-1]] = value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each dotted override set (intermediate dicts created)."""
    out = yaml.safe_load(yaml.safe_dump(raw, sort_keys=False)) or {}  # arm order matters
    for text in overrides:
        keys, value = parse_override(text)
        try:
            set_dotted(out, keys, value)
        except ConfigError as exc:
            raise ConfigError(f"override {text!r}: {exc}") from None
    return out


def load_yaml(path: Path, _seen: set[Path] | None = None) -> dict[str, Any]:
    """A config file as a dict; ``extends: other.yaml`` (relative to the file) lays this file's
    keys over that file's."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    if not path.is_file():
        raise ConfigError(f"config file {path} is a directory, not a YAML file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path}: not UTF-8 text (byte {exc.start}); is it a YAML file?"
        ) from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot be read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {path}{where}: not valid YAML") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping of sections")
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise ConfigError(f"config file {path}: extends must be a path to another config file")
    if _seen is not None and path.resolve() in _seen:
        raise ConfigError(f"config file {path}: extends loops back to itself")
    seen = (_seen or set()) | {path.resolve()}
    return _merged(load_yaml(path.parent / parent, seen), raw)


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` laid on top, section by section (mappings merge, values replace)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def load(
    path: Path | None = None, overrides: list[str] | None = None, *, saved: bool = False
) -> Config:
    """Load ``path`` (default ``configs/default.yaml``), apply overrides, validate. ``saved``: the
    file is a run directory's own config, which may hold keys an earlier version wrote."""
    raw = load_yaml(path or DEFAULT_CONFIG)
    if saved:
        raw = drop_retired(raw)
    return validate(apply_overrides(raw, overrides or []))


def override(cfg: Config, overrides: dict[str, Any]) -> Config:
    """``cfg`` with dotted ``{key: value}`` overrides (values as typed on a command line)."""
    if not overrides:
        return cfg
    raw = apply_overrides(cfg.model_dump(mode="json"), [f"{k}={v}" for k, v in overrides.items()])
    return validate(raw)


def dump(cfg: Config) -> str:
    """The resolved config as YAML (written to every run directory)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
