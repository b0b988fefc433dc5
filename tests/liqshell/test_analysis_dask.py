"""liqshell.analysis on Dask: a two-worker LocalCluster gives exactly the local results."""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from liqcore import Config
from liqshell import analysis
from liqshell.analysis.distributed import partitions, raw_partitions
from liqshell.sim import SimParams, simulate

RAMP = Config(partial_bonus_max_bps=600)


@pytest.fixture(scope="module")
def recording() -> analysis.Recording:
    """Seed 5, 10 accounts, 3 minutes, a what-if-able config."""
    return analysis.simulated(
        SimParams(accounts=10, minutes=3, seed=5), config=Config(partial_bonus_max_bps=600)
    )


@pytest.fixture(scope="module")
def client() -> Iterator[object]:
    """A LocalCluster of two worker processes, one thread each."""
    from dask.distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as connected,
    ):
        yield connected


def test_partitions_keep_each_wallet_whole_and_in_order(recording: analysis.Recording) -> None:
    parts = partitions(recording, 3)
    assert len(parts) == 3
    seen: dict[str, int] = {}
    for number, (_, rows) in enumerate(parts):
        indexes = [index for index, _, _ in rows]
        assert indexes == sorted(indexes)
        for _, record, _ in rows:
            assert seen.setdefault(record.wallet, number) == number
    assert sorted(i for _, rows in parts for i, _, _ in rows) == list(range(len(recording)))


def test_a_recording_pickles_for_the_workers(recording: analysis.Recording) -> None:
    import liqshell.analysis.distributed  # noqa: F401  (registers the mappingproxy reducer)

    again = pickle.loads(pickle.dumps(recording))
    assert again.records == recording.records
    assert again.headers == recording.headers


def test_replay_on_two_workers_equals_the_local_replay(
    recording: analysis.Recording, client: object
) -> None:
    local = analysis.replay(recording)
    remote = analysis.replay(recording, client=client)
    assert remote.decisions == local.decisions
    assert remote.mismatches == local.mismatches == ()
    what_if = analysis.replay(recording, Config(), client=client)
    assert what_if.mismatches == analysis.replay(recording, Config()).mismatches != ()
    assert what_if.config_notes == analysis.replay(recording, Config()).config_notes


def test_what_if_and_sweep_on_two_workers_equal_the_local_run(
    recording: analysis.Recording, client: object
) -> None:
    local = analysis.what_if(recording, partial_bonus_max_bps=300)
    remote = analysis.what_if(recording, partial_bonus_max_bps=300, client=client)
    assert remote.what_if == local.what_if
    assert remote.baseline == local.baseline
    assert remote.divergences == local.divergences
    grid = {"partial_bonus_max_bps": [300, 1000]}
    assert analysis.sweep(recording, grid, client=client) == analysis.sweep(
        recording, grid, progress=False
    )


def test_replay_of_a_store_on_two_workers_decodes_there_and_equals_the_local_replay(
    client: object, tmp_path: Path
) -> None:
    """Given the path of a SQLite store, the workers get its rows undecoded (no decoded
    object is sent) and the trace equals the local replay of the loaded recording."""
    store = tmp_path / "run.sqlite"
    asyncio.run(simulate(SimParams(accounts=10, minutes=3, seed=5), config=RAMP, store=store))
    headers, positions, parts = raw_partitions(str(store), 3)
    assert all(isinstance(body, str) for _, _, rows in parts for *_, body in rows)
    loaded = analysis.load(store)
    assert headers == loaded.headers
    assert positions == loaded.header_index
    local = analysis.replay(loaded)
    remote = analysis.replay(store, client=client)
    assert remote.decisions == local.decisions
    assert len(local.decisions) > 50
    assert remote.mismatches == local.mismatches == ()
    assert remote.source == local.source
    other = analysis.replay(store, Config(), client=client)
    assert other.mismatches == analysis.replay(analysis.load(store), Config()).mismatches != ()
    assert other.config_notes == analysis.replay(analysis.load(store), Config()).config_notes


def test_a_bad_row_of_a_store_fails_on_the_worker_naming_the_row(
    client: object, tmp_path: Path
) -> None:
    store = tmp_path / "run.sqlite"
    asyncio.run(simulate(SimParams(accounts=4, minutes=1, seed=5), config=RAMP, store=store))
    with contextlib.closing(sqlite3.connect(store)) as db, db:
        seq = db.execute("SELECT max(seq) FROM records WHERE kind = 'decision'").fetchone()[0]
        db.execute("UPDATE records SET body_json = '{\"kind\": 1}' WHERE seq = ?", (seq,))
    with pytest.raises(analysis.RecordingError, match=rf"row {seq}: not a liqshell recording"):
        analysis.replay(store, client=client)
