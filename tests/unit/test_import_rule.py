"""The import rule of DESIGN.md ("Layout"), checked on every module of the tree:

- ``protocol`` imports nothing of ours; ``link`` imports only ``protocol``;
- ``agent``, ``coordinator``, ``cloud.pipelines``, ``cloud.dynaspark`` and ``cloud.roma`` import
  ``protocol`` and ``link`` and never each other;
- ``hyperfleet`` imports any of them and nobody imports it;
- nobody outside a package imports its private ``_modules`` (tests and benchmarks included);
- each package shows a public face: an ``__init__`` with ``__all__``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EDGE = {"protocol", "link"}
RULES: dict[str, set[str]] = {
    "protocol": set(),
    "link": {"protocol"},
    "agent": EDGE,
    "coordinator": EDGE,
    "cloud": set(),
    "cloud.pipelines": EDGE,
    "cloud.dynaspark": EDGE,
    "cloud.roma": EDGE,
    "hyperfleet": {
        "protocol",
        "link",
        "agent",
        "coordinator",
        "cloud.pipelines",
        "cloud.dynaspark",
        "cloud.roma",
        "cloud",
    },
}
"""Part -> the parts it may import (besides itself)."""


def part_of(module: str) -> str | None:
    """The part a dotted module name belongs to: its longest prefix that has a rule."""
    pieces = module.split(".")
    for n in range(len(pieces), 0, -1):
        if ".".join(pieces[:n]) in RULES:
            return ".".join(pieces[:n])
    return None


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """Every module ``source`` (the text of ``module``) imports, as absolute dotted names."""
    found: list[str] = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                prefix = ".".join(base)
                target = f"{prefix}.{node.module}" if node.module else prefix
            else:
                target = node.module or ""
            found.append(target)
            # `from pkg import _private_module` names a module too (not a private function)
            found += [
                f"{target}.{a.name}"
                for a in node.names
                if a.name.startswith("_") and _is_module(f"{target}.{a.name}")
            ]
    return found


def _is_module(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def violations(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """What in ``source`` breaks the rule, as readable lines (empty: nothing)."""
    own = part_of(module)
    out = []
    for target in imports_of(source, module, is_package=is_package):
        theirs = part_of(target)
        if theirs is None:
            continue  # a third-party or standard module
        if own is not None and theirs != own and theirs not in RULES[own]:
            out.append(f"{module} imports {target} ({own} may not import {theirs})")
        if theirs != own:
            rest = target[len(theirs) :].split(".")
            if any(p.startswith("_") for p in rest if p):
                out.append(f"{module} imports {target}, a private module of {theirs}")
    return out


def tree_modules() -> list[tuple[Path, str]]:
    roots = [p for p in {r.split(".")[0] for r in RULES}] + ["tests", "bench"]
    files = sorted(f for r in roots for f in (ROOT / r).rglob("*.py") if ".venv" not in f.parts)
    return [(f, module_name(f)) for f in files]


def test_every_module_keeps_the_rule() -> None:
    found = []
    for path, module in tree_modules():
        found += violations(path.read_text(), module, is_package=path.name == "__init__.py")
    assert found == []


@pytest.mark.parametrize("package", sorted(RULES))
def test_each_package_shows_a_public_face(package: str) -> None:
    init = ROOT / package.replace(".", "/") / "__init__.py"
    if not init.parent.exists():
        pytest.skip(f"{package} is not built yet; its rule is declared above")
    tree = ast.parse(init.read_text())
    names = [
        node
        for node in tree.body
        if isinstance(node, (ast.Assign, ast.AnnAssign))
        and any(
            isinstance(t, ast.Name) and t.id == "__all__"
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
        )
    ]
    assert names, f"{init.relative_to(ROOT)} has no __all__"


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        (
            "agent.daemon",
            "from coordinator.service import Coordinator",
            "may not import coordinator",
        ),
        ("cloud.roma.server", "import cloud.pipelines.sources", "may not import cloud.pipelines"),
        (
            "cloud.pipelines.x",
            "from cloud.dynaspark import runner",
            "may not import cloud.dynaspark",
        ),
        ("link.mqtt", "from agent import Agent", "may not import agent"),
        ("protocol._codec", "from link import Backoff", "may not import link"),
        ("coordinator.job", "from hyperfleet.cli import main", "may not import hyperfleet"),
        ("hyperfleet.cli", "from protocol._codec import ALIGN", "a private module of protocol"),
        ("tests.unit.t", "from link import _gate", "a private module of link"),
        ("bench.protocol", "import protocol._codec", "a private module of protocol"),
        ("cloud.pipelines.federated", "from ..roma import serve", "may not import cloud.roma"),
    ],
)
def test_the_checker_sees_each_kind_of_violation(module: str, source: str, expected: str) -> None:
    found = violations(source, module)
    assert len(found) == 1
    assert expected in found[0]


def test_the_checker_allows_what_the_rule_allows() -> None:
    assert violations("from protocol import Topics\nfrom link import Backoff", "agent.daemon") == []
    assert violations("from . import _files\nfrom ._gate import X", "link.x") == []  # its own
    assert violations("from .errors import DataError", "cloud.pipelines.sources") == []
    assert violations("from coordinator import Coordinator", "hyperfleet.commands") == []
