"""The interpreter: executes ``step``'s commands against the ports, deciding nothing.

A flat ``match`` over the command union, one port call per arm, each under
``Clock.wait_for(…, engine_response_timeout_ms)`` (a timeout is an unknown outcome). What
comes back is translated into the events to fold with ``liqcore.apply`` and an
:class:`Outcome` per command (SPEC §9, the poll, step 5):

=============  ==============================  ========================  ================
command        answer                          event                     status
=============  ==============================  ========================  ================
submit         ``ACKED``                       —                         confirmed
submit         ``REJECTED``                    ``OrderRejected``         failed
submit         :class:`NotSent`                ``OrderFailed``           failed
cancel         ``CANCELED``, ``GONE``, benign  —                         confirmed
cancel         other rejection, NotSent        — (logged, counted)       failed
start auction  receipt                         ``AuctionRequested``      confirmed
start auction  NotSent                         ``AuctionRequestFailed``  failed
stop auction   returned                        —                         confirmed
stop auction   NotSent                         ``StopRequestFailed``     failed
publish        returned                        —                         confirmed
publish        any failure                     — (unfinished)            failed / unknown
alert          (logged at warning)             —                         confirmed
any            OutcomeUnknown, timeout, error  —                         unknown
=============  ==============================  ========================  ================

An outcome is *unfinished* — kept in the store's pending list, reported on restart — when
it is unknown, or when a publish failed (it is published again after a restart).
"""

from __future__ import annotations

import contextvars
import enum
from collections.abc import Awaitable, Sequence
from typing import TypeVar, assert_never

import attrs

from liqcore import (
    Alert,
    AuctionRequested,
    AuctionRequestFailed,
    CancelOrder,
    Command,
    Config,
    Event,
    OrderFailed,
    OrderRejected,
    PublishStateChange,
    StartAuction,
    StopAuction,
    StopRequestFailed,
    SubmitOrder,
)
from liqcore.reduce_only import is_benign_cancel_rejection
from liqshell.logs import command_request_id, fields, get_logger
from liqshell.metrics import NullMetrics, metrics_from
from liqshell.ports import (
    Answer,
    AnswerStatus,
    AuctionExecutor,
    Clock,
    EventSink,
    NotSent,
    OrderAnswer,
    OrderGateway,
    OutcomeUnknown,
    Unfinished,
)

__all__ = ["Execution", "Interpreter", "Outcome", "OutcomeStatus", "answers_of"]

T = TypeVar("T")

_log = get_logger("interpreter")


class OutcomeStatus(enum.Enum):
    """What is known about a command's effect."""

    CONFIRMED = "confirmed"
    """It happened (or, for a benign cancel rejection, needs nothing more)."""
    FAILED = "failed"
    """It provably did not happen (rejected, or never sent)."""
    UNKNOWN = "unknown"
    """It may or may not have happened; the next snapshot tells."""


@attrs.frozen(kw_only=True)
class Outcome:
    """The outcome of the command at ``index`` of a decision."""

    index: int
    command: Command
    status: OutcomeStatus
    events: tuple[Event, ...] = ()
    unfinished: bool = False
    detail: str = ""
    answer: OrderAnswer | None = None
    """The order engine's answer to a submit or a cancel, as it came (``None``: none)."""


@attrs.frozen(kw_only=True)
class Execution:
    """The outcomes of one decision's commands, in order."""

    outcomes: tuple[Outcome, ...] = ()

    @property
    def events(self) -> tuple[Event, ...]:
        """The events to fold with ``liqcore.apply``, in command order."""
        return tuple(event for outcome in self.outcomes for event in outcome.events)

    def pending(self, version: int) -> tuple[Unfinished, ...]:
        """The unfinished commands, as the store keeps them for the decision ``version``."""
        return tuple(
            Unfinished(version=version, index=outcome.index, command=outcome.command)
            for outcome in self.outcomes
            if outcome.unfinished
        )


class Interpreter:
    """Executes commands through the ports; see the module docstring for the rules."""

    def __init__(
        self,
        *,
        gateway: OrderGateway,
        auctions: AuctionExecutor,
        sink: EventSink,
        clock: Clock,
        config: Config,
        metrics: object = None,
    ) -> None:
        self._gateway = gateway
        self._auctions = auctions
        self._sink = sink
        self._clock = clock
        self._config = config
        self._metrics: NullMetrics = metrics_from(metrics)

    async def execute(
        self, commands: Sequence[Command], *, version: int, phase: str | None = None
    ) -> Execution:
        """Execute ``commands`` in order (the decision committed as ``version``, which left
        the wallet in ``phase``: both go into the log records)."""
        outcomes = [
            await self.interpret(command, version=version, index=index, phase=phase)
            for index, command in enumerate(commands)
        ]
        return Execution(outcomes=tuple(outcomes))

    async def interpret(
        self, command: Command, *, version: int, index: int, phase: str | None = None
    ) -> Outcome:
        """Execute one command: the ``index``-th of the decision committed as ``version``
        (together with the wallet, the publish key); its log records carry ``version`` and
        the wallet's ``phase``."""
        token = _decision.set((phase, version))
        try:
            return await self._interpret(command, version=version, index=index)
        finally:
            _decision.reset(token)

    async def _interpret(self, command: Command, *, version: int, index: int) -> Outcome:
        try:
            match command:
                case CancelOrder():
                    return await self._cancel(command, index)
                case SubmitOrder():
                    return await self._submit(command, index)
                case StartAuction():
                    return await self._start(command, index)
                case StopAuction():
                    return await self._stop(command, index)
                case PublishStateChange():
                    return await self._publish(command, version, index)
                case Alert():
                    return self._alert(command, index)
                case _:
                    assert_never(command)
        except OutcomeUnknown as error:
            return self._unknown(command, index, str(error) or type(error).__name__)
        except Exception as error:
            # An adapter that failed to translate its error: the request may have left.
            _log.exception(
                "unexpected error executing %s; its outcome is unknown",
                type(command).__name__,
                extra=_fields(wallet=_wallet(command), request_id=command_request_id(command)),
            )
            return self._unknown(command, index, f"{type(error).__name__}: {error}")

    async def _call(self, awaitable: Awaitable[T]) -> T:
        timeout = self._config.engine_response_timeout_ms
        try:
            return await self._clock.wait_for(awaitable, timeout)
        except TimeoutError as error:
            raise OutcomeUnknown(f"no answer within {timeout} ms") from error

    # ---------------------------------------------------------------- the arms

    async def _submit(self, command: SubmitOrder, index: int) -> Outcome:
        try:
            answer = await self._call(self._gateway.submit(command))
        except NotSent as error:
            self._metrics.order("failed")
            self._warn("submit not sent", command, error)
            failed = OrderFailed(client_id=command.client_id, reason=str(error))
            return Outcome(
                index=index, command=command, status=OutcomeStatus.FAILED, events=(failed,)
            )
        if answer.status is AnswerStatus.ACKED:
            self._metrics.order("acked")
            _log.info(
                "wallet %s: submitted %s %s @ %s as %s",
                command.wallet,
                command.size,
                command.symbol,
                command.price,
                command.client_id,
                extra=_fields(wallet=command.wallet, request_id=command.request_id),
            )
            return Outcome(
                index=index, command=command, status=OutcomeStatus.CONFIRMED, answer=answer
            )
        if answer.status is AnswerStatus.REJECTED:
            self._metrics.order("rejected")
            self._warn("submit rejected", command, answer.reason)
            event = OrderRejected(client_id=command.client_id, reason=answer.reason)
            return Outcome(
                index=index,
                command=command,
                status=OutcomeStatus.FAILED,
                events=(event,),
                detail=answer.reason,
                answer=answer,
            )
        raise OutcomeUnknown(f"submit answered {answer.status.value!r}")

    async def _cancel(self, command: CancelOrder, index: int) -> Outcome:
        try:
            answer = await self._call(self._gateway.cancel(command))
        except NotSent as error:
            self._metrics.cancel("failed")
            self._warn("cancel not sent", command, error)
            return Outcome(
                index=index, command=command, status=OutcomeStatus.FAILED, detail=str(error)
            )
        if answer.status is AnswerStatus.CANCELED:
            self._metrics.cancel("canceled")
            return Outcome(
                index=index, command=command, status=OutcomeStatus.CONFIRMED, answer=answer
            )
        if answer.status is AnswerStatus.GONE:  # no longer open: nothing left to cancel
            self._metrics.cancel("benign")
            return Outcome(
                index=index,
                command=command,
                status=OutcomeStatus.CONFIRMED,
                detail=answer.reason,
                answer=answer,
            )
        if answer.status is AnswerStatus.REJECTED:
            # The fallback for engines that only send text ("order not found", …).
            if is_benign_cancel_rejection(answer.reason):
                self._metrics.cancel("benign")
                return Outcome(
                    index=index,
                    command=command,
                    status=OutcomeStatus.CONFIRMED,
                    detail=answer.reason,
                    answer=answer,
                )
            self._metrics.cancel("rejected")
            self._warn("cancel rejected", command, answer.reason)
            return Outcome(
                index=index,
                command=command,
                status=OutcomeStatus.FAILED,
                detail=answer.reason,
                answer=answer,
            )
        raise OutcomeUnknown(f"cancel answered {answer.status.value!r}")

    async def _start(self, command: StartAuction, index: int) -> Outcome:
        try:
            receipt = await self._call(self._auctions.start(command))
        except NotSent as error:
            self._metrics.auction_request("failed")
            self._warn("start auction not sent", command, error)
            failed = AuctionRequestFailed(request_id=command.request_id, reason=str(error))
            return Outcome(
                index=index, command=command, status=OutcomeStatus.FAILED, events=(failed,)
            )
        requested = AuctionRequested(
            request_id=command.request_id,
            auction_id=receipt.auction_id,
            tx_hash=receipt.tx_hash,
            margin_needed=receipt.margin_needed,
        )
        self._metrics.auction_request("receipt")
        _log.warning(
            "wallet %s: full auction %s requested",
            command.wallet,
            receipt.auction_id,
            extra=_fields(wallet=command.wallet, request_id=command.request_id),
        )
        return Outcome(
            index=index, command=command, status=OutcomeStatus.CONFIRMED, events=(requested,)
        )

    async def _stop(self, command: StopAuction, index: int) -> Outcome:
        try:
            await self._call(self._auctions.stop(command))
        except NotSent as error:
            self._metrics.stop_request("failed")
            self._warn("stop auction not sent", command, error)
            failed = StopRequestFailed(request_id=command.request_id, reason=str(error))
            return Outcome(
                index=index, command=command, status=OutcomeStatus.FAILED, events=(failed,)
            )
        self._metrics.stop_request("confirmed")
        _log.info(
            "wallet %s: auction %s stop requested",
            command.wallet,
            command.auction_id,
            extra=_fields(wallet=command.wallet, request_id=command.request_id),
        )
        return Outcome(index=index, command=command, status=OutcomeStatus.CONFIRMED)

    async def _publish(self, command: PublishStateChange, version: int, index: int) -> Outcome:
        change = command.change
        key = (change.wallet, version, index)
        try:
            await self._call(self._sink.publish(change, key=key))
        except Exception as error:
            status = OutcomeStatus.FAILED if isinstance(error, NotSent) else OutcomeStatus.UNKNOWN
            self._metrics.publish("failed")
            _log.warning(
                "wallet %s: publish of %s → %s with key %s failed (published again after a "
                "restart): %s",
                change.wallet,
                change.previous_phase,
                change.new_phase,
                key,
                error,
                extra=_fields(wallet=change.wallet, phase=change.new_phase, key=key),
            )
            return Outcome(
                index=index, command=command, status=status, unfinished=True, detail=str(error)
            )
        self._metrics.publish("published")
        return Outcome(index=index, command=command, status=OutcomeStatus.CONFIRMED)

    def _alert(self, command: Alert, index: int) -> Outcome:
        self._metrics.alert(command.code.value)
        _log.warning(
            "wallet %s: alert %s: %s",
            command.wallet,
            command.code.value,
            command.message,
            extra=_fields(wallet=command.wallet, code=command.code.value),
        )
        return Outcome(index=index, command=command, status=OutcomeStatus.CONFIRMED)

    # ---------------------------------------------------------------- helpers

    def _unknown(self, command: Command, index: int, detail: str) -> Outcome:
        match command:
            case SubmitOrder():
                self._metrics.order("unknown")
            case CancelOrder():
                self._metrics.cancel("unknown")
            case StartAuction():
                self._metrics.auction_request("unknown")
            case StopAuction():
                self._metrics.stop_request("unknown")
            case PublishStateChange():
                self._metrics.publish("failed")
            case Alert():
                pass
            case _:
                assert_never(command)
        _log.warning(
            "wallet %s: outcome of %s unknown (reconciled from the next snapshot): %s",
            _wallet(command),
            type(command).__name__,
            detail,
            extra=_fields(wallet=_wallet(command), request_id=command_request_id(command)),
        )
        return Outcome(
            index=index,
            command=command,
            status=OutcomeStatus.UNKNOWN,
            unfinished=True,
            detail=detail,
        )

    def _warn(
        self,
        what: str,
        command: CancelOrder | SubmitOrder | StartAuction | StopAuction,
        why: object,
    ) -> None:
        _log.warning(
            "wallet %s: %s: %s",
            command.wallet,
            what,
            why,
            extra=_fields(wallet=command.wallet, request_id=command.request_id),
        )


_decision: contextvars.ContextVar[tuple[str | None, int | None]] = contextvars.ContextVar(
    "liqshell_interpreter_decision", default=(None, None)
)
"""The phase and version of the decision whose command is being interpreted (a context
variable: the watcher interprets several wallets' commands at once, each in its own task)."""


def _fields(**given: object) -> dict[str, object]:
    """:func:`~liqshell.logs.fields` with the decision's phase and version unless given."""
    phase, version = _decision.get()
    given.setdefault("phase", phase)
    given.setdefault("version", version)
    return fields(**given)  # type: ignore[arg-type]


def _wallet(command: Command) -> str:
    match command:
        case PublishStateChange():
            return command.change.wallet
        case CancelOrder() | SubmitOrder() | StartAuction() | StopAuction() | Alert():
            return command.wallet
        case _:
            assert_never(command)


def answers_of(execution: Execution) -> tuple[Answer, ...]:
    """Each command's answer, as an ``OUTCOMES`` record keeps it."""
    answers: list[Answer] = []
    for outcome in execution.outcomes:
        answer = outcome.answer
        auction_id = next(
            (e.auction_id for e in outcome.events if type(e) is AuctionRequested), None
        )
        answers.append(
            Answer(
                index=outcome.index,
                request_id=getattr(outcome.command, "request_id", ""),
                outcome=outcome.status.value,
                answer="" if answer is None else answer.status.value,
                order_id=None if answer is None else answer.order_id,
                auction_id=auction_id,
                reason=outcome.detail or ("" if answer is None else answer.reason),
            )
        )
    return tuple(answers)
