"""Deterministic simulation testing (DST) of the whole watcher.

One seed decides the market path, the accounts, the store and a schedule of faults; the
real :class:`~liqshell.watcher.Watcher` runs against the simulated exchange on the virtual
clock, and the invariants of :mod:`liqshell.sim.dst.invariants` are checked as it goes.
``python -m liqshell.sim.dst --seeds N`` runs many seeds; ``--seed N`` reproduces one and
prints the minimal trace of the failing wallet.

* :mod:`~liqshell.sim.dst.faults` — the fault plan and the fakes that inject it;
* :mod:`~liqshell.sim.dst.invariants` — the checks;
* :mod:`~liqshell.sim.dst.runner` — one seed, its twin without crashes, its trace.
"""

from __future__ import annotations

from liqshell.sim.dst.faults import Crash, FaultKind, FaultPlan
from liqshell.sim.dst.invariants import INVARIANTS, Checker, Violation
from liqshell.sim.dst.runner import BUGS, SeedResult, Trace, run_seed, seed_setup, trace

__all__ = [
    "BUGS",
    "INVARIANTS",
    "Checker",
    "Crash",
    "FaultKind",
    "FaultPlan",
    "SeedResult",
    "Trace",
    "Violation",
    "run_seed",
    "seed_setup",
    "trace",
]
