"""A shadow beside a cluster (issue 13): two live instances share the shards of one
PostgreSQL store; two shadow watchers — one with the live configuration, one with another —
observe every shard and decide every live decision the store records again under their own
configuration. The one with the live configuration reports no difference; the other reports
exactly the decisions ``step`` decides otherwise under its configuration, each counted and
logged."""

from __future__ import annotations

import asyncio
import logging

import attrs
import pytest
from prometheus_client import CollectorRegistry

from liqcore import Config
from liqcore.machine import step
from liqshell import Watcher
from liqshell.adapters.postgres import PostgresStore
from liqshell.cluster import shard_of
from liqshell.ownership import ShardOwner
from liqshell.ports import RecordKind
from liqshell.sim import SimClock, SimExchange, SimParams, new_world
from liqshell.sim.world import Market
from liqshell.testing import MemoryStore
from tests.liqshell.test_two_watchers import Sender

pytestmark = pytest.mark.services

PARAMS = SimParams(accounts=16, minutes=4, seed=4)
CONFIG = Config()
OTHER = attrs.evolve(CONFIG, partial_bonus_start_bps=200, partial_target_buffer_bps=800)
SHARDS = 6
TTL = 12_000
RENEW = 5_000


async def test_a_shadow_reports_exactly_the_live_decisions_its_config_decides_otherwise(
    postgres_dsn: str,
    pg_schema: str,
    stores: list[PostgresStore],
    caplog: pytest.LogCaptureFixture,
) -> None:
    market = Market(PARAMS)
    world = new_world(PARAMS, CONFIG, market)
    exchange = SimExchange(world, config=CONFIG, market=market)
    clock = SimClock(world.now)
    sent: list[tuple[str, str]] = []
    published: list[tuple[str, tuple[str, int, int]]] = []

    def watcher(name: str, config: Config, registry: CollectorRegistry | None = None) -> Watcher:
        store = PostgresStore(postgres_dsn, schema=pg_schema, pool_size=3)
        stores.append(store)
        shadow = not config.enabled
        sender = Sender(name=name, exchange=exchange, sent=sent, published=published)
        return Watcher(
            portfolios=exchange, margin=exchange, quotes=exchange, orders=exchange,
            gateway=sender, auctions=sender, feed=exchange, store=store, sink=sender,
            recorder=MemoryStore() if shadow else store, clock=clock, config=config,
            metrics=registry,
            owner=ShardOwner(store, instance_id=name, shards=SHARDS, lease_ttl_ms=TTL),
            renew_interval_ms=RENEW,
        )  # fmt: skip

    live = {name: watcher(name, CONFIG) for name in "ab"}
    registries = {"same": CollectorRegistry(), "other": CollectorRegistry()}
    shadows = {
        "same": watcher("same", attrs.evolve(CONFIG, enabled=False), registries["same"]),
        "other": watcher("other", attrs.evolve(OTHER, enabled=False), registries["other"]),
    }
    for shadow in shadows.values():
        await shadow.run_once()  # follows the log from here: every live decision after
    caplog.set_level(logging.WARNING, logger="liqshell.watcher")
    while True:
        clock.set(world.now)
        await asyncio.gather(*(w.drain_feed() for w in live.values()))
        await asyncio.gather(*(w.run_once() for w in live.values()))
        for shadow in shadows.values():
            await shadow.drain_feed()
            await shadow.run_once()
        if world.tick >= PARAMS.ticks:
            break
        exchange.advance()

    records = [r async for r in stores[0].records()]
    decisions = [r for r in records if r.kind is RecordKind.DECISION and r.commits_version]
    expected = {
        (r.wallet, r.version)
        for r in decisions
        if step(r.previous, r.health, r.orders, r.now, OTHER) != (r.state, r.commands)  # type: ignore[arg-type]
    }
    same, other = shadows["same"], shadows["other"]
    found = {(d.wallet, d.version) for d in other.shadow_differences}
    lines = [r for r in caplog.records if "decided otherwise than live" in r.getMessage()]
    print(
        f"shadows beside two instances: {len(decisions)} live decisions, compared "
        f"{same.shadow_compared} / {other.shadow_compared}; differences with the live config "
        f"{len(same.shadow_differences)}, with another {len(found)}, e.g. "
        f"{other.shadow_differences[0].detail if found else None}"
    )
    # Nothing was executed by a shadow; the live instances shared the shards.
    assert {name for name, _ in sent} == {"a", "b"}
    # Every live decision was decided again by both shadows (both instances' shards).
    assert same.shadow_compared == other.shadow_compared == len(decisions)
    assert len({shard_of(r.wallet, SHARDS) for r in decisions}) > len(live["a"].shards)
    # The same configuration decides as live did; another, exactly where step says so.
    assert same.shadow_differences == ()
    for what in ("state", "commands", "step"):
        labels = {"what": what}
        assert not registries["same"].get_sample_value("liqshell_shadow_differences_total", labels)
    assert registries["same"].get_sample_value("liqshell_shadow_comparisons_total") == len(
        decisions
    )
    assert expected
    assert found == expected
    # Each difference is counted and logged, once.
    counted = sum(
        registries["other"].get_sample_value("liqshell_shadow_differences_total", {"what": w}) or 0
        for w in ("state", "commands", "step")
    )
    assert counted == len(found)
    assert registries["other"].get_sample_value("liqshell_shadow_comparisons_total") == len(
        decisions
    )
    assert len(lines) == len(found)
    assert all(getattr(line, "wallet", None) for line in lines)
