"""Structured logging for the shell: stdlib ``logging`` under ``liqshell.*``.

The shell never configures the root logger or adds handlers; it only emits records with
structured fields in ``extra`` (``wallet``, ``phase``, ``request_id`` and a few more), so an
application's JSON formatter can pick them up and a plain formatter still reads the message.
:class:`JsonFormatter` is such a formatter (the ``liqshell`` command's ``--log-format json``).
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import assert_never

from liqcore import __version__
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
from liqshell.redaction import redact

__all__ = ["JsonFormatter", "command_request_id", "fields", "get_logger", "state_phase"]

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: ``time`` (UTC, ISO 8601 with milliseconds),
    ``level``, ``logger``, ``message``, ``wallet``, ``phase``, ``request_id`` (``null`` when
    the record has none), ``version`` (the library's), then the record's other structured
    fields (``state_version``: the account state's version, given as ``version`` in
    ``extra``; ``code``, ``cursor``, ``event_id``, ``key``, …) and ``exception`` (the
    traceback) if any. Every text goes through :func:`~liqshell.redaction.redact`; a value
    JSON cannot hold is written as its ``repr``."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        moment = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
        data: dict[str, object] = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
            "wallet": getattr(record, "wallet", None),
            "phase": getattr(record, "phase", None),
            "request_id": getattr(record, "request_id", None),
            "version": __version__,
        }
        for key, value in record.__dict__.items():
            if key == "version":  # the extra's: the account state's, not the library's
                data["state_version"] = value
            elif key not in _STANDARD and key not in data and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            data["exception"] = redact(record.exc_text)
        return json.dumps(data, default=_shown, ensure_ascii=False, separators=(",", ":"))


def _shown(value: object) -> str:
    return redact(repr(value) if not isinstance(value, str) else value)


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
