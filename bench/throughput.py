"""Throughput benchmark: ``python -m bench.throughput`` (``nox -s bench``).

Writes ``docs/benchmarks/throughput.md`` and PNG plots beside it. Every figure is a ratio
or a rate measured in this one run, on the machine named in the report.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path

import attrs

from bench.common import best_ns, growth_exponent, machine, once_s, plot, table
from liqcore import (
    AccountState,
    Config,
    Health,
    Healthy,
    MarginMode,
    OpenOrder,
    Portfolio,
    Position,
    PreLiquidation,
    Quote,
    Side,
)
from liqcore.codec import from_json, to_json
from liqcore.machine import step, wallets_to_check
from liqcore.reduce_only import cancel_targets

OUT = Path("docs/benchmarks")
NOW = 1_790_000_000_000  # 2026-09
EXPIRIES = ("20261225", "20270129", "20270326")
STRIKES = tuple(range(80_000, 130_001, 5_000))


@attrs.frozen(kw_only=True)
class Floor:
    """The floor: one plain frozen attrs object with AccountState's six core fields."""

    wallet: str
    margin_mode: MarginMode
    phase: object
    equity: Decimal
    mm_required: Decimal
    updated_at: int


def _symbol(rng: random.Random) -> str:
    kind = rng.choice("CP")
    return f"BTC-{rng.choice(EXPIRIES)}-{rng.choice(STRIKES)}-{kind}"


def _portfolio(rng: random.Random, shorts: int, longs: int = 0) -> Portfolio:
    positions: dict[str, Position] = {}
    while len(positions) < shorts + longs:
        symbol = _symbol(rng)
        if symbol in positions:
            continue
        short = len(positions) < shorts
        amount = Decimal(rng.randint(1, 40)) / 4
        positions[symbol] = Position(
            symbol=symbol,
            amount=-amount if short else amount,
            entry_price=Decimal(rng.randint(500, 9_000)),
            unrealized_pnl=Decimal(rng.randint(-2_000, 2_000)),
        )
    return Portfolio(cash=Decimal(1_000_000), positions=positions, spot={"BTC": Decimal(105_000)})


def _quotes(portfolio: Portfolio) -> Mapping[str, Quote]:
    quotes = {}
    for symbol, position in portfolio.positions.items():
        mark = position.mark_price
        quotes[symbol] = Quote(
            best_bid=mark * Decimal("0.98"), best_ask=mark * Decimal("1.02"), mid=mark, theo=mark
        )
    return quotes


def _orders(rng: random.Random, portfolio: Portfolio, n: int, wallet: str, first_id: int) -> list[OpenOrder]:
    symbols = sorted(portfolio.positions) or ["BTC-20261225-100000-C"]
    return [
        OpenOrder(
            order_id=first_id + i,
            symbol=rng.choice(symbols),
            side=rng.choice((Side.BUY, Side.SELL)),
            price=Decimal(rng.randint(100, 9_000)),
            original_size=Decimal(rng.randint(1, 8)) / 4,
            remaining_size=Decimal(rng.randint(1, 4)) / 4,
            client_id=f"user-{wallet}-{i}",
            created_at=NOW - 10_000_000 + i,
        )
        for i in range(n)
    ]


@attrs.frozen(kw_only=True)
class Account:
    wallet: str
    state: AccountState
    health: Health
    orders: tuple[OpenOrder, ...]


def accounts(n: int, *, seed: int = 7, liquidating: float = 0.01) -> list[Account]:
    """``n`` accounts: ``1 - liquidating`` healthy, the rest in pre-liquidation."""
    rng = random.Random(seed)
    result = []
    for i in range(n):
        wallet = f"w{i:07d}"
        if rng.random() >= liquidating:
            portfolio = _portfolio(rng, shorts=rng.randint(0, 2), longs=rng.randint(1, 2))
            state = AccountState(wallet=wallet, margin_mode=MarginMode.STANDARD, updated_at=NOW - 5_000)
            health = Health(
                wallet=wallet,
                margin_mode=MarginMode.STANDARD,
                equity=Decimal(50_000),
                mm_required=Decimal(10_000),
                is_liquidatable=False,
                portfolio=portfolio,
            )
            result.append(Account(wallet=wallet, state=state, health=health, orders=()))
            continue
        portfolio = _portfolio(rng, shorts=rng.randint(1, 20), longs=rng.randint(0, 3))
        mm = Decimal(rng.randint(20_000, 80_000))
        open_liq = rng.random() < 0.5
        client_ids = (f"liq-{wallet}-{NOW - 5_000}-0",) if open_liq else ()
        orders = _orders(rng, portfolio, rng.randint(0, 50), wallet, first_id=i * 100)
        if open_liq:
            symbol = min(s for s, p in portfolio.positions.items() if p.amount < 0)
            orders.append(
                OpenOrder(
                    order_id=i * 100 + 99,
                    symbol=symbol,
                    side=Side.BUY,
                    price=Decimal(1_000),
                    original_size=Decimal(1),
                    remaining_size=Decimal(1),
                    client_id=client_ids[0],
                    created_at=NOW - 5_000,
                )
            )
        phase = PreLiquidation(
            entered_at=NOW - 20_000,
            mm_shortfall=mm / 10,
            target_equity=mm * Decimal("1.05"),
            escalation_deadline=NOW + 40_000,
            last_reprice_at=NOW - 5_000,
            active_order_request_ids=tuple(f"r{c}" for c in client_ids),
            active_order_client_ids=client_ids,
            bonus_bps=60,
        )
        state = AccountState(
            wallet=wallet, margin_mode=MarginMode.STANDARD, phase=phase, updated_at=NOW - 5_000
        )
        health = Health(
            wallet=wallet,
            margin_mode=MarginMode.STANDARD,
            equity=mm * Decimal("0.9"),
            mm_required=mm,
            is_liquidatable=True,
            portfolio=portfolio,
            quotes=_quotes(portfolio),
        )
        result.append(Account(wallet=wallet, state=state, health=health, orders=tuple(orders)))
    return result


def sweep(batch: Sequence[Account], config: Config) -> int:
    """One poll's decisions: ``wallets_to_check`` then ``step`` for every wallet."""
    by_wallet = {a.wallet: a for a in batch}
    portfolios = {a.wallet: a.health.portfolio for a in batch if a.health.portfolio is not None}
    states = {a.wallet: a.state for a in batch}
    commands = 0
    for wallet in wallets_to_check(portfolios, states):
        account = by_wallet[wallet]
        _, emitted = step(account.state, account.health, account.orders, NOW, config)
        commands += len(emitted)
    return commands


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-accounts", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    config = Config()
    out: list[str] = [
        "# Throughput",
        "",
        "Produced by `nox -s bench` (`python -m bench.throughput`); every figure below was "
        "measured in one run of it.",
        "",
        f"Machine: {machine()}.",
        "",
    ]

    # 1. Healthy fast path against the floor.
    wallet = "w-healthy"
    state = AccountState(wallet=wallet, margin_mode=MarginMode.STANDARD, updated_at=NOW - 5_000)
    health = Health(
        wallet=wallet,
        margin_mode=MarginMode.STANDARD,
        equity=Decimal(50_000),
        mm_required=Decimal(10_000),
        is_liquidatable=False,
        portfolio=_portfolio(random.Random(1), shorts=1, longs=1),
    )
    phase = Healthy()
    floor_ns = best_ns(
        lambda: Floor(
            wallet=wallet,
            margin_mode=MarginMode.STANDARD,
            phase=phase,
            equity=health.equity,
            mm_required=health.mm_required,
            updated_at=NOW,
        ),
        number=200_000,
    )
    step_ns = best_ns(lambda: step(state, health, (), NOW, config), number=200_000)
    ratio = step_ns / floor_ns
    out += [
        "## Healthy fast path",
        "",
        "`step` on a healthy, non-liquidatable account with no open orders, against the floor "
        "of building one plain frozen attrs object with the six fields of `AccountState` and "
        "no validators. Goal: ≤ 3×.",
        "",
        table(["measure", "value"], [["step / floor", f"{ratio:.2f}×"]]),
        "",
    ]
    print(f"healthy step / floor = {ratio:.2f}", file=sys.stderr)

    # 2. The 100k sweep.
    n = 10_000 if args.quick else 100_000
    batch = accounts(n)
    seconds = once_s(lambda: sweep(batch, config))
    healthy_only = [a for a in batch if isinstance(a.state.phase, Healthy)]
    healthy_seconds = once_s(lambda: sweep(healthy_only, config))
    out += [
        "## Sweep",
        "",
        f"`wallets_to_check` + `step` over {n:,} accounts: 99 % healthy, 1 % in "
        "pre-liquidation with 1–20 short options and 0–50 open orders, a reprice due (half of "
        "them still have a liquidation order open, so they cancel; the other half plan). "
        "Goal: well under one poll interval (5 s) on one core; ≤ 0.5 s per 100,000 accounts.",
        "",
        table(
            ["sweep", "accounts", "share of one 5 s poll", "accounts per second"],
            [
                ["mixed", f"{n:,}", f"{seconds / 5:.1%}", f"{n / seconds:,.0f}"],
                [
                    "healthy only",
                    f"{len(healthy_only):,}",
                    f"{healthy_seconds / 5:.1%}",
                    f"{len(healthy_only) / healthy_seconds:,.0f}",
                ],
            ],
        ),
        "",
        f"Per 100,000 accounts the mixed sweep takes {seconds * 100_000 / n:.3f} s "
        "on this machine (the one absolute figure, for the goal above).",
        "",
    ]
    print(f"sweep {n}: {seconds:.3f} s", file=sys.stderr)
    del batch, healthy_only

    # 3. Scaling curves.
    rows = []
    rng = random.Random(3)
    base = _portfolio(rng, shorts=20, longs=5)
    order_sizes = [10, 100, 1_000, 10_000] if not args.quick else [10, 100, 1_000]
    ct_times = []
    for size in order_sizes:
        orders = _orders(rng, base, size, "w", first_id=0)
        positions = {s: p.amount for s, p in base.positions.items()}
        ct_times.append(
            best_ns(
                lambda orders=orders, positions=positions: cancel_targets(
                    orders, positions, (), False, wallet="w"
                ),
                number=max(1, 20_000 // size),
                repeat=5,
            )
        )
    ct_exp = growth_exponent(order_sizes, ct_times)
    rows.append(["`cancel_targets` vs open orders", f"{order_sizes[0]}…{order_sizes[-1]}", f"{ct_exp:.2f}"])
    plot(
        str(OUT / "cancel_targets.png"),
        "cancel_targets vs open orders",
        "open orders",
        "ns per call",
        {"cancel_targets": (list(map(float, order_sizes)), ct_times)},
    )

    position_sizes = [1, 10, 50, 200] if not args.quick else [1, 10, 50]
    curves = {}
    for mode in (MarginMode.STANDARD, MarginMode.PORTFOLIO):
        times = []
        for size in position_sizes:
            portfolio = _portfolio(random.Random(size), shorts=size)
            mm = Decimal(20_000) * size
            wallet = f"w-{mode.value}-{size}"
            health = Health(
                wallet=wallet,
                margin_mode=mode,
                equity=mm * Decimal("0.9"),
                mm_required=mm,
                is_liquidatable=True,
                portfolio=portfolio,
                quotes=_quotes(portfolio),
            )
            times.append(
                best_ns(lambda health=health: step(None, health, (), NOW, config), number=3, repeat=3)
            )
        curves[mode.value] = (list(map(float, position_sizes)), times)
        rows.append(
            [
                f"`step` entering pre-liquidation ({mode.value} margin) vs short options",
                f"{position_sizes[0]}…{position_sizes[-1]}",
                f"{growth_exponent(position_sizes, times):.2f}",
            ]
        )
    plot(str(OUT / "step_positions.png"), "step (pre-liquidation) vs positions", "short options", "ns per step", curves)

    sweep_sizes = [1_000, 10_000, 100_000, 1_000_000]
    sweep_sizes = [s for s in sweep_sizes if s <= (10_000 if args.quick else args.max_accounts)]
    sweep_times = []
    for size in sweep_sizes:
        batch = accounts(size, seed=size)
        sweep_times.append(once_s(lambda batch=batch: sweep(batch, config), repeat=1 if size >= 1_000_000 else 3))
        del batch
    rows.append(
        ["sweep vs accounts", f"{sweep_sizes[0]:,}…{sweep_sizes[-1]:,}", f"{growth_exponent(sweep_sizes, sweep_times):.2f}"]
    )
    plot(
        str(OUT / "sweep.png"),
        "sweep vs accounts",
        "accounts",
        "seconds per sweep",
        {"sweep": (list(map(float, sweep_sizes)), sweep_times)},
    )
    out += [
        "## How cost grows",
        "",
        "Fitted exponent of time against size on a log-log scale (1.00 = linear).",
        "",
        table(["curve", "sizes", "growth exponent"], rows),
        "",
        "![cancel_targets](cancel_targets.png) ![step](step_positions.png) ![sweep](sweep.png)",
        "",
    ]

    # 4. Codec.
    sample = accounts(200, seed=11, liquidating=0.5)
    states = [a.state for a in sample]
    encoded = [to_json(s) for s in states]
    enc_ns = best_ns(lambda: [to_json(s) for s in states], number=5) / len(states)
    dec_ns = best_ns(lambda: [from_json(t, AccountState) for t in encoded], number=5) / len(states)
    commands = [c for a in sample for c in step(a.state, a.health, a.orders, NOW, config)[1]]
    encoded_commands = [to_json(c) for c in commands]
    cmd_enc_ns = best_ns(lambda: [to_json(c) for c in commands], number=5) / max(1, len(commands))
    cmd_dec_ns = best_ns(
        lambda: [from_json(t, type(c)) for t, c in zip(encoded_commands, commands, strict=True)],
        number=5,
    ) / max(1, len(commands))
    out += [
        "## Codec",
        "",
        table(
            ["operation", "objects per second"],
            [
                ["`to_json(AccountState)`", f"{1e9 / enc_ns:,.0f}"],
                ["`from_json(…, AccountState)`", f"{1e9 / dec_ns:,.0f}"],
                [f"`to_json(command)` ({len(commands)} mixed)", f"{1e9 / cmd_enc_ns:,.0f}"],
                ["`from_json(…, command type)`", f"{1e9 / cmd_dec_ns:,.0f}"],
            ],
        ),
        "",
    ]
    (OUT / "throughput.md").write_text("\n".join(out), encoding="utf-8")
    print(f"wrote {OUT / 'throughput.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
