"""Shards of wallets and their assignment to the live members of a cluster (pure functions).

Several watcher instances share the wallets of one store by **shards**: a wallet belongs to
exactly one of ``shards`` shards, by a hash of its name that never changes
(:func:`shard_of`), and each shard is assigned to exactly one live member
(:func:`assign`). Nothing here does I/O or reads a clock: the same inputs give the same
output on every machine, every Python version and every run, so every instance that reads
the same members and the same current owners computes the same assignment.

**The hash.** :func:`shard_of` is BLAKE2b (8-byte digest) of the wallet's UTF-8 bytes, read
as a big-endian unsigned integer, modulo the shard count. Python's ``hash()`` is salted per
process (``PYTHONHASHSEED``), so two instances would disagree; BLAKE2b is in the standard
library, fast, and spreads any set of names evenly. Changing the shard count remaps almost
every wallet: it is fixed for the life of a cluster.

**The assignment: sticky and balanced.** :func:`assign` takes the shard count, the live
members and the previous assignment (shard → member; members no longer live are ignored)
and returns a new one where

- every shard has exactly one owner, a live member;
- every member owns ⌊S/M⌋ or ⌈S/M⌉ shards (S shards, M members);
- each member keeps as many of its previous shards as its quota allows.

The ``S mod M`` larger quotas (⌈S/M⌉) go to the members that held the most shards before
(ties: the smaller member id), so a member never has to give up a shard only because
another got the larger quota. A member over its quota keeps its lowest-numbered shards; the
shards left over (previous owner gone, or over quota) go, in shard order, to the members
under quota, in member-id order.

*Why this scheme.* Both candidates the issue names are deterministic; the difference is
movement. Starting from a balanced assignment, when one member joins exactly ⌊S/M'⌋ shards
move (all to the newcomer; M' members after the join) and when one leaves exactly its own
shards move (⌈S/M⌉ at most, M members before) — the fewest any balanced assignment can move,
and within the ⌈S/M⌉ + 1 the issue asks for. A rendezvous hash with bounded loads needs no
previous assignment, but its cascade of overflowing members can move more than that, and
the bound is harder to state. The price of stickiness is that the result depends on the
previous assignment: instances must agree on it, which they do when it is what the store's
lease rows say (who holds each shard now).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from types import MappingProxyType

__all__ = ["assign", "moved", "owned", "shard_of"]

Assignment = Mapping[int, str]
"""Shard number → the member that owns it."""


def _shard_count(shards: object) -> int:
    if type(shards) is not int or shards < 1:
        raise ValueError(f"shards must be an int >= 1, was {shards!r}")
    return shards


def shard_of(wallet: str, shards: int) -> int:
    """The shard of ``wallet`` among ``shards``: BLAKE2b-64 of its UTF-8 bytes mod ``shards``.

    >>> shard_of("0xabc", 16)
    14
    """
    if type(wallet) is not str:
        raise ValueError(f"wallet must be a str, was {wallet!r}")
    count = _shard_count(shards)
    digest = hashlib.blake2b(wallet.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def _members(members: Collection[str]) -> tuple[str, ...]:
    if isinstance(members, str):
        raise ValueError(f"members must be a collection of member ids, was the str {members!r}")
    for member in members:
        if type(member) is not str or not member:
            raise ValueError(f"members must hold non-empty str ids, had {member!r}")
    unique = tuple(sorted(set(members)))
    if len(unique) != len(members):
        raise ValueError(f"members must not repeat an id, had {sorted(members)!r}")
    if not unique:
        raise ValueError("members must hold at least one member id, was empty")
    return unique


def assign(
    shards: int,
    members: Collection[str],
    previous: Assignment | None = None,
) -> Assignment:
    """Assign each of ``shards`` shards to one of ``members``, keeping ``previous`` owners
    where balance allows (see the module's docstring for the rule and why).

    ``previous`` maps shard numbers (``0 ≤ shard < shards``) to member ids; owners that are
    not in ``members`` are ignored. The result does not depend on the order of ``members``.

    >>> dict(assign(4, ["b", "a"]))
    {0: 'a', 1: 'a', 2: 'b', 3: 'b'}
    >>> dict(assign(4, ["a", "b", "c"], {0: "a", 1: "a", 2: "b", 3: "b"}))
    {0: 'a', 1: 'a', 2: 'b', 3: 'c'}
    """
    count = _shard_count(shards)
    live = _members(members)
    before = {} if previous is None else dict(previous)
    for shard, owner in before.items():
        if type(shard) is not int or not 0 <= shard < count:
            raise ValueError(f"previous has shard {shard!r}, not in 0..{count - 1}")
        if type(owner) is not str:
            raise ValueError(f"previous owner of shard {shard} must be a str, was {owner!r}")

    live_set = frozenset(live)
    held: dict[str, list[int]] = {member: [] for member in live}
    for shard in sorted(before):
        if before[shard] in live_set:
            held[before[shard]].append(shard)

    base, extra = divmod(count, len(live))
    ranked = sorted(live, key=lambda member: (-len(held[member]), member))
    quota = {member: base + (1 if rank < extra else 0) for rank, member in enumerate(ranked)}

    result: dict[int, str] = {}
    for member in live:
        for shard in held[member][: quota[member]]:
            result[shard] = member
    orphans = [shard for shard in range(count) if shard not in result]
    takers = (member for member in live for _ in range(quota[member] - len(held[member])))
    result.update(zip(orphans, takers, strict=True))
    assert len(result) == count
    return MappingProxyType(dict(sorted(result.items())))


def owned(assignment: Assignment, member: str) -> frozenset[int]:
    """The shards ``member`` owns in ``assignment``."""
    return frozenset(shard for shard, owner in assignment.items() if owner == member)


def moved(before: Assignment, after: Assignment) -> frozenset[int]:
    """The shards whose owner differs between ``before`` and ``after`` (a shard in only one
    of them counts as moved)."""
    shards = set(before) | set(after)
    return frozenset(shard for shard in shards if before.get(shard) != after.get(shard))
