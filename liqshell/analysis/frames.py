"""Recordings, traces and comparisons as tidy pandas DataFrames (the ``notebook`` extra).

A row per decision, with ``wallet``, ``time`` (a UTC ``pandas.Timestamp``), ``now`` (ms),
``phase`` and ``previous_phase`` (categorical, in the order of the state machine),
``equity``, ``mm_required``, ``target`` (the partial target equity), ``shortfall``,
``bonus_bps``, command counts (``submits``, ``cancels``, ``auctions``, ``alerts``) and the
``bonus_offered`` over the reference price — money as floats, for plotting and
aggregating (the exact Decimals stay in the records).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from liqcore import (
    AccountState,
    Alert,
    CancelOrder,
    Config,
    PreLiquidation,
    StartAuction,
    SubmitOrder,
)
from liqcore.state import PHASE_TAGS, phase_tag
from liqcore.targets import target_equity_from_mm
from liqshell.ports import Record

__all__ = ["PHASES", "Row", "comparison_frame", "decision_rows", "recording_frame", "trace_frame"]

PHASES = tuple(PHASE_TAGS.values())
"""The phase tags in the order of the state machine (the categories of ``phase``)."""

COLUMNS = (
    "wallet",
    "time",
    "now",
    "previous_phase",
    "phase",
    "equity",
    "mm_required",
    "target",
    "shortfall",
    "bonus_bps",
    "commands",
    "submits",
    "cancels",
    "auctions",
    "alerts",
    "contracts",
    "notional",
    "bonus_offered",
    "executed",
    "index",
)


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise ImportError(
            "to_frame needs pandas: install the notebook extra (pip install 'liqcore[notebook]')"
        ) from None
    return pandas


Row = tuple[int, Record | Any, AccountState | None, AccountState, tuple[Any, ...], Config]
"""``(index, record or Decision, previous, state, commands, config)`` of one decision."""


def decision_rows(decisions: Iterable[Row]) -> list[dict[str, object]]:
    """The rows of decisions (the config gives the buffer of the target equity)."""
    rows: list[dict[str, object]] = []
    for index, record, previous, state, commands, config in decisions:
        health = record.health
        if health is None:
            continue
        submits = [c for c in commands if type(c) is SubmitOrder]
        bonus = Decimal(0)
        notional = Decimal(0)
        for submit in submits:
            notional += submit.price * submit.size
            quote = health.quotes.get(submit.symbol)
            reference = None if quote is None else (quote.theo or quote.mid)
            if reference is not None and reference > 0:
                bonus += (submit.price - reference) * submit.size
        phase = state.phase
        rows.append(
            {
                "wallet": record.wallet,
                "now": record.now,
                "previous_phase": "healthy" if previous is None else phase_tag(previous.phase),
                "phase": phase_tag(phase),
                "equity": float(health.equity),
                "mm_required": float(health.mm_required),
                "target": float(
                    target_equity_from_mm(health.mm_required, config.partial_target_buffer_bps)
                ),
                "shortfall": float(health.shortfall),
                "bonus_bps": phase.bonus_bps if type(phase) is PreLiquidation else 0,
                "commands": len(commands),
                "submits": len(submits),
                "cancels": sum(1 for c in commands if type(c) is CancelOrder),
                "auctions": sum(1 for c in commands if type(c) is StartAuction),
                "alerts": sum(1 for c in commands if type(c) is Alert),
                "contracts": float(sum((s.size for s in submits), Decimal(0))),
                "notional": float(notional),
                "bonus_offered": float(bonus),
                "executed": getattr(record, "executed", True),
                "index": index,
            }
        )
    return rows


def _frame(rows: list[dict[str, object]]) -> Any:
    pd = _pandas()
    frame = pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "time"])
    frame.insert(1, "time", pd.to_datetime(frame["now"], unit="ms", utc=True))
    for column in ("phase", "previous_phase"):
        frame[column] = pd.Categorical(frame[column], categories=PHASES, ordered=True)
    frame["wallet"] = frame["wallet"].astype("string")
    return frame


def recording_frame(recording: Any) -> Any:
    """The recorded decisions of ``recording`` (a :class:`~liqshell.analysis.Recording`)."""
    from liqshell.analysis import _configs

    configs = _configs(recording, None)
    decisions = (
        (
            index,
            record,
            record.previous,
            record.state,
            record.commands,
            configs[recording.header_index[index]],
        )
        for index, record in recording.decisions()
        if record.state is not None
    )
    return _frame(decision_rows(decisions))


def trace_frame(trace: Any) -> Any:
    """The replayed decisions of ``trace`` (a :class:`~liqshell.analysis.Trace`)."""
    return _frame(
        decision_rows(
            (d.index, d, d.previous, d.state, d.commands, d.config) for d in trace.decisions
        )
    )


def comparison_frame(comparison: Any) -> Any:
    """Per wallet (and ``total``), the recorded and the what-if figures side by side."""
    pd = _pandas()
    rows: list[dict[str, object]] = []
    names = (
        "orders",
        "contracts",
        "bonus_offered",
        "pre_liquidation_ms",
        "escalations",
        "auctions",
    )
    recorded, what_if = comparison.baseline, comparison.what_if
    for wallet in [*recorded.wallets, "total"]:
        base = recorded.total if wallet == "total" else recorded.wallets[wallet]
        other = what_if.total if wallet == "total" else what_if.wallets.get(wallet, base)
        row: dict[str, object] = {"wallet": wallet}
        for name in names:
            a, b = getattr(base, name), getattr(other, name)
            row[f"{name}_recorded"] = float(a) if isinstance(a, Decimal) else a
            row[f"{name}_what_if"] = float(b) if isinstance(b, Decimal) else b
        rows.append(row)
    return pd.DataFrame(rows)
