"""Benchmarks. Each compares alternatives as ratios within one run (machines are noisy).

    python jobs/bench.py engine [--config configs/X.yaml] [key=value ...]

engine: HF engine batched vs one-by-one generation tokens/s on ``bench.prompts`` prompts
        (target: batched ≥ 5× one-by-one at 32 prompts); and, with a random LoRA adapter of
        the config's shape, batched generation on merged weights vs PEFT's unmerged forward
        (fixed-length outputs, so both do the same work).
round:  one COALITION round (generate → refine → score → pairs → DPO → push → evaluate)
        through Ray actors and Ray Train vs the same round in one process (target ≤ 1.15×).
serve:  the Ray Serve app of a trained run (``bench.run=<run_dir>``) over HTTP: throughput and
        p50/p95 latency of ``bench.requests`` requests, ``bench.concurrency`` at a time, with
        request batching (``serve.max_batch_size``) vs without (batch of 1).
gpu:    on whatever device is there (named "gpu" for where it matters): for each random-weight
        shape in ``bench.shapes``, generation tokens/s HF vs vLLM on the same prompts
        (fixed-length outputs), our vLLM generator vs vLLM used directly (target ≥ 0.9×),
        scorer tokens/s, full-weight push (target ≤ 0.15 s at 0.5B) and LoRA push (≤ 20 ms)
        latency, and the DPO step time and MFU of our training path (target ≥ 35% at 0.5B
        bf16 on an H100). vLLM parts run where vLLM is installed.
Results go to ``run_dir/bench-<name>.json``; record figures in docs/benchmarks.md.
"""

from __future__ import annotations

import platform
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

from coalition.data import prompts, tasks
from coalition.engines import EngineSpec, build_engine, sampling
from coalition.run import cli
from coalition.run.report import print_table
from coalition.run.rundir import write_json


def bench_engine(cfg) -> dict:
    task = tasks.from_config(cfg.task.model_copy(update={"n_test": cfg.bench.prompts}))
    engine = build_engine(cfg, progress=False)
    texts = [
        prompts.render(
            prompts.build("rationale", ex.question, task.answer_format), engine.tokenizer
        )
        for ex in task.load("test")
    ][: cfg.bench.prompts]
    params = replace(sampling(cfg.generation, cfg.seed), max_new_tokens=cfg.bench.new_tokens, n=1)
    engine.generate(texts[:2], replace(params, max_new_tokens=2))  # warm-up

    def timed(fn) -> tuple[float, int]:
        start = time.perf_counter()
        outs = fn()
        return time.perf_counter() - start, sum(g[0].tokens for g in outs)

    t_single, n_single = timed(lambda: [engine.generate([t], params)[0] for t in texts])
    t_batch, n_batch = timed(lambda: engine.generate(texts, params))
    single_tps, batch_tps = n_single / t_single, n_batch / t_batch
    lora = _bench_lora(cfg, engine, texts, replace(params, ignore_eos=True), timed)
    return {
        "prompts": len(texts),
        "batch_size": engine.batch_size,
        "max_new_tokens": params.max_new_tokens,
        "one_by_one": {
            "seconds": round(t_single, 3),
            "tokens": n_single,
            "tokens_per_s": round(single_tps, 1),
        },
        "batched": {
            "seconds": round(t_batch, 3),
            "tokens": n_batch,
            "tokens_per_s": round(batch_tps, 1),
        },
        "ratio": round(batch_tps / single_tps, 2),
        "target": ">= 5",
        **lora,
    }


def _bench_lora(cfg, engine, texts, params, timed) -> dict:
    """Batched generation with an adapter: merged weights vs unmerged (HF engine only)."""
    if not hasattr(engine, "merge_for_generation"):
        return {}
    import torch
    from peft import get_peft_model, get_peft_model_state_dict

    from coalition.method.training import lora_spec

    spec = lora_spec(cfg.variants.lora)
    torch.manual_seed(cfg.seed)
    probe = get_peft_model(type(engine.model)(engine.model.config), spec.peft_config())
    state = {k: torch.randn_like(v) * 0.01 for k, v in get_peft_model_state_dict(probe).items()}
    engine.set_adapter("bench", state, 1, spec)
    out = {}
    for merged in (False, True):
        engine.merge_for_generation = merged
        seconds, tokens = timed(lambda: engine.generate(texts, params, adapter="bench"))
        out["lora_merged" if merged else "lora_unmerged"] = {
            "seconds": round(seconds, 3),
            "tokens": tokens,
            "tokens_per_s": round(tokens / seconds, 1),
        }
    out["merge_ratio"] = round(
        out["lora_merged"]["tokens_per_s"] / out["lora_unmerged"]["tokens_per_s"], 2
    )
    return out


def bench_round(cfg, run_dir: Path) -> dict:
    """The same round (same config, seeds and starting weights) in one process and on Ray."""
    import os

    import torch

    from actors.group import RayGroup
    from actors.session import init_ray
    from coalition.engines.models import resolve
    from coalition.groups.layout import run_layout
    from coalition.groups.local import LocalGroup
    from coalition.method.training import export_state, load_trainable, lora_spec
    from coalition.recipes.sro import Run
    from coalition.run.checkpoints import save_state

    base_path = resolve(cfg.model.name_or_path)
    cfg = cfg.model_copy(update={"rounds": 1})
    spec = lora_spec(cfg.variants.lora)

    def start_state(k: int) -> dict:
        # distinct, non-zero adapters so the variants disagree and every update has pairs
        torch.manual_seed(cfg.seed + k)
        model = load_trainable(base_path, "lora", spec, None)[0]
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.data.normal_(0.0, 0.05)
        return export_state(model)

    states = [start_state(k) for k in range(cfg.variants.count)]

    def one(path: str, make_workers) -> dict:
        folder = run_dir / path
        shutil.rmtree(folder, ignore_errors=True)  # a benchmark never resumes
        workers = make_workers(folder)
        try:
            run = Run(cfg, workers, folder, log=lambda _: None)
            for k in range(cfg.variants.count):
                save_state(run.dir.state(f"v{k}", 1), states[k], f"v{k}", 1)
            run.sync(1)
            workers.ready()  # trainers up, as in any run past its warm-up
            start = time.perf_counter()
            run.round(1)
            seconds = time.perf_counter() - start
        finally:
            workers.close()
        stages = {m["stage"].split("/", 1)[1]: m["seconds"] for m in run.metrics}
        return {"seconds": round(seconds, 2), "stages": stages}

    threads = len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    local = one(
        "local",
        lambda folder: LocalGroup(run_layout(cfg, in_process=True), spec, EngineSpec.of(cfg)),
    )
    init_ray(cfg)
    on_ray = one(
        "ray",
        lambda folder: RayGroup(
            cfg, run_layout(cfg, in_process=False), folder / "ray_train", log=lambda _: None
        ),
    )
    return {
        "pool": cfg.pool,
        "variants": cfg.variants.count,
        "max_new_tokens": cfg.generation.max_new_tokens,
        "one_process": local,
        "ray": on_ray,
        "ratio": round(on_ray["seconds"] / local["seconds"], 3),
        "target": "<= 1.15",
    }


def bench_laptop(cfg, run_dir: Path) -> dict:
    """The embedded default's work on this machine, each figure beside the bound the machine
    allows (measured in the same run) and beside the alternative: generation (lean decoder vs
    transformers' generate) at batch 1, today's default batch (16), the default's and 128;
    scoring; SFT and DPO updates through the real path (TRL on a persistent Ray Train
    trainer) with our CPU settings vs TRL's defaults. Per core: one torch thread, as each
    generator actor and trainer worker of the default has."""
    import random

    import torch
    from transformers import AutoConfig

    from benchmarks import perf
    from coalition.engines.decode import shared_prefix
    from coalition.engines.hf import HFEngine
    from coalition.engines.models import resolve
    from coalition.method import scoring, warmup
    from coalition.method.training import threads_for

    threads = threads_for(cfg.ray.generator_cpus)
    mach = perf.machine(threads)
    print(
        f"[bench] {mach['cpu']}: {mach['bfloat16_tflops']} TFLOP/s bf16, "
        f"{mach['float32_tflops']} fp32, {mach['read_gbps']} GB/s read, {threads} thread(s)"
    )
    path = resolve(cfg.model.name_or_path)
    config = AutoConfig.from_pretrained(path)
    out: dict = {"machine": mach, "generation": [], "threads": threads}
    task = tasks.from_config(cfg.task.model_copy(update={"n_test": 128, "n_train": 64}))
    engines = {
        name: HFEngine.from_pretrained(path, cfg.model.dtype, "cpu", progress=False, decoder=name)
        for name in ("lean", "hf")
    }
    tok = engines["lean"].tokenizer
    weights = list(engines["lean"].model.parameters())
    n_weights, value_bytes = sum(p.numel() for p in weights), weights[0].element_size()
    # the bounds at the matmul rate of the dtype the model runs in (model.dtype auto: bf16
    # where the CPU computes it natively, else fp32)
    dtype = str(weights[0].dtype).removeprefix("torch.")
    tflops = mach[f"{dtype}_tflops"]
    out["dtype"] = dtype
    print(f"[bench] bounds at {tflops} TFLOP/s ({dtype}, the model's dtype)")
    texts = [
        prompts.render(prompts.build("rationale", ex.question, task.answer_format), tok)
        for ex in task.load("test")
    ]
    new = cfg.generation.max_new_tokens
    params = replace(sampling(cfg.generation, cfg.seed), n=1, ignore_eos=True)
    prompt_len = sum(len(tok(t)["input_ids"]) for t in texts) / len(texts)
    batches = sorted({1, 16, cfg.generation.batch_size, 128})
    # the reference at today's and the new default's batch is enough; the lean decoder
    # prefilling every row's whole prompt (as before 2026-12-03) at the default's
    runs = [  # (row label, engine, shared prefix once, batches)
        ("lean", "lean", True, batches),
        ("lean, whole prompts", "lean", False, [cfg.generation.batch_size]),
        ("hf", "hf", True, [b for b in batches if b <= max(16, cfg.generation.batch_size)]),
    ]
    for name, kind, share, sizes in runs:
        engine = engines[kind]
        engine.share_prefix = share
        engine.generate(texts[:2], replace(params, max_new_tokens=2))  # warm-up
        for batch in sizes:
            engine.batch_size = batch
            start = time.perf_counter()
            engine.generate(texts[:batch], params)
            rate = batch * new / (time.perf_counter() - start)
            # the least work: the batch's shared prompt prefix prefilled once (the lean
            # decoder does; transformers' generate prefills it in every row)
            shared = shared_prefix([tok(t)["input_ids"] for t in texts[:batch]])
            bound = perf.generation_bound(config, batch, prompt_len, new, n_weights, value_bytes,
                                          tflops, mach["read_gbps"], shared)  # fmt: skip
            row = {"decoder": name, "batch": batch, "tokens_per_s": round(rate, 1),
                   "bound": round(bound, 1), "of_bound": round(rate / bound, 3)}  # fmt: skip
            out["generation"].append(row)
            print(f"[bench] generate {name} batch {batch}: {rate:.0f} tok/s ({rate / bound:.0%} "
                  f"of {bound:.0f})")  # fmt: skip
    today = next(r for r in out["generation"] if r["decoder"] == "hf" and r["batch"] == 16)
    ours = next(
        r for r in out["generation"]
        if r["decoder"] == "lean" and r["batch"] == cfg.generation.batch_size
    )  # fmt: skip
    whole = next(r for r in out["generation"] if r["decoder"] == "lean, whole prompts")
    out["generation_vs_today"] = round(ours["tokens_per_s"] / today["tokens_per_s"], 2)
    out["generation_vs_whole_prompts"] = round(ours["tokens_per_s"] / whole["tokens_per_s"], 2)
    engines["lean"].share_prefix = True

    train = task.load("train")
    items, _ = warmup.from_gold(train[:32], cfg.seed)
    reqs = [scoring.request(it.example, it.rationale, task.answer_format, tok, True)
            for it in items]  # fmt: skip
    engine = engines["lean"]
    engine.batch_size = cfg.generation.batch_size
    score_tokens = sum(len(tok(p + t)["input_ids"]) for p, t in reqs)
    # the least work: the requests' shared prefix once (the engine runs it once per batch)
    shared = shared_prefix([tok(p)["input_ids"] for p, _ in reqs])
    unique_tokens = score_tokens - (len(reqs) - 1) * shared
    target_tokens = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for _, t in reqs)
    engine.score([p for p, _ in reqs[:2]], [t for _, t in reqs[:2]])
    rates = {}
    for share in (False, True):  # every row's whole request (before 2026-12-03), then shared
        engine.share_prefix = share
        start = time.perf_counter()
        engine.score([p for p, _ in reqs], [t for _, t in reqs])
        rates[share] = score_tokens / (time.perf_counter() - start)
    rate = rates[True]
    # 2 FLOPs per weight per token, the LM head only at the target positions (all a score needs)
    head = config.vocab_size * config.hidden_size
    body = n_weights - head * (1 if config.tie_word_embeddings else 2)  # less the embedding lookup
    flops = 2 * body * unique_tokens + 2 * head * target_tokens
    bound = score_tokens / (flops / (tflops * 1e12))
    out["scoring"] = {"tokens_per_s": round(rate, 1), "bound": round(bound, 1),
                      "of_bound": round(rate / bound, 3)}  # fmt: skip
    out["scoring_whole"] = {"tokens_per_s": round(rates[False], 1), "bound": round(bound, 1),
                            "of_bound": round(rates[False] / bound, 3)}  # fmt: skip
    print(f"[bench] score: {rate:.0f} tok/s ({rate / bound:.0%} of {bound:.0f}); every row "
          f"whole: {rates[False]:.0f}")  # fmt: skip
    del engines, engine

    rng = random.Random(cfg.seed)
    sft_rows = warmup.rows(items, task, cfg.warmup.modes, tok, cfg.model.chat_template)
    dpo_rows = [
        {"prompt": prompts.render(prompts.build("rationale", it.example.question,
                                                task.answer_format), tok),
         "chosen": it.rationale, "rejected": warmup.corrupt(it.rationale, rng)}
        for it in items
    ]  # fmt: skip
    out["training"] = _bench_training(cfg, run_dir, path, sft_rows, dpo_rows, tok, tflops)
    torch.set_num_threads(threads)
    return out


def _bench_training(cfg, run_dir, path, sft_rows, dpo_rows, tok, tflops: float) -> dict:
    """SFT and DPO updates on a persistent Ray Train trainer (one worker, one CPU), lean and
    with TRL's defaults, as trained tokens per second against the compute bound (4·N FLOPs
    per trained token for a LoRA update: forward and the backward to the activations). The
    bound counts the leading tokens every row has once per batch, the least work: the lean
    update runs them once (``training.share_prompt_prefix``)."""
    import math
    from dataclasses import replace as dc_replace

    from actors.persistent import PersistentTrainer
    from actors.session import init_ray
    from coalition.engines.decode import shared_prefix
    from coalition.method.training import lora_spec, settings_from

    init_ray(cfg.model_copy(update={"variants": cfg.variants.model_copy(update={"count": 2})}))
    trainer = PersistentTrainer(
        "bench-trainer", path, "lora", lora_spec(cfg.variants.lora), run_dir / "ray_train",
        cfg.model.dtype, cpus_per_worker=cfg.ray.train_cpus_per_worker,
    )  # fmt: skip
    n_params = _param_count(path)
    per_token = tflops * 1e12 / (4 * n_params)  # trained tokens/s if each ran at the matmul rate

    def sequences(rows: list[dict], kind: str) -> list[list[int]]:
        sides = ("completion",) if kind == "sft" else ("chosen", "rejected")
        return [tok(r["prompt"] + r[side])["input_ids"] for r in rows for side in sides]

    out: dict = {}
    try:
        trainer.ready()
        for kind, rows, step_cfg in (("sft", sft_rows, cfg.warmup), ("dpo", dpo_rows, cfg.sro)):
            settings = settings_from(step_cfg, cfg.seed)
            seqs = sequences(rows, kind)
            total = sum(map(len, seqs))
            per_batch = settings.batch_size * (1 if kind == "sft" else 2)
            prefix = shared_prefix(seqs)
            unique = total - prefix * (len(seqs) - math.ceil(len(seqs) / per_batch))
            bound = per_token * total / unique
            out[f"{kind}_bound"] = round(bound, 1)
            out[f"{kind}_shared_prefix"] = prefix
            for lean in (True, False):
                s = dc_replace(settings, lean=lean)
                trainer.update(kind, None, rows[: s.batch_size], dc_replace(s, epochs=1))
                start = time.perf_counter()
                trainer.update(kind, None, rows, s)
                seconds = time.perf_counter() - start
                rate = total * s.epochs / seconds
                name = f"{kind}_{'lean' if lean else 'trl_defaults'}"
                out[name] = {"tokens_per_s": round(rate, 1), "seconds": round(seconds, 1),
                             "of_bound": round(rate / bound, 3)}  # fmt: skip
                print(f"[bench] {name}: {rate:.0f} tok/s per core ({rate / bound:.1%} of "
                      f"{bound:.0f})")  # fmt: skip
            out[f"{kind}_vs_trl_defaults"] = round(
                out[f"{kind}_lean"]["tokens_per_s"] / out[f"{kind}_trl_defaults"]["tokens_per_s"],
                2,
            )
    finally:
        trainer.close()
    return out


def print_laptop(result: dict, run_dir: Path) -> None:
    m = result["machine"]
    print(f"{m['cpu']}, {result['threads']} thread(s): {m['bfloat16_tflops']} TFLOP/s bf16, "
          f"{m['float32_tflops']} TFLOP/s fp32, {m['read_gbps']} GB/s read; the model in "
          f"{result['dtype']}")  # fmt: skip
    rows = [
        [f"generate {g['decoder']}", g["batch"], g["tokens_per_s"], g["bound"], g["of_bound"]]
        for g in result["generation"]
    ]
    for label, key in (("score", "scoring"), ("score, whole requests", "scoring_whole")):
        sc = result[key]
        rows.append([label, "", sc["tokens_per_s"], sc["bound"], sc["of_bound"]])
    tr = result["training"]
    for name in ("sft_lean", "sft_trl_defaults", "dpo_lean", "dpo_trl_defaults"):
        bound = tr[f"{name.split('_')[0]}_bound"]
        rows.append([name, "", tr[name]["tokens_per_s"], bound, tr[name]["of_bound"]])
    print_table(["what", "batch", "tokens/s", "bound", "achieved/bound"], rows)
    print(
        f"generation at the default's batch vs today's (HF generate, batch 16): "
        f"{result['generation_vs_today']}x (vs whole prompts: "
        f"{result['generation_vs_whole_prompts']}x); scoring vs whole requests: "
        f"{result['scoring']['tokens_per_s'] / result['scoring_whole']['tokens_per_s']:.2f}x; "
        f"SFT vs TRL defaults: {tr['sft_vs_trl_defaults']}x; "
        f"DPO: {tr['dpo_vs_trl_defaults']}x;  {run_dir}"
    )


def _param_count(path: str) -> int:
    from transformers import AutoConfig

    from benchmarks.perf import param_count

    return param_count(AutoConfig.from_pretrained(path))


def bench_serve(cfg) -> dict:
    import socket
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import requests
    from ray import serve

    from actors.serve import build
    from actors.session import init_ray
    from coalition.run.config import ConfigError
    from coalition.run.rundir import RunDir

    if not cfg.bench.run:
        raise ConfigError("bench serve needs bench.run=<a jobs/train.py run directory>")
    run_cfg, version = RunDir(cfg.bench.run).trained()
    questions = [ex.question for ex in tasks.from_config(run_cfg.task).load("test")]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    init_ray(run_cfg)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = f"http://127.0.0.1:{port}/v1/solve"

    def one(i: int) -> tuple[int, float]:
        start = time.perf_counter()
        r = requests.post(url, json={"question": questions[i % len(questions)]}, timeout=600)
        return r.status_code, 1000 * (time.perf_counter() - start)

    out: dict = {}
    for label, batch in (("unbatched", 1), ("batched", cfg.serve.max_batch_size)):
        overrides = {
            "serve.max_batch_size": batch,
            "serve.batch_wait_s": cfg.serve.batch_wait_s,
            "deliberation.routing": cfg.deliberation.routing,
            "deliberation.refine_turns": cfg.deliberation.refine_turns,
        }
        serve.run(build(cfg.bench.run, overrides), name="bench", route_prefix="/")
        list(ThreadPoolExecutor(2).map(one, range(2)))  # warm-up
        start = time.perf_counter()
        with ThreadPoolExecutor(cfg.bench.concurrency) as pool:
            got = list(pool.map(one, range(cfg.bench.requests)))
        seconds = time.perf_counter() - start
        lat = np.array([ms for code, ms in got if code == 200])
        out[label] = {
            "max_batch_size": batch,
            "seconds": round(seconds, 2),
            "errors": sum(code != 200 for code, _ in got),
            "throughput_rps": round(len(got) / seconds, 2),
            "p50_ms": round(float(np.percentile(lat, 50)), 1) if lat.size else None,
            "p95_ms": round(float(np.percentile(lat, 95)), 1) if lat.size else None,
        }
        serve.delete("bench")
    serve.shutdown()
    return {
        "run": cfg.bench.run,
        "served_model": run_cfg.model.name_or_path,
        "version": version,
        "requests": cfg.bench.requests,
        "concurrency": cfg.bench.concurrency,
        "routing": cfg.deliberation.routing,
        "refine_turns": cfg.deliberation.refine_turns,
        "max_new_tokens": run_cfg.generation.max_new_tokens,
        **out,
        "ratio": round(out["batched"]["throughput_rps"] / out["unbatched"]["throughput_rps"], 2),
    }


def bench_gpu(cfg, run_dir: Path) -> dict:
    from benchmarks import perf
    from coalition.engines.models import resolve
    from coalition.run.config import ConfigError

    unknown = [s for s in cfg.bench.shapes if s not in perf.SHAPES]
    if unknown:
        raise ConfigError(
            f"bench.shapes: unknown shape {unknown[0]!r}; allowed: {', '.join(perf.SHAPES)}"
        )
    b = cfg.bench
    return perf.suite(
        b.shapes,
        run_dir,
        EngineSpec.of(cfg),
        perf.workload(b.prompts, b.new_tokens, b.repeats),
        b.dpo_batch,
        b.dpo_seq,
        b.dpo_steps,
        tokenizer_from=resolve("builtin:tiny"),
    )


def print_gpu(result: dict) -> None:
    rows = []
    for shape, r in result["shapes"].items():
        for engine in ("hf", "vllm", "vllm_direct"):
            if engine in r:
                e = r[engine]
                rows.append([
                    shape, engine, e.get("generate_tokens_per_s", ""),
                    e.get("score_tokens_per_s", ""), e.get("full_push_s", ""),
                    e.get("lora_push_s", ""),
                ])  # fmt: skip
    print_table(["shape", "engine", "gen tok/s", "score tok/s", "full push s", "LoRA push s"], rows)
    for shape, r in result["shapes"].items():
        if "generator_vs_direct" in r:
            print(
                f"{shape}: our vLLM generator / vLLM direct = {r['generator_vs_direct']}x "
                f"(target >= 0.9); vLLM / HF generate {r['vllm_vs_hf_generate']}x, "
                f"score {r['vllm_vs_hf_score']}x"
            )
        b = r.get("broadcast_push", {})
        if "seconds" in b:
            print(f"{shape}: broadcast of the full weights ({b['backend']}) {b['seconds']} s")
        elif b:
            print(f"{shape}: broadcast push not measured ({b['skipped']})")
        if "dpo" in r:
            d = r["dpo"]
            print(
                f"{shape}: DPO step {d['step_s']} s ({d['batch_size']}x2x{d['seq_len']} tokens), "
                f"{d['tflops']} TFLOP/s, MFU {d['mfu']}"
            )
    print(f"device {result['device']} ({result['dtype']})")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in BENCHES:
        print(
            f"usage: jobs/bench.py {{{'|'.join(BENCHES)}}} [--config PATH] [key=value ...]",
            file=sys.stderr,
        )
        return 2
    name, rest = argv[0], argv[1:]
    cfg = cli.parse(rest, "bench")
    run_dir, _ = cli.prepare_run_dir(cfg, f"bench-{name}")
    result = {
        "bench": name,
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.node()} {platform.machine()} cpus={_cpus()}",
        "model": cfg.model.name_or_path,
        "command": "python jobs/bench.py " + " ".join(argv),
        **BENCHES[name](cfg, run_dir),
    }
    write_json(run_dir / f"bench-{name}.json", result)
    if name == "gpu":
        print_gpu(result)
    elif name == "engine":
        print_table(
            ["mode", "tokens", "seconds", "tokens/s"],
            [
                [m, result[m]["tokens"], result[m]["seconds"], result[m]["tokens_per_s"]]
                for m in ("one_by_one", "batched", "lora_unmerged", "lora_merged")
                if m in result
            ],
        )
        print(f"batched / one-by-one = {result['ratio']}x  (target {result['target']});  {run_dir}")
        if "merge_ratio" in result:
            print(f"LoRA merged / unmerged = {result['merge_ratio']}x")
    elif name == "serve":
        keys = ["max_batch_size", "errors", "seconds", "throughput_rps", "p50_ms", "p95_ms"]
        print_table(
            ["setting", *keys],
            [[m, *(result[m][k] for k in keys)] for m in ("unbatched", "batched")],
        )
        print(f"batched / unbatched throughput = {result['ratio']}x;  {run_dir}")
    elif name == "laptop":
        print_laptop(result, run_dir)
    else:
        stages = list(result["one_process"]["stages"])
        print_table(
            ["stage", "one process (s)", "ray (s)"],
            [
                [st, result["one_process"]["stages"][st], result["ray"]["stages"].get(st, "")]
                for st in stages
            ]
            + [["round", result["one_process"]["seconds"], result["ray"]["seconds"]]],
        )
        print(f"ray / one process = {result['ratio']}x  (target {result['target']});  {run_dir}")
    return 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


BENCHES = {
    "engine": lambda cfg, run_dir: bench_engine(cfg),
    "round": bench_round,
    "serve": lambda cfg, run_dir: bench_serve(cfg),
    "gpu": bench_gpu,
    "laptop": bench_laptop,
}

command = cli.command(main)

if __name__ == "__main__":
    command()
