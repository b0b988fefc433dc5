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
    python -m bench.mutate --module targets --recheck    # only its survivors, after new tests
    python -m bench.mutate --markdown docs/mutation.md   # the page, from the report alone

Each module's entry also records the commit it was measured at (and whether ``liqcore/`` or
``tests/`` differed from it), the mutmut version and the command, so ``--markdown`` can
write ``docs/mutation.md`` from the report without running anything.
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
from importlib import metadata
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
    _write_config(work, source, tests)
    return work


def _write_config(work: Path, source: str, tests: tuple[str, ...]) -> None:
    """The project's pyproject.toml in ``work``, with the module's ``[tool.mutmut]`` table."""
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    if "[tool.mutmut]" in pyproject:
        raise SystemExit("pyproject.toml has a [tool.mutmut] table: bench.mutate writes its own")
    (work / "pyproject.toml").write_text(pyproject + _config(source, tests), encoding="utf-8")


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


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def _provenance(max_children: int, name: str) -> dict[str, object]:
    """The commit measured, whether the package or the tests differed from it, mutmut's
    version and the command that reproduces the entry."""
    return {
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--", "liqcore", "tests")),
        "mutmut": metadata.version("mutmut"),
        "command": f"python -m bench.mutate --max-children {max_children} --module {name}",
    }


def measure(
    name: str, *, base: Path, max_children: int, recheck: dict[str, object] | None = None
) -> dict[str, object]:
    """Mutate one module; its counts, its survivors (with diffs) and how long it took.

    With ``recheck`` (the module's previous entry), only that entry's survivors run again,
    and the mutants an interrupted run left unchecked, in the same scratch copy with the
    tests copied (and selected: a mirroring test file added since counts) afresh: for new
    tests killing them, or to finish a run. The
    module's source must be byte-identical to the copy mutated then (its other verdicts
    stand: a test added can only kill more), else run the module in full.
    """
    source = MODULES[name]
    tests = mirrored_tests(source)
    provenance = _provenance(max_children, name)  # before the copy: what is measured
    # Hypothesis's "mutate" profile (tests/conftest.py) is "ci" without shrinking: the same
    # examples, so the same verdicts, without minutes spent shrinking each killed mutant.
    env = {**os.environ, "CI": "true", "HYPOTHESIS_PROFILE": "mutate", "PYTHONHASHSEED": "0"}
    names: list[str] = []
    before: dict[str, str] = {}
    if recheck is None:
        work = _workdir(base, name, source, tests)
    else:
        work = base / name
        copy = work / source
        if not copy.exists() or copy.read_bytes() != (ROOT / source).read_bytes():
            raise SystemExit(f"{source} changed since its full run: measure it in full")
        before = _results(work, env)
        shutil.rmtree(work / "tests")
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis")
        shutil.copytree(ROOT / "tests", work / "tests", ignore=ignore)
        _write_config(work, source, tests)  # test files added since the full run selected too
        unchecked = [n for n, s in before.items() if s == "not checked"]
        names = sorted(_survivor_names(recheck) + unchecked)
        provenance = {
            **provenance,
            "command": f"{provenance['command']} --recheck",
            "full_run": {k: recheck[k] for k in ("commit", "dirty", "command", "seconds")},
        }
    command = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children)]
    started = time.monotonic()
    run = subprocess.run(
        [*command, *names], cwd=work, env=env, capture_output=True, text=True, check=False
    )
    elapsed = time.monotonic() - started
    (work / "mutmut-run.log").write_text(run.stdout + run.stderr, encoding="utf-8")
    statuses = _results(work, env)
    if recheck is not None:
        # mutmut forgets every verdict when the test selection changes (a test file added):
        # the verdicts not run again stand as they were.
        statuses = {**before, **{n: statuses[n] for n in names}}
    counts = dict.fromkeys(STATUSES, 0)
    for status in statuses.values():
        counts[status] += 1
    survivors = sorted(
        n for n, s in statuses.items() if s in ("survived", "suspicious", "no tests")
    )
    total = sum(counts.values()) - counts["skipped"]
    seconds = round(elapsed)
    if recheck is not None:
        provenance["recheck_seconds"] = seconds
        seconds += _int(recheck["seconds"])
    return {
        **provenance,
        "module": source,
        "tests": list(tests),
        "exit_code": run.returncode,
        "seconds": seconds,
        "mutants": total,
        "counts": counts,
        "score": round(100 * counts["killed"] / total, 1) if total else None,
        "survivors": {n: _diff(work, env, n) for n in survivors},
    }


def _survivor_names(entry: dict[str, object]) -> list[str]:
    survivors = entry["survivors"]
    assert isinstance(survivors, dict)
    return [str(n) for n in survivors]


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


def _int(value: object) -> int:
    return int(str(value))


def _survivors(entry: dict[str, object]) -> dict[str, str]:
    survivors = entry["survivors"]
    assert isinstance(survivors, dict)
    return {str(name): str(diff) for name, diff in survivors.items()}


def _percent(value: object) -> str:
    return "–" if value is None else f"{value} %"


def markdown(report: dict[str, dict[str, object]], known: dict[str, str]) -> str:
    """``docs/mutation.md``: per module killed / survived / equivalent / score, the command,
    mutmut's version, the commit, the equivalent mutants with their reasons and the diff
    of any survivor not explained, and the modules of :data:`MODULES` not measured."""
    measured = [n for n in MODULES if n in report] + sorted(n for n in report if n not in MODULES)
    missing = [n for n in MODULES if n not in report]
    versions = sorted({str(report[n]["mutmut"]) for n in measured if "mutmut" in report[n]})
    lines = [
        "# Mutation report",
        "",
        "Produced by `nox -s mutate` (`python -m bench.mutate`), written from its JSON report by "
        "`python -m bench.mutate --markdown docs/mutation.md`. Each module of liqcore is "
        f"mutated by mutmut {', '.join(versions)} in a scratch copy of the project, and only "
        "the tests that mirror it are run (`liqcore/x.py` → `tests/liqcore/test_x.py` and "
        "`test_x_*.py`): a mutant counts as killed only when the module's own tests fail on "
        "it. A survivor is either killed by a new boundary test or judged *equivalent* (no "
        "input tells it from the code) with a one-line reason in "
        "`bench/mutation_equivalents.txt`, listed below. One kind is equivalent in every "
        "result but not in the work done: a dozen survivors of the planner's searches "
        "(`planning/greedy.py`'s `_peak_unit` and `_searched_size`) move a probe or reorder "
        "the false-position and halving steps; the size or peak found is the same for every "
        "concave gain tried (every bracket up to 200 units, every peak and plateau, the "
        "huge and curved gains of `test_greedy_search.py`), and only "
        "`PartialPlan.evaluations`, a count of margin evaluations, can differ. They are "
        "listed as equivalent with that reason rather than killed by tests pinning exact "
        "evaluation counts, which would freeze the search's internals.",
        "",
        "**Score** = killed / checked mutants (a run stopped early leaves some *not "
        "checked*); **without equivalent** = killed / (checked − equivalent). A timeout is "
        "not counted as killed. An entry without a commit was measured before the report "
        "recorded one. **Commit** is the one measured "
        "(a module whose survivors were run again after new tests, with its source "
        "unchanged, names both runs); **seconds** is mutmut's wall time, on a machine "
        "shared with other work.",
        "",
        "| module | mutants | not checked | killed | survived | equivalent | unexplained "
        "| timeout | score | without equivalent | seconds | commit |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    totals = dict.fromkeys(
        ("mutants", "unchecked", "killed", "survived", "equivalent", "timeout"), 0
    )
    for name in measured:
        entry = report[name]
        counts = entry["counts"]
        assert isinstance(counts, dict)
        equivalent = [n for n in _survivors(entry) if n in known]
        unexplained = [n for n in _survivors(entry) if n not in known]
        survived = len(equivalent) + len(unexplained)
        mutants = _int(entry["mutants"])
        unchecked = _int(counts["not checked"])
        row = {
            "mutants": mutants,
            "unchecked": unchecked,
            "killed": _int(counts["killed"]),
            "survived": survived,
            "equivalent": len(equivalent),
            "timeout": _int(counts["timeout"]),
        }
        for key, value in row.items():
            totals[key] += value
        commit = f"`{str(entry.get('commit', 'unknown'))[:10]}`"
        if entry.get("dirty"):
            commit += " (+ uncommitted changes)"
        full = entry.get("full_run")
        if isinstance(full, dict):
            commit += f", full run `{str(full.get('commit'))[:10]}`"
            if full.get("dirty"):
                commit += " (+ uncommitted changes)"
        checked = mutants - unchecked
        without = checked - len(equivalent)
        lines.append(
            f"| `{entry['module']}` | {mutants} | {unchecked} | {row['killed']} | {survived} "
            f"| {len(equivalent)} | {len(unexplained)} | {row['timeout']} "
            f"| {_percent(round(100 * row['killed'] / checked, 1) if checked else None)} "
            f"| {_percent(round(100 * row['killed'] / without, 1) if without else None)} "
            f"| {entry['seconds']} | {commit} |"
        )
    if measured:
        checked = totals["mutants"] - totals["unchecked"]
        without = checked - totals["equivalent"]
        lines.append(
            f"| **all measured** | {totals['mutants']} | {totals['unchecked']} "
            f"| {totals['killed']} | {totals['survived']} | {totals['equivalent']} "
            f"| {totals['survived'] - totals['equivalent']} | {totals['timeout']} "
            f"| {_percent(round(100 * totals['killed'] / checked, 1) if checked else None)} "
            f"| {_percent(round(100 * totals['killed'] / without, 1) if without else None)} "
            "| | |"
        )
    lines += ["", "## Commands", ""]
    for name in measured:
        entry = report[name]
        full = entry.get("full_run")
        if isinstance(full, dict):
            lines.append(
                f"* `{entry['module']}`: `{full.get('command', '?')}`, then its survivors "
                f"again after new tests: `{entry.get('command', '?')}`"
            )
        else:
            lines.append(f"* `{entry['module']}`: `{entry.get('command', '?')}`")
    if missing:
        lines += [
            "",
            "## Not measured",
            "",
            "These modules of `bench/mutate.py` have no entry in the report this page was "
            "written from: " + ", ".join(f"`{MODULES[n]}`" for n in missing) + ".",
        ]
    lines += ["", "## Equivalent mutants", ""]
    listed = [mutant for name in measured for mutant in _survivors(report[name]) if mutant in known]
    if not listed:
        lines.append("None.")
    for mutant in listed:
        lines.append(f"* `{mutant}` — {known[mutant]}")
    unexplained_all = [
        (name, mutant)
        for name in measured
        for mutant in _survivors(report[name])
        if mutant not in known
    ]
    lines += ["", "## Survivors not explained", ""]
    if not unexplained_all:
        lines.append("None: every survivor above is listed as equivalent.")
    for name, mutant in unexplained_all:
        diff = _survivors(report[name])[mutant]
        lines += [
            f"* `{mutant}`",
            "",
            "  ```diff",
            *[f"  {d}" for d in str(diff).splitlines()],
            "  ```",
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mutate", description=__doc__)
    parser.add_argument("--module", action="append", choices=sorted(MODULES), default=None)
    parser.add_argument("--max-children", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=ROOT / ".mutmut")
    parser.add_argument("--report", type=Path, default=ROOT / "bench" / "mutation-report.json")
    parser.add_argument(
        "--recheck",
        action="store_true",
        help="run only the survivors (and unchecked mutants) of each module's last entry "
        "again, in its scratch copy (after new tests, or to finish an interrupted run)",
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        default=None,
        help="write this page from --report (and the equivalents) and run nothing",
    )
    args = parser.parse_args(argv)
    if args.markdown is not None:
        saved = json.loads(args.report.read_text(encoding="utf-8"))
        args.markdown.write_text(markdown(saved, equivalents()), encoding="utf-8")
        return 0
    names = [n for n in MODULES if args.module is None or n in args.module]
    report: dict[str, dict[str, object]] = {}
    if args.report.exists():
        report = json.loads(args.report.read_text(encoding="utf-8"))
    for name in names:
        tests = ", ".join(mirrored_tests(MODULES[name]))
        print(f"mutating {MODULES[name]} against {tests}", flush=True)
        previous = report.get(name) if args.recheck else None
        if args.recheck and not isinstance(previous, dict):
            raise SystemExit(f"--recheck: {name} has no entry in {args.report}")
        result = judged(
            measure(name, base=args.workdir, max_children=args.max_children, recheck=previous),
            equivalents(),
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
