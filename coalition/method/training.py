"""Training steps: multi-mode SFT (warm-up) and DPO (SRO) with TRL, on LoRA or full weights.

Pure functions over a model and rows of text; Ray Train runs them on its workers
(``actors/update.py``, ``actors/persistent.py``) and may pass ``prepare`` (Ray's ``prepare_trainer``) to hook the TRL
trainer into the worker group. The same functions run in one process for tests and benchmarks.

Variant state crosses process boundaries as a plain ``dict[str, Tensor]``: the LoRA adapter's
weights (``mode: lora``) or the whole model's (``mode: full``).
"""

from __future__ import annotations

import copy
import functools
import os
import tempfile
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from coalition.engines.base import LoraSpec
from coalition.engines.hf import pick_dtype

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class StepSettings:
    """Optimiser settings of one update (mirrors ``config.StepConfig`` plus DPO's own)."""

    lr: float = 2e-4
    epochs: float = 1.0
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 512
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    beta: float = 0.1
    loss_type: str = "sigmoid"
    nll_weight: float = 0.0  # DPO + NLL on the chosen side (TRL's "sft" loss term)
    precompute_ref: bool = True  # reference log-probs once, not again every epoch
    seed: int = 0
    log_dir: str | None = None  # TensorBoard event files of this update (None: no TensorBoard)
    # False: TRL's own defaults on a CPU (gradient checkpointing, every position scored, SDPA,
    # random batches) — the reference jobs/bench.py laptop measures the lean path against
    lean: bool = True


def settings_from(cfg: Any, seed: int, log_dir: Path | None = None) -> StepSettings:
    """StepSettings from a ``StepConfig``/``SROConfig`` (fields it lacks keep their defaults)."""
    fields = {k: v for k, v in cfg.model_dump().items() if k in StepSettings.__dataclass_fields__}
    return StepSettings(**fields, seed=seed, log_dir=str(log_dir) if log_dir else None)


def lora_spec(cfg: Any) -> LoraSpec:
    """LoraSpec from ``config.LoraConfig``."""
    return LoraSpec(
        r=cfg.r, alpha=cfg.alpha, dropout=cfg.dropout, target_modules=tuple(cfg.target_modules)
    )


def load_trainable(
    base_path: str,
    mode: str,
    spec: LoraSpec,
    state: State | None,
    dtype: str = "float32",
    lean: bool = True,
) -> tuple[Any, Any]:
    """(model, tokenizer) ready to train: a PEFT model whose "default" adapter holds ``state``
    (fresh LoRA when None), or the full model with ``state`` loaded (``mode: full``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # on a CPU, eager attention's backward is faster than SDPA's at these lengths (measured in
    # docs/benchmarks.md); GPUs keep SDPA
    attention = "sdpa" if torch.cuda.is_available() or not lean else "eager"
    model = AutoModelForCausalLM.from_pretrained(
        base_path, dtype=pick_dtype(dtype), attn_implementation=attention
    )
    if mode == "full":
        if state is not None:
            model.load_state_dict(state)
    else:
        from peft import get_peft_model, set_peft_model_state_dict

        model = get_peft_model(model, spec.peft_config())
        if state is not None:
            set_peft_model_state_dict(model, state)
    if lean and not torch.cuda.is_available():
        share_prompt_prefix(model)
    return model, tokenizer


def share_prompt_prefix(model: Any) -> None:
    """Run a training batch's shared leading tokens once. Every row of an SRO or warm-up batch
    starts with the same chat template and instructions (57 of a ~135-token DPO sequence
    here), which TRL's forward computes again in every row. The backbone's forward is wrapped
    (TRL's fused LM head calls the backbone, then scores the labelled positions): the prefix
    runs as a batch of one, its keys and values are repeated to every row, the rows' own tokens
    follow at their positions, and the prefix's hidden states are repeated in the output.
    Gradients flow through the repeat, so an update is the same computation with fewer FLOPs
    and less activation memory (tests compare log-probs and gradients with the plain forward).

    A batch whose rows share more than the common prefix (a DPO batch: each pair's chosen and
    rejected rows share their question) runs as its prefix tree instead (:func:`prefix_tree`):
    every distinct prefix once, in one packed row where a token attends to its own ancestors,
    and no padding. Needs right padding (every row's tokens start at position 0: TRL's
    collators pad right); a batch without a prefix of :data:`MIN_SHARED` tokens, or left
    padded, takes the plain forward. Only for the architectures the lean decoder supports
    (Llama family)."""
    from transformers.modeling_outputs import BaseModelOutputWithPast

    from coalition.engines.decode import causal_lm, shared_prefix, supported

    if not supported(model):
        return
    body = causal_lm(model).base_model
    if getattr(body.forward, "_coalition_shared", False):
        return

    # a method bound to the backbone (not a closure over it), so a deep copy (the frozen DPO
    # reference of a full-weight update) runs its own weights
    def forward(
        self: Any,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: Any = None,
        **kwargs: Any,
    ) -> Any:
        plain = functools.partial(type(self).forward, self)
        args = {"input_ids": input_ids, "attention_mask": attention_mask,
                "position_ids": position_ids, "past_key_values": past_key_values}  # fmt: skip
        if (
            input_ids is None
            or attention_mask is None
            or past_key_values is not None
            or len(input_ids) < 2
            or not bool(attention_mask[:, 0].all())
        ):
            return plain(**args, **kwargs)
        lengths = attention_mask.sum(dim=1).tolist()
        seqs = [ids[:n].tolist() for ids, n in zip(input_ids, lengths, strict=True)]
        shared = shared_prefix(seqs)
        rows, width = input_ids.shape
        cache = {"use_cache": kwargs.pop("use_cache")} if "use_cache" in kwargs else {}
        tree = prefix_tree(seqs)
        padded = shared + rows * (width - shared)  # the positions the shared-prefix path runs
        if position_ids is None and len(tree.tokens) <= min(TREE_MAX, TREE_GAIN * padded):
            packed = plain(
                input_ids=torch.tensor([tree.tokens], device=input_ids.device),
                attention_mask=tree.mask(self.embed_tokens.weight.dtype)[None, None],
                position_ids=torch.tensor([tree.depth], device=input_ids.device),
                use_cache=False,
                **kwargs,
            )
            # each row's positions read their nodes' states (padding reads node 0: unscored)
            index = torch.zeros((rows, width), dtype=torch.long)
            for row, path in enumerate(tree.paths):
                index[row, : len(path)] = torch.tensor(path)
            return BaseModelOutputWithPast(last_hidden_state=packed.last_hidden_state[0][index])
        if not shared:
            return plain(**args, **cache, **kwargs)
        head = plain(
            input_ids=input_ids[:1, :shared],
            position_ids=None if position_ids is None else position_ids[:1, :shared],
            use_cache=True,
            **kwargs,
        )
        past = head.past_key_values
        past.batch_repeat_interleave(rows)
        if position_ids is None:
            position_ids = torch.arange(width, device=input_ids.device).expand(rows, -1)
        tail = plain(
            input_ids=input_ids[:, shared:],
            attention_mask=attention_mask,
            position_ids=position_ids[:, shared:],
            past_key_values=past,
            use_cache=True,
            **kwargs,
        )
        hidden = torch.cat(
            [head.last_hidden_state.expand(rows, -1, -1), tail.last_hidden_state], dim=1
        )
        return BaseModelOutputWithPast(last_hidden_state=hidden)

    forward._coalition_shared = True  # type: ignore[attr-defined]
    body.forward = types.MethodType(forward, body)


TREE_MAX = 512  # a larger prefix tree takes the shared-prefix path: its attention grows as N²
TREE_GAIN = 0.8  # ...and so does one that saves less than a fifth of that path's positions


@dataclass(frozen=True)
class PrefixTree:
    """A batch's token sequences as a prefix tree: each node a token, parents before children."""

    tokens: list[int]
    parents: list[int]  # -1 for a sequence's first token
    depth: list[int]  # the node's position in every sequence that passes through it
    paths: list[list[int]]  # each sequence's nodes, in order

    def mask(self, dtype: torch.dtype) -> torch.Tensor:
        """The additive attention mask [N, N]: a node sees its ancestors and itself, nothing
        else, so its state is the one it has in any sequence through it."""
        n = len(self.tokens)
        seen = torch.zeros((n, n), dtype=torch.bool)
        for node, parent in enumerate(self.parents):
            if parent >= 0:
                seen[node] = seen[parent]
            seen[node, node] = True
        return torch.zeros((n, n), dtype=dtype).masked_fill(~seen, torch.finfo(dtype).min)


def prefix_tree(seqs: list[list[int]]) -> PrefixTree:
    """The prefix tree of ``seqs``: a prefix several sequences share is one path of nodes."""
    tokens: list[int] = []
    parents: list[int] = []
    depth: list[int] = []
    paths: list[list[int]] = []
    children: dict[tuple[int, int], int] = {}
    for seq in seqs:
        node, path = -1, []
        for at, token in enumerate(seq):
            child = children.get((node, token))
            if child is None:
                child = children[(node, token)] = len(tokens)
                tokens.append(token)
                parents.append(node)
                depth.append(at)
            node = child
            path.append(node)
        paths.append(path)
    return PrefixTree(tokens, parents, depth, paths)


def export_state(model: Any) -> State:
    """The trainable state as CPU tensors: the "default" LoRA adapter, or every weight."""
    from peft import PeftModel, get_peft_model_state_dict

    if isinstance(model, PeftModel):
        state = get_peft_model_state_dict(model, adapter_name="default")
    else:
        state = model.state_dict()
    return {k: v.detach().to("cpu").clone().contiguous() for k, v in state.items()}


def _common_args(s: StepSettings, out_dir: str) -> dict[str, Any]:
    return {
        "output_dir": out_dir,
        "learning_rate": s.lr,
        "num_train_epochs": s.epochs,
        "per_device_train_batch_size": s.batch_size,
        "gradient_accumulation_steps": s.grad_accum,
        "weight_decay": s.weight_decay,
        "warmup_steps": s.warmup_ratio,  # a float < 1 is a ratio of all steps
        "lr_scheduler_type": "constant_with_warmup" if s.warmup_ratio else "constant",
        "max_length": s.max_length,
        "seed": s.seed,
        "data_seed": s.seed,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": ["tensorboard"] if s.log_dir else [],
        "disable_tqdm": True,
        "use_cpu": not torch.cuda.is_available(),
        "bf16": False,
        "dataloader_num_workers": 0,
        # under Ray Train the model is DDP-wrapped; every trainable (LoRA) parameter gets a
        # gradient, so skip DDP's per-step search for unused ones
        "ddp_find_unused_parameters": False,
        # TRL turns it on by default: it recomputes every forward in the backward to save
        # activation memory that a small model does not need (measured in docs/benchmarks.md)
        "gradient_checkpointing": not s.lean,
    }


def _score_labels_only_on_cpu() -> None:
    """TRL's fused LM head scores only the positions that have a label on Triton devices and
    every position elsewhere (to keep tile shapes fixed for compilers that would recompile).
    On a CPU nothing recompiles, and scoring the prompt and padding positions too costs 40% of a
    step (measured): score the labels only there as well. Same values (tests)."""
    from trl.trainer import utils

    original = utils._use_triton
    if getattr(original, "_coalition", False):
        return

    def use_compact(device: Any) -> bool:
        return (device.type == "cpu" and _LABELS_ONLY[0]) or original(device)

    use_compact._coalition = True  # type: ignore[attr-defined]
    utils._use_triton = use_compact


_LABELS_ONLY = [True]  # off for an update with ``lean=False``


def _summarise(trainer: Any) -> dict[str, float]:
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    out: dict[str, float] = {"steps": float(trainer.state.global_step)}
    if logs:
        out["loss_first"] = float(logs[0]["loss"])
        out["loss_last"] = float(logs[-1]["loss"])
        for key in ("rewards/accuracies", "rewards/margins"):
            if key in logs[-1]:
                out[key.replace("/", "_")] = float(logs[-1][key])
    return out


Prepare = Callable[[Any], Any] | None


def _fit(
    trainer_cls: Any,
    make_args: Callable[[str], Any],
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, str]],
    settings: StepSettings,
    prepare: Prepare,
    **extra: Any,
) -> dict[str, float]:
    """Build a TRL trainer over ``rows``, hook it into Ray when asked, train, summarise."""
    from datasets import Dataset

    if not rows:
        raise ValueError(f"{trainer_cls.__name__} needs at least one row")
    _score_labels_only_on_cpu()
    _LABELS_ONLY[0] = settings.lean
    torch.manual_seed(settings.seed)
    if settings.log_dir:  # read by transformers' TensorBoard callback (tensorboardX suffices)
        os.environ["TENSORBOARD_LOGGING_DIR"] = settings.log_dir
    with tempfile.TemporaryDirectory() as out_dir:
        trainer = trainer_cls(
            model=model,
            args=make_args(out_dir),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            **extra,
        )
        # per-step log dicts go to the run's metrics, not to the terminal
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
        if prepare is not None:
            trainer = prepare(trainer)
        trainer.train()
        return _summarise(trainer)


def sft(
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, str]],
    settings: StepSettings,
    prepare: Prepare = None,
) -> dict[str, float]:
    """Supervised fine-tuning on prompt/completion rows (loss on the completion only)."""
    from trl import SFTConfig, SFTTrainer

    def make_args(out_dir: str) -> Any:
        return SFTConfig(
            **_common_args(settings, out_dir),
            completion_only_loss=True,
            packing=False,
            # batches of rows of similar length (in shuffled order): less padding to compute
            train_sampling_strategy="group_by_length" if settings.lean else "random",
        )

    return _fit(SFTTrainer, make_args, model, tokenizer, rows, settings, prepare)


def dpo_args(settings: StepSettings, out_dir: str) -> Any:
    """TRL's DPOConfig of an update: DPO (+ NLL on the chosen side when ``nll_weight``)."""
    from trl import DPOConfig

    losses, weights = [settings.loss_type], [1.0]
    if settings.nll_weight > 0:
        losses, weights = [*losses, "sft"], [*weights, settings.nll_weight]
    return DPOConfig(
        **_common_args(settings, out_dir),
        beta=settings.beta,
        loss_type=losses,
        loss_weights=weights,
        precompute_ref_log_probs=settings.precompute_ref,
    )


def dpo(
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, str]],
    settings: StepSettings,
    prepare: Prepare = None,
) -> dict[str, float]:
    """DPO on prompt/chosen/rejected rows. The reference is the model as it is now (the variant
    at round start): with LoRA, TRL keeps a frozen "ref" copy of the loaded adapter; with full
    weights, a frozen deep copy. Lean, batches group pairs of alike length."""
    from peft import PeftModel
    from trl import DPOTrainer

    trainer_cls = lean_dpo_trainer(DPOTrainer) if settings.lean else DPOTrainer
    ref_model = None if isinstance(model, PeftModel) else copy.deepcopy(model).eval()
    return _fit(
        trainer_cls,
        functools.partial(dpo_args, settings),
        model,
        tokenizer,
        rows,
        settings,
        prepare,
        ref_model=ref_model,
    )


def lean_dpo_trainer(trainer_cls: type) -> type:
    """TRL's DPO trainer with batches of pairs of alike length, as the SFT trainer's
    ``group_by_length`` (transformers' length-grouped sampler: sorted within random groups of a
    few batches). TRL pads a batch's chosen and rejected sequences to its longest, and a
    round's rationales differ in length: a third of a random batch's positions were padding.
    TRL's DPO has no ``group_by_length`` of its own (its rows carry no ``input_ids`` to
    measure), so the sampler is set here. (A batch that runs as its prefix tree has no
    padding; grouping still serves the batches too large for one.)"""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    class LeanDPOTrainer(trainer_cls):  # type: ignore[misc, valid-type]
        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            data = self.train_dataset if train_dataset is None else train_dataset
            lengths = [
                len(p) + max(len(c), len(r))
                for p, c, r in zip(
                    data["prompt_ids"], data["chosen_ids"], data["rejected_ids"], strict=True
                )
            ]
            size = self.args.train_batch_size * self.args.gradient_accumulation_steps
            return LengthGroupedSampler(size, lengths=lengths)

    return LeanDPOTrainer


def run_update(
    kind: str,
    base_path: str,
    mode: str,
    spec: LoraSpec,
    state: State | None,
    rows: list[dict[str, str]],
    settings: StepSettings,
    dtype: str = "float32",
    prepare: Prepare = None,
) -> tuple[State, dict[str, float]]:
    """Load a variant, run one SFT or DPO update on ``rows``, return its new state and metrics."""
    torch.manual_seed(settings.seed)  # a fresh LoRA's init is random too: same seed, same run
    model, tokenizer = load_trainable(base_path, mode, spec, state, dtype, settings.lean)
    step = {"sft": sft, "dpo": dpo}[kind]
    metrics = step(model, tokenizer, rows, settings, prepare)
    return export_state(model), metrics


def release_memory() -> None:
    """Give the memory an update freed back to the system. A long-lived trainer process runs
    update after update; without this, glibc keeps the freed arenas and the process grows by
    gigabytes over a run (on a 24 GB machine the OOM killer then stopped the run)."""
    import contextlib
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def threads_for(cpus: float) -> int:
    """Torch intra-op threads for a worker granted ``cpus`` CPUs (at least one)."""
    return max(1, min(int(round(cpus)), os.cpu_count() or 1))
