"""liqshell.sim.runner: the real watcher on a virtual clock — deterministic, every phase, resumable.

Stores go to memory-backed tmpfs when the machine has one: SQLite's fsync per commit is
most of a run's time on disk, and these tests are about behaviour, not durability.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from liqcore import codec
from liqcore.state import phase_tag
from liqshell.adapters import read_records
from liqshell.ports import Record, RecordKind
from liqshell.sim import SimParams, SimStateError, SimSummary, render_summary, simulate
from liqshell.sim.world import World

SMALL = SimParams(accounts=8, minutes=2, seed=5)


@pytest.fixture(scope="module")
def fast_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A scratch folder on tmpfs when available, else under pytest's tmp."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        with tempfile.TemporaryDirectory(prefix="liqshell-test-", dir=shm) as folder:
            yield Path(folder)
    else:
        yield tmp_path_factory.mktemp("sim")


@pytest.fixture(scope="module")
def default_run(fast_dir: Path) -> tuple[SimSummary, list[Record]]:
    """The default simulation (``liqshell simulate`` without options), recorded."""
    record = fast_dir / "default.jsonl"
    summary = asyncio.run(simulate(SimParams(), store=fast_dir / "default.sqlite", record=record))
    return summary, list(read_records(record))


def decisions(path: Path) -> list[str]:
    """The DECISION records of a recording, as JSON, in a canonical order."""
    chosen = [r for r in read_records(path) if r.kind is RecordKind.DECISION]
    chosen.sort(key=lambda r: (r.wallet, r.now, r.version))
    return [codec.to_json(r) for r in chosen]


def test_simulate_same_seed_identical_summary_and_decisions(fast_dir: Path) -> None:
    """Same parameters and seed: the same summary and the same recorded decisions."""
    runs = []
    for name in ("a", "b"):
        record = fast_dir / f"same-{name}.jsonl"
        summary = asyncio.run(
            simulate(SMALL, store=fast_dir / f"same-{name}.sqlite", record=record)
        )
        runs.append((summary, decisions(record)))
    assert runs[0][0] == runs[1][0]
    assert runs[0][1] == runs[1][1]
    assert runs[0][1]
    # Compact recording: one POLL summary per poll stands for the healthy no-ops.
    polls = [r for r in read_records(fast_dir / "same-a.jsonl") if r.kind is RecordKind.POLL]
    assert len(polls) >= SMALL.ticks + 1


def test_simulate_other_seed_other_run(fast_dir: Path) -> None:
    """The seed matters: another seed is another market."""
    one = asyncio.run(simulate(SimParams(accounts=2, minutes=1, seed=5), store=None))
    other = asyncio.run(simulate(SimParams(accounts=2, minutes=1, seed=6), store=None))
    assert one.spot != other.spot


def test_simulate_default_run_shows_every_phase(
    default_run: tuple[SimSummary, list[Record]],
) -> None:
    """Defaults: accounts enter and recover, are auctioned and settled, or stay healthy."""
    summary, records = default_run
    assert summary.entered >= 1
    assert summary.recovered >= 1
    assert summary.auctions_settled >= 1
    assert summary.final_phases["liquidated"] >= 1
    assert summary.never_liquidating >= 1
    assert summary.submitted >= 1
    assert summary.filled_orders >= 1
    assert summary.bonus_paid > 0
    assert sum(summary.final_phases.values()) == summary.accounts
    seen = {phase_tag(r.state.phase) for r in records if r.state is not None}
    assert seen == {"healthy", "pre_liquidation", "in_liquidation", "liquidated"}


def test_render_summary_default_run_lists_every_row(
    default_run: tuple[SimSummary, list[Record]],
) -> None:
    """The summary table names accounts, orders, bonus and every final phase."""
    text = render_summary(default_run[0], elapsed_s=1.5)
    for label in (
        "entered pre-liquidation",
        "recovered",
        "auctioned",
        "submitted",
        "cancelled",
        "filled",
        "bonus paid",
        "final phases",
        "liquidated",
        "in 1.5 s",
    ):
        assert label in text


def test_simulate_interrupted_then_rerun_resumes_to_the_end(fast_dir: Path) -> None:
    """A run that dies mid-way resumes from its store and finishes; a finished store just
    reports its summary again."""
    store = fast_dir / "resume.sqlite"

    def die(world: World) -> None:
        if world.tick == 9:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        asyncio.run(simulate(SMALL, store=store, on_tick=die))
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT tick FROM sim_world").fetchone() == (9,)
    seen: list[int] = []
    resumed = asyncio.run(simulate(SMALL, store=store, on_tick=lambda w: seen.append(w.tick)))
    assert seen[0] == 9
    assert seen[-1] == SMALL.ticks
    assert resumed.polls == SMALL.ticks + 1
    assert sum(resumed.final_phases.values()) == SMALL.accounts
    again = asyncio.run(simulate(SMALL, store=store))
    assert again == resumed


def test_simulate_store_of_other_parameters_refused(fast_dir: Path) -> None:
    """A store holding another simulation is not silently continued with other parameters."""
    store = fast_dir / "other.sqlite"
    asyncio.run(simulate(SimParams(accounts=2, minutes=1, seed=1), store=store))
    with pytest.raises(SimStateError, match="accounts=2"):
        asyncio.run(simulate(SimParams(accounts=3, minutes=1, seed=1), store=store))


def test_simulate_sigkilled_process_resumes_with_the_same_store(fast_dir: Path) -> None:
    """``liqshell simulate`` killed with SIGKILL and started again on its store completes."""
    store = fast_dir / "killed.sqlite"
    argv = [sys.executable, "-m", "liqshell", "simulate", "--accounts", "8", "--minutes", "2",
            "--seed", "5", "--store", str(store), "--quiet"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    tick = 0
    while time.monotonic() < deadline and process.poll() is None and tick < 6:
        time.sleep(0.05)
        try:
            with sqlite3.connect(store, timeout=5) as db:
                row = db.execute("SELECT tick FROM sim_world").fetchone()
            tick = row[0] if row else 0
        except sqlite3.Error:
            tick = 0
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert process.stderr is not None
    process.stderr.close()
    finished = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert finished.returncode == 0, finished.stderr
    assert "final phases" in finished.stdout
    assert "Traceback" not in finished.stderr
