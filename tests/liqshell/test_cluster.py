"""liqshell.cluster: the shard of a wallet and the assignment of shards to live members."""

from __future__ import annotations

import doctest
import hashlib
import math
import os
import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from liqshell import cluster
from liqshell.cluster import assign, moved, owned, shard_of

member_ids = st.text(alphabet="abcdefghij0123456789-", min_size=1, max_size=6)
memberships = st.lists(member_ids, min_size=1, max_size=12, unique=True)
shard_counts = st.integers(min_value=1, max_value=300)


def test_the_docstring_examples_hold() -> None:
    """The examples in the module's docstrings are what the functions return."""
    failures, tried = doctest.testmod(cluster, raise_on_error=False, report=True)
    assert tried > 0
    assert failures == 0


# ------------------------------------------------------------------ shard_of


def test_shard_of_is_blake2b_64_of_the_utf8_bytes_mod_the_count() -> None:
    """Pinned values: a change of hash, byte order or encoding would remap every wallet of a
    running cluster, so it must fail here."""
    assert [shard_of(w, 16) for w in ("0xabc", "alice", "bob", "é", "")] == [14, 9, 2, 15, 4]
    assert shard_of("0xabc", 1_000_003) == 389_569
    digest = hashlib.blake2b("wallet-é".encode(), digest_size=8).digest()
    assert shard_of("wallet-é", 97) == int.from_bytes(digest, "big") % 97


@given(wallet=st.text(), shards=shard_counts)
def test_shard_of_is_in_range(wallet: str, shards: int) -> None:
    """Any wallet name (surrogates included) maps into 0..shards-1."""
    assert 0 <= shard_of(wallet, shards) < shards


def test_shard_of_does_not_depend_on_the_process_hash_seed() -> None:
    """Two processes with different PYTHONHASHSEED agree (Python's hash() would not)."""
    code = (
        "from liqshell.cluster import shard_of; print([shard_of(f'w{i}', 64) for i in range(50)])"
    )
    outputs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(done.stdout)
    assert outputs == {str([shard_of(f"w{i}", 64) for i in range(50)]) + "\n"}


def test_shard_of_spreads_wallets_evenly() -> None:
    """16,000 wallet names over 16 shards: every shard gets 1,000 ± 15 %."""
    counts = Counter(shard_of(f"0x{i:040x}", 16) for i in range(16_000))
    assert set(counts) == set(range(16))
    assert all(850 <= n <= 1_150 for n in counts.values()), counts


@pytest.mark.parametrize("shards", [0, -1, True, 2.0, "4", None])
def test_shard_of_rejects_a_bad_shard_count_naming_it(shards: object) -> None:
    """A shard count that is not an int ≥ 1 raises, naming ``shards``."""
    with pytest.raises(ValueError, match="shards must be an int >= 1"):
        shard_of("w", shards)  # type: ignore[arg-type]


def test_shard_of_rejects_a_wallet_that_is_not_a_str() -> None:
    with pytest.raises(ValueError, match="wallet must be a str"):
        shard_of(b"w", 4)  # type: ignore[arg-type]


# ------------------------------------------------------------------ assign


def _check_balanced(assignment: cluster.Assignment, shards: int, members: list[str]) -> None:
    assert sorted(assignment) == list(range(shards)), "every shard has exactly one owner"
    assert set(assignment.values()) <= set(members), "owners are live members"
    loads = [len(owned(assignment, m)) for m in members]
    assert sum(loads) == shards
    assert all(shards // len(members) <= n <= math.ceil(shards / len(members)) for n in loads)


@given(shards=shard_counts, members=memberships)
def test_a_fresh_assignment_is_complete_and_balanced(shards: int, members: list[str]) -> None:
    """Every shard has exactly one live owner; each owns ⌊S/M⌋ or ⌈S/M⌉ shards."""
    _check_balanced(assign(shards, members), shards, members)


@given(
    shards=shard_counts,
    members=memberships,
    owners=st.lists(member_ids, min_size=1, max_size=15),
    data=st.data(),
)
def test_any_previous_assignment_gives_a_complete_balanced_one(
    shards: int, members: list[str], owners: list[str], data: st.DataObject
) -> None:
    """Whatever the previous assignment — partial, unbalanced, naming dead members — the new
    one is complete and balanced over the live members."""
    previous = data.draw(
        st.dictionaries(st.integers(0, shards - 1), st.sampled_from(owners + members))
    )
    _check_balanced(assign(shards, members, previous), shards, members)


@given(shards=shard_counts, members=memberships, data=st.data())
def test_assignment_does_not_depend_on_member_order(
    shards: int, members: list[str], data: st.DataObject
) -> None:
    """Same members in any order, same previous → the same assignment (as a set, a list,
    a tuple)."""
    previous = data.draw(st.dictionaries(st.integers(0, shards - 1), st.sampled_from(members)))
    shuffled = data.draw(st.permutations(members))
    first = assign(shards, members, previous)
    assert dict(assign(shards, tuple(shuffled), previous)) == dict(first)
    assert dict(assign(shards, set(shuffled), previous)) == dict(first)
    assert list(first) == sorted(first)


@given(shards=shard_counts, members=memberships)
def test_a_balanced_assignment_is_kept_when_nobody_joins_or_leaves(
    shards: int, members: list[str]
) -> None:
    """Reassigning with the same members moves nothing."""
    current = assign(shards, members)
    assert moved(current, assign(shards, members, current)) == frozenset()


@given(shards=shard_counts, members=memberships, newcomer=member_ids)
def test_a_join_moves_at_most_the_bound_and_only_to_the_newcomer(
    shards: int, members: list[str], newcomer: str
) -> None:
    """A member joining a balanced assignment takes ⌊S/M'⌋ shards (M' members after the
    join), all from others; nobody else's shards move: ≤ ⌈S/M⌉ + 1 either way."""
    if newcomer in members:
        members = [m for m in members if m != newcomer]
        if not members:
            return
    before = assign(shards, members)
    after = assign(shards, [*members, newcomer], before)
    _check_balanced(after, shards, [*members, newcomer])
    changed = moved(before, after)
    assert all(after[s] == newcomer for s in changed)
    assert len(changed) == shards // (len(members) + 1)
    assert len(changed) <= math.ceil(shards / len(members)) + 1


@given(shards=shard_counts, members=memberships.filter(lambda m: len(m) >= 2), data=st.data())
def test_a_leave_moves_only_the_leavers_shards(
    shards: int, members: list[str], data: st.DataObject
) -> None:
    """A member leaving a balanced assignment: exactly its shards move (≤ ⌈S/M⌉, M members
    before), the others keep all of theirs."""
    before = assign(shards, members)
    leaver = data.draw(st.sampled_from(members))
    rest = [m for m in members if m != leaver]
    after = assign(shards, rest, before)
    _check_balanced(after, shards, rest)
    assert moved(before, after) == owned(before, leaver)
    assert len(owned(before, leaver)) <= math.ceil(shards / len(members))


@given(
    shards=shard_counts,
    start=memberships,
    changes=st.lists(st.tuples(st.booleans(), member_ids), max_size=12),
)
def test_every_step_of_a_join_leave_sequence_is_balanced_and_bounded(
    shards: int, start: list[str], changes: list[tuple[bool, str]]
) -> None:
    """Chained one join or leave at a time, each reassignment from the previous one stays
    balanced and moves ≤ ⌈S/M⌉ + 1 shards (M: the smaller membership of the two)."""
    live = set(start)
    current = assign(shards, live)
    for join, member in changes:
        nxt = live | {member} if join else live - {member}
        if not nxt or nxt == live:
            continue
        updated = assign(shards, nxt, current)
        _check_balanced(updated, shards, sorted(nxt))
        assert len(moved(current, updated)) <= math.ceil(shards / min(len(live), len(nxt))) + 1
        live, current = nxt, updated


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, ["a"]), "shards must be an int >= 1, was 0"),
        ((4, []), "members must hold at least one member id"),
        ((4, "ab"), "members must be a collection of member ids, was the str 'ab'"),
        ((4, ["a", "a"]), "members must not repeat an id"),
        ((4, ["a", ""]), "members must hold non-empty str ids, had ''"),
        ((4, ["a", 1]), "members must hold non-empty str ids, had 1"),
        ((4, ["a"], {4: "a"}), r"previous has shard 4, not in 0\.\.3"),
        ((4, ["a"], {0: 7}), "previous owner of shard 0 must be a str, was 7"),
    ],
)
def test_assign_rejects_bad_input_naming_the_field(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        assign(*args)  # type: ignore[arg-type]
