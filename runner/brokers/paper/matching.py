"""In-process matching engine: the market behind the paper broker and every wire simulator.

Pure and synchronous; no I/O, no clock of its own (every call takes ``now``), independent of the Broker
protocol. It speaks the canonical model (:mod:`runner.model`) and raises :mod:`runner.errors`::

    from runner.brokers.paper.matching import MatchingConfig, MatchingEngine
    from runner.brokers.paper.price_paths import RandomWalk

    eng = MatchingEngine(RandomWalk(seed=7), MatchingConfig(fill_slice=50, cancel_delay=0))
    order = eng.place("ACC1", request, now)         # Order: OPEN (ack) or REJECTED (recorded, with
                                                    # reject_reason / reject_code); duplicate client id
                                                    # -> raises Rejected(code="duplicate"), nothing made
                                                    # (idempotent_client_ids=False: a second order)
    eng.process(now)                                # advance matching (every call also does this)
    eng.find("ACC1", request.client_order_id, now)  # Order | None     (by our client id)
    eng.get("ACC1", order.broker_order_id, now)     # Order or NotFound (by broker id)
    eng.modify("ACC1", broker_id, Modification(price=Decimal("101.5")), now)  # NotModifiable if done
    eng.cancel("ACC1", broker_id, now)              # -> PENDING_CANCEL; CANCELLED on a later pass
    eng.place_multileg("ACC1", MultilegRequest(...), now)  # legs accepted all-or-none
    eng.orders / open_orders / positions / fills("ACC1", now)
    eng.last_price(instrument, now)                 # the path's price now (for quotes/LTP)
    eng.reject_code("ACC1", client_order_id)        # RejectCode of a REJECTED order

Semantics, per 1 s price bucket of the path:
* MARKET fills at the path price (± ``slippage_ticks``); LIMIT fills when the path crosses the limit (at
  the path price when marketable on arrival, at the limit once it has rested); SL / SL-M trigger when
  the path reaches the trigger, then act as LIMIT / MARKET; IOC cancels whatever the first look leaves.
* ``fill_slice`` caps the quantity one order fills per second, so large orders fill partially.
* A cancel is acknowledged as PENDING_CANCEL and completes on the first pass ``cancel_delay`` seconds
  later (fills may win the race meanwhile); DAY orders expire at the next session close.
* A pass after a gap (virtual time jumps) samples at most ``max_catchup_points`` seconds of the gap.
* ``idempotent_client_ids=False`` makes a repeated client id a second order (``repeat`` counts them),
  as at the Indian brokers, whose client id is a free-form tag; lookups by client id see the latest.
* ``lookup_lag`` (seconds): a lookup by client id misses an order until it is that old, like a broker
  that scans its day book; lookups by broker id and the order book see it at once.
* Rejections: price band (± ``band_pct`` of the last price), lot multiple, freeze quantity, tick size,
  stop trigger on the wrong side. Modifying or cancelling a terminal order raises NotModifiable.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from runner.brokers.paper.book import Book, OrderState, PositionState, RejectCode, _utc
from runner.brokers.paper.price_paths import PricePath, RandomWalk, second_of, tick_of
from runner.errors import NotFound, NotModifiable, Rejected
from runner.model import (
    Fill,
    Instrument,
    Modification,
    MultilegRequest,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    Position,
    Side,
    Validity,
)

_S = OrderStatus
_ORDER_ID_BASE = 100_000_000_000  # ids are 12-digit numeric strings, monotonic per account


@dataclass(frozen=True, slots=True)
class MatchingConfig:
    band_pct: Decimal | None = Decimal(20)
    slippage_ticks: int = 0
    fill_slice: int | None = None  # max quantity one order fills per second; None = all at once
    cancel_delay: float = 0.0  # seconds from cancel ack until the cancel takes effect
    session_close: dt.time | None = dt.time(15, 30)  # DAY orders expire at the next close
    timezone: str = "Asia/Kolkata"
    max_catchup_points: int = 240
    idempotent_client_ids: bool = True  # False: a repeated client id is accepted as another order
    lookup_lag: int = 0  # seconds before a lookup by client id finds a new order

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> MatchingConfig:
        """From account options: ``band_pct``, ``slippage_ticks``, ``partial_fill_slice``,
        ``cancel_delay`` (seconds), ``session_close`` ("HH:MM" or null), ``timezone``,
        ``idempotent_client_ids`` (bool), ``lookup_lag`` (seconds)."""
        kw: dict[str, Any] = {}
        if "band_pct" in options:
            kw["band_pct"] = None if options["band_pct"] is None else Decimal(str(options["band_pct"]))
        if "slippage_ticks" in options:
            kw["slippage_ticks"] = int(options["slippage_ticks"])
        if options.get("partial_fill_slice") is not None:
            kw["fill_slice"] = int(options["partial_fill_slice"])
        if "cancel_delay" in options:
            kw["cancel_delay"] = float(options["cancel_delay"])
        if "session_close" in options:
            v = options["session_close"]
            kw["session_close"] = None if v is None else dt.time.fromisoformat(str(v))
        if "timezone" in options:
            kw["timezone"] = str(options["timezone"])
        if "max_catchup_points" in options:
            kw["max_catchup_points"] = int(options["max_catchup_points"])
        if "idempotent_client_ids" in options:
            v = options["idempotent_client_ids"]
            if not isinstance(v, bool):  # "false" from a hand-written file must not read as true
                raise ValueError(f"idempotent_client_ids must be true or false, not {v!r}")
            kw["idempotent_client_ids"] = v
        if "lookup_lag" in options:
            kw["lookup_lag"] = int(options["lookup_lag"])
        return cls(**kw)


# --- the engine ------------------------------------------------------------------------------------


class MatchingEngine:
    def __init__(self, prices: PricePath | None = None, config: MatchingConfig | None = None) -> None:
        self.prices: PricePath = prices or RandomWalk()
        self.config = config or MatchingConfig()
        self.books: dict[str, Book] = {}
        self._tz = ZoneInfo(self.config.timezone)

    def book(self, account: str) -> Book:
        b = self.books.get(account)
        if b is None:
            b = self.books[account] = Book(account)
        return b

    def last_price(self, instrument: Instrument, now: dt.datetime) -> Decimal:
        return self.prices.price(instrument, second_of(now))

    def _day(self, second: int) -> str:
        return dt.datetime.fromtimestamp(second, self._tz).date().isoformat()

    def _expiry(self, second: int, validity: Validity) -> int | None:
        close = self.config.session_close
        if close is None or validity is not Validity.DAY:
            return None
        local = dt.datetime.fromtimestamp(second, self._tz)
        at = dt.datetime.combine(local.date(), close, self._tz)
        if at <= local:
            at = dt.datetime.combine(local.date() + dt.timedelta(days=1), close, self._tz)
        return second_of(at)

    # validation ------------------------------------------------------------------------------------

    def _check(
        self,
        inst: Instrument,
        side: Side,
        quantity: int,
        order_type: OrderType,
        price: Decimal | None,
        trigger: Decimal | None,
        second: int,
        filled: int = 0,
        *,
        armed: bool = True,  # False for an already triggered stop: its trigger is not re-checked
    ) -> tuple[RejectCode, str] | None:
        if quantity <= filled:
            return RejectCode.QUANTITY, f"quantity {quantity} must exceed the filled {filled}"
        if inst.lot_size and quantity % inst.lot_size:
            return RejectCode.LOT_SIZE, (
                f"quantity {quantity} is not a multiple of the lot size {inst.lot_size}"
            )
        if inst.freeze_quantity and quantity > inst.freeze_quantity:
            return RejectCode.FREEZE_QUANTITY, (
                f"quantity {quantity} exceeds the freeze quantity {inst.freeze_quantity}"
            )
        uses_price = order_type in (OrderType.LIMIT, OrderType.SL)
        uses_trigger = order_type in (OrderType.SL, OrderType.SL_M)
        if uses_price and price is None:
            return RejectCode.QUANTITY, f"{order_type.value} order needs a price"
        if uses_trigger and trigger is None:
            return RejectCode.TRIGGER, f"{order_type.value} order needs a trigger price"
        tick = tick_of(inst)
        ltp = self.prices.price(inst, second)
        band = self.config.band_pct
        checks = (("price", price, uses_price), ("trigger price", trigger, uses_trigger and armed))
        for name, value, used in checks:
            if not used or value is None:
                continue
            if value <= 0 or value % tick:
                return RejectCode.TICK_SIZE, f"{name} {value} is not a positive multiple of the tick {tick}"
            if band is not None and abs(value - ltp) * 100 > ltp * band:
                return RejectCode.PRICE_BAND, f"{name} {value} is outside {band}% of the last price {ltp}"
        if uses_trigger and trigger is not None and armed:
            # A stop must sit beyond the market, else it would trigger at once (exchange rule).
            if (trigger - ltp) * side.sign <= 0:
                where = "above" if side is Side.BUY else "below"
                return RejectCode.TRIGGER, (
                    f"{side.value.lower()} stop trigger {trigger} must be {where} the last price {ltp}"
                )
            if uses_price and price is not None and (price - trigger) * side.sign < 0:
                return RejectCode.TRIGGER, f"limit {price} is on the wrong side of the trigger {trigger}"
        return None

    # order entry -----------------------------------------------------------------------------------

    def _new_state(self, book: Book, req: OrderRequest, second: int, group: str | None) -> OrderState:
        seq = book.next_seq
        book.next_seq += 1
        earlier = book.by_client.get(req.client_order_id)
        return OrderState(
            seq=seq,
            broker_order_id=str(_ORDER_ID_BASE + seq),
            client_order_id=req.client_order_id,
            instrument=req.instrument,
            side=req.side,
            quantity=req.quantity,
            order_type=req.order_type,
            product=req.product,
            validity=req.validity,
            price=req.price if req.order_type in (OrderType.LIMIT, OrderType.SL) else None,
            trigger_price=req.trigger_price if req.order_type in (OrderType.SL, OrderType.SL_M) else None,
            tag=req.tag,
            placed_second=second,
            expires_second=self._expiry(second, req.validity),
            group=group,
            updated_second=second,
            repeat=0 if earlier is None else earlier.repeat + 1,
        )

    def _admit(self, book: Book, o: OrderState, verdict: tuple[RejectCode, str] | None, second: int) -> None:
        if verdict is None:
            o.set_status(_S.OPEN)
        else:
            o.set_status(_S.REJECTED)
            o.reject_code, o.reject_reason = verdict
        book.add_order(o)
        book.touch(o, second)

    def _duplicate(self, book: Book, client_ids: Iterable[str]) -> None:
        seen: set[str] = set()
        refuse = self.config.idempotent_client_ids
        for cid in client_ids:
            if (refuse and cid in book.by_client) or cid in seen:  # one request never names a cid twice
                raise Rejected(f"client order id {cid} already exists", code=RejectCode.DUPLICATE.value,
                               broker="paper")
            seen.add(cid)

    def place(self, account: str, request: OrderRequest, now: dt.datetime) -> Order:
        book = self.book(account)
        second = second_of(now)
        self._pass(book, second)
        self._duplicate(book, (request.client_order_id,))
        o = self._new_state(book, request, second, None)
        verdict = self._check(request.instrument, request.side, request.quantity, request.order_type,
                              o.price, o.trigger_price, second)
        self._admit(book, o, verdict, second)
        return o.snapshot()

    def place_multileg(self, account: str, request: MultilegRequest, now: dt.datetime) -> list[Order]:
        """All legs are accepted together or all recorded as REJECTED."""
        book = self.book(account)
        second = second_of(now)
        self._pass(book, second)
        self._duplicate(book, [leg.client_order_id for leg in request.legs])
        states = [self._new_state(book, leg, second, request.client_order_id) for leg in request.legs]
        verdicts = [
            self._check(o.instrument, o.side, o.quantity, o.order_type, o.price, o.trigger_price, second)
            for o in states
        ]
        failed = next(((i, v) for i, v in enumerate(verdicts) if v is not None), None)
        for o in states:
            if failed is None:
                self._admit(book, o, None, second)
            else:
                i, (code, reason) = failed
                self._admit(book, o, (RejectCode.MULTILEG if o is not states[i] else code,
                                      f"multileg leg {i + 1}: {reason}"), second)
        return [o.snapshot() for o in states]

    # lookups ---------------------------------------------------------------------------------------

    def _state(self, book: Book, broker_order_id: str) -> OrderState:
        o = book.orders.get(broker_order_id)
        if o is None:
            raise NotFound(f"no order {broker_order_id}", code=RejectCode.NOT_FOUND.value, broker="paper")
        return o

    def get(self, account: str, broker_order_id: str, now: dt.datetime) -> Order:
        book = self.book(account)
        self._pass(book, second_of(now))
        return self._state(book, broker_order_id).snapshot()

    def find(self, account: str, client_order_id: str, now: dt.datetime) -> Order | None:
        book = self.book(account)
        second = second_of(now)
        self._pass(book, second)
        o = book.by_client.get(client_order_id)
        lag = self.config.lookup_lag
        if o is None or (lag and second - o.placed_second < lag):
            return None
        return o.snapshot()

    def group(self, account: str, multileg_client_id: str, now: dt.datetime) -> list[Order]:
        book = self.book(account)
        self._pass(book, second_of(now))
        return [o.snapshot() for o in book.orders.values() if o.group == multileg_client_id]

    def orders(self, account: str, now: dt.datetime) -> list[Order]:
        """Orders of the trading day (local date of ``now``) plus any still working."""
        book = self.book(account)
        second = second_of(now)
        self._pass(book, second)
        today = self._day(second)
        return [o.snapshot() for o in book.orders.values()
                if o.status.is_working or self._day(o.placed_second) == today]

    def open_orders(self, account: str, now: dt.datetime) -> list[Order]:
        book = self.book(account)
        self._pass(book, second_of(now))
        return [o.snapshot() for o in book.working.values() if not o.status.is_terminal]

    def positions(self, account: str, now: dt.datetime) -> list[Position]:
        book = self.book(account)
        second = second_of(now)
        self._pass(book, second)
        today = self._day(second)
        return [p.snapshot(today) for p in book.positions.values()]

    def fills(self, account: str, now: dt.datetime) -> list[Fill]:
        book = self.book(account)
        self._pass(book, second_of(now))
        return list(book.fills)

    def reject_code(self, account: str, client_order_id: str) -> RejectCode | None:
        o = self.book(account).by_client.get(client_order_id)
        return o.reject_code if o is not None else None

    # changes to working orders ---------------------------------------------------------------------

    def _modifiable(self, book: Book, broker_order_id: str, what: str) -> OrderState:
        o = self._state(book, broker_order_id)
        if o.status not in (_S.OPEN, _S.PARTIALLY_FILLED):
            raise NotModifiable(f"order {broker_order_id} is {o.status.value}: cannot {what}",
                                code=RejectCode.NOT_MODIFIABLE.value, broker="paper")
        return o

    def modify(self, account: str, broker_order_id: str, change: Modification, now: dt.datetime) -> Order:
        book = self.book(account)
        second = second_of(now)
        self._pass(book, second)
        o = self._modifiable(book, broker_order_id, "modify")
        otype = change.order_type or o.order_type
        qty = change.quantity if change.quantity is not None else o.quantity
        price = change.price if change.price is not None else o.price
        trigger = change.trigger_price if change.trigger_price is not None else o.trigger_price
        if otype in (OrderType.MARKET, OrderType.SL_M):
            price = None
        if otype in (OrderType.MARKET, OrderType.LIMIT):
            trigger = None
        keep_trigger = o.triggered and otype in (OrderType.SL, OrderType.SL_M) and trigger == o.trigger_price
        # A triggered stop's trigger is history: only its new limit/quantity need checking.
        verdict = self._check(o.instrument, o.side, qty, otype, price, trigger, second, o.filled_quantity,
                              armed=not keep_trigger)
        if verdict is not None:
            raise Rejected(f"modification refused: {verdict[1]}", code=verdict[0].value, broker="paper")
        o.order_type, o.quantity, o.price, o.trigger_price = otype, qty, price, trigger
        o.triggered = keep_trigger
        o.checked_second = None
        o.rested = False  # a modified order loses its queue position and looks afresh
        book.touch(o, second)
        return o.snapshot()

    def cancel(self, account: str, broker_order_id: str, now: dt.datetime) -> Order:
        book = self.book(account)
        second = second_of(now)
        self._pass(book, second)
        o = self._state(book, broker_order_id)
        if o.status is _S.PENDING_CANCEL:
            return o.snapshot()
        o = self._modifiable(book, broker_order_id, "cancel")
        o.set_status(_S.PENDING_CANCEL)
        o.cancel_second = second + math.ceil(self.config.cancel_delay)
        o.checked_second = None
        book.touch(o, second)
        return o.snapshot()

    # matching --------------------------------------------------------------------------------------

    def process(self, now: dt.datetime, account: str | None = None) -> None:
        """Advance matching to ``now`` for one account or all."""
        second = second_of(now)
        for book in [self.books[account]] if account is not None else list(self.books.values()):
            self._pass(book, second)

    def _points(self, last: int | None, now: int) -> Sequence[int]:
        if last is None or now <= last:
            return (now,)
        # ``last`` itself is included: orders placed during the last pass's second have not been
        # looked at yet (orders already checked at a second are skipped).
        gap = now - last
        k = self.config.max_catchup_points
        if gap <= k:
            return range(last, now + 1)
        return [last + (gap * i) // k for i in range(k + 1)]

    def _pass(self, book: Book, now: int) -> None:
        if not book.working:
            book.last_second = now if book.last_second is None else max(book.last_second, now)
            return
        points = self._points(book.last_second, now)
        prices = self.prices
        # Time-major, then placement order: fills (and so average prices) follow the path's time.
        live = sorted(book.working.values(), key=_by_seq)
        for s in points:
            for o in live:
                if s >= o.placed_second and o.checked_second != s and not o.status.is_terminal:
                    self._match(book, o, s, prices)
                    o.checked_second = s
            if not book.working:
                break
        book.last_second = now if book.last_second is None else max(book.last_second, now)

    def _match(self, book: Book, o: OrderState, s: int, prices: PricePath) -> None:
        if o.status is _S.PENDING_CANCEL and o.cancel_second is not None and s >= o.cancel_second:
            o.set_status(_S.CANCELLED)
            book.touch(o, s)
            return
        if o.expires_second is not None and s >= o.expires_second:
            o.set_status(_S.EXPIRED)
            book.touch(o, s)
            return
        p = prices.price(o.instrument, s)
        buy = o.side is Side.BUY
        if o.order_type in (OrderType.SL, OrderType.SL_M) and not o.triggered:
            assert o.trigger_price is not None
            if (p >= o.trigger_price) if buy else (p <= o.trigger_price):
                o.triggered = True
                book.touch(o, s)
            else:
                return
        fill_price: Decimal | None = None
        if o.order_type in (OrderType.MARKET, OrderType.SL_M):
            slip = tick_of(o.instrument) * self.config.slippage_ticks
            fill_price = p + slip if buy else max(p - slip, tick_of(o.instrument))
        else:
            assert o.price is not None
            if (p <= o.price) if buy else (p >= o.price):
                fill_price = o.price if o.rested else p
        if fill_price is not None and o.last_fill_second != s:
            qty = o.quantity - o.filled_quantity
            cap = self.config.fill_slice
            if cap:
                lot = o.instrument.lot_size or 1
                qty = min(qty, max(lot, cap - cap % lot))
            self._fill(book, o, qty, fill_price, s)
        elif fill_price is None and not o.rested:
            o.rested = True
            book.touch(o, s)
        if o.validity is Validity.IOC and not o.status.is_terminal:
            o.set_status(_S.CANCELLED)
            book.touch(o, s)

    def _fill(self, book: Book, o: OrderState, qty: int, price: Decimal, s: int) -> None:
        o.filled_quantity += qty
        o.fill_value += price * qty
        o.fill_count += 1
        o.last_fill_second = s
        if o.filled_quantity >= o.quantity:
            o.set_status(_S.FILLED)
        elif o.status is _S.OPEN:
            o.set_status(_S.PARTIALLY_FILLED)
        book.touch(o, s)
        at = _utc(s)
        f = Fill(o.client_order_id, o.broker_order_id, o.instrument, o.side, qty, price, at,
                 trade_id=f"{o.broker_order_id}-{o.fill_count}")
        book.fills.append(f)
        book.new_fills.append(f)
        key = (o.instrument.key, o.product)
        pos = book.positions.get(key)
        if pos is None:
            pos = book.positions[key] = PositionState(o.instrument, o.product)
        pos.apply(o.side, qty, price, self._day(s))
        book.changed_positions[key] = pos


def _by_seq(o: OrderState) -> int:
    return o.seq
