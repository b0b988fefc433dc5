"""What the installed distribution's metadata holds, for tests that rely on it."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def stale_entry_point(group: str, name: str) -> str | None:
    """Why the installed metadata lacks the entry point ``name`` of ``group`` that
    pyproject.toml declares (an editable install made before it was added: ``pip install
    -e .`` again), or ``None`` when it is installed — or not declared, which the tests that
    look for it then report as a failure."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    if name not in declared["project"].get("entry-points", {}).get(group, {}):
        return None
    installed = importlib.metadata.entry_points(group=group)
    if any(entry.name == name for entry in installed):
        return None
    return (
        f"the installed liqcore metadata predates the {group} entry point {name!r} that "
        "pyproject.toml declares: reinstall (pip install -e .)"
    )
