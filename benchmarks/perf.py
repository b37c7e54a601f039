"""What ``jobs/bench.py gpu`` measures, on whatever device is there: generation and scoring
tokens/s of the HF and vLLM engines on the same prompts, our vLLM generator against vLLM used
directly, the DPO step time and MFU of our training path, and weight-push latency.

Models are random weights in real shapes (speed does not depend on what the weights say),
built once per shape with the tiny model's tokenizer; outputs have a fixed length (EOS ignored)
so every engine produces the same number of tokens.
"""

from __future__ import annotations

import gc
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from coalition.engines import EngineSpec
from coalition.engines.base import Engine, LoraSpec, SamplingParams

# transformers config fields of each benchmark shape (Qwen2.5 sizes, as the targets)
SHAPES: dict[str, dict[str, Any]] = {
    "qwen2.5-0.5b": dict(
        arch="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
        num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
    ),
    "qwen2.5-1.5b": dict(
        arch="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
        num_attention_heads=12, num_key_value_heads=2, vocab_size=151936,
    ),
    "smollm2-135m": dict(
        arch="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
    ),
    "tiny": dict(
        arch="llama", hidden_size=128, intermediate_size=256, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, vocab_size=1024,
    ),
}  # fmt: skip

# dense bf16 peak FLOP/s by device name (vendor datasheets, SXM parts)
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12}


def peak_flops(device_name: str) -> float | None:
    """Datasheet dense bf16 peak of a GPU by name; None where unknown (CPUs included)."""
    return next((v for k, v in PEAK_BF16.items() if k in device_name), None)


def shape_config(name: str, tokenizer: Any) -> Any:
    """The transformers config of benchmark shape ``name`` (tied embeddings, as Qwen2.5's small
    sizes and SmolLM2 have), with ``tokenizer``'s special ids."""
    from transformers import AutoConfig

    if name not in SHAPES:
        raise ValueError(f"bench shape {name!r} unknown; allowed: {', '.join(SHAPES)}")
    fields = dict(SHAPES[name])
    return AutoConfig.for_model(
        fields.pop("arch"),
        **fields,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )


def param_count(config: Any) -> int:
    """Parameters of a model of ``config`` (tied embeddings counted once), without allocating."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def build_shape(name: str, out: Path, dtype: str, tokenizer_from: str) -> Path:
    """A random-weight model of shape ``name`` saved at ``out`` with ``tokenizer_from``'s
    tokenizer (its ids are a subset of every shape's vocabulary)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (out / "config.json").exists():
        return out
    tok = AutoTokenizer.from_pretrained(tokenizer_from)
    config = shape_config(name, tok)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of ``repeats`` calls after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


@dataclass(frozen=True)
class Workload:
    """The prompts and lengths every engine runs."""

    prompts: list[str]
    new_tokens: int
    targets: list[str]
    repeats: int = 3

    @property
    def params(self) -> SamplingParams:
        return SamplingParams(max_new_tokens=self.new_tokens, ignore_eos=True)


def workload(count: int, new_tokens: int, repeats: int = 3) -> Workload:
    """``count`` distinct arithmetic prompts and a worked answer each to score."""
    prompts = [
        f"Question: Tom has {i} apples and buys {i * 7 % 50 + 3} more. How many apples does "
        "he have?\nLet's think step by step."
        for i in range(count)
    ]
    targets = [
        f" He starts with {i} apples and buys {i * 7 % 50 + 3}. {i} + {i * 7 % 50 + 3} = "
        f"{i + i * 7 % 50 + 3}. The answer is {i + i * 7 % 50 + 3}."
        for i in range(count)
    ]
    return Workload(prompts, new_tokens, targets, repeats)


def engine_speed(engine: Engine, work: Workload) -> dict[str, float]:
    """Generation tokens/s (fixed-length outputs) and scoring tokens/s (prompt + target)."""
    gen_tokens = len(work.prompts) * work.new_tokens
    t_gen = median_seconds(lambda: engine.generate(work.prompts, work.params), work.repeats)
    tok = engine.tokenizer  # type: ignore[attr-defined]
    score_tokens = sum(
        len(tok(p + t)["input_ids"]) for p, t in zip(work.prompts, work.targets, strict=True)
    )
    t_score = median_seconds(lambda: engine.score(work.prompts, work.targets), work.repeats)
    return {
        "generate_s": round(t_gen, 4),
        "generate_tokens_per_s": round(gen_tokens / t_gen, 1),
        "score_s": round(t_score, 4),
        "score_tokens_per_s": round(score_tokens / t_score, 1),
    }


def vllm_direct_speed(engine: Any, work: Workload) -> dict[str, float]:
    """The same generation through ``vllm.LLM.generate`` itself on our engine's LLM: text
    prompts, one SamplingParams, no wrapper — what "standalone vLLM" does."""
    from vllm import SamplingParams as VSamplingParams

    params = VSamplingParams(
        max_tokens=work.new_tokens, min_tokens=work.new_tokens, temperature=0.0
    )
    t = median_seconds(
        lambda: engine.llm.generate(work.prompts, params, use_tqdm=False), work.repeats
    )
    return {
        "generate_s": round(t, 4),
        "generate_tokens_per_s": round(len(work.prompts) * work.new_tokens / t, 1),
    }


def push_latency(
    engine: Engine, state: dict[str, Any], repeats: int, lora: LoraSpec | None
) -> float:
    """Median seconds to install ``state`` (an adapter when ``lora`` is given, else full weights)
    on an engine, each push a new version."""
    version = iter(range(1, 10_000))
    if lora is not None:
        return median_seconds(lambda: engine.set_adapter("v0", state, next(version), lora), repeats)
    return median_seconds(lambda: engine.set_weights(state, next(version)), repeats)


def _receive_versions(channel: Any, versions: int, device: str, done: Any) -> None:
    """A broadcast receiver in its own process (``broadcast_push``)."""
    import torch

    from coalition.engines.weightsync import Member

    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    member = Member(channel, 1)
    for v in range(versions):
        member.receive(v)
    done.put(True)


def broadcast_push(state: dict[str, Any], repeats: int) -> dict[str, Any]:
    """Median seconds to broadcast ``state`` to an engine in another process, as the trainer's
    rank 0 does (``ray.full_push: collective``): NCCL from cuda:0 to cuda:1 where there are two
    GPUs, gloo between host buffers on CPUs (one GPU: NCCL refuses two ranks on one device)."""
    import multiprocessing as mp

    import torch

    from coalition.engines.weightsync import Channel, Member, host_store

    gpus = torch.cuda.device_count()
    if gpus == 1:
        return {"skipped": "one GPU: NCCL needs the receiver on another device"}
    backend = "nccl" if gpus >= 2 else "gloo"
    store = host_store("127.0.0.1", 120)
    channel = Channel("bench", "127.0.0.1", store.port, 2, backend, 120)
    ctx = mp.get_context("spawn")
    done = ctx.Queue()
    device = "cuda:1" if backend == "nccl" else "cpu"
    proc = ctx.Process(target=_receive_versions, args=(channel, repeats + 1, device, done))
    proc.start()
    try:
        sender = Member(channel, 0)
        version = iter(range(repeats + 1))
        seconds = median_seconds(lambda: sender.send(state, next(version)), repeats)
        done.get(timeout=300)
    finally:
        proc.join(timeout=60)
        if proc.is_alive():
            proc.kill()
    return {"backend": backend, "seconds": round(seconds, 4)}


def lora_state(path: Path, spec: LoraSpec, device: str, dtype: str) -> dict[str, Any]:
    """A random LoRA state of ``spec``'s shape for the model at ``path``."""
    import torch
    from peft import get_peft_model, get_peft_model_state_dict
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    peft = get_peft_model(model, spec.peft_config())
    return {
        k: torch.randn(v.shape, dtype=getattr(torch, dtype), device=device) * 0.01
        for k, v in get_peft_model_state_dict(peft).items()
    }


def full_state(path: Path, device: str, dtype: str) -> dict[str, Any]:
    """The model's own weights, on ``device`` (where a trainer colocated with it holds them)."""
    import torch
    from safetensors.torch import load_file

    state: dict[str, Any] = {}
    for f in sorted(Path(path).glob("*.safetensors")):
        state.update(load_file(str(f), device=device))
    return {k: v.to(getattr(torch, dtype)) for k, v in state.items()}


def dpo_speed(
    path: Path, dtype: str, batch_size: int, seq_len: int, steps: int, peak: float | None
) -> dict[str, Any]:
    """Seconds per DPO optimiser step of our training path (TRL's DPOTrainer, full weights, the
    reference log-probs precomputed as in our rounds) and the model FLOPs utilisation: trained
    tokens × (6·N + 12·layers·hidden·seq) / step time / peak (PaLM's accounting)."""
    import torch
    from transformers import AutoTokenizer, TrainerCallback

    from coalition.method.training import StepSettings, dpo, load_trainable

    tok = AutoTokenizer.from_pretrained(path)
    half = seq_len // 2
    unit = " 12"  # one token in the tiny vocabulary; rows of exactly known length
    if len(tok(unit * 10, add_special_tokens=False)["input_ids"]) != 10:
        raise RuntimeError(f"{unit!r} is not one token per repeat in this tokenizer")
    rows = [
        {"prompt": unit * half, "chosen": unit * half, "rejected": unit * half}
        for _ in range(batch_size * (steps + 1))
    ]
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a: Any, **k: Any) -> None:
            _sync()
            self.start = time.perf_counter()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            _sync()
            times.append(time.perf_counter() - self.start)

    def prepare(trainer: Any) -> Any:
        trainer.add_callback(Timer())
        return trainer

    model, tokenizer = load_trainable(str(path), "full", LoraSpec(), None, dtype)
    settings = StepSettings(
        lr=1e-6, epochs=1, batch_size=batch_size, max_length=seq_len + 8, precompute_ref=True
    )
    dpo(model, tokenizer, rows, settings, prepare)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    n_params = param_count(config)
    step = statistics.median(times[1:] or times)  # the first step pays one-off costs
    tokens = batch_size * 2 * seq_len  # chosen and rejected sequences per step
    per_token = 6 * n_params + 12 * config.num_hidden_layers * config.hidden_size * seq_len
    flops = tokens * per_token / step
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {
        "params": n_params,
        "batch_size": batch_size,
        "seq_len": seq_len,
        "steps_timed": len(times[1:] or times),
        "step_s": round(step, 4),
        "tflops": round(flops / 1e12, 2),
        "mfu": round(flops / peak, 3) if peak else None,
    }


def release(engine: Any) -> None:
    """Drop an engine and the device memory it holds."""
    import torch

    close = getattr(engine, "close", None)
    if close:
        close()
    del engine
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def suite(
    shapes: list[str],
    folder: Path,
    spec: EngineSpec,
    work: Workload,
    dpo_batch: int,
    dpo_seq: int,
    dpo_steps: int,
    tokenizer_from: str,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Every measurement for every shape; vLLM parts only where vLLM is installed."""
    import torch

    from coalition.engines import vllm as vllm_engine

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    name = torch.cuda.get_device_name() if cuda else "cpu"
    peak = peak_flops(name) if cuda else None
    dtype = spec.dtype if spec.dtype != "auto" else ("bfloat16" if cuda else "float32")
    spec = replace(spec, dtype=dtype, device=device)
    lora = LoraSpec(r=16, alpha=32, target_modules=("q_proj", "k_proj", "v_proj", "o_proj"))
    out: dict[str, Any] = {"device": name, "dtype": dtype, "peak_flops": peak, "shapes": {}}
    for shape in shapes:
        path = build_shape(shape, folder / "models" / f"{shape}-{dtype}", dtype, tokenizer_from)
        res: dict[str, Any] = {}
        log(f"[bench] {shape}: HF engine")
        hf = replace(spec, kind="hf").open(str(path), lora=False)
        res["hf"] = engine_speed(hf, work)
        state = full_state(path, device, dtype)
        res["hf"]["full_push_s"] = round(push_latency(hf, state, work.repeats, None), 4)
        log(f"[bench] {shape}: broadcast push")
        res["broadcast_push"] = broadcast_push(state, work.repeats)
        release(hf)
        if vllm_engine.available():
            log(f"[bench] {shape}: vLLM engine")
            vl = replace(spec, kind="vllm").open(str(path), lora=False)
            res["vllm"] = engine_speed(vl, work)
            res["vllm_direct"] = vllm_direct_speed(vl, work)
            res["vllm"]["full_push_s"] = round(push_latency(vl, state, work.repeats, None), 4)
            release(vl)
            vl = replace(spec, kind="vllm").open(str(path), lora=True)
            adapter = lora_state(path, lora, device, dtype)
            res["vllm"]["lora_push_s"] = round(push_latency(vl, adapter, work.repeats, lora), 4)
            release(vl)
            res["generator_vs_direct"] = round(
                res["vllm"]["generate_tokens_per_s"] / res["vllm_direct"]["generate_tokens_per_s"],
                3,
            )
            res["vllm_vs_hf_generate"] = round(
                res["vllm"]["generate_tokens_per_s"] / res["hf"]["generate_tokens_per_s"], 2
            )
            res["vllm_vs_hf_score"] = round(
                res["vllm"]["score_tokens_per_s"] / res["hf"]["score_tokens_per_s"], 2
            )
        del state
        if dpo_steps > 0:
            log(f"[bench] {shape}: DPO steps")
            res["dpo"] = dpo_speed(path, dtype, dpo_batch, dpo_seq, dpo_steps, peak)
        out["shapes"][shape] = res
        shutil.rmtree(path, ignore_errors=True)
    return out


# ---------------------------------------------------------------------- the machine's bounds


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo; the platform's name elsewhere)."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(threads: int, seconds: float = 1.0) -> dict[str, Any]:
    """What ``threads`` torch threads of this machine can do, measured now: dense matmul
    FLOP/s in bf16 and fp32 (1024×1024×1024, the best of several), and memory bandwidth
    reading a 512 MiB tensor (what decoding streams: weights and KV cache)."""
    import os

    import torch

    torch.set_num_threads(threads)

    def best(fn: Callable[[], Any]) -> float:
        fn()
        times, deadline = [], time.perf_counter() + seconds
        while time.perf_counter() < deadline or len(times) < 3:
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    out: dict[str, Any] = {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": threads}
    n = 1024
    for dtype in ("bfloat16", "float32"):
        a = torch.randn(n, n, dtype=getattr(torch, dtype))
        b = torch.randn(n, n, dtype=getattr(torch, dtype))
        out[f"{dtype}_tflops"] = round(2 * n**3 / best(lambda a=a, b=b: a @ b) / 1e12, 3)
    big = torch.ones(128 * 1024 * 1024)  # 512 MiB of fp32
    out["read_gbps"] = round(big.numel() * 4 / best(lambda: big.sum()) / 1e9, 2)
    return out


def decode_bound(
    config: Any,
    batch: int,
    context: float,
    params: int,
    value_bytes: int,
    tflops: float,
    gbps: float,
) -> float:
    """Tokens/s a decoding step can reach at ``batch`` rows of ``context`` tokens each: it must
    read every weight and every row's KV cache once (memory; ``value_bytes`` per value, the
    model's dtype) and do 2 FLOPs per weight per row (compute, at the dtype's matmul FLOP/s);
    the slower of the two bounds it."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_bytes = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * value_bytes
    memory_s = (params * value_bytes + batch * context * kv_bytes) / (gbps * 1e9)
    compute_s = batch * 2 * params / (tflops * 1e12)
    return batch / max(memory_s, compute_s)


def generation_bound(
    config: Any,
    batch: int,
    prompt: float,
    new: int,
    params: int,
    value_bytes: int,
    tflops: float,
    gbps: float,
    shared: float = 0.0,
) -> float:
    """Generated tokens/s a call can reach for ``batch`` prompts of ``prompt`` tokens and ``new``
    tokens each: the prefill (2 FLOPs per weight per prompt token, the ``shared`` leading
    tokens every prompt has counted once, or one read of the weights, the slower) and then
    ``new`` decoding steps (:func:`decode_bound` at the mean context)."""
    tokens = shared + batch * (prompt - shared)
    prefill_s = max(tokens * 2 * params / (tflops * 1e12), params * value_bytes / (gbps * 1e9))
    step = decode_bound(config, batch, prompt + new / 2, params, value_bytes, tflops, gbps)
    return batch * new / (prefill_s + new * batch / step)
