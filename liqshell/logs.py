"""Structured logging for the shell: stdlib ``logging`` under ``liqshell.*``.

The shell never configures the root logger or adds handlers; it only emits records with
structured fields in ``extra`` (``wallet``, ``phase``, ``request_id`` and a few more), so an
application's JSON formatter can pick them up and a plain formatter still reads the message.
"""

from __future__ import annotations

import logging
from typing import assert_never

from liqcore.commands import (
    Alert,
    CancelOrder,
    Command,
    PublishStateChange,
    StartAuction,
    StopAuction,
    SubmitOrder,
)
from liqcore.state import AccountState, phase_tag

__all__ = ["command_request_id", "fields", "get_logger", "state_phase"]


def get_logger(name: str) -> logging.Logger:
    """The logger ``liqshell.<name>``."""
    return logging.getLogger(f"liqshell.{name}")


def fields(
    *,
    wallet: str | None = None,
    phase: str | None = None,
    request_id: str | None = None,
    **more: object,
) -> dict[str, object]:
    """The ``extra`` mapping of a log call.

    Every record carries ``wallet``, ``phase`` and ``request_id`` (possibly ``None``), so a
    formatter can rely on them; ``more`` adds others (``code``, ``version``, ``cursor``, …).
    """
    return {"wallet": wallet, "phase": phase, "request_id": request_id, **more}


def state_phase(state: AccountState | None) -> str | None:
    """The phase tag of ``state`` (``None`` for an untracked wallet)."""
    return None if state is None else phase_tag(state.phase)


def command_request_id(command: Command) -> str | None:
    """The request id a command carries (``None`` for publishes and alerts)."""
    match command:
        case CancelOrder() | SubmitOrder() | StartAuction() | StopAuction():
            return command.request_id
        case PublishStateChange() | Alert():
            return None
        case _:
            assert_never(command)
