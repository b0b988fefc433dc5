"""liqshell: the asyncio shell around liqcore.

It observes accounts through ports (:mod:`liqshell.ports`), lets ``liqcore.step`` decide,
commits each decision before acting, executes it and folds the outcomes back in with
``liqcore.apply``. :mod:`liqshell.testing` has in-memory fakes of every port.

The shell logs under ``liqshell.*`` and configures no handler of its own but a
:class:`logging.NullHandler` on ``liqshell``: an application (or a notebook) that did not
configure logging sees nothing on stderr; one that did sees every record.
"""

from __future__ import annotations

import logging

from liqcore import __version__

# SqliteStore is written by the adapters work (liqshell/adapters/sqlite.py, stdlib only);
# if that module is ever missing, drop this import and its __all__ entry.
from liqshell.adapters.sqlite import SqliteStore
from liqshell.clock import SystemClock
from liqshell.ports import (
    AnswerStatus,
    AuctionReceipt,
    Conflict,
    FeedItem,
    Fenced,
    Lease,
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

logging.getLogger("liqshell").addHandler(logging.NullHandler())

__all__ = [
    "AnswerStatus",
    "AuctionReceipt",
    "Conflict",
    "FeedItem",
    "Fenced",
    "Lease",
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
    "__version__",
]
