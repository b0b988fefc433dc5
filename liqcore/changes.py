"""What the shell publishes for a transition it applied from the chain feed.

``step`` publishes its own transitions (a :class:`~liqcore.commands.PublishStateChange`
among its commands). The chain's and the operator's events — ``AuctionStarted``,
``AuctionStopped``, ``AuctionSettled``, ``AccountReset`` — reach the state through
``apply``, which emits nothing; :func:`state_change` gives the shell the publish for such
a transition, built by the same rule as ``step``'s final publish, so consumers hear of
every phase change whoever made it. The shell publishes it after committing the new
state, with the usual ``(wallet, version, index)`` key (SPEC §9).
"""

from __future__ import annotations

from liqcore.commands import PublishStateChange
from liqcore.errors import InvalidInput
from liqcore.machine import _publish
from liqcore.state import AccountState

__all__ = ["state_change"]


def state_change(previous: AccountState, new: AccountState, now: int) -> PublishStateChange | None:
    """The publish of the move from ``previous`` to ``new`` (``apply``'s result) at ``now``.

    ``None`` when the phase object is unchanged (``apply`` ignored the event); otherwise
    the ``PublishStateChange`` that ``step`` would emit for the same move: phases and
    modes of both, ``new``'s money fields, ``auction_id`` the new phase's else the previous
    one's, ``projection_changed = material_change(previous.phase, new.phase)``, ``state =
    new`` and ``timestamp = now``. Pure; raises :class:`InvalidInput` for arguments of the
    wrong type or states of two wallets.
    """
    if type(now) is not int:
        raise InvalidInput(f"state_change now must be an int (ms), was {now!r}")
    for name, value in (("previous", previous), ("new", new)):
        if not isinstance(value, AccountState):
            raise InvalidInput(f"state_change {name} must be an AccountState, was {value!r}")
    if previous.wallet != new.wallet:
        raise InvalidInput(
            f"state_change states of two wallets: {previous.wallet!r} and {new.wallet!r}"
        )
    if new.phase == previous.phase:
        return None
    return _publish(previous.phase, new, now)
