# %% [markdown]
# # Walkthrough: one account through partial liquidation
#
# This page is a notebook (a jupytext "percent" script, `docs/examples/walkthrough.py`).
# The docs build executes it and shows its real output, and the test suite runs it in a
# Jupyter kernel, so it cannot go stale.
#
# We follow the seed's test account (SPEC §8) through **entry → reprice → recovery**,
# playing the shell by hand: observe, call `liqcore.step`, "execute" the commands, report
# outcomes with `liqcore.apply`, observe again.

# %%
from decimal import Decimal

from liqcore import (
    Alert,
    CancelOrder,
    Command,
    Config,
    Health,
    MarginMode,
    OpenOrder,
    OrderRejected,
    Portfolio,
    Position,
    PreLiquidation,
    PublishStateChange,
    Quote,
    Side,
    SubmitOrder,
    apply,
    codec,
    next_wakeup,
    step,
)

WALLET = "W"
SYMBOL = "BTC-20261231-100000-C"

# Four short calls at 100, BTC at 105 000, a book of 149 / 150 and no theoretical price.
portfolio = Portfolio(
    cash=Decimal(100),
    positions={SYMBOL: Position(symbol=SYMBOL, amount=Decimal(-4), entry_price=Decimal(100))},
    spot={"BTC": Decimal(105_000)},
)
quotes = {SYMBOL: Quote(best_bid=Decimal(149), best_ask=Decimal(150), mid=Decimal("149.5"))}


def health(*, equity: int, mm_required: int, is_liquidatable: bool) -> Health:
    """What the exchange's margin engine says about the wallet this poll."""
    return Health(
        wallet=WALLET,
        margin_mode=MarginMode.STANDARD,
        equity=Decimal(equity),
        mm_required=Decimal(mm_required),
        is_liquidatable=is_liquidatable,
        portfolio=portfolio,
        quotes=quotes,
    )


liquidatable = health(equity=100, mm_required=300, is_liquidatable=True)
recovered = health(equity=420, mm_required=300, is_liquidatable=False)

# The user's own resting order: a SELL that would increase the short (not reduce-only).
user_order = OpenOrder(
    order_id=7,
    symbol=SYMBOL,
    side=Side.SELL,
    price=Decimal(95),
    original_size=Decimal(1),
    remaining_size=Decimal(1),
    client_id="risk-increasing",
    created_at=1,
)

# The seed harness's tuning: the bonus ramps from 50 to 500 bps over one minute.
config = Config(partial_bonus_max_bps=500, partial_bonus_ramp_ms=60_000)


def show(commands: tuple[Command, ...]) -> None:
    """Print one line per command, in execution order."""
    for command in commands:
        match command:
            case PublishStateChange(change=change):
                print(
                    f"PublishStateChange  {change.previous_phase} -> {change.new_phase}"
                    f"  (projection_changed={change.projection_changed})"
                )
            case CancelOrder(order_id=order_id, client_id=client_id):
                print(f"CancelOrder         order {order_id} ({client_id})")
            case SubmitOrder(symbol=symbol, size=size, price=price, client_id=client_id):
                print(f"SubmitOrder         BUY {size} {symbol} @ {price}  [{client_id}]")
            case Alert(code=code, message=message):
                print(f"Alert               {code.name}: {message}")
            case _:
                print(command)


# %% [markdown]
# ## 1. Entry (t = 10 000 ms)
#
# The wallet is not tracked yet (`state=None`). The engine says it is liquidatable: equity
# 100 against 300 of maintenance margin, a shortfall of 200, below the target of
# 300 × 1.05 = 315. `step` enters **PreLiquidation**, publishes the entry, cancels the
# user's risk-increasing SELL, and — in the same call — plans a reduce-only BUY.
#
# The price: the reference is the best ask, 150, capped by the reference band at fair
# value × 1.2 = 100 × 1.2 = 120 (there is no theoretical price, so fair value is the mark,
# 100), plus the entry bonus of 50 bps: 120 × 1.005 = **120.6**. (The seed would pay the ask
# plus the bonus, 150.75.)

# %% tags=["entry"]
state, commands = step(None, liquidatable, [user_order], 10_000, config)
show(commands)

# %% [markdown]
# The seed's health numbers are made up by hand, while planning measures what a close
# changes with the configured margin model (here the reference `StandardMargin`); when the
# model's own view of the portfolio is far from `Health`'s, `step` says so with an
# `Alert(MARGIN_MODEL_MISMATCH)` and still plans from `Health`'s numbers. An alert is a
# diagnostic for the shell to log and count; it changes nothing.
#
# The new state carries everything the next step needs:

# %%
phase = state.phase
assert isinstance(phase, PreLiquidation)
print("phase              ", type(phase).__name__)
print("mm_shortfall       ", phase.mm_shortfall)
print("target_equity      ", phase.target_equity)
print("bonus_bps          ", phase.bonus_bps)
print("last_reprice_at    ", phase.last_reprice_at)
print("escalation_deadline", phase.escalation_deadline)
print("active client ids  ", phase.active_order_client_ids)
print("next wake-up       ", next_wakeup(state, config))

# %% [markdown]
# `next_wakeup` tells the shell when to step the wallet again without waiting for the next
# full poll: the next reprice is due at 10 000 + 5 000 ms.
#
# ## 2. Reprice (t = 15 000 ms)
#
# The shell executed the commands: the user's order is gone, our BUY rests on the book
# unfilled. The account is still liquidatable and a reprice is due — but a liquidation
# order is still open, so `step` only cancels it and keeps tracking it. It never has two
# sets of liquidation orders live at once.

# %%
(submitted,) = [command for command in commands if isinstance(command, SubmitOrder)]
resting = OpenOrder(
    order_id=1_000,
    symbol=submitted.symbol,
    side=submitted.side,
    price=submitted.price,
    original_size=submitted.size,
    remaining_size=submitted.size,
    client_id=submitted.client_id,
    created_at=10_000,
)
state, commands = step(state, liquidatable, [resting], 15_000, config)
show(commands)

# %% [markdown]
# The engine confirms the cancel, so the shell observes and steps the wallet once more at
# once (a fresh `now`). With no liquidation order open, `step` plans again; the bonus has
# ramped to 50 + 450 × 5 001 / 60 000 → 87 bps, so the new limit is 120 × 1.0087.

# %%
state, commands = step(state, liquidatable, [], 15_001, config)
show(commands)

# %% [markdown]
# ### An outcome, folded in with `apply`
#
# Had the engine rejected that order, the shell would report it and `apply` would drop the
# order's ids — the next reprice then starts from a clean slate. `apply` returns a new
# state and never emits anything:

# %%
assert isinstance(state.phase, PreLiquidation)
(client_id,) = state.phase.active_order_client_ids
rejected = apply(state, OrderRejected(client_id=client_id, reason="forced rejection"), 15_002)
assert isinstance(rejected.phase, PreLiquidation)
print("tracked before:", state.phase.active_order_client_ids)
print("tracked after: ", rejected.phase.active_order_client_ids)

# %% [markdown]
# ## 3. Recovery (t = 20 000 ms)
#
# In our story the order was accepted and filled, and the engine now reports equity 420
# against 300: above the target of 315. No liquidation order is open, so the account
# leaves pre-liquidation.

# %%
state, commands = step(state, recovered, [], 20_000, config)
show(commands)
print("phase:", type(state.phase).__name__, "| next wake-up:", next_wakeup(state, config))

# %% [markdown]
# ## Commands are data
#
# Every command is a frozen value the shell interprets and records. `liqcore.codec` turns
# it into JSON — Decimals as strings, a stable `type` tag — and back:

# %%
text = codec.to_json(submitted)
print(text)
assert codec.from_json(text, SubmitOrder) == submitted

# %% [markdown]
# And `step` is a pure function: the same observation gives the same decision, request
# ids included, on every machine — which is what makes replaying a recorded log exact.

# %%
first = step(None, liquidatable, [user_order], 10_000, config)
again = step(None, liquidatable, [user_order], 10_000, config)
print("same decision:", first == again)
