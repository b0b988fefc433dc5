"""liqshell.interpreter: one port call per command, outcomes translated per SPEC §9 step 5."""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from liqcore import (
    Alert,
    AlertCode,
    AuctionRequested,
    AuctionRequestFailed,
    CancelOrder,
    Command,
    Config,
    Health,
    MarginMode,
    OrderFailed,
    OrderRejected,
    PublishStateChange,
    StartAuction,
    StopAuction,
    StopRequestFailed,
    SubmitOrder,
)
from liqcore.machine import step
from liqcore.strategies import commands
from liqshell.interpreter import Execution, Interpreter, Outcome, OutcomeStatus
from liqshell.ports import NotSent, OutcomeUnknown, Unfinished
from liqshell.testing import FakeExchange, Fault, MemorySink, VirtualClock

W = "W"
SYMBOL = "BTC-20261231-100000-C"
CONFIG = Config(engine_response_timeout_ms=1_000)

SUBMIT = SubmitOrder(
    wallet=W,
    symbol=SYMBOL,
    price=Decimal("120.6"),
    size=Decimal("0.5"),
    client_id="liq-W-10-0",
    request_id="submit-1",
)
CANCEL = CancelOrder(wallet=W, order_id=7, client_id="risk", request_id="cancel-1")
START = StartAuction(wallet=W, request_id="start-1")
STOP = StopAuction(wallet=W, auction_id="a1", chain_start_time=5, request_id="stop-1")
ALERT = Alert(wallet=W, code=AlertCode.NO_HELPFUL_CLOSE, message="nothing helps")


def publish_command() -> PublishStateChange:
    health = Health(
        wallet=W,
        margin_mode=MarginMode.STANDARD,
        equity=Decimal(100),
        mm_required=Decimal(300),
        is_liquidatable=True,
    )
    _, emitted = step(None, health, (), 10)
    return next(c for c in emitted if isinstance(c, PublishStateChange))


class Bench:
    """An interpreter over a fake exchange, a sink and a virtual clock."""

    def __init__(self) -> None:
        self.clock = VirtualClock(1_000)
        self.exchange = FakeExchange(clock=self.clock)
        self.sink = MemorySink()
        self.registry = CollectorRegistry()
        self.interpreter = Interpreter(
            gateway=self.exchange,
            auctions=self.exchange,
            sink=self.sink,
            clock=self.clock,
            config=CONFIG,
            metrics=self.registry,
        )

    async def run(self, command: Command, *, version: int = 3, index: int = 0) -> Outcome:
        return await self.clock.drive(
            self.interpreter.interpret(command, version=version, index=index)
        )

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(f"liqshell_{name}", labels)
        return 0.0 if value is None else value


# --------------------------------------------------------------------------- submit


@pytest.mark.parametrize(
    ("fault", "status", "events", "metric"),
    [
        (None, OutcomeStatus.CONFIRMED, (), "acked"),
        (
            Fault.reject("price band"),
            OutcomeStatus.FAILED,
            (OrderRejected(client_id=SUBMIT.client_id, reason="price band"),),
            "rejected",
        ),
        (
            Fault.not_sent("refused"),
            OutcomeStatus.FAILED,
            (OrderFailed(client_id=SUBMIT.client_id, reason="refused"),),
            "failed",
        ),
        (Fault.outcome_unknown(), OutcomeStatus.UNKNOWN, (), "unknown"),
        (Fault.outcome_unknown(applied=True), OutcomeStatus.UNKNOWN, (), "unknown"),
        (Fault.delay(999), OutcomeStatus.CONFIRMED, (), "acked"),
        (Fault.delay(1_001), OutcomeStatus.UNKNOWN, (), "unknown"),
    ],
)
async def test_interpreter_submit_answers_map_to_outcomes(
    fault: Fault | None, status: OutcomeStatus, events: tuple[object, ...], metric: str
) -> None:
    """REJECTED → OrderRejected, NotSent → OrderFailed, unknown or a timeout → nothing."""
    bench = Bench()
    if fault is not None:
        bench.exchange.inject("submit", fault)
    outcome = await bench.run(SUBMIT, index=2)
    assert (outcome.status, outcome.events, outcome.index) == (status, events, 2)
    assert outcome.unfinished is (status is OutcomeStatus.UNKNOWN)
    assert bench.exchange.submits == [SUBMIT]
    assert bench.metric("orders_total", outcome=metric) == 1


async def test_interpreter_timeout_is_measured_on_the_clock() -> None:
    """A slow answer becomes unknown exactly at engine_response_timeout_ms."""
    bench = Bench()
    bench.exchange.inject("submit", Fault.delay(5_000))
    outcome = await bench.run(SUBMIT)
    assert outcome.status is OutcomeStatus.UNKNOWN
    assert bench.clock.now_ms() == 1_000 + CONFIG.engine_response_timeout_ms


# --------------------------------------------------------------------------- cancel


@pytest.mark.parametrize(
    ("fault", "status", "metric"),
    [
        (None, OutcomeStatus.CONFIRMED, "benign"),  # order 7 is not open: GONE
        (Fault.reject("order not found"), OutcomeStatus.CONFIRMED, "benign"),  # text only
        (Fault.reject("order already filled"), OutcomeStatus.CONFIRMED, "benign"),
        (Fault.reject("has already been completed"), OutcomeStatus.CONFIRMED, "benign"),
        (Fault.reject("engine busy"), OutcomeStatus.FAILED, "rejected"),
        (Fault.not_sent(), OutcomeStatus.FAILED, "failed"),
        (Fault.outcome_unknown(), OutcomeStatus.UNKNOWN, "unknown"),
    ],
)
async def test_interpreter_cancel_answers_map_to_outcomes(
    fault: Fault | None, status: OutcomeStatus, metric: str
) -> None:
    """CANCELED or a benign rejection are done; other rejections and NotSent failed;
    unknown is unknown. A cancel never yields an event."""
    bench = Bench()
    if fault is not None:
        bench.exchange.inject("cancel", fault)
    outcome = await bench.run(CANCEL)
    assert (outcome.status, outcome.events) == (status, ())
    assert bench.metric("cancels_total", outcome=metric) == 1


async def test_interpreter_cancel_of_open_order_is_confirmed() -> None:
    """A cancel of an open order is answered CANCELED and the order is gone."""
    bench = Bench()
    ack = await bench.exchange.submit(SUBMIT)
    assert ack.order_id is not None
    cancel = CancelOrder(wallet=W, order_id=ack.order_id, client_id=None, request_id="c9")
    outcome = await bench.run(cancel)
    assert outcome.status is OutcomeStatus.CONFIRMED
    assert bench.exchange.open_orders_of(W) == ()
    assert bench.metric("cancels_total", outcome="canceled") == 1


# --------------------------------------------------------------------------- auctions


async def test_interpreter_start_receipt_becomes_auction_requested() -> None:
    """A receipt is folded in as AuctionRequested with the receipt's fields."""
    bench = Bench()
    outcome = await bench.run(START)
    receipt = bench.exchange.running_auction(W)
    assert receipt is not None
    assert outcome.status is OutcomeStatus.CONFIRMED
    assert outcome.events == (
        AuctionRequested(
            request_id=START.request_id,
            auction_id=receipt.auction_id,
            tx_hash=receipt.tx_hash,
            margin_needed=receipt.margin_needed,
        ),
    )


@pytest.mark.parametrize(
    ("fault", "status", "event"),
    [
        (Fault.not_sent("no route"), OutcomeStatus.FAILED, "failed"),
        (Fault.outcome_unknown(), OutcomeStatus.UNKNOWN, None),
        (Fault.outcome_unknown(applied=True), OutcomeStatus.UNKNOWN, None),
    ],
)
async def test_interpreter_start_failures(
    fault: Fault, status: OutcomeStatus, event: str | None
) -> None:
    """NotSent → AuctionRequestFailed (retried next poll); unknown → nothing applied."""
    bench = Bench()
    bench.exchange.inject("start", fault)
    outcome = await bench.run(START)
    assert outcome.status is status
    expected = (
        (AuctionRequestFailed(request_id=START.request_id, reason="no route"),) if event else ()
    )
    assert outcome.events == expected


@pytest.mark.parametrize(
    ("fault", "status", "events"),
    [
        (None, OutcomeStatus.CONFIRMED, ()),
        (
            Fault.not_sent("down"),
            OutcomeStatus.FAILED,
            (StopRequestFailed(request_id=STOP.request_id, reason="down"),),
        ),
        (Fault.outcome_unknown(), OutcomeStatus.UNKNOWN, ()),
    ],
)
async def test_interpreter_stop_outcomes(
    fault: Fault | None, status: OutcomeStatus, events: tuple[object, ...]
) -> None:
    """A stop that was not sent is StopRequestFailed; a lost one is re-sent by step later."""
    bench = Bench()
    if fault is not None:
        bench.exchange.inject("stop", fault)
    outcome = await bench.run(STOP)
    assert (outcome.status, outcome.events) == (status, events)


# --------------------------------------------------------------------------- publish and alert


async def test_interpreter_publish_uses_wallet_version_index_key() -> None:
    """A publish goes to the sink keyed (wallet, version, index)."""
    bench = Bench()
    command = publish_command()
    outcome = await bench.run(command, version=12, index=4)
    assert outcome.status is OutcomeStatus.CONFIRMED
    assert bench.sink.published == [((W, 12, 4), command.change)]


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (NotSent("sink down"), OutcomeStatus.FAILED),
        (OutcomeUnknown("maybe"), OutcomeStatus.UNKNOWN),
        (RuntimeError("bug"), OutcomeStatus.UNKNOWN),
    ],
)
async def test_interpreter_publish_failure_is_unfinished(
    error: Exception, status: OutcomeStatus
) -> None:
    """A failed publish is logged, counted and kept unfinished (published after a restart)."""
    bench = Bench()
    bench.sink.fail(error)
    outcome = await bench.run(publish_command())
    assert outcome.status is status
    assert outcome.unfinished
    assert bench.sink.published == []
    assert bench.metric("publishes_total", outcome="failed") == 1


async def test_interpreter_alert_logged_at_warning_with_code(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An alert calls no port; it is logged at warning with its code and counted."""
    bench = Bench()
    with caplog.at_level(logging.WARNING, logger="liqshell.interpreter"):
        outcome = await bench.run(ALERT)
    assert outcome.status is OutcomeStatus.CONFIRMED
    assert bench.exchange.calls == []
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert getattr(record, "code", None) == AlertCode.NO_HELPFUL_CLOSE.value
    assert getattr(record, "wallet", None) == W
    assert bench.metric("alerts_total", code=AlertCode.NO_HELPFUL_CLOSE.value) == 1


async def test_interpreter_unexpected_port_error_is_unknown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An adapter error that was not translated may have left: the outcome is unknown and
    the error is logged with its traceback."""
    bench = Bench()
    bench.exchange.inject("submit", Fault.raising(ValueError("adapter bug")))
    with caplog.at_level(logging.ERROR, logger="liqshell.interpreter"):
        outcome = await bench.run(SUBMIT)
    assert outcome.status is OutcomeStatus.UNKNOWN
    assert any(r.exc_info for r in caplog.records)


# --------------------------------------------------------------------------- execute


async def test_interpreter_execute_runs_in_order_and_collects_events() -> None:
    """execute runs every command in order, one port call each, and folds events in order."""
    bench = Bench()
    bench.exchange.inject("submit", Fault.reject("no"))
    bench.exchange.inject("stop", Fault.not_sent("x"))
    sequence: list[Command] = [CANCEL, SUBMIT, ALERT, START, STOP, publish_command()]
    execution = await bench.clock.drive(bench.interpreter.execute(sequence, version=9))
    assert [o.command for o in execution.outcomes] == sequence
    assert [o.index for o in execution.outcomes] == list(range(len(sequence)))
    assert [c.method for c in bench.exchange.calls] == ["cancel", "submit", "start", "stop"]
    assert [type(e) for e in execution.events] == [
        OrderRejected,
        AuctionRequested,
        StopRequestFailed,
    ]
    assert execution.pending(9) == ()


def expected_status(command: Command, fault: str) -> OutcomeStatus:
    """SPEC §9 step 5 as a table (the fake cancels unknown orders as "not found")."""
    if isinstance(command, Alert) or fault == "none":
        return OutcomeStatus.CONFIRMED
    if fault == "unknown":
        return OutcomeStatus.UNKNOWN
    if fault == "reject" and isinstance(command, CancelOrder):
        return OutcomeStatus.FAILED  # "injected reject" is not benign
    return OutcomeStatus.FAILED


FAULTS = st.sampled_from(["none", "not_sent", "unknown", "reject"])


@settings(max_examples=60)
@given(st.lists(st.tuples(commands(wallet=W), FAULTS), max_size=8))
def test_interpreter_outcomes_follow_the_table_for_any_commands(
    script: list[tuple[Command, str]],
) -> None:
    """For any commands and faults: one outcome per command, in order, classified by the
    table; events only where the table has them; unfinished = unknown or unpublished."""

    async def scenario() -> list[Outcome]:
        bench = Bench()
        outcomes = []
        for index, (command, fault) in enumerate(script):
            bench.exchange.clear_faults()
            bench.sink.clear_faults()
            method = {
                SubmitOrder: "submit",
                CancelOrder: "cancel",
                StartAuction: "start",
                StopAuction: "stop",
            }.get(type(command))
            error = {"not_sent": NotSent("x"), "unknown": OutcomeUnknown("y")}.get(fault)
            if method is not None and fault == "reject" and method in ("submit", "cancel"):
                bench.exchange.inject(method, Fault.reject("injected reject"))
            elif method is not None and error is not None:
                bench.exchange.inject(method, Fault.raising(error))
            elif isinstance(command, PublishStateChange) and error is not None:
                bench.sink.fail(error)
            outcomes.append(await bench.run(command, version=5, index=index))
        return outcomes

    outcomes = asyncio.run(scenario())
    assert [o.command for o in outcomes] == [c for c, _ in script]
    for outcome, (command, fault) in zip(outcomes, script, strict=True):
        effective = fault
        if fault == "reject" and not isinstance(command, SubmitOrder | CancelOrder):
            effective = "none"
        assert outcome.status is expected_status(command, effective)
        publish_failed = isinstance(command, PublishStateChange) and effective != "none"
        assert outcome.unfinished is (outcome.status is OutcomeStatus.UNKNOWN or publish_failed)
        if outcome.events:
            assert isinstance(command, SubmitOrder | StartAuction | StopAuction)
        if outcome.status is OutcomeStatus.UNKNOWN:
            assert outcome.events == ()
    execution = Execution(outcomes=tuple(outcomes))
    assert execution.pending(5) == tuple(
        Unfinished(version=5, index=o.index, command=o.command) for o in outcomes if o.unfinished
    )
