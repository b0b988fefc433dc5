"""Target equity, the margin relief needed to reach it, and the bonus ramp."""

from __future__ import annotations

from decimal import Decimal

from liqcore.numbers import BPS, CONTEXT, ZERO, bps_fraction

__all__ = [
    "is_above_partial_target",
    "partial_bonus_bps",
    "required_mm_relief",
    "target_equity_from_mm",
]


def target_equity_from_mm(mm: Decimal, buffer_bps: int) -> Decimal:
    """``mm × (1 + buffer_bps / 10_000)``: the equity partial liquidation aims for."""
    return CONTEXT.multiply(mm, bps_fraction(buffer_bps))


def is_above_partial_target(equity: Decimal, mm: Decimal, buffer_bps: int) -> bool:
    """``equity ≥ target_equity_from_mm(mm, buffer_bps)``."""
    return equity >= target_equity_from_mm(mm, buffer_bps)


def required_mm_relief(equity: Decimal, mm: Decimal, buffer_bps: int) -> Decimal:
    """``max(0, mm − equity × 10_000 / (10_000 + buffer_bps))``.

    The cut in maintenance margin that would put the current equity exactly on target.
    """
    reachable = CONTEXT.divide(CONTEXT.multiply(equity, Decimal(BPS)), Decimal(BPS + buffer_bps))
    return max(ZERO, CONTEXT.subtract(mm, reachable))


def partial_bonus_bps(start_bps: int, max_bps: int, ramp_ms: int, entered_at: int, now: int) -> int:
    """Bonus at ``now``: linear from ``start_bps`` at ``entered_at`` to ``max_bps`` after
    ``ramp_ms``, floored to an int and clamped to ``[start_bps, max_bps]``.

    ``now < entered_at`` gives ``start_bps``; ``ramp_ms == 0`` gives ``max_bps``. The ramp
    is computed in integers, so it is exact and non-decreasing in ``now``.
    """
    if ramp_ms <= 0:
        return max_bps
    elapsed = now - entered_at
    if elapsed <= 0:
        return start_bps
    if elapsed >= ramp_ms:
        return max_bps
    return start_bps + (max_bps - start_bps) * elapsed // ramp_ms
