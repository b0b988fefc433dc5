"""Mutation testing of liqcore, one module at a time (``nox -s mutate``; issue 9).

Each module is mutated by mutmut 3 in a scratch copy of the project
(``.mutmut/<module>/``), with only the tests that mirror it selected (``liqcore/x.py`` →
``tests/liqcore/test_x.py``): a mutant counts as killed only if the module's own tests
catch it. Modules run one after another, smallest first, each with ``--max-children``
workers (default 1: the machine is shared). The report (JSON) says per module how many
mutants were killed, survived, timed out or were not checked, the command, and the name
and diff of every survivor, for ``docs/mutation.md``.

    python -m bench.mutate                          # every module, in order
    python -m bench.mutate --module targets --module state
    python -m bench.mutate --report bench/mutation-report.json --max-children 2
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MODULES: dict[str, str] = {
    # name: source file — smallest first, the planning package last (its modules smallest
    # first too; each selects tests/liqcore/planning/test_<module>*.py).
    "changes": "liqcore/changes.py",
    "targets": "liqcore/targets.py",
    "margin.standard": "liqcore/margin/standard.py",
    "reduce_only": "liqcore/reduce_only.py",
    "state": "liqcore/state.py",
    "margin.portfolio": "liqcore/margin/portfolio.py",
    "machine": "liqcore/machine.py",
    "planning.orders": "liqcore/planning/orders.py",
    "planning.prices": "liqcore/planning/prices.py",
    "planning.plan": "liqcore/planning/plan.py",
    "planning.lots": "liqcore/planning/lots.py",
    "planning.simulation": "liqcore/planning/simulation.py",
    "planning.portfolio": "liqcore/planning/portfolio.py",
    "planning.greedy": "liqcore/planning/greedy.py",
}
"""The modules measured, in the order they run."""

EQUIVALENTS = ROOT / "bench" / "mutation_equivalents.txt"
"""Surviving mutants judged equivalent: ``mutant name | one-line reason`` per line."""

STATUSES = ("killed", "survived", "timeout", "suspicious", "no tests", "skipped", "not checked")


def mirrored_tests(source: str) -> tuple[str, ...]:
    """The test files that mirror ``source``: ``liqcore/margin/x.py`` →
    ``tests/liqcore/margin/test_x.py`` and ``test_x_*.py`` beside it."""
    path = Path(source)
    folder = Path("tests") / path.parent
    found = sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / folder).glob(f"test_{path.stem}*.py")
        if p.stem == f"test_{path.stem}" or p.stem.startswith(f"test_{path.stem}_")
    )
    if not found:
        raise SystemExit(f"no test mirrors {source}")
    return tuple(found)


def _config(source: str, tests: tuple[str, ...]) -> str:
    """The ``[tool.mutmut]`` table: mutate ``source`` only, select ``tests`` only."""
    quoted = ", ".join(json.dumps(t) for t in tests)
    return (
        "\n[tool.mutmut]\n"
        'source_paths = ["liqcore"]\n'
        f"only_mutate = [{json.dumps(source)}]\n"
        f"pytest_add_cli_args_test_selection = [{quoted}]\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x"]\n'
    )


def _workdir(base: Path, name: str, source: str, tests: tuple[str, ...]) -> Path:
    """A fresh copy of the package, the tests and pyproject.toml with the module's table."""
    work = base / name
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis")
    shutil.copytree(ROOT / "liqcore", work / "liqcore", ignore=ignore)
    shutil.copytree(ROOT / "tests", work / "tests", ignore=ignore)
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    if "[tool.mutmut]" in pyproject:
        raise SystemExit("pyproject.toml has a [tool.mutmut] table: bench.mutate writes its own")
    (work / "pyproject.toml").write_text(pyproject + _config(source, tests), encoding="utf-8")
    return work


_RESULT = re.compile(r"^\s*(?P<name>\S+): (?P<status>[a-z ]+?)\s*$")


def _results(work: Path, env: dict[str, str]) -> dict[str, str]:
    """mutant name → status, from ``mutmut results --all true``."""
    out = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found: dict[str, str] = {}
    for line in out.splitlines():
        match = _RESULT.match(line)
        if match is not None and match["status"] in STATUSES:
            found[match["name"]] = match["status"]
    return found


def _diff(work: Path, env: dict[str, str], name: str) -> str:
    shown = subprocess.run(
        [sys.executable, "-m", "mutmut", "show", name],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return "\n".join(
        line for line in shown.splitlines() if line.startswith(("+", "-")) and line[1:2] not in "+-"
    )


def measure(name: str, *, base: Path, max_children: int) -> dict[str, object]:
    """Mutate one module; its counts, its survivors (with diffs) and how long it took."""
    source = MODULES[name]
    tests = mirrored_tests(source)
    work = _workdir(base, name, source, tests)
    env = {**os.environ, "CI": "true", "PYTHONHASHSEED": "0"}
    command = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children)]
    started = time.monotonic()
    run = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    (work / "mutmut-run.log").write_text(run.stdout + run.stderr, encoding="utf-8")
    statuses = _results(work, env)
    counts = dict.fromkeys(STATUSES, 0)
    for status in statuses.values():
        counts[status] += 1
    survivors = sorted(
        n for n, s in statuses.items() if s in ("survived", "suspicious", "no tests")
    )
    total = sum(counts.values()) - counts["skipped"]
    return {
        "module": source,
        "tests": list(tests),
        "exit_code": run.returncode,
        "seconds": round(elapsed),
        "mutants": total,
        "counts": counts,
        "score": round(100 * counts["killed"] / total, 1) if total else None,
        "survivors": {n: _diff(work, env, n) for n in survivors},
    }


def equivalents(path: Path = EQUIVALENTS) -> dict[str, str]:
    """mutant name → why it is equivalent, from ``path`` (``#`` starts a comment line)."""
    found: dict[str, str] = {}
    if not path.exists():
        return found
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, reason = line.partition("|")
            found[name.strip()] = reason.strip()
    return found


def judged(result: dict[str, object], known: dict[str, str]) -> dict[str, object]:
    """``result`` with its survivors split into equivalent (listed) and unexplained, and
    the score once the equivalent ones are set aside."""
    survivors = result["survivors"]
    assert isinstance(survivors, dict)
    counts = result["counts"]
    assert isinstance(counts, dict)
    listed = sorted(n for n in survivors if n in known)
    total = int(str(result["mutants"])) - len(listed)
    return {
        **result,
        "equivalent": listed,
        "unexplained": sorted(n for n in survivors if n not in known),
        "score_without_equivalent": round(100 * counts["killed"] / total, 1) if total else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mutate", description=__doc__)
    parser.add_argument("--module", action="append", choices=sorted(MODULES), default=None)
    parser.add_argument("--max-children", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=ROOT / ".mutmut")
    parser.add_argument("--report", type=Path, default=ROOT / "bench" / "mutation-report.json")
    args = parser.parse_args(argv)
    names = [n for n in MODULES if args.module is None or n in args.module]
    report: dict[str, object] = {}
    if args.report.exists():
        report = json.loads(args.report.read_text(encoding="utf-8"))
    for name in names:
        tests = ", ".join(mirrored_tests(MODULES[name]))
        print(f"mutating {MODULES[name]} against {tests}", flush=True)
        result = judged(
            measure(name, base=args.workdir, max_children=args.max_children), equivalents()
        )
        report[name] = result
        args.report.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", "utf-8")
        counts = result["counts"]
        assert isinstance(counts, dict)
        print(
            f"  {result['mutants']} mutants: {counts['killed']} killed, "
            f"{counts['survived']} survived, {counts['timeout']} timed out, "
            f"{counts['not checked']} not checked; score {result['score']} %, "
            f"{result['score_without_equivalent']} % without the "
            f"{len(result['equivalent'])} listed as equivalent "  # type: ignore[arg-type]
            f"({result['seconds']} s); unexplained: {result['unexplained'] or 'none'}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
