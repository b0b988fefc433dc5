"""liqshell: the asyncio shell around liqcore.

It observes accounts through ports (:mod:`liqshell.ports`), lets ``liqcore.step`` decide,
commits each decision before acting, executes it and folds the outcomes back in with
``liqcore.apply``. :mod:`liqshell.testing` has in-memory fakes of every port.
"""

from __future__ import annotations

# SqliteStore is written by the adapters work (liqshell/adapters/sqlite.py, stdlib only);
# if that module is ever missing, drop this import and its __all__ entry.
from liqshell.adapters.sqlite import SqliteStore
from liqshell.clock import SystemClock
from liqshell.ports import (
    AnswerStatus,
    AuctionReceipt,
    Conflict,
    FeedItem,
    LiqshellError,
    MarginReport,
    NotSent,
    OrderAnswer,
    OutcomeUnknown,
    PollReport,
    Record,
    RecordKind,
    Stored,
    Unfinished,
)
from liqshell.watcher import Watcher

__all__ = [
    "AnswerStatus",
    "AuctionReceipt",
    "Conflict",
    "FeedItem",
    "LiqshellError",
    "MarginReport",
    "NotSent",
    "OrderAnswer",
    "OutcomeUnknown",
    "PollReport",
    "Record",
    "RecordKind",
    "SqliteStore",
    "Stored",
    "SystemClock",
    "Unfinished",
    "Watcher",
]
