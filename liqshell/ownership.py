"""One instance's shards: membership, leases and hand-overs, one :meth:`ShardOwner.tick`
at a time.

A :class:`ShardOwner` keeps the leases of the shards :func:`liqshell.cluster.assign` gives
its instance. Each tick, at ``now`` (the caller's clock):

1. it declares itself live until ``now + lease_ttl_ms`` (:meth:`LeaseStore.heartbeat`) and
   reads the live members and the lease rows;
2. it computes the assignment from the live members, the previous one being who holds
   each shard now (holders that are live members, expired or not — so a shard stays where
   it is while its holder lives);
3. it **releases** the shards it holds that the assignment gives to another member (the
   hand-over: the new owner acquires them at its next tick, at the next epoch), **renews**
   the others — a :class:`~liqshell.ports.Fenced` renewal (or a refused release) means the
   shard was taken: it is dropped and counted as lost — and **acquires** the shards
   assigned to it that it does not hold (``None``: the holder's lease still runs, try
   again next tick).

So a dead instance's shards are taken over within one lease TTL and one tick: its member
row expires, the others' assignment no longer names it, and its leases expire. Two
instances that read at different moments may briefly disagree on the assignment; the
leases make sure a shard never has two holders at once, and the fencing of
:meth:`~liqshell.adapters.postgres.PostgresStore.commit` that a stale holder never commits.

This module does no scheduling of its own: the :class:`~liqshell.watcher.Watcher` given
one (``owner=``, ``[cluster]`` of ``liqshell run``) ticks it (``docs/shell.md``, "Many
instances").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType

import attrs

from liqshell.cluster import assign, shard_of
from liqshell.ports import Fenced, Lease, LeaseStore

__all__ = ["ShardOwner", "Tick"]


@attrs.frozen(kw_only=True)
class Tick:
    """What one tick changed: shards ``acquired``, ``renewed``, ``released`` (handed over)
    and ``lost`` (taken by another instance: the renewal was fenced), and the live
    ``members`` it saw."""

    members: tuple[str, ...] = ()
    acquired: frozenset[int] = frozenset()
    renewed: frozenset[int] = frozenset()
    released: frozenset[int] = frozenset()
    lost: frozenset[int] = frozenset()


class ShardOwner:
    """The shards of instance ``instance_id`` among ``shards``, kept in ``store`` with
    leases of ``lease_ttl_ms``. Call :meth:`tick` more often than the TTL (a third of it,
    say), :meth:`drop` when a commit raised :class:`~liqshell.ports.Fenced`, and
    :meth:`leave` on a clean stop."""

    def __init__(
        self, store: LeaseStore, *, instance_id: str, shards: int, lease_ttl_ms: int
    ) -> None:
        if type(instance_id) is not str or not instance_id:
            raise ValueError(f"instance_id must be a non-empty str, was {instance_id!r}")
        if type(shards) is not int or shards < 1:
            raise ValueError(f"shards must be an int >= 1, was {shards!r}")
        if type(lease_ttl_ms) is not int or lease_ttl_ms < 1:
            raise ValueError(f"lease_ttl_ms must be an int >= 1, was {lease_ttl_ms!r}")
        self.store = store
        self.instance_id = instance_id
        self.shards = shards
        self.lease_ttl_ms = lease_ttl_ms
        self._owned: dict[int, Lease] = {}
        self.renewals = 0
        self.losses = 0

    @property
    def owned(self) -> Mapping[int, Lease]:
        """The leases held, by shard."""
        return MappingProxyType(dict(sorted(self._owned.items())))

    def lease_of(self, wallet: str) -> Lease | None:
        """The lease to commit ``wallet`` under, ``None`` if its shard is not held."""
        return self._owned.get(shard_of(wallet, self.shards))

    def drop(self, shard: int) -> None:
        """Forget ``shard`` (a commit under its lease was fenced): counted as lost."""
        if self._owned.pop(shard, None) is not None:
            self.losses += 1

    async def tick(
        self, now: int, *, before_release: Callable[[int], Awaitable[None]] | None = None
    ) -> Tick:
        """Heartbeat, read, and acquire / renew / release toward the assignment.

        ``before_release(shard)`` is awaited before a shard is handed over, once it is no
        longer in :attr:`owned` (so :meth:`lease_of` no longer gives its lease): the
        watcher waits there for the work in flight on its wallets."""
        ttl = self.lease_ttl_ms
        members = await self.store.heartbeat(self.instance_id, now=now, ttl_ms=ttl)
        if self.instance_id not in members:  # a clock far behind: count ourselves anyway
            members = tuple(sorted({*members, self.instance_id}))
        rows = await self.store.leases()
        live = frozenset(members)
        previous = {shard: row.holder for shard, row in rows.items() if row.holder in live}
        target = assign(self.shards, members, previous)

        acquired: set[int] = set()
        renewed: set[int] = set()
        released: set[int] = set()
        lost: set[int] = set()
        for shard, lease in sorted(self._owned.items()):
            if target[shard] != self.instance_id:
                del self._owned[shard]
                if before_release is not None:
                    await before_release(shard)
                (released if await self.store.release(lease) else lost).add(shard)
                continue
            try:
                self._owned[shard] = await self.store.renew(lease, now=now, ttl_ms=ttl)
            except Fenced:
                del self._owned[shard]
                lost.add(shard)
            else:
                renewed.add(shard)
        for shard in sorted(target):
            if target[shard] != self.instance_id or shard in self._owned or shard in lost:
                continue
            granted = await self.store.acquire(
                shard, self.instance_id, shards=self.shards, now=now, ttl_ms=ttl
            )
            if granted is not None:
                self._owned[shard] = granted
                acquired.add(shard)
        self.renewals += len(renewed)
        self.losses += len(lost)
        return Tick(
            members=members,
            acquired=frozenset(acquired),
            renewed=frozenset(renewed),
            released=frozenset(released),
            lost=frozenset(lost),
        )

    async def leave(self) -> None:
        """Release every held lease and leave the members: the others take the shards at
        their next tick instead of after the TTL."""
        for lease in self._owned.values():
            await self.store.release(lease)
        self._owned.clear()
        await self.store.leave(self.instance_id)
