"""The gateway's lower layer: one broker call with the retry policy and its journal row, and the reads that
journal the broker's view of an order. :class:`runner.engine.gateway.Gateway` builds the write side on it
(journal-before-send, resolution, cancel / modify verified by reading back)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Self, TypeVar

from runner.brokers.base import Broker, ClientIdRegistry, ForwardingBroker, MarketData, Quote
from runner.brokers.selected_orders import orders_of
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
    SessionExpired,
    WaitTooLong,
)
from runner.journal.store import Journal
from runner.journal.tables import Resolution
from runner.logs import redact
from runner.model import IllegalTransition, Instrument, Order, OrderRequest, OrderStatus, Position
from runner.observability import hooks

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
    # Oldest price (clock seconds, judged from the price's own time: the broker's tick / last-trade time,
    # else when we received it) a reference may be: an LTP-relative limit, a square-off's limit exit and a
    # notional check refuse an older one. Index options trade many times a second in session, so a quote
    # 30 s old means a stuck feed, a halted or illiquid contract, or a session that has closed: a limit
    # from it may be far off the market. 30 s still spans a polled REST quote (sub-second) and a stream's
    # reconnect-and-resubscribe, and it equals max_retry_after (the longest a read may be held up).
    max_quote_age: float = 30.0


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
    step_id: str | None = None  # the step making these calls (:meth:`for_step`)
    deadline: dt.datetime | None = None  # set by a caller whose step must end by then: no wait passes it
    # instrument key -> (price, when it was made): the last price this process saw (quotes, fills)
    last_prices: dict[str, tuple[Decimal, dt.datetime]] = field(default_factory=dict)
    # Quotes read in one batch for a step that prices several instruments (:meth:`prefetch_prices`),
    # each used once by the next :meth:`reference_price` of its instrument (still judged by its age).
    _prefetched: dict[str, PriceReference] = field(default_factory=dict, repr=False)
    # Client ids known to be journaled (intents are never deleted, so a hit never goes stale).
    _ours: set[str] = field(default_factory=set, repr=False)
    # slot -> its request built while preparing (the engine's staged first order): not rebuilt at the instant
    staged: dict[str, OrderRequest] = field(default_factory=dict, repr=False)

    def for_step(self, step_id: str | None, log: Any = None, **fields: Any) -> Self:
        """This run's calls as one step makes them: its own step id, logger, deadline and prefetched
        quotes (steps of a ``parallel`` group run at once, so nothing per step lives on a shared object),
        the run's state shared (journal, broker, prices seen, client ids, staged requests). ``fields``
        replaces more (an armed first step sends through its own journal and broker wrappers)."""
        return dataclasses.replace(self, step_id=step_id, log=log, deadline=None, _prefetched={}, **fields)

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
        seconds = time.perf_counter() - started
        # every attempt passes here once: the one place broker request latency is measured (/metrics)
        error_name = type(error).__name__ if error else None
        hooks.broker_call(getattr(self.broker, "name", "?"), method, seconds, error_name)
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
            "duration_us": int(seconds * 1e6),
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
                if isinstance(exc, SessionExpired):  # `runner show` says why the call was made twice
                    self.note(f"broker session expired ({exc}); logging in again", level="warning", cid=cid)
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
            # a fill's price is as old as the broker's last update of the order (else: seen now)
            self._saw(order.instrument.key, order.average_price, order.updated_at or self.clock.now())
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
        # only these ids' rows are parsed where the adapter can pick them (runner.brokers.selected_orders)
        mine, _ = await self.call("orders", functools.partial(orders_of, self.broker, wanted))
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

    # --- price references -------------------------------------------------------------------------------

    def _saw(self, key: str, price: Decimal, at: dt.datetime) -> None:
        """Remember the newest price seen for ``key`` (an older one never replaces a newer)."""
        at = _utc(at)
        known = self.last_prices.get(key)
        if known is None or known[1] <= at:
            self.last_prices[key] = (price, at)

    def _judge(self, price: Decimal, at: dt.datetime, source: str) -> PriceReference:
        age = max(0.0, (self.clock.now() - _utc(at)).total_seconds())  # a clock ahead of ours: age 0
        limit = self.tuning.max_quote_age
        if age > limit:
            return PriceReference(None, at, source, f"the {source} {price} is {age:g}s old, over the "
                                  f"{limit:g}s limit (max_quote_age)")  # fmt: skip
        return PriceReference(price, at, source)

    async def reference_prices(self, instruments: Sequence[Instrument]) -> dict[str, PriceReference]:
        """A price reference per instrument key, each with its time, none older than ``max_quote_age``:
        the broker's quote (one ``quotes`` call for all of them), else its ``ltp`` (received now), else
        the last price this process saw. A price too old is refused (``price`` None, ``refused`` says how
        old); no price at all is ``price`` None with no reason."""
        wanted = {i.key: i for i in instruments}
        out: dict[str, PriceReference] = {}
        for key in list(wanted):
            if (pre := self._prefetched.pop(key, None)) is not None and pre.price is not None:
                out[key] = self._judge(pre.price, pre.at or self.clock.now(), pre.source)
        ask = [i for k, i in wanted.items() if k not in out]
        quoted: dict[str, Quote] = {}
        if ask and _has_market_data(self.broker):
            got, _ = await self.call(
                "quotes", lambda: self.broker.quotes(ask),  # type: ignore[attr-defined]
                request={"instruments": [i.key for i in ask]},
            )  # fmt: skip
            quoted = {k: q for k, q in got.items() if k in wanted}
        elif ask and isinstance(self.broker, QuoteSource):
            # no market-data API (a test double, an older wrapper): its ltp, stamped when received
            source = self.broker
            for ins in ask:
                price, _ = await self.call("ltp", functools.partial(source.ltp, ins))
                if price is not None:
                    quoted[ins.key] = Quote(ins, price, self.clock.now())
        for key, quote in quoted.items():
            if key not in out and quote.ltp is not None and quote.ltp > 0:
                self._saw(key, quote.ltp, quote.at)
                out[key] = self._judge(quote.ltp, quote.at, "quote")
        for key in wanted:
            ref = out.get(key)
            if ref is not None and ref.price is not None:
                continue
            seen = self.last_prices.get(key)
            if seen is not None and (ref is None or ref.at is None or seen[1] > _utc(ref.at)):
                fallback = self._judge(seen[0], seen[1], "last price seen")
                if fallback.price is not None or ref is None:
                    out[key] = fallback
                    continue
            if ref is None:
                out[key] = PriceReference(None, None, "none")
        return out

    async def prefetch_prices(self, instruments: Sequence[Instrument]) -> None:
        """Quote several instruments a step is about to price in one ``quotes`` call; each instrument's
        next :meth:`reference_price` uses its result (judged by age again then) instead of asking anew."""
        if len({i.key for i in instruments}) < 2:
            return
        self._prefetched.update(await self.reference_prices(instruments))

    async def reference(self, instrument: Instrument) -> PriceReference:
        return (await self.reference_prices([instrument]))[instrument.key]

    async def reference_price(self, instrument: Instrument) -> Decimal | None:
        """The price reference of :meth:`reference_prices`, None when there is none fresh enough."""
        return (await self.reference(instrument)).price


@dataclass(frozen=True, slots=True)
class PriceReference:
    """A price to resolve LTP-relative prices and notional checks against, with where it came from and
    when it was made. ``price`` None: none usable; ``refused`` then says why one was not used (its age)."""

    price: Decimal | None
    at: dt.datetime | None
    source: str  # "quote", "last price seen", "none"
    refused: str | None = None

    def why_none(self) -> str:
        """For a message: why there is no price ("" when there is one)."""
        if self.price is not None:
            return ""
        return self.refused or "the broker quotes none and no price was seen in this process"


def _utc(at: dt.datetime) -> dt.datetime:
    """Aware UTC; a naive time (an adapter's slip) is read as UTC rather than refused."""
    return at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at.astimezone(dt.UTC)


def _has_market_data(broker: Broker) -> bool:
    """Whether a market-data API sits behind ``broker``: guards (:class:`ForwardingBroker`) always have
    ``quotes`` and answer {} without one, so look through them."""
    while isinstance(broker, ForwardingBroker):
        broker = broker.inner
    return isinstance(broker, MarketData)
