"""Every broker call of a run goes through here: journaling, retries, lookups and read-back verification.

* ``place``: the intent is committed (resolution PENDING) before every send; a journaled intent is always
  looked up before it is sent again, and sent again only when the broker refuses a repeated client id
  (:attr:`Capability.IDEMPOTENT_CLIENT_ID`) or a lookup made well after its last send did not find it.
  Otherwise an unknown outcome fails the step and stays UNKNOWN until a later start reconciles it.
* Retryable errors back off (honouring ``retry_after``); AuthExpired logs in once and retries;
  OutcomeUnknown is resolved by ``get_order`` (never a blind re-send); Rejected is never retried.
* Pre-trade limits apply to every new order (each leg of a spread counted) and to every modify.
* ``cancel`` / ``modify`` return what reading the order back says, not what the ack said; one that timed
  out and did not land is issued once more (it names an existing order, so it cannot create one).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from runner.brokers.base import Broker, Capability, ClientIdRegistry, MultilegBroker
from runner.engine.killswitch import Halted
from runner.engine.risk import QuoteSource, RiskChecker, RiskRefused
from runner.errors import (
    AdapterFault,
    AuthExpired,
    BrokerError,
    Malformed,
    NotFound,
    NotModifiable,
    OutcomeUnknown,
    Rejected,
    Retryable,
    WaitTooLong,
)
from runner.ids import client_order_id, leg_client_id
from runner.journal.errors import DuplicateIntent
from runner.journal.records import Intent
from runner.journal.store import Journal
from runner.journal.tables import Purpose, Resolution
from runner.logs import redact
from runner.model import (
    IllegalTransition,
    Instrument,
    Modification,
    MultilegRequest,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    Position,
)

if TYPE_CHECKING:
    from runner.clock import Clock

T = TypeVar("T")

UNSETTLED = frozenset({OrderStatus.PENDING_NEW, OrderStatus.UNKNOWN})
NON_TERMINAL = tuple(s for s in OrderStatus if not s.is_terminal)  # an order that may still change


_WRITES = frozenset({"place", "modify", "cancel", "place_multileg"})  # calls that change the book


def is_live(order: Order) -> bool:
    """Working at the broker, or possibly so (not yet acknowledged / unknown)."""
    return order.status.is_working or order.status in UNSETTLED


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


class Missing(enum.StrEnum):
    """What :meth:`Gateway.settle` says of an intent the broker does not show."""

    ABSENT = "absent"  # proven never received (the gateway's own rule): a new order cannot double it
    UNKNOWN = "unknown"  # not found, not proven absent: it may still show up, and fill


class EventKind(enum.StrEnum):
    RUN_STARTED = "run_started"
    STEP_STARTED = "step_started"
    STEP_FINISHED = "step_finished"
    ORDER = "order"
    NOTE = "note"
    RUN_FINISHED = "run_finished"


@dataclass(frozen=True, slots=True)
class EngineEvent:
    kind: EventKind
    at: dt.datetime
    step_id: str | None = None
    message: str = ""
    order: Order | None = None
    outcome: str | None = None


Observer = Callable[[EngineEvent], None]


_ENCODER = json.JSONEncoder(default=str, sort_keys=True)  # json.dumps(**kw) builds one per call
_FLAT_ENCODER = json.JSONEncoder(default=str)  # for dicts built in key order already
_AS_IS: frozenset[type] = frozenset({type(None), int, bool})
_AS_TEXT: frozenset[type] = frozenset({Decimal, dt.datetime, dt.date})  # as ``default=str`` would


def _json(value: Any) -> str:
    """JSON of a broker call's request or response, secrets redacted, keys sorted."""
    if isinstance(value, Order | OrderRequest):
        return _record_json(value)
    if isinstance(value, list | tuple) and value and all(isinstance(v, Order | OrderRequest) for v in value):
        return "[" + ", ".join(_record_json(v) for v in value) + "]"
    return _ENCODER.encode(redact(value))


_FIELDS: dict[type, tuple[tuple[str, bool], ...]] = {}


def _record_fields(cls: type) -> tuple[tuple[str, bool], ...]:
    """(field, is-secret) in sorted order; the secret check is :func:`runner.logs.redact`'s own."""
    found = _FIELDS.get(cls)
    if found is None:
        names = sorted(f.name for f in dataclasses.fields(cls))
        found = _FIELDS[cls] = tuple((n, redact({n: ""})[n] != "") for n in names)
    return found


def _record_json(obj: Order | OrderRequest) -> str:
    """``_ENCODER.encode(redact(_flat(obj)))`` without the generic walk: the same text, ~3x faster (an
    order's fields are fixed; only their string values can carry a token, and those still go through
    :func:`redact`)."""
    out: dict[str, Any] = {}
    for name, secret in _record_fields(type(obj)):
        v = getattr(obj, name)
        t = type(v)
        if secret and v is not None:
            v = "***"
        elif t in _AS_IS:
            pass
        elif t is str:
            v = redact(v)
        elif t in _AS_TEXT:
            v = str(v)
        elif isinstance(v, Instrument):
            v = redact(v.key)
        elif not isinstance(v, enum.StrEnum):  # enum members are code constants, encoded as their value
            v = redact(v)
        out[name] = v
    return _FLAT_ENCODER.encode(out)


def _flat(obj: Any) -> dict[str, Any]:
    """Shallow field dict (dataclasses.asdict deep-copies: too slow for every broker call)."""
    d = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    d["instrument"] = obj.instrument.key
    return d


def not_sent(exc: BaseException) -> bool:
    """A refusal made on our side (the kill switch): the broker never saw the request."""
    return isinstance(exc, Halted)


def unknown_message(cid: str) -> str:
    return (
        f"outcome unknown for {cid}; not re-sent; it will be reconciled on the next start / check the broker"
    )


PRICED = frozenset({OrderType.LIMIT, OrderType.SL})  # the types that carry a limit price
TRIGGERED = frozenset({OrderType.SL, OrderType.SL_M})  # the types that carry a trigger price


def prices_for(
    order_type: OrderType, price: Decimal | None, trigger: Decimal | None
) -> tuple[Decimal | None, Decimal | None]:
    """(price, trigger) as an order of ``order_type`` carries them: a MARKET / SL-M order has no limit
    price and a MARKET / LIMIT order no trigger, whatever the order it replaces had."""
    return (price if order_type in PRICED else None, trigger if order_type in TRIGGERED else None)


def modified_request(order: Order, change: Modification) -> OrderRequest:
    """The order as it would stand after ``change`` (quantity = the new total), for pre-trade checks."""
    new_type = change.order_type or order.order_type
    price, trigger = prices_for(
        new_type, change.price or order.price, change.trigger_price or order.trigger_price
    )
    return OrderRequest(
        client_order_id=order.client_order_id,
        instrument=order.instrument,
        side=order.side,
        quantity=change.quantity if change.quantity is not None else order.quantity,
        order_type=new_type,
        product=order.product,
        validity=order.validity,
        price=price,
        trigger_price=trigger,
        tag=order.tag,
    )


def order_to_dict(order: Order) -> dict[str, Any]:
    return _flat(order)


def request_to_dict(request: OrderRequest) -> dict[str, Any]:
    return _flat(request)


@dataclass
class Gateway:
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

    # --- reconciliation -------------------------------------------------------------------------------

    @property
    def idempotent(self) -> bool:
        """The broker itself refuses a repeated client id: re-sending after a lookup miss is safe."""
        return Capability.IDEMPOTENT_CLIENT_ID in self.broker.capabilities

    def _absence_proven(self, intent: Intent) -> bool:
        """After a lookup miss: may this intent be treated as never received? Yes when the broker refuses
        repeated ids, when a lookup on an earlier start already said so (ABSENT), or when its last send
        (``sent_at``, committed before every send; any other write moves ``updated_at`` too, so that
        cannot bound it) is long enough ago that even a broker scanning its day book would show it by now."""
        if intent.broker_order_id is not None:  # the broker acknowledged it
            return False
        if self.idempotent or intent.resolution is Resolution.ABSENT:
            return True
        return (self.clock.now() - intent.last_sent).total_seconds() >= self.tuning.absent_after

    async def standing(self, intent: Intent, *, patient: bool | None = None) -> Order | Missing:
        """Where one journaled intent stands, the one rule for a resumed send, a spread's legs, a settle and
        reconciliation: the broker's order when found (or the journal's, when terminal or acknowledged),
        ``Missing.ABSENT`` when a miss proves it never arrived (:meth:`_absence_proven`; not journaled
        here), else ``Missing.UNKNOWN``. Raises OutcomeUnknown when no lookup answered. ``patient``
        (default: while its send is unsettled) keeps looking a little in case it is in flight."""
        cid = intent.client_order_id
        self._ours.add(cid)
        found = await self._resolve(cid, patient=intent.status in UNSETTLED if patient is None else patient)
        if found is not None:
            return found
        if intent.status.is_terminal:  # refused before reaching the broker (e.g. rejected)
            return self.order_from_intent(intent)
        if intent.broker_order_id is not None:  # acknowledged once: a lagging lookup cannot unsay that
            return await self.read(self.order_from_intent(intent))
        return Missing.ABSENT if self._absence_proven(intent) else Missing.UNKNOWN

    async def settle(self, intent: Intent) -> Order | Missing:
        """Where one journaled intent stands (:meth:`standing`), ``Missing.ABSENT`` journaled so; no
        lookup answering is ``Missing.UNKNOWN``. For a step that would otherwise place a *different*
        order in its place (a square-off's next round)."""
        cid = intent.client_order_id
        try:
            where = await self.standing(intent)
        except OutcomeUnknown as exc:
            self.note(f"settle: {cid}: {exc}", level="warning", cid=cid)
            return Missing.UNKNOWN
        if where is Missing.ABSENT and intent.resolution is not Resolution.ABSENT:
            self.journal.set_resolution(cid, Resolution.ABSENT, self.clock.now())
        return where

    async def reconcile(self) -> list[Intent]:
        """Before anything new is sent: resolve by client id every unsettled intent (PENDING_NEW / UNKNOWN,
        whatever its resolution) of this run and of this account's runs that are no longer running, and
        bring their open orders up to date (one day-book read: a fill or cancel nobody was there to see).
        Other RUNNING runs are left alone (:meth:`Journal.reconcilable_intents` says why)."""
        since = self.clock.now() - dt.timedelta(seconds=self.tuning.reconcile_horizon)
        revisit = self.journal.reconcilable_intents(self.account, self.run_id, since=since)
        pending = [i for i in revisit if i.status in UNSETTLED]
        await self._read_back([i.client_order_id for i in revisit if i.status not in UNSETTLED], "reconcile")
        for intent in pending:
            cid = intent.client_order_id
            try:
                where = await self.standing(intent, patient=False)
            except OutcomeUnknown as exc:
                self.note(f"reconcile: {cid}: {exc}; left unknown", level="warning", cid=cid)
                continue
            if isinstance(where, Order):
                self.note(f"reconcile: {cid} is {where.status.value} at the broker", cid=cid)
            elif where is Missing.ABSENT:
                if intent.resolution is not Resolution.ABSENT:
                    self.journal.set_resolution(cid, Resolution.ABSENT, self.clock.now())
                self.note(
                    f"reconcile: {cid} never reached the broker; will send again if its step runs", cid=cid
                )
            else:
                self.note(
                    f"reconcile: {cid} not found yet, but last sent under {self.tuning.absent_after:g}s ago; "
                    f"left unknown",
                    level="warning",
                    cid=cid,
                )
        return pending

    async def _resolve(self, cid: str, *, patient: bool = True) -> Order | None:
        """Look an order up by client id; when ``patient``, keep looking a little in case it is in flight.
        None only when a lookup answered "no such order": when none answered at all (each timed out or
        the broker was unavailable) nothing is known, and OutcomeUnknown says so. A failed lookup is never
        a miss, or an adapter timing out on reads would turn into a re-send once ``absent_after`` passed."""
        attempts = self.tuning.lookup_attempts if patient else 1
        answered = False
        failure: BrokerError | None = None
        for i in range(attempts):
            try:
                found = await self.lookup(cid)
            except (OutcomeUnknown, Retryable) as exc:
                failure = exc
            else:
                if found is not None:
                    return found
                answered = True
            if i + 1 < attempts:
                await self.clock.sleep(self.tuning.poll_interval * 2**i)
        if not answered:
            why = f"{type(failure).__name__}: {failure}"
            raise OutcomeUnknown(f"outcome unknown for {cid}: no lookup answered ({why})") from failure
        return None

    # --- pre-trade limits ----------------------------------------------------------------------------

    async def _check_risk(self, request: OrderRequest, *, pending: int = 0, new_order: bool = True) -> None:
        """Pre-trade limits for ``request``. ``pending``: orders of the same step checked before it but
        not yet journaled (legs of one spread); ``new_order=False`` (a modify in place) adds no order."""
        risk = self.risk
        if risk is None:
            return
        ref = await self.reference_price(request.instrument) if risk.needs_price else None
        orders = 0  # with new_order=False: "0 + 1 > max" never holds, as max_orders_per_run >= 1
        if new_order and risk.max_orders is not None:
            orders = self.journal.count_intents(self.run_id, exclude=(Purpose.UNWIND, Purpose.SQUARE_OFF))
            orders += pending
        risk.check(request, orders_so_far=orders, reference_price=ref)

    async def _check_modify(self, order: Order, change: Modification, intent: Intent | None) -> None:
        if self.risk is None or (intent is not None and intent.purpose.reduces_risk):
            return
        try:
            request = modified_request(order, change)
        except ValueError as exc:
            raise NotModifiable(f"modify {order.client_order_id}: {exc}") from None
        await self._check_risk(request, new_order=False)

    # --- place ----------------------------------------------------------------------------------------

    def current_intent(self, slot: str, leg: int) -> Intent | None:
        """The latest attempt for a slot/leg (a replace bumps the attempt)."""
        found = [i for i in self.journal.intents(run_id=self.run_id, slot=slot) if i.leg == leg]
        return max(found, key=lambda i: i.attempt) if found else None

    async def place(
        self,
        request: OrderRequest,
        *,
        slot: str,
        leg: int = 0,
        attempt: int = 0,
        purpose: Purpose = Purpose.ENTRY,
    ) -> Order:
        """Place once. ``request.client_order_id`` is ignored: the id comes from (run, slot, leg, attempt)."""
        cid = client_order_id(self.run_id, slot, leg, attempt)
        if request.client_order_id != cid:  # a staged request already carries it (replace costs ~50 us cold)
            request = dataclasses.replace(request, client_order_id=cid)
        if self.risk is not None and not purpose.reduces_risk:
            try:
                await self._check_risk(request)
            except RiskRefused:
                if self.journal.get_intent(cid) is None:  # a resumed intent was allowed when first made
                    raise
        return await self._place_checked(request, slot=slot, leg=leg, attempt=attempt, purpose=purpose)

    async def _place_checked(
        self, request: OrderRequest, *, slot: str, leg: int, attempt: int, purpose: Purpose
    ) -> Order:
        cid = request.client_order_id
        intent = Intent(
            client_order_id=cid,
            run_id=self.run_id,
            account=self.account,
            step_id=self.step_id or slot,
            slot=slot,
            leg=leg,
            attempt=attempt,
            purpose=purpose,
            request=request,
            created_at=self.clock.now(),
        )
        try:
            self.journal.add_intent(intent)  # committed (PENDING) before the request leaves
        except DuplicateIntent:
            self._ours.add(cid)
            return await self._resume(cid)
        self._ours.add(cid)
        return await self._send(request)

    async def _resume(self, cid: str) -> Order:
        """This slot was journaled by an earlier start: continue from the broker's truth. Always looked up
        first, whatever the intent's resolution says."""
        existing = self.journal.get_intent(cid)
        assert existing is not None
        where = await self.standing(existing)
        if isinstance(where, Order):
            return where
        if where is Missing.UNKNOWN:
            raise OutcomeUnknown(unknown_message(cid))
        self.journal.mark_sending((cid,), self.clock.now())  # PENDING + sent_at, committed before the send
        self.note(f"{cid} is not at the broker: sending it under the same id", cid=cid)
        return await self._send(existing.request, resent=True)

    async def _send(self, request: OrderRequest, *, resent: bool = False) -> Order:
        """Send a journaled (PENDING) intent. After OutcomeUnknown it is looked up; sent once more only
        if the broker refuses repeated client ids, else left UNKNOWN for a later start to reconcile."""
        cid = request.client_order_id
        self._log(
            "order_send",
            client_order_id=cid,
            side=request.side.value,
            quantity=request.quantity,
            instrument=request.instrument.key,
            order_type=request.order_type.value,
        )
        while True:
            try:
                order, row = await self.call(
                    "place",
                    lambda: self.broker.place(request),
                    cid=cid,
                    request=request,  # serialized (redacted) into the call row
                    record=False,
                )
            except OutcomeUnknown as exc:
                self.journal.mark_unknown(cid, self.clock.now())
                self.note(f"outcome unknown for {cid} ({exc}); looking it up", level="warning", cid=cid)
                try:
                    found = await self._resolve(cid)
                except OutcomeUnknown as failed:
                    self.note(f"{failed}; {unknown_message(cid)}", level="error", cid=cid)
                    raise OutcomeUnknown(unknown_message(cid)) from failed
                if found is not None:
                    return found
                if resent or not self.idempotent:
                    self.note(unknown_message(cid), level="error", cid=cid)
                    raise OutcomeUnknown(unknown_message(cid)) from exc
                # PENDING + this send's time: a death during the re-send leaves it for reconciliation
                self.journal.mark_sending((cid,), self.clock.now())
                self.note(f"{cid} not at the broker after lookups: sending again under the same id", cid=cid)
                resent = True
                continue
            except Rejected as exc:
                if resent:  # perhaps our earlier send did arrive after all (a duplicate id refused)
                    found = await self._resolve(cid, patient=False)
                    if found is not None:
                        return found
                return self._record(self._rejected(request, exc), resolution=self._refused_by(exc))
            return self._record(order, row)

    @staticmethod
    def _refused_by(exc: BaseException) -> Resolution:
        return Resolution.ABSENT if not_sent(exc) else Resolution.CONFIRMED

    @staticmethod
    def order_from_intent(intent: Intent) -> Order:
        r = intent.request
        return Order(
            client_order_id=intent.client_order_id,
            broker_order_id=intent.broker_order_id,
            instrument=r.instrument,
            side=r.side,
            quantity=r.quantity,
            order_type=r.order_type,
            product=r.product,
            status=intent.status,
            filled_quantity=intent.filled_quantity,
            average_price=intent.average_price,
            price=r.price,
            trigger_price=r.trigger_price,
            validity=r.validity,
            tag=r.tag,
            updated_at=intent.updated_at,
        )

    def _rejected(self, request: OrderRequest, exc: BrokerError) -> Order:
        return Order(
            client_order_id=request.client_order_id,
            broker_order_id=None,
            instrument=request.instrument,
            side=request.side,
            quantity=request.quantity,
            order_type=request.order_type,
            product=request.product,
            status=OrderStatus.REJECTED,
            price=request.price,
            trigger_price=request.trigger_price,
            validity=request.validity,
            tag=request.tag,
            reject_reason=str(exc),
            updated_at=self.clock.now(),
        )

    async def place_multileg(self, requests: Sequence[OrderRequest], *, slot: str) -> list[Order]:
        """Native spread: legs journaled as intents 1..n of ``slot`` (ids :func:`runner.ids.leg_client_id`
        of the group id, so an adapter can find a leg from the group) in one commit, before the request."""
        assert isinstance(self.broker, MultilegBroker)
        group = client_order_id(self.run_id, slot, 0, 0)
        journaled = {
            i.leg: i
            for i in self.journal.intents(run_id=self.run_id, slot=slot)
            if i.attempt == 0 and 1 <= i.leg <= len(requests)
        }
        legs = [
            dataclasses.replace(
                r, client_order_id=journaled[n].client_order_id if n in journaled else leg_client_id(group, n)
            )
            for n, r in enumerate(requests, start=1)
        ]
        resent = bool(journaled)
        if journaled:  # an earlier start journaled this spread: the broker's truth first
            self._ours.update(i.client_order_id for i in journaled.values())
            where = [await self.standing(journaled[n]) for n in sorted(journaled)]
            known = [w for w in where if isinstance(w, Order)]
            if len(known) == len(where) == len(legs):
                return known
            if known:
                raise OutcomeUnknown(f"spread {group}: only some legs are at the broker")
            if Missing.UNKNOWN in where:
                raise OutcomeUnknown(unknown_message(group))
            # every leg proven absent: PENDING again with sent_at, committed, before the send
            self.journal.mark_sending([i.client_order_id for i in journaled.values()], self.clock.now())
        elif self.risk is not None:
            for k, leg in enumerate(legs):  # each leg counts the ones before it
                await self._check_risk(leg, pending=k)
        missing = [
            Intent(
                client_order_id=leg.client_order_id,
                run_id=self.run_id,
                account=self.account,
                step_id=self.step_id or slot,
                slot=slot,
                leg=n,
                attempt=0,
                purpose=Purpose.ENTRY,
                request=leg,
                created_at=self.clock.now(),
                group_id=group,
            )
            for n, leg in enumerate(legs, start=1)
            if n not in journaled
        ]
        if missing:
            self.journal.add_intents(missing)  # every leg journaled, in one commit, before the request
            self._ours.update(i.client_order_id for i in missing)
        broker = self.broker
        mreq = MultilegRequest(client_order_id=group, legs=tuple(legs))
        try:
            orders, row = await self.call(
                "place_multileg",
                lambda: broker.place_multileg(mreq),
                cid=group,
                request={"legs": [request_to_dict(r) for r in legs]},
                record=False,
            )
        except OutcomeUnknown as exc:
            for leg in legs:
                self.journal.mark_unknown(leg.client_order_id, self.clock.now())
            found = [await self._resolve(leg.client_order_id) for leg in legs]
            if all(f is not None for f in found):
                return [f for f in found if f is not None]
            self.note(unknown_message(group), level="error", cid=group)
            raise OutcomeUnknown(unknown_message(group)) from exc
        except Rejected as exc:
            if resent:
                found = [await self._resolve(leg.client_order_id, patient=False) for leg in legs]
                if all(f is not None for f in found):
                    return [f for f in found if f is not None]
            why = self._refused_by(exc)
            return [self._record(self._rejected(leg, exc), resolution=why) for leg in legs]
        self.journal.record_call(row)
        return [self._record(o) for o in orders]

    # --- cancel / modify, verified by reading back ------------------------------------------------------

    async def _change(
        self,
        method: str,
        order: Order,
        send: Callable[[Order], Awaitable[Order]],
        request: dict[str, Any],
        landed: Callable[[Order], bool],
    ) -> Order:
        """Issue a cancel / modify and return the order read back. After OutcomeUnknown, if the read-back
        shows the change did not land and the order still works, the same change is issued once more:
        it names an existing order (same broker id, same target state), so a repeat cannot create one."""
        cid = order.client_order_id
        target = order
        for last in (False, True):
            try:
                await self.call(method, functools.partial(send, target), cid=cid, request=request)
            except OutcomeUnknown as exc:
                self.note(f"{method} {cid}: OutcomeUnknown: {exc}; reading back", cid=cid)
                target = await self.read(order)
                if last or landed(target) or not is_live(target):
                    return target
                self.note(f"{method} {cid} did not land; issuing it once more", cid=cid)
                continue
            except (NotModifiable, NotFound) as exc:
                self.note(f"{method} {cid}: {type(exc).__name__}: {exc}; reading back", cid=cid)
            break
        return await self.read(order)

    async def cancel(self, order: Order, *, timeout: float | None = None) -> Order:
        """Cancel and read back until the order is no longer live (cancelled, or filled first)."""
        timeout = self.tuning.verify_timeout if timeout is None else timeout
        if order.status is OrderStatus.UNKNOWN:
            order = await self.read(order)
        if not is_live(order):
            return order
        current = await self._change(
            "cancel",
            order,
            self.broker.cancel,
            {"client_order_id": order.client_order_id, "broker_order_id": order.broker_order_id},
            lambda o: o.status is OrderStatus.PENDING_CANCEL,
        )
        return await self.wait_for(current, lambda o: not is_live(o), timeout)

    async def modify(self, order: Order, change: Modification, *, timeout: float | None = None) -> Order:
        """Modify in place (or cancel + replace without Capability.MODIFY) and read back until the
        broker shows the change or the order is no longer working. Pre-trade limits apply to the order
        as it would stand after the change."""
        timeout = self.tuning.verify_timeout if timeout is None else timeout
        if Capability.MODIFY not in self.broker.capabilities:
            return await self._replace(order, change, timeout)
        intent = self.journal.get_intent(order.client_order_id) if self.risk is not None else None
        await self._check_modify(order, change, intent)
        broker = self.broker
        current = await self._change(
            "modify",
            order,
            lambda o: broker.modify(o, change),
            {"client_order_id": order.client_order_id, **dataclasses.asdict(change)},
            lambda o: applied(o, change),
        )
        return await self.wait_for(current, lambda o: applied(o, change) or not is_live(o), timeout)

    async def _replace(self, order: Order, change: Modification, timeout: float) -> Order:
        """Cancel, then place the rest under the next attempt of the same slot. ``change.quantity`` is the
        new total, so the replacement carries it less what filled; checked before anything is cancelled."""
        intent = self.journal.get_intent(order.client_order_id)
        if intent is None:
            raise NotModifiable(
                f"order {order.client_order_id} was not placed by this run; cannot replace it"
            )
        total = change.quantity if change.quantity is not None else order.quantity
        if total - order.filled_quantity <= 0:
            raise NotModifiable(
                f"modify {order.client_order_id}: new quantity {total} is not above the "
                f"{order.filled_quantity} already filled"
            )
        new_type = change.order_type or order.order_type
        price, trigger = prices_for(
            new_type,
            change.price or intent.request.price,
            change.trigger_price or intent.request.trigger_price,
        )
        req = dataclasses.replace(
            intent.request,
            quantity=total - order.filled_quantity,
            order_type=new_type,
            price=price,
            trigger_price=trigger,
        )
        purpose = Purpose.REPLACE if not intent.purpose.reduces_risk else intent.purpose
        slot, leg, attempt = intent.slot, intent.leg, intent.attempt + 1
        req = dataclasses.replace(req, client_order_id=client_order_id(self.run_id, slot, leg, attempt))
        if not purpose.reduces_risk:
            await self._check_risk(req)  # before the cancel: a refused change leaves the order working
        cancelled = await self.cancel(order, timeout=timeout)
        if cancelled.status is not OrderStatus.CANCELLED:
            return cancelled
        rest = total - cancelled.filled_quantity  # fills that came in before the cancel took effect
        if rest <= 0:
            self.note(
                f"{order.client_order_id}: {cancelled.filled_quantity} filled before the cancel; "
                f"nothing left to replace",
                cid=order.client_order_id,
            )
            return cancelled
        req = dataclasses.replace(req, quantity=rest)
        return await self._place_checked(req, slot=slot, leg=leg, attempt=attempt, purpose=purpose)


def applied(order: Order, change: Modification) -> bool:
    if change.price is not None and order.order_type is not OrderType.MARKET and order.price != change.price:
        return False
    if change.trigger_price is not None and order.trigger_price != change.trigger_price:
        return False
    if change.quantity is not None and order.quantity != change.quantity:
        return False
    return change.order_type is None or order.order_type is change.order_type


__all__ = [
    "EngineEvent",
    "EventKind",
    "Gateway",
    "Missing",
    "Observer",
    "RiskRefused",
    "Tuning",
    "applied",
    "is_live",
]
