"""Calibration: how far the margin model is from the exchange's engine, and what to set.

Every ``DECISION`` record carries the :class:`~liqcore.Health` the exchange reported —
its equity and ``mm_required`` — together with the portfolio they were computed from.
:func:`calibrate` values each recorded portfolio with the model the watcher was configured
with (``Config.margin_model(mode)`` of the recording's header, or the ``config`` given) and
reports, per margin mode, the distribution of the relative gaps
``|model − exchange| / max(|exchange|, 1)`` of ``mm_required`` and of equity (count,
median, p95, max, and how many exceed the 1 % tolerance of ``MARGIN_MODEL_MISMATCH``).

It then suggests parameters:

* **standard margin** — ``rate``, ``floor_rate`` and ``perp_rate`` fitted to the
  exchange's ``mm_required`` by least squares. A short option needs
  ``|a| × max(rate × S − OTM, floor_rate × S)``, linear in the rates once it is known
  which side of the ``max`` each position is on; the fit starts from the best point of a
  coarse grid and alternates "pick each position's side with the current rates" and
  "solve the 3 × 3 normal equations", until the sides no longer change. On a recording of
  an engine that *is* a standard model it recovers its rates (to the 4 decimal places the
  suggestion is rounded to).
* **portfolio margin** — a grid over the spot shock (a symmetric ``(−x, 0, x)``) and the
  base volatility, the other parameters kept, scored by the same squared relative gaps on
  at most :data:`PORTFOLIO_SAMPLE` recorded portfolios (each point values every one: the
  model is a scenario grid, not a formula to invert): a coarse grid (shocks 5 % to 40 %
  by 5 %, volatility 0.2 to 2.0 by 0.2), then a fine one around its best point (shocks by
  1 %, volatility by 0.05). A local search: it finds the exchange's parameters when they
  are of this shape and the gaps fall smoothly towards them, not in general.

Equity does not depend on these parameters (it is cash plus positions at their marks): an
equity gap means the exchange marks positions differently, and no parameter fixes that.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

import attrs

from liqcore import Config, MarginMode, Portfolio, PortfolioMargin, StandardMargin
from liqcore.errors import LiqcoreError
from liqcore.instruments import is_perp_symbol, option_symbol
from liqcore.margin.standard import spot_of
from liqcore.numbers import MIN_SIZE
from liqshell.ports import RecordKind

__all__ = [
    "PORTFOLIO_SAMPLE",
    "TOLERANCE",
    "Calibration",
    "Gaps",
    "ModeReport",
    "Observation",
    "calibrate",
    "fit_portfolio",
    "fit_standard",
    "observations",
]

TOLERANCE = 0.01
"""The relative gap above which ``step`` raises ``MARGIN_MODEL_MISMATCH`` (1 %)."""

PORTFOLIO_SAMPLE = 30
"""At most this many recorded portfolio-margin portfolios score each grid point."""

_COARSE_SHOCKS = tuple(Decimal(n) / 100 for n in range(5, 41, 5))  # 0.05 … 0.40
_COARSE_VOLS = tuple(Decimal(n) / 10 for n in range(2, 21, 2))  # 0.2 … 2.0
_FINE_SHOCK, _FINE_VOL = Decimal("0.01"), Decimal("0.05")
_STANDARD_GRID = tuple(n / 50 for n in range(26))  # 0 … 0.5 step 0.02


@attrs.frozen(kw_only=True)
class Observation:
    """One recorded verdict: the exchange's figures and the portfolio it valued."""

    wallet: str
    now: int
    margin_mode: MarginMode
    portfolio: Portfolio
    equity: Decimal
    mm_required: Decimal


@attrs.frozen(kw_only=True)
class Gaps:
    """The distribution of relative gaps ``|model − exchange| / max(|exchange|, 1)``."""

    count: int
    median: float
    p95: float
    max: float
    over_tolerance: int
    """How many exceed :data:`TOLERANCE`."""

    @classmethod
    def of(cls, values: Sequence[float]) -> Gaps:
        """The summary of ``values`` (zeros when empty)."""
        if not values:
            return cls(count=0, median=0.0, p95=0.0, max=0.0, over_tolerance=0)
        ordered = sorted(values)
        return cls(
            count=len(ordered),
            median=_quantile(ordered, 0.5),
            p95=_quantile(ordered, 0.95),
            max=ordered[-1],
            over_tolerance=sum(1 for value in ordered if value > TOLERANCE),
        )

    def render(self) -> str:
        """``median 0.12 %, p95 0.40 %, max 1.30 % (3 over 1 %)``."""
        return (
            f"median {self.median:.2%}, p95 {self.p95:.2%}, max {self.max:.2%} "
            f"({self.over_tolerance} over {TOLERANCE:.0%})"
        )


@attrs.frozen(kw_only=True)
class ModeReport:
    """The gaps of one margin mode, before and after the suggested parameters."""

    margin_mode: MarginMode
    count: int
    """Recorded verdicts with a portfolio the model could value."""
    skipped: int
    """Verdicts without a portfolio, or that the model could not value."""
    mm_required: Gaps
    equity: Gaps
    configured: StandardMargin | PortfolioMargin | None
    suggested: StandardMargin | PortfolioMargin | None
    mm_required_after: Gaps | None
    """The gaps of ``mm_required`` with the suggested parameters."""


@attrs.frozen(kw_only=True)
class Calibration:
    """What :func:`calibrate` found, one :class:`ModeReport` per margin mode seen."""

    source: str
    modes: tuple[ModeReport, ...]
    compact: bool = False
    """The recording summarizes healthy no-ops (``POLL`` records): their verdicts are not
    in it, so only accounts that changed were compared."""

    def mode(self, margin_mode: MarginMode) -> ModeReport | None:
        """The report of ``margin_mode`` (``None``: not in the recording)."""
        return next((m for m in self.modes if m.margin_mode is margin_mode), None)

    def render(self) -> str:
        """The report as text (what ``liqshell calibrate`` prints)."""
        lines = [f"calibration of {self.source}"]
        if self.compact:
            lines.append(
                '  note: a compact recording (record_mode = "changes"): the verdicts of '
                'healthy no-ops were not recorded; record with [store] record_mode = "all" '
                "to calibrate on every verdict"
            )
        if not self.modes:
            lines.append("  no recorded verdict with a portfolio: nothing to compare")
        for report in self.modes:
            lines.append(
                f"{report.margin_mode.value} margin: {report.count} verdicts"
                + (f" ({report.skipped} skipped)" if report.skipped else "")
            )
            lines.append(f"  mm_required gap: {report.mm_required.render()}")
            lines.append(f"  equity gap:      {report.equity.render()}")
            if report.equity.over_tolerance:
                lines.append(
                    "  (equity is cash + positions at their marks: no margin parameter "
                    "changes it; check how the exchange marks positions)"
                )
            lines.append(f"  configured: {_describe(report.configured)}")
            if report.suggested is not None and report.mm_required_after is not None:
                lines.append(f"  suggested:  {_describe(report.suggested)}")
                lines.append(f"  mm_required gap with it: {report.mm_required_after.render()}")
                lines.extend(f"  {line}" for line in _toml(report.suggested))
        return "\n".join(lines)


def observations(recording: Any) -> list[Observation]:
    """The recorded verdicts of ``recording`` (anything with ``records``) that carry a
    portfolio, in order."""
    found: list[Observation] = []
    for record in recording.records:
        if record.kind is not RecordKind.DECISION or record.health is None:
            continue
        health = record.health
        if health.portfolio is None:
            continue
        found.append(
            Observation(
                wallet=record.wallet,
                now=record.now,
                margin_mode=health.margin_mode,
                portfolio=health.portfolio,
                equity=health.equity,
                mm_required=health.mm_required,
            )
        )
    return found


def calibrate(recording: Any, config: Config | None = None, *, fit: bool = True) -> Calibration:
    """Compare ``recording``'s recorded verdicts with the margin model and suggest
    parameters (see the module docs). ``config``: the models to compare with (default: the
    recording's last header's config, else ``Config()``); ``fit=False`` skips the
    suggestions."""
    if config is None:
        config = getattr(recording, "config", None) or Config()
    seen = observations(recording)
    total_of = {mode: sum(1 for o in seen if o.margin_mode is mode) for mode in MarginMode}
    reports: list[ModeReport] = []
    for mode in MarginMode:
        of_mode = [o for o in seen if o.margin_mode is mode]
        if not of_mode and not total_of[mode]:
            continue
        model = config.margin_model(mode)
        valued = _valued(model, of_mode)
        configured = model if isinstance(model, StandardMargin | PortfolioMargin) else None
        suggested: StandardMargin | PortfolioMargin | None = None
        after: Gaps | None = None
        usable = [o for o, _ in valued]
        if fit and usable and isinstance(configured, StandardMargin):
            suggested = fit_standard(usable, start=configured)
        elif fit and usable and isinstance(configured, PortfolioMargin):
            suggested = fit_portfolio(usable, start=configured)
        if suggested is not None:
            after = Gaps.of(
                [_gap(f.mm_required, o.mm_required) for o, f in _valued(suggested, usable)]
            )
        reports.append(
            ModeReport(
                margin_mode=mode,
                count=len(valued),
                skipped=len(of_mode) - len(valued),
                mm_required=Gaps.of([_gap(f.mm_required, o.mm_required) for o, f in valued]),
                equity=Gaps.of([_gap(f.equity, o.equity) for o, f in valued]),
                configured=configured,
                suggested=suggested,
                mm_required_after=after,
            )
        )
    compact = any(r.kind is RecordKind.POLL for r in recording.records)
    return Calibration(
        source=str(getattr(recording, "source", "recording")),
        modes=tuple(reports),
        compact=compact,
    )


# --------------------------------------------------------------------------- standard


@attrs.frozen
class _Terms:
    """One verdict under standard margin, as floats: the exchange's mm_required and, per
    short option, ``(|a| × S, |a| × OTM)``; the perps' ``Σ |a| × S``."""

    target: float
    options: tuple[tuple[float, float], ...]
    perps: float


def _terms(observation: Observation) -> _Terms | None:
    options: list[tuple[float, float]] = []
    perps = 0.0
    try:
        for position in observation.portfolio.positions.values():
            amount = position.amount
            if amount.copy_abs() <= MIN_SIZE:
                continue
            option = option_symbol(position.symbol)
            if option is not None:
                if amount > 0:
                    continue
                spot = spot_of(observation.portfolio.spot, option.underlying)
                otm = (
                    max(Decimal(0), option.strike - spot)
                    if option.is_call
                    else max(Decimal(0), spot - option.strike)
                )
                options.append((float(-amount * spot), float(-amount * otm)))
            elif is_perp_symbol(position.symbol):
                spot = spot_of(observation.portfolio.spot, position.symbol[: -len("-PERP")])
                perps += float(amount.copy_abs() * spot)
            else:
                return None
    except LiqcoreError:
        return None
    return _Terms(target=float(observation.mm_required), options=tuple(options), perps=perps)


def _weight(terms: _Terms) -> float:
    # squared *relative* gaps: large accounts must not drown the small ones
    return 1.0 / max(abs(terms.target), 1.0) ** 2


def _standard_sse(terms: Sequence[_Terms], rate: float, floor: float) -> tuple[float, float]:
    """The weighted squared error at ``(rate, floor)`` with the best ``perp_rate``, and it."""
    residuals = []
    for t in terms:
        options = sum(max(rate * s - otm, floor * s) for s, otm in t.options)
        residuals.append((t.target - options, t.perps, _weight(t)))
    denominator = sum(w * p * p for _, p, w in residuals)
    perp = max(0.0, sum(w * r * p for r, p, w in residuals) / denominator) if denominator else 0.0
    return sum(w * (r - perp * p) ** 2 for r, p, w in residuals), perp


def fit_standard(
    observed: Iterable[Observation], *, start: StandardMargin | None = None
) -> StandardMargin | None:
    """``StandardMargin`` rates fitted to the observed ``mm_required`` by weighted least
    squares (see the module docs), rounded to 4 decimal places; ``None`` when no
    observation holds a position the rates act on. Parameters no observation constrains
    (no perp seen: ``perp_rate``) keep ``start``'s values."""
    start = start or StandardMargin()
    terms = [t for t in map(_terms, observed) if t is not None]
    has_options = any(t.options for t in terms)
    has_perps = any(t.perps for t in terms)
    if not has_options and not has_perps:
        return None
    rate, floor = float(start.rate), float(start.floor_rate)
    if has_options:
        best = min(
            ((_standard_sse(terms, r, f)[0], r, f) for r in _STANDARD_GRID for f in _STANDARD_GRID),
        )
        start_sse = _standard_sse(terms, rate, floor)[0]
        if best[0] < start_sse:
            _, rate, floor = best
    perp = float(start.perp_rate)
    for _ in range(50):
        sides = _sides(terms, rate, floor)
        solved = _solve_sides(terms, sides, has_options=has_options, has_perps=has_perps)
        if not solved:
            break
        rate = max(0.0, solved.get(0, rate))
        floor = max(0.0, solved.get(1, floor))
        perp = max(0.0, solved.get(2, perp))
        if _sides(terms, rate, floor) == sides:
            break
    return StandardMargin(
        rate=_rounded(rate) if has_options else start.rate,
        floor_rate=_rounded(floor) if has_options else start.floor_rate,
        perp_rate=_rounded(perp) if has_perps else start.perp_rate,
    )


def _sides(terms: Sequence[_Terms], rate: float, floor: float) -> list[tuple[bool, ...]]:
    """For each position: is it on the ``rate`` side of the ``max`` at these rates?"""
    return [tuple(rate * s - otm >= floor * s for s, otm in t.options) for t in terms]


def _solve_sides(
    terms: Sequence[_Terms],
    sides: Sequence[tuple[bool, ...]],
    *,
    has_options: bool,
    has_perps: bool,
) -> dict[int, float]:
    """Weighted least squares of ``target + Σ_rate-side |a| OTM = rate × A + floor × B +
    perp × P`` with each position on its given side of the ``max``: the solved parameters
    by column (0 rate, 1 floor, 2 perp); a column no row uses (every option on one side)
    is left out, undetermined."""
    rows: list[tuple[tuple[float, float, float], float, float]] = []
    for t, side in zip(terms, sides, strict=True):
        a = b = c = 0.0
        for (s, otm), on_rate in zip(t.options, side, strict=True):
            if on_rate:
                a += s
                c += otm
            else:
                b += s
        rows.append(((a, b, t.perps), t.target + c, _weight(t)))
    wanted = (has_options, has_options, has_perps)
    used = [i for i in range(3) if wanted[i] and any(x[i] for x, _, _ in rows)]
    if not used:
        return {}
    size = len(used)
    normal = [[0.0] * (size + 1) for _ in range(size)]
    for x, y, w in rows:
        for i, column in enumerate(used):
            for j, other in enumerate(used):
                normal[i][j] += w * x[column] * x[other]
            normal[i][size] += w * x[column] * y
    solution = _gauss(normal)
    if solution is None:
        return {}
    return dict(zip(used, solution, strict=True))


def _gauss(matrix: list[list[float]]) -> list[float] | None:
    """Solve the augmented system ``matrix`` (partial pivoting); ``None`` if singular."""
    size = len(matrix)
    m = [row[:] for row in matrix]
    for col in range(size):
        pivot = max(range(col, size), key=lambda r: abs(m[r][col]))
        if abs(m[pivot][col]) < 1e-12:
            return None
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(size):
            if r != col:
                factor = m[r][col] / m[col][col]
                for c in range(col, size + 1):
                    m[r][c] -= factor * m[col][c]
    return [m[i][size] / m[i][i] for i in range(size)]


def _rounded(value: float) -> Decimal:
    return Decimal(str(round(value, 4))).normalize() + Decimal(0)


# --------------------------------------------------------------------------- portfolio


def fit_portfolio(
    observed: Sequence[Observation], *, start: PortfolioMargin | None = None
) -> PortfolioMargin | None:
    """The ``PortfolioMargin`` of a coarse-then-fine grid over a symmetric spot shock
    ``(−x, 0, x)`` and the base volatility (see the module docs), the other parameters
    kept from ``start``, that best matches the observed ``mm_required`` (squared relative
    gaps, on at most :data:`PORTFOLIO_SAMPLE` observations spread over the recording);
    ``None`` without observations."""
    start = start or PortfolioMargin()
    sample = _spread(observed, PORTFOLIO_SAMPLE)
    if not sample:
        return None
    coarse = _best_portfolio(start, sample, _COARSE_SHOCKS, _COARSE_VOLS)
    if coarse is None:
        return None
    shock, vol = coarse.spot_shocks[-1], coarse.base_volatility
    fine_shocks = tuple(
        shock + _FINE_SHOCK * n for n in range(-4, 5) if shock + _FINE_SHOCK * n > 0
    )
    fine_vols = tuple(vol + _FINE_VOL * n for n in range(-3, 4) if vol + _FINE_VOL * n > 0)
    return _best_portfolio(start, sample, fine_shocks, fine_vols) or coarse


def _best_portfolio(
    start: PortfolioMargin,
    sample: Sequence[Observation],
    shocks: Sequence[Decimal],
    vols: Sequence[Decimal],
) -> PortfolioMargin | None:
    best: tuple[float, PortfolioMargin] | None = None
    for shock in shocks:
        for vol in vols:
            candidate = attrs.evolve(
                start, spot_shocks=(-shock, Decimal(0), shock), base_volatility=vol
            )
            valued = _valued(candidate, sample)
            if len(valued) < len(sample):
                continue
            score = sum(_gap(f.mm_required, o.mm_required) ** 2 for o, f in valued)
            if best is None or score < best[0]:
                best = (score, candidate)
    return None if best is None else best[1]


def _spread(observed: Sequence[Observation], limit: int) -> list[Observation]:
    if len(observed) <= limit:
        return list(observed)
    step = len(observed) / limit
    return [observed[int(i * step)] for i in range(limit)]


# --------------------------------------------------------------------------- helpers


def _valued(model: Any, observed: Iterable[Observation]) -> list[tuple[Observation, Any]]:
    valued = []
    for observation in observed:
        try:
            facts = model.evaluate(observation.portfolio, observation.now)
        except LiqcoreError:
            continue
        valued.append((observation, facts))
    return valued


def _gap(model: Decimal, exchange: Decimal) -> float:
    return float(abs(model - exchange) / max(abs(exchange), Decimal(1)))


def _quantile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile by linear interpolation between closest ranks."""
    if len(ordered) == 1:
        return ordered[0]
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _describe(model: StandardMargin | PortfolioMargin | None) -> str:
    if model is None:
        return "a custom model (not calibrated)"
    if isinstance(model, StandardMargin):
        return (
            f"StandardMargin(rate={model.rate}, floor_rate={model.floor_rate}, "
            f"perp_rate={model.perp_rate})"
        )
    shocks = ", ".join(str(s) for s in model.spot_shocks)
    return (
        f"PortfolioMargin(spot_shocks=({shocks}), base_volatility={model.base_volatility}, "
        f"vol_shocks={tuple(str(v) for v in model.vol_shocks)}, "
        f"risk_free_rate={model.risk_free_rate}, "
        f"short_option_contingency={model.short_option_contingency})"
    )


def _toml(model: StandardMargin | PortfolioMargin) -> list[str]:
    if isinstance(model, StandardMargin):
        return [
            "as TOML:",
            "  [liqcore.standard_margin]",
            f'  rate = "{model.rate}"',
            f'  floor_rate = "{model.floor_rate}"',
            f'  perp_rate = "{model.perp_rate}"',
        ]
    shocks = ", ".join(f'"{s}"' for s in model.spot_shocks)
    return [
        "as TOML:",
        "  [liqcore.portfolio_margin]",
        f"  spot_shocks = [{shocks}]",
        f'  base_volatility = "{model.base_volatility}"',
    ]
