"""The gateway's lower layer: one broker call with the retry policy and its journal row, and the reads that
journal the broker's view of an order. :class:`runner.engine.gateway.Gateway` builds the write side on it
(journal-before-send, resolution, cancel / modify verified by reading back)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from runner.brokers.base import Broker, ClientIdRegistry
from runner.engine.events import EngineEvent, EventKind, Observer
from runner.engine.records import _json
from runner.engine.risk import QuoteSource, RiskChecker
from runner.errors import (
    AdapterFault,
    AuthExpired,
    BrokerError,
    Malformed,
    NotFound,
    OutcomeUnknown,
    Retryable,
    WaitTooLong,
)
from runner.journal.store import Journal
from runner.journal.tables import Resolution
from runner.logs import redact
from runner.model import IllegalTransition, Instrument, Order, OrderRequest, OrderStatus, Position

if TYPE_CHECKING:
    from runner.clock import Clock

T = TypeVar("T")

UNSETTLED = frozenset({OrderStatus.PENDING_NEW, OrderStatus.UNKNOWN})
NON_TERMINAL = tuple(s for s in OrderStatus if not s.is_terminal)  # an order that may still change


_WRITES = frozenset({"place", "modify", "cancel", "place_multileg"})  # calls that change the book


@dataclass(frozen=True, slots=True)
class Tuning:
    max_attempts: int = 5  # per call, for Retryable / AuthExpired
    backoff_base: float = 0.2  # seconds, doubled per attempt
    backoff_cap: float = 5.0
    # Longest Retry-After honoured (seconds): a broker asking for more (a day, garbage read as huge)
    # fails the call with WaitTooLong instead of parking the step with a PENDING intent.
    max_retry_after: float = 30.0
    poll_interval: float = 0.25  # read-back polling
    lookup_attempts: int = 4  # lookups after OutcomeUnknown before concluding "never arrived"
    verify_timeout: float = 10.0  # default read-back window for cancel / modify
    market_fill_wait: float = 5.0  # how long a place step watches a MARKET order for its fill
    # A lookup miss proves absence only this long (clock seconds) after the last send: brokers that find
    # our orders by scanning the day's book can lag. Brokers refusing a repeated client id need no wait.
    absent_after: float = 60.0
    # Unsettled intents older than this are no longer looked up on every start: brokers keep only the
    # day's book, so after a long weekend a lookup cannot tell anything new. They stay UNKNOWN in the
    # journal (``runner history`` shows them) for an operator to settle.
    reconcile_horizon: float = 4 * 86400.0


@dataclass
class BrokerCalls:
    """The fields of a :class:`runner.engine.gateway.Gateway` and its calls to the broker: retried,
    journaled, read back."""

    broker: Broker
    journal: Journal
    clock: Clock
    run_id: str
    account: str
    risk: RiskChecker | None = None
    tuning: Tuning = field(default_factory=Tuning)
    observer: Observer | None = None
    log: Any = None
    step_id: str | None = None  # set by the engine while a step runs
    deadline: dt.datetime | None = None  # set by a caller whose step must end by then: no wait passes it
    last_prices: dict[str, Decimal] = field(default_factory=dict)
    # Client ids known to be journaled (intents are never deleted, so a hit never goes stale).
    _ours: set[str] = field(default_factory=set, repr=False)
    # slot -> its request built while preparing (the engine's staged first order): not rebuilt at the instant
    staged: dict[str, OrderRequest] = field(default_factory=dict, repr=False)

    # --- low level: one broker call with retries and a journal row ---------------------------------

    def _emit(self, kind: EventKind, message: str = "", order: Order | None = None) -> None:
        if self.observer is not None:
            self.observer(EngineEvent(kind, self.clock.now(), self.step_id, message, order))

    def _call_row(
        self,
        method: str,
        cid: str | None,
        request: Any,
        response: Any,
        error: BaseException | None,
        started: float,
    ) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "step_id": self.step_id,
            "client_order_id": cid,
            "method": method,
            "request": _json(request) if request is not None else None,
            "response": _json(response) if response is not None else None,
            "error": type(error).__name__ if error else None,
            "error_message": redact(str(error)) if error else None,  # errors may echo a token
            "at": self.clock.now(),
            "duration_us": int((time.perf_counter() - started) * 1e6),
        }

    async def call(
        self,
        method: str,
        fn: Callable[[], Awaitable[T]],
        *,
        cid: str | None = None,
        request: Any = None,
        record: bool = True,
    ) -> tuple[T, dict[str, Any]]:
        """Run ``fn`` with the retry policy. Returns the result and its (unwritten) broker_calls row;
        failed attempts are journaled here. OutcomeUnknown and Rejected propagate to the caller."""
        relogged = False
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            try:
                result = await fn()
            except Retryable as exc:
                self.journal.record_call(self._call_row(method, cid, request, None, exc, started))
                if attempt >= self.tuning.max_attempts:
                    raise
                delay = (
                    exc.retry_after
                    if exc.retry_after is not None
                    else min(self.tuning.backoff_cap, self.tuning.backoff_base * 2 ** (attempt - 1))
                )
                self._check_wait(method, delay, exc)
                self._log("broker_retry", method=method, client_order_id=cid, error=str(exc), delay=delay)
                await self.clock.sleep(delay)
                continue
            except AuthExpired as exc:
                self.journal.record_call(self._call_row(method, cid, request, None, exc, started))
                if relogged:
                    raise
                relogged = True
                self._log("broker_relogin", method=method)
                await self.broker.connect()
                continue
            except Malformed as exc:
                self.journal.record_call(self._call_row(method, cid, request, None, exc, started))
                if method not in _WRITES:
                    raise
                # an unreadable reply to a write says nothing of whether it took effect: look it up
                raise AdapterFault(f"{method}: unreadable reply: {exc}") from exc
            except BrokerError as exc:
                self.journal.record_call(self._call_row(method, cid, request, None, exc, started))
                raise
            except Exception as exc:  # an adapter's bug or unreadable reply: into the taxonomy, ambiguous
                fault = AdapterFault(f"{method}: unexpected {type(exc).__name__} in the adapter: {exc}")
                self.journal.record_call(self._call_row(method, cid, request, None, fault, started))
                raise fault from exc
            response = (
                result
                if isinstance(result, Order)
                or (isinstance(result, list | tuple) and all(isinstance(o, Order) for o in result))
                else None
            )
            row = self._call_row(method, cid, request, response, None, started)
            if record:
                self.journal.record_call(row)
            return result, row

    def _check_wait(self, method: str, delay: float, exc: Retryable) -> None:
        """Refuse a wait past the maximum Retry-After or past :attr:`deadline`: the call fails now."""
        if exc.retry_after is not None and not delay <= self.tuning.max_retry_after:  # NaN too
            why = f"Retry-After {delay:g}s exceeds the maximum {self.tuning.max_retry_after:g}s"
        elif self.deadline is not None and self.clock.now() + dt.timedelta(seconds=delay) > self.deadline:
            source = "Retry-After" if exc.retry_after is not None else "backoff"
            why = f"{source} {delay:g}s would pass the step's deadline {self.deadline.isoformat()}"
        else:
            return
        raise WaitTooLong(
            f"{method}: {why}; not waiting ({exc})",
            code=exc.code,
            broker=exc.broker,
            retry_after=exc.retry_after,
        ) from exc

    def _log(self, event: str, **kw: Any) -> None:
        if self.log is not None:
            self.log.info(event, **kw)

    def note(self, message: str, *, level: str = "info", cid: str | None = None) -> None:
        self.journal.record_event(
            self.run_id,
            "note",
            message,
            self.clock.now(),
            level=level,
            step_id=self.step_id,
            client_order_id=cid,
        )
        self._emit(EventKind.NOTE, message)

    def _record(
        self, order: Order, row: dict[str, Any] | None = None, resolution: Resolution = Resolution.CONFIRMED
    ) -> Order:
        """Journal the broker's view of an order (ours or not). An illegal transition is recorded as an
        error and the broker's report is still returned: the broker is the truth, the journal the record."""
        try:
            self.journal.record_order(order, self.clock.now(), call=row, resolution=resolution)
        except IllegalTransition as exc:
            if self.log is not None:
                self.log.error("illegal_transition", client_order_id=order.client_order_id, error=str(exc))
        if order.average_price is not None:
            self.last_prices[order.instrument.key] = order.average_price
        self._emit(EventKind.ORDER, order=order)
        return order

    # --- reads ----------------------------------------------------------------------------------------

    async def lookup(self, cid: str) -> Order | None:
        order, row = await self.call(
            "get_order",
            lambda: self.broker.get_order(cid),
            cid=cid,
            request={"client_order_id": cid},
            record=False,
        )
        if order is None:
            self.journal.record_call(row)
            return None
        return self._record(order, row)

    async def read(self, order: Order) -> Order:
        """The order as the broker sees it now (by our client id when it is ours, else by broker id)."""
        if self._is_ours(order.client_order_id):
            found = await self.lookup(order.client_order_id)
            if found is not None:
                return found
        if order.broker_order_id is None:
            if order.status in UNSETTLED:  # a miss proves nothing about an order whose send is unsettled
                raise OutcomeUnknown(
                    f"outcome unknown for {order.client_order_id}: not found by a lookup (yet), no broker id"
                )
            raise NotFound(f"order {order.client_order_id} has no broker id to look it up by")
        boid = order.broker_order_id
        got, row = await self.call(
            "get_order_by_broker_id",
            lambda: self.broker.get_order_by_broker_id(boid),
            cid=order.client_order_id,
            request={"broker_order_id": boid},
            record=False,
        )
        return self._record(got, row)

    def _is_ours(self, cid: str) -> bool:
        if cid in self._ours:
            return True
        if self.journal.has_intent(cid):
            self._ours.add(cid)
            return True
        return False

    async def positions(self) -> Sequence[Position]:
        result, _ = await self.call("positions", self.broker.positions)
        return result

    async def refresh(self, client_order_ids: Sequence[str]) -> list[Order]:
        """Read the day's book once and journal the latest state of these orders in one commit: the
        cheap way to bring many orders up to date (a square-off's exits) instead of one lookup each."""
        wanted = set(client_order_ids)
        book, _ = await self.call("orders", self.broker.orders)
        mine = [o for o in book if o.client_order_id in wanted]
        if mine:
            self.journal.record_orders(mine, self.clock.now())
        return mine

    def adopt_client_ids(self) -> None:
        """At start: a broker that maps our client ids one way in memory (:class:`ClientIdRegistry`) learns
        the account's journaled ones again (those within ``reconcile_horizon``: brokers keep the day's
        book), so its orders of an earlier process read back as ours. Nothing to do for the others."""
        broker = self.broker
        if isinstance(broker, ClientIdRegistry):
            since = self.clock.now() - dt.timedelta(seconds=self.tuning.reconcile_horizon)
            broker.adopt_client_ids(self.journal.client_ids_of_account(self.account, since=since))

    async def read_back(self) -> list[Order]:
        """The end of every run, success or failure: the run's non-terminal orders read back (one day-book
        read, :meth:`refresh`) so the journal ends with the broker's truth, not the last ack."""
        left = self.journal.intents(run_id=self.run_id, statuses=NON_TERMINAL)
        return await self._read_back([i.client_order_id for i in left], "read-back")

    async def _read_back(self, cids: Sequence[str], why: str) -> list[Order]:
        """:meth:`refresh` of ``cids`` (nothing when empty); a failed read is noted, never raised: the
        journal's state then stands as of its last write (``runner show`` says so)."""
        if not cids:
            return []
        self._ours.update(cids)
        try:
            return await self.refresh(cids)
        except BrokerError as exc:
            self.note(f"{why}: {len(cids)} open order(s) not read back: {type(exc).__name__}: {exc}",
                      level="warning")  # fmt: skip
            return []

    async def open_orders(self) -> Sequence[Order]:
        result, _ = await self.call("open_orders", self.broker.open_orders)
        return result

    async def wait_for(self, order: Order, done: Callable[[Order], bool], timeout: float) -> Order:
        """Poll until ``done(order)`` or ``timeout`` seconds (clock time) pass; returns the last read."""
        deadline = self.clock.now() + dt.timedelta(seconds=timeout)
        current = order
        delay = self.tuning.poll_interval
        while not done(current):
            if self.clock.now() >= deadline:
                break
            await self.clock.sleep(min(delay, max(0.0, (deadline - self.clock.now()).total_seconds())))
            current = await self.read(current)
        return current

    async def reference_price(self, instrument: Instrument) -> Decimal | None:
        if isinstance(self.broker, QuoteSource):
            price, _ = await self.call("ltp", lambda: self.broker.ltp(instrument))  # type: ignore[attr-defined]
            if price is not None:
                self.last_prices[instrument.key] = price
                return price
        return self.last_prices.get(instrument.key)
