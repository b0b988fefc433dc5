"""The core stays pure (scanned imports and calls) and the public API is complete."""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "liqcore"
CORE_FILES = sorted(CORE.rglob("*.py"))

BANNED_MODULES = {
    "liqshell": "liqcore must not import the shell",
    "time": "time is an argument (now)",
    "random": "no randomness in the core",
    "secrets": "no randomness in the core",
    "logging": "return an Alert instead of logging",
    "asyncio": "no I/O in the core",
    "socket": "no I/O in the core",
    "threading": "no concurrency in the core",
    "subprocess": "no I/O in the core",
    "importlib": "no dynamic imports in the core",
}
BANNED_ATTRIBUTES = {
    ("uuid", "uuid1"): "ids are deterministic uuid5",
    ("uuid", "uuid4"): "ids are deterministic uuid5",
    ("datetime", "now"): "time is an argument (now)",
    ("datetime", "utcnow"): "time is an argument (now)",
    ("datetime", "today"): "time is an argument (now)",
    ("date", "today"): "time is an argument (now)",
}
THIRD_PARTY_ALLOWED = {"attrs", "attr", "cattrs"}
CATTRS_ONLY_IN = {CORE / "codec.py"}
HYPOTHESIS_ONLY_IN = {CORE / "strategies.py", CORE / "_hypothesis_plugin.py"}


def _relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _imports(tree: ast.AST) -> Iterator[tuple[int, str, list[str]]]:
    """(line, imported module, names taken from it) for every import, however nested."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            module = "liqcore" if node.level else (node.module or "")
            yield node.lineno, module, [alias.name for alias in node.names]


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def _violations(path: Path, source: str | None = None) -> list[str]:
    """Every rule broken by the module at ``path`` (or by ``source`` as if it were there)."""
    text = path.read_text(encoding="utf-8") if source is None else source
    tree = ast.parse(text, filename=str(path))
    found: list[str] = []
    for line, module, names in _imports(tree):
        top = module.split(".")[0]
        where = f"{_relative(path)}:{line}"
        if top in BANNED_MODULES:
            found.append(f"{where} imports {module}: {BANNED_MODULES[top]}")
        for name in names:
            reason = BANNED_ATTRIBUTES.get((module.split(".")[-1], name))
            if reason is not None:
                found.append(f"{where} imports {module}.{name}: {reason}")
        if top == "cattrs" and path not in CATTRS_ONLY_IN:
            found.append(f"{where} imports cattrs: only liqcore/codec.py may")
        if top == "hypothesis" and path not in HYPOTHESIS_ONLY_IN:
            found.append(
                f"{where} imports hypothesis: only liqcore/strategies.py may (and its hook)"
            )
        is_stdlib = top in sys.stdlib_module_names or top == "__future__"
        allowed = THIRD_PARTY_ALLOWED | ({"hypothesis"} if path in HYPOTHESIS_ONLY_IN else set())
        if not is_stdlib and top != "liqcore" and top not in allowed:
            found.append(f"{where} imports third-party {module}: liqcore depends on attrs/cattrs")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            owner = _dotted(node.value)
            if owner is None:
                continue
            reason = BANNED_ATTRIBUTES.get((owner.split(".")[-1], node.attr))
            if reason is not None:
                found.append(f"{_relative(path)}:{node.lineno} uses {owner}.{node.attr}: {reason}")
    return found


def test_core_has_modules_to_scan() -> None:
    """The scan sees the core's modules (a wrong root would make every check vacuous)."""
    names = {path.name for path in CORE_FILES}
    assert {"__init__.py", "codec.py", "state.py", "numbers.py"} <= names


@pytest.mark.parametrize("path", CORE_FILES, ids=_relative)
def test_core_module_imports_nothing_impure(path: Path) -> None:
    """No clock, randomness, logging, I/O, threads, shell or stray third-party imports; cattrs
    only in codec.py, hypothesis only in strategies.py; no uuid1/uuid4/now()/today()."""
    assert _violations(path) == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import time", "imports time"),
        ("from liqshell import Watcher", "imports liqshell"),
        ("import logging.handlers", "imports logging.handlers"),
        ("from uuid import uuid4", "uuid.uuid4"),
        ("import uuid\nuuid.uuid1()", "uuid.uuid1"),
        ("import datetime\ndatetime.datetime.now()", "datetime.datetime.now"),
        ("from datetime import date\ndate.today()", "date.today"),
        ("import cattrs", "only liqcore/codec.py"),
        ("from hypothesis import given", "only liqcore/strategies.py"),
        ("import numpy", "third-party numpy"),
        ("def f():\n    import random", "imports random"),
    ],
)
def test_scanner_catches_each_kind_of_violation(source: str, expected: str) -> None:
    """The scan itself works: each banned pattern in a core module is reported."""
    violations = _violations(CORE / "probe.py", source)
    assert any(expected in violation for violation in violations), violations


def test_scanner_allows_what_the_core_may_use() -> None:
    """Deterministic uuid5, decimal, attrs, cattrs in codec.py and hypothesis in strategies.py."""
    source = (
        "import uuid\nimport attrs\nfrom decimal import Decimal\n"
        "uuid.uuid5(uuid.NAMESPACE_URL, 'x')\n"
    )
    assert _violations(CORE / "probe.py", source) == []
    assert _violations(CORE / "codec.py", "import cattrs\n") == []
    assert _violations(CORE / "strategies.py", "from hypothesis import strategies\n") == []


@pytest.mark.parametrize("package", ["liqcore", "liqshell"])
def test_package_all_exists_and_every_name_resolves(package: str) -> None:
    """__all__ is a non-empty list of unique names, each an attribute of the package."""
    module = importlib.import_module(package)
    exported = getattr(module, "__all__", None)
    assert exported, f"{package}.__all__ is missing or empty"
    assert len(set(exported)) == len(exported), f"{package}.__all__ has duplicates"
    missing = [name for name in exported if not hasattr(module, name)]
    assert missing == [], f"{package}.__all__ names that do not resolve: {missing}"
