"""The money of a recording, as a text table or a self-contained HTML report.

:func:`money` sums, per wallet and in total, what the recorded decisions asked for: orders,
contracts, notional (price × size), the bonus offered over the reference price (theo,
else mid), full auctions, time in pre-liquidation and the final phase.
:func:`write_html` writes one HTML file — no external resources: the plots (the
``notebook`` extra) are embedded as PNG data — with the money table, the config the run
recorded, and the plots of :mod:`liqshell.analysis.plots`.
"""

from __future__ import annotations

import base64
import html
import io
import os
from decimal import Decimal
from typing import Any

import attrs

from liqcore import codec

__all__ = ["Money", "money", "render_money", "write_html"]


@attrs.frozen(kw_only=True)
class Money:
    """One row of the money table (a wallet, or ``total``)."""

    wallet: str
    orders: int
    contracts: Decimal
    notional: Decimal
    bonus_offered: Decimal
    filled: Decimal
    """Contracts filled (derived from the order snapshots, see :mod:`~liqshell.analysis.fills`)."""
    bonus_paid: Decimal
    """Bonus paid over the reference price on those fills (derived)."""
    auctions: int
    pre_liquidation_ms: int
    final_phase: str


def money(recording: Any) -> list[Money]:
    """Per wallet that was liquidated or entered pre-liquidation, then ``total``; the
    filled contracts and the bonus paid are derived
    (:func:`~liqshell.analysis.fills.derived_fills`)."""
    from liqshell.analysis import baseline
    from liqshell.analysis.fills import derived_fills
    from liqshell.ports import RecordKind

    summary = baseline(recording)
    filled: dict[str, Decimal] = {}
    paid: dict[str, Decimal] = {}
    for fill in derived_fills(recording):
        filled[fill.wallet] = filled.get(fill.wallet, Decimal(0)) + fill.size
        paid[fill.wallet] = paid.get(fill.wallet, Decimal(0)) + fill.bonus_paid
    notional: dict[str, Decimal] = {}
    for record in recording.records:
        if record.kind is not RecordKind.DECISION:
            continue
        for command in record.commands:
            size = getattr(command, "size", None)
            price = getattr(command, "price", None)
            if size is not None and price is not None:
                notional[record.wallet] = notional.get(record.wallet, Decimal(0)) + price * size
    rows = [
        Money(
            wallet=wallet,
            orders=w.orders,
            contracts=w.contracts,
            notional=notional.get(wallet, Decimal(0)),
            bonus_offered=w.bonus_offered,
            filled=filled.get(wallet, Decimal(0)),
            bonus_paid=paid.get(wallet, Decimal(0)),
            auctions=w.auctions,
            pre_liquidation_ms=w.pre_liquidation_ms,
            final_phase=w.final_phase,
        )
        for wallet, w in summary.wallets.items()
        if w.orders or w.auctions or w.pre_liquidation_ms or w.final_phase != "healthy"
    ]
    total = summary.total
    rows.append(
        Money(
            wallet="total",
            orders=total.orders,
            contracts=total.contracts,
            notional=sum(notional.values(), Decimal(0)),
            bonus_offered=total.bonus_offered,
            filled=sum(filled.values(), Decimal(0)),
            bonus_paid=sum(paid.values(), Decimal(0)),
            auctions=total.auctions,
            pre_liquidation_ms=total.pre_liquidation_ms,
            final_phase="",
        )
    )
    return rows


_HEADINGS = (
    "wallet",
    "orders",
    "contracts",
    "notional USD",
    "bonus offered USD",
    "filled*",
    "bonus paid USD*",
    "auctions",
    "pre-liq s",
    "final phase",
)


def _cells(row: Money) -> tuple[str, ...]:
    return (
        row.wallet,
        f"{row.orders}",
        f"{row.contracts:,.4f}",
        f"{row.notional:,.2f}",
        f"{row.bonus_offered:,.2f}",
        f"{row.filled:,.4f}",
        f"{row.bonus_paid:,.2f}",
        f"{row.auctions}",
        f"{row.pre_liquidation_ms / 1000:,.0f}",
        row.final_phase,
    )


FOOTNOTE = (
    "* derived: fills estimated from the open-order snapshots (a tracked order's remaining "
    "size dropped, or it vanished without our cancel); bonus over the reference price "
    "(theo, else mid) when the order was placed"
)


def render_money(rows: list[Money]) -> str:
    """The money table as plain text, with the footnote on derived figures."""
    table = [_HEADINGS, *(_cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(_HEADINGS))]
    lines = []
    for line in table:
        first = f"{line[0]:<{widths[0]}}"
        rest = [f"{cell:>{width}}" for cell, width in zip(line[1:], widths[1:], strict=True)]
        lines.append("  ".join([first, *rest]))
    lines.append(FOOTNOTE)
    return "\n".join(lines)


def _png(figure: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="plot" src="data:image/png;base64,{data}">'


def write_html(
    recording: Any,
    path: str | os.PathLike[str],
    *,
    wallets: list[str] | None = None,
    max_wallets: int = 6,
    comparison: Any = None,
) -> None:
    """Write the report of ``recording`` to ``path``: one self-contained HTML file (the
    money table, the recorded config, the phase timeline, and for ``wallets`` — default:
    the first ``max_wallets`` that entered pre-liquidation or were auctioned — the equity
    and bonus plots; a what-if ``comparison`` adds its plot)."""
    from liqshell.analysis import plots

    plots.use_agg()
    rows = money(recording)
    chosen = wallets if wallets is not None else [r.wallet for r in rows[:-1]][:max_wallets]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>liqshell report: {html.escape(recording.source)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;color:#222}"
        "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:4px 8px}"
        "td{text-align:right}td:first-child,td:last-child{text-align:left}"
        "th{background:#eceff1}tr:last-child{font-weight:bold}img{max-width:100%}</style>",
        "</head><body>",
        f"<h1>Liquidation report: {html.escape(recording.source)}</h1>",
        f"<p>{len(recording.records)} records, {len(recording.wallets)} wallets.</p>",
        "<h2>Money</h2>",
        "<p>What the recorded decisions asked for, and the fills derived from the order "
        "snapshots; the bonus is over the reference price (theo, else mid) at the time of "
        "the order.</p>",
        "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in _HEADINGS) + "</tr>",
    ]
    parts.extend(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in _cells(row)) + "</tr>"
        for row in rows
    )
    parts.append("</table>")
    parts.append(f"<p><small>{html.escape(FOOTNOTE)}</small></p>")
    parts.append("<h2>Phases</h2>")
    parts.append(_png(plots.plot_timeline(recording)))
    if comparison is not None:
        parts.append("<h2>What-if</h2>")
        parts.append(_png(plots.plot_comparison(comparison)))
        parts.append(f"<pre>{html.escape(comparison.render())}</pre>")
    for wallet in chosen:
        parts.append(f"<h2>{html.escape(wallet)}</h2>")
        parts.append(_png(plots.plot_account(recording, wallet)))
        parts.append(_png(plots.plot_bonus(recording, wallet)))
    config = recording.config
    parts.append("<h2>Recorded config</h2>")
    if config is None:
        parts.append("<p>The recording carries no config.</p>")
    else:
        text = codec.to_json(config)
        parts.append(f"<pre>{html.escape(text)}</pre>")
    parts.append("</body></html>")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(parts) + "\n")
