"""Plots of recordings and what-ifs with matplotlib (the ``notebook`` extra).

Every function draws on a new figure (or on ``ax``), returns the figure, and writes it to
``path`` when one is given (PNG, or any format matplotlib knows by the suffix). Nothing
needs a display: in a script or CI, use the ``Agg`` backend (:func:`use_agg`).

* :func:`plot_account` — one wallet's equity against its maintenance margin and partial
  target, with entry, escalation and recovery marked;
* :func:`plot_bonus` — one wallet's bonus ramp, with its reprices and orders;
* :func:`plot_timeline` — the phases of every wallet that left ``healthy``, over time;
* :func:`plot_comparison` — a what-if against the recorded run.
"""

from __future__ import annotations

import os
from typing import Any

from liqshell.analysis.frames import PHASES

__all__ = [
    "PHASE_COLORS",
    "plot_account",
    "plot_bonus",
    "plot_comparison",
    "plot_timeline",
    "use_agg",
]

PHASE_COLORS = {
    "healthy": "#4caf50",
    "pre_liquidation": "#ff9800",
    "in_liquidation": "#e53935",
    "liquidated": "#6d4c41",
}


def use_agg() -> None:
    """Draw without a display (the ``Agg`` backend)."""
    import matplotlib

    matplotlib.use("Agg")


def _figure(ax: Any, size: tuple[float, float]) -> tuple[Any, Any]:
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(
            "plots need matplotlib: install the notebook extra (pip install 'liqcore[notebook]')"
        ) from None
    if ax is not None:
        return ax.figure, ax
    figure, axes = plt.subplots(figsize=size, layout="constrained")
    return figure, axes


def _done(figure: Any, path: str | os.PathLike[str] | None) -> Any:
    if path is not None:
        figure.savefig(path, dpi=100)
    return figure


def _wallet_frame(recording: Any, wallet: str) -> Any:
    frame = recording.to_frame()
    rows = frame[frame["wallet"] == wallet]
    if rows.empty:
        raise KeyError(wallet)
    return rows


def plot_account(
    recording: Any, wallet: str, *, ax: Any = None, path: str | os.PathLike[str] | None = None
) -> Any:
    """Equity, maintenance margin required and the partial target of ``wallet`` over time,
    with entry into pre-liquidation, escalation to a full auction and recovery marked."""
    rows = _wallet_frame(recording, wallet)
    figure, axes = _figure(ax, (9, 4))
    axes.plot(rows["time"], rows["equity"], label="equity", color="#1565c0", lw=1.8)
    axes.plot(rows["time"], rows["mm_required"], label="maintenance margin", color="#e53935")
    axes.plot(rows["time"], rows["target"], label="partial target", color="#ff9800", ls="--")
    entry = (rows["previous_phase"] == "healthy") & (rows["phase"] == "pre_liquidation")
    recovery = (rows["previous_phase"] != "healthy") & (rows["phase"] == "healthy")
    marks = (
        ("entry", entry, "v", "#ff9800"),
        ("escalation", rows["auctions"] > 0, "X", "#b71c1c"),
        ("recovery", recovery, "^", "#2e7d32"),
    )
    for label, mask, marker, color in marks:
        hit = rows[mask]
        if not hit.empty:
            axes.scatter(
                hit["time"], hit["equity"], marker=marker, s=90, color=color, label=label, zorder=5
            )
    axes.set_title(f"{wallet}: equity against maintenance margin")
    axes.set_ylabel("USD")
    axes.legend(loc="best", fontsize="small")
    axes.grid(alpha=0.3)
    return _done(figure, path)


def plot_bonus(
    recording: Any, wallet: str, *, ax: Any = None, path: str | os.PathLike[str] | None = None
) -> Any:
    """The bonus ``wallet``'s orders offered (bps) while in pre-liquidation, with each
    reprice marked (the size of the marker: contracts) and the bonus in money."""
    rows = _wallet_frame(recording, wallet)
    figure, axes = _figure(ax, (9, 3.5))
    active = rows[rows["phase"] == "pre_liquidation"]
    axes.step(active["time"], active["bonus_bps"], where="post", color="#6a1b9a", label="bonus")
    orders = rows[rows["submits"] > 0]
    if not orders.empty:
        sizes = 30 + 170 * orders["contracts"] / max(float(orders["contracts"].max()), 1e-9)
        axes.scatter(
            orders["time"],
            orders["bonus_bps"],
            s=sizes,
            color="#ff9800",
            edgecolor="black",
            label="orders placed (size: contracts)",
            zorder=5,
        )
        for _, row in orders.iterrows():
            axes.annotate(
                f"{row['bonus_offered']:,.0f} USD",
                (row["time"], row["bonus_bps"]),
                textcoords="offset points",
                xytext=(4, 6),
                fontsize="x-small",
            )
    axes.set_title(f"{wallet}: bonus ramp and reprices")
    axes.set_ylabel("bps over the reference")
    axes.legend(loc="best", fontsize="small")
    axes.grid(alpha=0.3)
    return _done(figure, path)


def plot_timeline(
    recording: Any,
    *,
    wallets: list[str] | None = None,
    ax: Any = None,
    path: str | os.PathLike[str] | None = None,
) -> Any:
    """A bar per wallet of the phase it was in over time (wallets that never left
    ``healthy`` are left out unless named)."""
    from matplotlib.patches import Patch

    frame = recording.to_frame()
    if wallets is None:
        touched = frame[frame["phase"] != "healthy"]["wallet"].unique()
        wallets = sorted(str(w) for w in touched)
    figure, axes = _figure(ax, (9, max(2.0, 0.45 * len(wallets) + 1.2)))
    end = frame["time"].max()
    for row_number, wallet in enumerate(wallets):
        rows = frame[frame["wallet"] == wallet].sort_values("now")
        times = [*rows["time"], end]
        phases = list(rows["phase"])
        for i, phase in enumerate(phases):
            start, stop = _days(times[i]), _days(times[i + 1])
            axes.broken_barh(
                [(start, max(stop - start, 1e-9))],
                (row_number - 0.4, 0.8),
                color=PHASE_COLORS[str(phase)],
            )
    axes.set_yticks(range(len(wallets)), wallets)
    axes.xaxis_date()
    axes.set_title("phases over time")
    axes.legend(
        handles=[Patch(color=PHASE_COLORS[p], label=p) for p in PHASES],
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
        fontsize="small",
    )
    return _done(figure, path)


def _days(moment: Any) -> float:
    """A timestamp as matplotlib's date number (days since 1970-01-01 UTC)."""
    return float(moment.timestamp()) / 86_400


def plot_comparison(
    comparison: Any, *, ax: Any = None, path: str | os.PathLike[str] | None = None
) -> Any:
    """The recorded run against a what-if, in total: orders, bonus offered, time in
    pre-liquidation, escalations and auctions (each relative to the recorded figure)."""
    figure, axes = _figure(ax, (8, 3.5))
    names = ("orders", "bonus_offered", "pre_liquidation_ms", "escalations", "auctions")
    labels = ("orders", "bonus offered", "pre-liquidation time", "escalations", "auctions")
    recorded = [float(getattr(comparison.baseline.total, n)) for n in names]
    what_if = [float(getattr(comparison.what_if.total, n)) for n in names]
    ratios = [
        b / a if a else (1.0 if b == a else 0.0) for a, b in zip(recorded, what_if, strict=True)
    ]
    positions = range(len(names))
    axes.bar(
        [p - 0.2 for p in positions],
        [1.0] * len(names),
        width=0.4,
        label="recorded",
        color="#90a4ae",
    )
    axes.bar([p + 0.2 for p in positions], ratios, width=0.4, label="what-if", color="#1565c0")
    for p, a, b in zip(positions, recorded, what_if, strict=True):
        axes.annotate(
            f"{a:,.0f}→{b:,.0f}",
            (p, max(1.0, b / a if a else 1.0)),
            textcoords="offset points",
            xytext=(0, 4),
            ha="center",
            fontsize="x-small",
        )
    axes.set_xticks(list(positions), labels)
    shown = ", ".join(f"{k}={v}" for k, v in comparison.overrides.items()) or "no change"
    axes.set_title(f"what if {shown} (relative to the recorded run)")
    axes.legend(fontsize="small")
    return _done(figure, path)
