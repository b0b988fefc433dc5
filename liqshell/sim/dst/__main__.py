"""``python -m liqshell.sim.dst``: run DST seeds and print the figures.

``--seeds N [--start S]`` runs seeds S … S+N−1 (``--jobs`` processes); ``--seed S`` runs one
seed and, if it breaks an invariant, prints the minimal trace of the failing wallet.
Prints seeds, polls, decisions, faults injected by kind, crashes, invariant checks and
``violations: K``; exits 1 on any violation, naming the failing seeds.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor

from liqshell.sim.dst.runner import BUGS, SeedResult, run_seed, trace


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m liqshell.sim.dst",
        description="Deterministic simulation testing of the whole watcher.",
    )
    parser.add_argument("--seeds", type=int, default=100, help="how many seeds (default 100)")
    parser.add_argument("--start", type=int, default=0, help="the first seed (default 0)")
    parser.add_argument("--seed", type=int, default=None, help="run this one seed, with trace")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--progress", action="store_true", help="a line every 1 %% of seeds")
    parser.add_argument("--report", default=None, help="also write the figures as JSON here")
    parser.add_argument(
        "--bug",
        default=None,
        choices=BUGS,
        help="plant a bug (to see the invariant that guards against it fail)",
    )
    return parser


def _results(seeds: Sequence[int], jobs: int, bug: str | None) -> Iterator[SeedResult]:
    run = functools.partial(run_seed, bug=bug)
    if jobs <= 1:
        for seed in seeds:
            yield run(seed)
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        yield from pool.map(run, seeds, chunksize=4)


def main(argv: Sequence[str] | None = None) -> int:
    """The command; returns its exit status."""
    args = _parser().parse_args(argv)
    if args.seeds < 1 or args.start < 0 or args.jobs < 1:
        print("--seeds and --jobs must be ≥ 1, --start ≥ 0", file=sys.stderr)
        return 2
    seeds = (
        [args.seed] if args.seed is not None else list(range(args.start, args.start + args.seeds))
    )
    started = time.perf_counter()
    totals: Counter[str] = Counter()
    faults: Counter[str] = Counter()
    checks: Counter[str] = Counter()
    stores: Counter[str] = Counter()
    failing: list[SeedResult] = []
    step = max(1, len(seeds) // 100)
    for done, result in enumerate(_results(seeds, args.jobs, args.bug), start=1):
        totals["seeds"] += 1
        totals["polls"] += result.polls
        totals["decisions"] += result.decisions
        totals["lives"] += result.lives
        totals["compared"] += result.compared
        totals["violations"] += len(result.violations)
        faults.update(result.faults)
        checks.update(result.checks)
        stores[result.store] += 1
        if result.violations:
            failing.append(result)
            for violation in result.violations[:5]:
                print(f"seed {result.seed}: {violation}", flush=True)
        if args.progress and (done % step == 0 or done == len(seeds)):
            elapsed = time.perf_counter() - started
            print(
                f"{done}/{len(seeds)} seeds, {totals['violations']} violations, {elapsed:.0f} s",
                file=sys.stderr,
                flush=True,
            )
            _report(
                args.report, _figures(totals, faults, checks, stores, failing, seeds, started, argv)
            )
    _report(args.report, _figures(totals, faults, checks, stores, failing, seeds, started, argv))
    return _finish(args, totals, failing, started, seeds, faults, checks, stores, argv)


def _figures(  # noqa: PLR0917
    totals: Counter[str],
    faults: Counter[str],
    checks: Counter[str],
    stores: Counter[str],
    failing: list[SeedResult],
    seeds: Sequence[int],
    started: float,
    argv: Sequence[str] | None,
) -> dict[str, object]:
    elapsed = time.perf_counter() - started
    return {
        "seeds": totals["seeds"],
        "first_seed": seeds[0],
        "stores": dict(sorted(stores.items())),
        "polls": totals["polls"],
        "decisions": totals["decisions"],
        "crashes": faults.get("crash", 0),
        "lives": totals["lives"],
        "faults": dict(sorted(faults.items())),
        "checks": dict(sorted(checks.items())),
        "checks_total": sum(checks.values()),
        "wallets_compared_with_twin": totals["compared"],
        "violations": totals["violations"],
        "failing_seeds": [r.seed for r in failing],
        "wall_s": round(elapsed, 1),
        "command": "python -m liqshell.sim.dst " + " ".join(sys.argv[1:] if argv is None else argv),
    }


def _report(path: str | None, figures: dict[str, object]) -> None:
    if path:
        with open(path, "w", encoding="utf-8") as out:
            json.dump(figures, out, indent=2, sort_keys=True)
            out.write("\n")


def _finish(  # noqa: PLR0917
    args: argparse.Namespace,
    totals: Counter[str],
    failing: list[SeedResult],
    started: float,
    seeds: Sequence[int],
    faults: Counter[str],
    checks: Counter[str],
    stores: Counter[str],
    argv: Sequence[str] | None,
) -> int:
    figures = _figures(totals, faults, checks, stores, failing, seeds, started, argv)
    elapsed = time.perf_counter() - started
    print(f"seeds: {figures['seeds']} (from {seeds[0]}; stores {figures['stores']})")
    print(f"polls: {figures['polls']}")
    print(f"decisions: {figures['decisions']}")
    print(f"crashes: {figures['crashes']} ({figures['lives']} watcher lives)")
    print("faults injected:")
    for kind, count in figures["faults"].items():  # type: ignore[attr-defined]
        print(f"  {kind}: {count}")
    print(f"invariant checks: {figures['checks_total']}")
    for name, count in figures["checks"].items():  # type: ignore[attr-defined]
        print(f"  {name}: {count}")
    print(f"wallets compared with the run without crashes: {totals['compared']}")
    print(f"wall time: {elapsed:.1f} s")
    print(f"violations: {totals['violations']}")
    if failing:
        print("failing seeds: " + " ".join(str(r.seed) for r in failing))
        if args.seed is not None:
            wallet = failing[0].violations[0].wallet
            print(f"minimal trace of {wallet} (seed {args.seed}):")
            for line in trace(args.seed, wallet, bug=args.bug):
                print(f"  tick {line.tick:3d}  {line.what}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
