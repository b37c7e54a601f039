"""The house rules, checked on the source: the core library never imports Ray nor the shells
around it (actors/, jobs/, sweeps/), so recipes run the same in one process or on a cluster."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = sorted((ROOT / "coalition").rglob("*.py"))
SHELLS = {"ray", "actors", "jobs", "sweeps", "benchmarks"}


def imported_roots(path: Path) -> set[str]:
    """Top-level package names a module imports anywhere (also inside functions)."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_the_rule_sees_an_import_inside_a_function(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "import os\n\ndef f():\n    from ray import train\n    import actors.workers\n"
    )
    assert imported_roots(module) == {"os", "ray", "actors"}


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(ROOT)))
def test_core_module_imports_no_ray_and_no_shell(path):
    assert len(CORE) > 30
    bad = imported_roots(path) & SHELLS
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}: the core stays free of them"
