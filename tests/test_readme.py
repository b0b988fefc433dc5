"""The README's promises: its test command is the one CI runs, its examples run as written."""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TEST_COMMAND = "python3 -m pip install --quiet nox && python3 -m nox -s tests"
SKIP = "<!-- readme-test: skip"
_BLOCK = re.compile(r"(?P<before>[^\n]*)\n```python\n(?P<code>.*?)\n```", re.S)


def _python_blocks() -> list[tuple[bool, str]]:
    """``(skipped, code)`` of every ```python block; skipped when the line before it is the
    skip marker. The code is padded with blank lines so that line numbers in a traceback
    are the README's."""
    text = README.read_text(encoding="utf-8")
    return [
        (
            match.group("before").startswith(SKIP),
            "\n" * text.count("\n", 0, match.start("code")) + match.group("code"),
        )
        for match in _BLOCK.finditer(text)
    ]


def _run(code: str) -> str:
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile(code, str(README), "exec"), {"__name__": "__readme__"})
    return output.getvalue()


def test_readme_quick_start_has_the_exact_ci_test_command() -> None:
    """The Quick start's test line is, character for character, the one .ci/run calls."""
    text = README.read_text(encoding="utf-8")
    quick_start = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", quick_start, flags=re.S)[0].splitlines()
    assert commands == ["pip install '.[all]' && liqshell simulate", TEST_COMMAND]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert TEST_COMMAND in ci.splitlines()


def test_readme_library_example_runs_and_submits_at_120_6() -> None:
    """The first python example runs exactly as written and prints a SubmitOrder at 120.6."""
    executed = [code for skipped, code in _python_blocks() if not skipped]
    assert executed
    printed = _run(executed[0])
    assert "SubmitOrder" in printed
    assert "120.6" in printed
    submits = [line for line in printed.splitlines() if line.startswith("SubmitOrder")]
    assert len(submits) == 1
    assert submits[0].endswith("@ 120.6")


def test_readme_every_unskipped_example_runs() -> None:
    """Every python block not marked as skipped runs without error."""
    for skipped, code in _python_blocks():
        if not skipped:
            _run(code)


def test_readme_skipped_examples_are_valid_python() -> None:
    """A block not executed yet (the watcher example) still parses."""
    skipped = [code for is_skipped, code in _python_blocks() if is_skipped]
    assert skipped
    for code in skipped:
        compile(code, str(README), "exec")


def _exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its package does not exist either
        return False


def test_readme_watcher_example_imports_exist_once_the_shell_lands() -> None:
    """Once the shell has landed, every name the watcher example imports exists."""
    if not (_exists("liqshell.watcher") and _exists("liqshell.adapters.sqlite")):
        pytest.skip("liqshell.watcher or liqshell.adapters.sqlite has not landed yet")
    for is_skipped, code in _python_blocks():
        if not is_skipped:
            continue
        imports: list[ast.stmt] = [
            node for node in ast.parse(code).body if isinstance(node, ast.Import | ast.ImportFrom)
        ]
        exec(compile(ast.Module(body=imports, type_ignores=[]), str(README), "exec"), {})


EMBEDDING = ROOT / "examples" / "embedding.py"


def _embedding_block() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Embedding the watcher in a backend", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return str(code)


def test_readme_embedding_block_is_examples_embedding_py_verbatim() -> None:
    """The README shows examples/embedding.py, the file mypy --strict checks, unchanged."""
    assert _embedding_block() == EMBEDDING.read_text(encoding="utf-8")


def test_embedding_example_uses_our_config_names_not_the_seeds_runtime_keys() -> None:
    """``Config(poll_interval_ms=…)``, not ``Config.from_runtime({"health_poll_…": …})``."""
    code = EMBEDDING.read_text(encoding="utf-8")
    assert "from_runtime" not in code
    assert "health_poll_interval_ms" not in code
    assert "poll_interval_ms=5_000" in code
    assert "from_runtime" not in README.read_text(encoding="utf-8")


def test_embedding_example_builds_a_watcher_whose_ports_all_check(tmp_path: Path) -> None:
    """Its ``Exchange`` has every method of every port (the watcher checks them when it is
    built) and ``CONFIG`` is a valid Config."""
    from prometheus_client import CollectorRegistry

    from liqshell.adapters.sqlite import SqliteStore
    from liqshell.ports import PORT_METHODS, check_port

    spec = importlib.util.spec_from_file_location("embedding_example", EMBEDDING)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    exchange = module.Exchange()
    for keyword in ("portfolios", "margin", "quotes", "orders", "gateway", "auctions", "feed"):
        assert keyword in PORT_METHODS
        check_port(keyword, exchange)
    watcher = module.build_watcher(
        exchange, SqliteStore(tmp_path / "store.sqlite"), CollectorRegistry()
    )
    assert watcher.config is module.CONFIG
    assert watcher.config.poll_interval_ms == 5_000


def test_typecheck_session_checks_the_embedding_example_strictly() -> None:
    """CI's ``nox -s typecheck`` runs mypy (strict, from pyproject.toml) on the example."""
    noxfile = (ROOT / "noxfile.py").read_text(encoding="utf-8")
    session = noxfile.split("def typecheck(", 1)[1].split("\n@nox.session", 1)[0]
    assert "EXAMPLES" in session or "examples/embedding.py" in session
    assert '"examples/embedding.py"' in noxfile
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert "strict = true" in pyproject
