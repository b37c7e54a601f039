"""Variant states on disk: safetensors files that carry the model key and version."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from coalition.method.training import State
from coalition.run.config import ConfigError
from coalition.run.rundir import atomic_write


def save_state(path: Path, state: State, key: str, version: int) -> None:
    """Write ``state`` atomically, tagged with its model key and version."""
    from safetensors.torch import save

    data = save(
        state, metadata={"key": key, "version": str(version), "format": "coalition-state-v1"}
    )
    atomic_write(Path(path), data)


def load_state(path: Path) -> tuple[State, str, int]:
    """(state, key, version) from a file written by :func:`save_state`."""
    from safetensors.torch import load_file

    key, version = check_state(path)
    try:
        return load_file(str(path)), key, version
    except Exception:  # noqa: BLE001 - safetensors raises its own types for a cut-short file
        raise ConfigError(_damaged(Path(path))) from None


def check_state(path: Path) -> tuple[str, int]:
    """(key, version) of a state file, read from its header; a missing, truncated or foreign
    file is a :class:`ConfigError` naming it and what to do."""
    meta = check_safetensors(path)
    if meta.get("format") != "coalition-state-v1" or "key" not in meta:
        raise ConfigError(_damaged(Path(path)))
    return meta["key"], int(meta["version"])


def check_safetensors(path: Path) -> dict[str, str]:
    """The metadata of any safetensors file (a state, the controller) whose header reads and
    whose data is all there; else a :class:`ConfigError` naming it and what to do."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} is missing; rerun the job that trains it on this run_dir")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        if path.stat().st_size < _data_end(path):
            raise ValueError
    except Exception:  # noqa: BLE001 - any failure to read the header means the same thing
        raise ConfigError(_damaged(path)) from None
    return meta


def _data_end(path: Path) -> int:
    """Where a safetensors file's tensor data ends, from its header (a cut file is shorter)."""
    with path.open("rb") as fh:
        size = struct.unpack("<Q", fh.read(8))[0]
        header = json.loads(fh.read(size))
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    return 8 + size + max(ends, default=0)


def _damaged(path: Path) -> str:
    return (
        f"{path} is damaged (truncated or not a coalition file); delete it and rerun the job "
        "on this run_dir: the stage that wrote it is redone"
    )
