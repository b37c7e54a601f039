"""cluster/bundle.py: what the offline bundle asks pip for (the download itself needs PyPI and
several GB, so it is run by hand; docs/benchmarks.md records a run)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "cluster"))
import bundle  # noqa: E402


def test_requirements_are_the_gpu_stack():
    reqs = bundle.requirements("vllm")
    assert "torch==2.13.0" in reqs and "vllm==0.31.0" in reqs
    assert any(r.startswith("ray[train,tune,serve]") for r in reqs)
    with pytest.raises(SystemExit, match="allowed: .*vllm-cpu"):
        bundle.requirements("cuda")


def test_platform_tags_cover_the_nodes_glibc():
    tags = bundle.platforms("2.35")
    assert tags[0] == "manylinux_2_35_x86_64" and "manylinux_2_17_x86_64" in tags
    assert "manylinux_2_36_x86_64" not in tags and tags[-1] == "linux_x86_64"
    with pytest.raises(SystemExit, match="2.17 or newer"):
        bundle.platforms("2.12")


def test_dry_run_ignores_local_indexes(tmp_path):
    out = subprocess.run(
        [sys.executable, str(REPO / "cluster/bundle.py"), "--out", str(tmp_path), "--dry-run"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    downloads = [line for line in out.stdout.splitlines() if " download " in line]
    assert len(downloads) == 2
    assert all("--isolated" in d and "--index-url https://pypi.org/simple" in d for d in downloads)
    assert not any(tmp_path.iterdir())  # a dry run writes nothing
