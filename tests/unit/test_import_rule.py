"""The import rule of DESIGN.md: agent, coordinator and cloud never import each other; protocol
imports nothing of ours; link imports only protocol; nobody imports hyperfleet (the CLI)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = {"protocol", "link", "agent", "coordinator", "cloud", "hyperfleet"}
ALLOWED = {
    "protocol": set(),
    "link": {"protocol"},
    "agent": {"protocol", "link"},
    "coordinator": {"protocol", "link"},
    "cloud": {"protocol", "link"},
    "hyperfleet": OURS,
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & OURS


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_the_design_allows(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"package {package} has no modules"
    violations = {
        str(f.relative_to(ROOT)): sorted(imported_packages(f) - ALLOWED[package] - {package})
        for f in files
    }
    assert {k: v for k, v in violations.items() if v} == {}


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import coordinator.service\nfrom agent.daemon import Agent\n")
    assert imported_packages(bad) == {"coordinator", "agent"}
