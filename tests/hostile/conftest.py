"""Hostile input against the real jobs (subprocesses) and the real server (HTTP): each case
must end in one clear line, exit code 2, no traceback, and nothing written or overwritten."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, SMOKE

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
ENV.pop("RAY_ADDRESS", None)
ENV.pop("COALITION_SERVE_TOKEN", None)


@dataclass
class Done:
    rc: int
    out: str
    err: str


def job(name: str, *args: object, env: dict[str, str] | None = None, smoke: bool = True,
        timeout: float = 300) -> Done:  # fmt: skip
    """``python jobs/<name>.py [--config smoke] args...`` from the repository root."""
    cmd = [sys.executable, str(REPO / "jobs" / f"{name}.py")]
    cmd += ["--config", str(SMOKE)] if smoke else []
    proc = subprocess.run(
        [*cmd, *map(str, args)], cwd=REPO, env=env or ENV, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    return Done(proc.returncode, proc.stdout, proc.stderr)


def refused(done: Done, *says: str) -> str:
    """Exit 2, no traceback, stderr exactly one ``error:`` line that contains ``says``."""
    text = done.out + done.err
    assert "Traceback" not in text, text[-3000:]
    lines = [line for line in done.err.splitlines() if line.strip()]
    assert done.rc == 2, (done.rc, text[-3000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), done.err[-3000:]
    for part in says:
        assert part in lines[0], (part, lines[0])
    return lines[0]


def snapshot(path: Path) -> dict[str, tuple[int, int, int]]:
    """Every file under ``path`` with its size, modification time and mode."""
    return {
        str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_mode)
        for p in sorted(Path(path).rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


@pytest.fixture(scope="session")
def train_run(tiny_path, tmp_path_factory) -> Path:
    """A finished smoke COALITION run (without Ray: states, controller, summary)."""
    from tests.conftest import make_run_dir

    return make_run_dir(tmp_path_factory.mktemp("trained"), tiny_path, summary=True)
