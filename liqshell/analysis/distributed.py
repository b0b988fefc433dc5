"""Replay, what-if and sweeps on a Dask cluster (the ``dask`` extra).

Pass ``client=`` a ``dask.distributed.Client`` to :func:`~liqshell.analysis.replay`,
:func:`~liqshell.analysis.what_if` or :func:`~liqshell.analysis.sweep`. The recording is
partitioned by wallet — every record of one wallet goes to one task, in order, so a
wallet's decisions stay in order on one worker — and the results are merged back in the
recording's order: they equal the local run exactly (a test checks it on a two-worker
``LocalCluster``). A sweep runs one task per point of the grid.

::

    from dask.distributed import Client
    client = Client("tcp://scheduler:8786")          # a real cluster
    recording = analysis.load("postgresql://reader@db/liq", schema="liqshell")
    trace = analysis.replay(recording, client=client)

The recording is read where the call is made and its partitions are sent to the workers
(a recording in PostgreSQL is read once, by the client); the workers need liqcore installed
at the same version.

Decoding a recording costs more than replaying it. Given the *path* of a SQLite store
instead of a loaded recording, ``replay(path, client=client)`` reads the store's rows
undecoded, sends them by wallet, and each worker decodes its own partition: decoding is
spread over the workers too, and no decoded object travels. The result equals
``replay(load(path))``.
"""

from __future__ import annotations

import copyreg
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from liqcore import Config
from liqshell.ports import Record, RecordingHeader

__all__ = [
    "partitions",
    "raw_partitions",
    "read_only",
    "replay_on",
    "replay_store_on",
    "sweep_on",
    "what_if_on",
]


def read_only(mapping: dict[Any, Any]) -> MappingProxyType[Any, Any]:
    """A read-only view of ``mapping`` (how an unpickled liqcore mapping is rebuilt)."""
    return MappingProxyType(mapping)


def _reduce_mapping_proxy(
    proxy: MappingProxyType[Any, Any],
) -> tuple[Any, tuple[dict[Any, Any]]]:
    return read_only, (dict(proxy),)


# liqcore's read-only mappings (Config.instruments, Health.quotes, ...) are MappingProxyType,
# which pickle cannot send to a worker by default: send the dict and wrap it again.
copyreg.pickle(MappingProxyType, _reduce_mapping_proxy)


Part = tuple[tuple[RecordingHeader, ...], tuple[tuple[int, Record, int], ...]]
"""A partition: the headers, and ``(index, record, header position)`` of its wallets'
records in order."""


def partitions(recording: Any, count: int) -> list[Part]:
    """The records of ``recording`` in ``count`` partitions (at most one per wallet), a
    wallet's records all in one, in order; wallets are dealt round-robin in sorted order."""
    wallets = recording.wallets
    count = max(1, min(count, len(wallets)))
    slot = {wallet: i % count for i, wallet in enumerate(wallets)}
    slot[""] = 0  # records of no wallet (poll summaries) go with the first partition
    parts: list[list[tuple[int, Record, int]]] = [[] for _ in range(count)]
    for index, record in enumerate(recording.records):
        parts[slot[record.wallet]].append((index, record, recording.header_index[index]))
    return [(recording.headers, tuple(part)) for part in parts]


def _sub_recording(part: Part) -> Any:
    from liqshell.analysis import Recording

    headers, rows = part
    return Recording(
        source="partition",
        headers=headers,
        records=tuple(record for _, record, _ in rows),
        header_index=tuple(position for _, _, position in rows),
    )


def _replay_part(part: Part, config: Config | None, keep: bool) -> tuple[list[Any], list[Any]]:
    import attrs

    from liqshell.analysis import replay

    indexes = [index for index, _, _ in part[1]]
    trace = replay(_sub_recording(part), config, keep=keep)
    decisions = [attrs.evolve(d, index=indexes[d.index]) for d in trace.decisions]
    mismatches = [attrs.evolve(m, index=indexes[m.index]) for m in trace.mismatches]
    return decisions, mismatches


def _workers(client: Any) -> int:
    return max(1, len(client.scheduler_info().get("workers", {})))


def replay_on(client: Any, recording: Any, config: Config | None, *, keep: bool) -> Any:
    """:func:`~liqshell.analysis.replay` on ``client``'s workers."""
    from liqshell.analysis import Trace, _config_notes

    parts = partitions(recording, 4 * _workers(client))
    futures = client.map(_replay_part, parts, config=config, keep=keep, pure=False)
    results = client.gather(futures)
    decisions = sorted((d for part, _ in results for d in part), key=lambda d: d.index)
    mismatches = sorted((m for _, part in results for m in part), key=lambda m: m.index)
    return Trace(
        source=recording.source,
        decisions=tuple(decisions),
        mismatches=tuple(mismatches),
        config_notes=_config_notes(recording, config),
    )


RawPart = tuple[str, tuple[RecordingHeader, ...], tuple[tuple[int, int, int, str, str], ...]]
"""A partition of a store's log as it is stored: the store's name (for errors), the
headers, and ``(index, header position, seq, kind, body JSON)`` of its wallets' records."""


def raw_partitions(
    path: str, count: int
) -> tuple[tuple[RecordingHeader, ...], tuple[int, ...], list[RawPart]]:
    """The log of the SQLite store at ``path`` in at most ``count`` partitions by wallet,
    undecoded (only the headers are decoded): ``(headers, header position of each record,
    partitions)``. A record's index is its position among the records, as in
    :func:`~liqshell.analysis.load`."""
    from liqshell.adapters import HEADER_KIND, header_from_json
    from liqshell.adapters.sqlite import read_rows

    headers: list[RecordingHeader] = []
    positions: list[int] = []
    by_wallet: dict[str, list[tuple[int, int, int, str, str]]] = {}
    for seq, wallet, kind, body in read_rows(path):
        if kind == HEADER_KIND:
            headers.append(header_from_json(body))
            continue
        row = (len(positions), len(headers) - 1, seq, kind, body)
        by_wallet.setdefault(wallet, []).append(row)
        positions.append(len(headers) - 1)
    wallets = sorted(by_wallet)
    count = max(1, min(count, len(wallets)))
    parts: list[list[tuple[int, int, int, str, str]]] = [[] for _ in range(count)]
    for i, wallet in enumerate(wallets):
        parts[i % count].extend(by_wallet[wallet])
    return (
        tuple(headers),
        tuple(positions),
        [(path, tuple(headers), tuple(sorted(part))) for part in parts],
    )


def _replay_raw_part(
    part: RawPart, config: Config | None, keep: bool
) -> tuple[list[Any], list[Any]]:
    """Decode and replay a raw partition on the worker, as
    :func:`~liqshell.analysis.replay` of a store does on one core
    (:func:`~liqshell.analysis.replay_bodies`); a bad row fails naming it."""
    from liqcore.errors import LiqcoreError
    from liqshell.adapters import record_from_json
    from liqshell.analysis import (
        Recording,
        RecordingError,
        _configs,
        replay_bodies,
        without_cycle_collection,
    )

    source, headers, rows = part
    seqs = {index: seq for index, _, seq, _, _ in rows}

    def decode(index: int, body: str) -> Record:
        try:
            return record_from_json(body)
        except (LiqcoreError, ValueError) as error:
            raise RecordingError(
                f"{source}: row {seqs[index]}: not a liqshell recording: {error}"
            ) from None

    outline = Recording(source=source, headers=headers, records=(), header_index=())
    configs = _configs(outline, config)
    with without_cycle_collection():
        return replay_bodies(
            ((index, position, kind, body) for index, position, _, kind, body in rows),
            configs.__getitem__,
            keep=keep,
            decode=decode,
        )


def replay_store_on(client: Any, path: str, config: Config | None, *, keep: bool) -> Any:
    """:func:`~liqshell.analysis.replay` of the SQLite store at ``path`` on ``client``'s
    workers: the rows are read here undecoded and sent by wallet; each worker decodes its
    own (decoding is most of the cost of a replay, so it is what is spread)."""
    from liqshell.analysis import Recording, Trace, _config_notes

    headers, positions, parts = raw_partitions(path, 4 * _workers(client))
    # Straight to the workers (scatter), not through the scheduler inside the task graph.
    # hash=False: scattered data is keyed by its hash by default, so replaying the same store
    # twice scatters under the same keys while the scheduler may still be releasing the first
    # call's — and the second call's tasks are then cancelled for "lost dependencies" (seen
    # once under load). Fresh keys each call cannot meet a release in flight.
    shipped = client.scatter(parts, hash=False)
    futures = client.map(_replay_raw_part, shipped, config=config, keep=keep, pure=False)
    results = client.gather(futures)
    decisions = sorted((d for part, _ in results for d in part), key=lambda d: d.index)
    mismatches = sorted((m for _, part in results for m in part), key=lambda m: m.index)
    outline = Recording(source=path, headers=headers, records=(), header_index=positions)
    return Trace(
        source=path,
        decisions=tuple(decisions),
        mismatches=tuple(mismatches),
        config_notes=_config_notes(outline, config),
    )


def _what_if_part(
    part: Part, config: Config | None, overrides: Mapping[str, object]
) -> tuple[list[Any], dict[str, Any]]:
    import attrs

    from liqshell.analysis import _configs, run_what_if, with_overrides

    sub = _sub_recording(part)
    indexes = [index for index, _, _ in part[1]]
    configs = _configs(sub, config)
    resolved = {key: with_overrides(value, **overrides) for key, value in configs.items()}
    steps, first = run_what_if(sub, resolved.__getitem__)
    return steps, {w: attrs.evolve(m, index=indexes[m.index]) for w, m in first.items()}


def _merged_what_if(
    client: Any, recording: Any, config: Config | None, overrides: Mapping[str, object]
) -> tuple[Any, dict[str, Any]]:
    from liqshell.analysis import summarize_decisions

    parts = partitions(recording, 4 * _workers(client))
    futures = client.map(_what_if_part, parts, config=config, overrides=dict(overrides), pure=False)
    results = client.gather(futures)
    steps = [step for part, _ in results for step in part]
    first: dict[str, Any] = {}
    for _, part in results:
        first.update(part)
    return summarize_decisions(steps), dict(sorted(first.items()))


def what_if_on(
    client: Any, recording: Any, config: Config | None, overrides: Mapping[str, object]
) -> Any:
    """:func:`~liqshell.analysis.what_if` on ``client``'s workers."""
    from liqshell.analysis import Comparison, baseline

    summary, first = _merged_what_if(client, recording, config, overrides)
    return Comparison(
        overrides=dict(overrides),
        baseline=baseline(recording),
        what_if=summary,
        divergences=first,
    )


def _sweep_point(recording: Any, config: Config | None, point: Mapping[str, object]) -> Any:
    from liqshell.analysis import _configs, run_what_if, summarize_decisions, with_overrides

    configs = _configs(recording, config)
    resolved = {key: with_overrides(value, **point) for key, value in configs.items()}
    steps, _ = run_what_if(recording, resolved.__getitem__)
    return summarize_decisions(steps)


def sweep_on(
    client: Any, recording: Any, config: Config | None, points: Sequence[dict[str, object]]
) -> list[tuple[dict[str, object], Any]]:
    """:func:`~liqshell.analysis.sweep` on ``client``'s workers: one task per point, the
    recording sent to each worker once."""
    shared = client.scatter(recording, broadcast=True, hash=False)  # fresh keys: see above
    futures = [client.submit(_sweep_point, shared, config, point, pure=False) for point in points]
    return list(zip(points, client.gather(futures), strict=True))
