"""The walls of docs/DESIGN.md, read from the source: which room may import which."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"gimp_draggan": ROOT / "daemon", "gimp_draggan_tools": ROOT / "tools"}


def _imports(package: str) -> dict[str, set[str]]:
    """Module file (relative to the repo) -> every absolute module name it imports."""
    found: dict[str, set[str]] = {}
    for path in FOLDERS[package].rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path}: relative import (the project imports absolutely)"
                names.add(node.module or "")
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
        found[str(path.relative_to(ROOT))] = names
    return found


def _offenders(package: str, under: str, forbidden: str) -> list[str]:
    return [
        f"{file} imports {name}"
        for file, names in _imports(package).items()
        if file.startswith(under)
        for name in sorted(names)
        if name == forbidden or name.startswith(forbidden + ".")
    ]


def test_the_daemon_never_imports_the_developer_tools():
    assert _offenders("gimp_draggan", "daemon/", "gimp_draggan_tools") == []


def test_the_algorithms_never_import_the_service_or_the_cli():
    for room in ("gimp_draggan.service", "gimp_draggan.commands", "gimp_draggan.headless", "zmq"):
        assert _offenders("gimp_draggan", "daemon/draggan/", room) == []


def test_the_edit_never_imports_the_service():
    assert _offenders("gimp_draggan", "daemon/edit/", "gimp_draggan.service") == []


def test_only_the_cluster_module_imports_ray():
    files = [o.split(" imports ")[0] for o in _offenders("gimp_draggan", "daemon/", "ray")]
    assert set(files) == {"daemon/service/cluster.py"}
