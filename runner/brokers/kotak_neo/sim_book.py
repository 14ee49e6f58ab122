"""The Kotak Neo simulator's state and wire handling, apart from its HTTP server
(:mod:`runner.brokers.kotak_neo.sim`): users, sessions and per-user order books, the ``ordSt`` strings
and order-book / history rows Kotak shows for them, and the ``stat``/``stCode`` error envelopes.
Assumptions where Kotak publishes nothing are marked "sim:".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from runner.brokers.instruments import InstrumentMaster, MasterRow
from runner.brokers.kotak_neo.wire import (
    AMO_STATUS,
    CODE_NOT_FOUND,
    EXCHANGE_OF_SEGMENT,
    ORDER_TYPE_CODE,
    totp,
)
from runner.brokers.paper.matching import MatchingEngine
from runner.clock import Clock
from runner.errors import Rejected
from runner.model import (
    Instrument,
    Modification,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    Product,
)
from runner.wirejson import plain

IST = ZoneInfo("Asia/Kolkata")
MARKET_OPEN = dt.time(9, 15)
# Canonical status -> the ordSt the order book shows. Partial fills stay "open" with fldQty > 0.
ORDST_OF_STATUS: dict[OrderStatus, str] = {
    OrderStatus.PENDING_NEW: "open pending",
    OrderStatus.OPEN: "open",
    OrderStatus.PARTIALLY_FILLED: "open",
    OrderStatus.PENDING_CANCEL: "cancel pending",  # sim: NEST-style spelling
    OrderStatus.FILLED: "complete",
    OrderStatus.CANCELLED: "cancelled",
    OrderStatus.REJECTED: "rejected",
    OrderStatus.EXPIRED: "cancelled",  # sim: an expired DAY order shows as cancelled by the exchange
    OrderStatus.UNKNOWN: "open",
}
PRODUCT_OF_WIRE = {"MIS": Product.MIS, "NRML": Product.NRML, "CNC": Product.CNC, "MTF": Product.CNC,
                   "BO": Product.MIS, "CO": Product.MIS, "INTRADAY": Product.MIS}


def envelope(code: int, message: str) -> dict[str, Any]:
    return {"stat": "Not_Ok", "emsg": message, "stCode": code}


class WireError(Exception):
    def __init__(self, code: int, message: str, http_status: int = 200) -> None:
        super().__init__(message)
        self.body = envelope(code, message)
        self.http_status = http_status


@dataclass
class SimUser:
    ucc: str
    mobile_number: str | None = None
    mpin: str | None = None
    totp_secret: str | None = None
    access_token: str | None = None


@dataclass
class SimSession:
    ucc: str
    token: str
    sid: str
    kind: str  # "View" | "Trade"
    created: dt.datetime
    ip: str | None


@dataclass
class WireOrder:
    """What Kotak shows that the canonical engine does not model."""

    number: str
    client_id: str
    es: str
    ts: str
    token: str
    prod: str
    amo: bool
    engine_id: str | None  # None while an AMO waits for the open
    request: OrderRequest
    placed: dt.datetime
    history: list[dict[str, Any]] = field(default_factory=list)
    cancelled_amo: bool = False


class SimBook:
    """Per-user order books over the matching engine and the rows Kotak shows for them (no HTTP).
    :class:`runner.brokers.kotak_neo.sim.KotakNeoSim` sets these attributes and serves the routes."""

    engine: MatchingEngine
    clock: Clock
    master: InstrumentMaster | None
    orders: dict[str, dict[str, WireOrder]]  # ucc -> number -> order
    # indexes over ``orders`` kept by _add, so no request scans a whole book (a burst's places and reads
    # would cost O(book) each): ucc -> client ids in its book; ucc -> AMOs not yet sent to the exchange
    _client_ids: dict[str, set[str]]
    _waiting_amos: dict[str, list[WireOrder]]
    _seq: Iterator[int]
    _ns: Iterator[int]
    _by_segment_symbol: dict[tuple[str, str], MasterRow]

    # -- order entry --------------------------------------------------------------------------------
    def _instrument(self, es: str, ts: str) -> tuple[Instrument, str]:
        row = self._by_segment_symbol.get((es, ts.upper()))
        if row is not None:
            return row.instrument, row.token or ""
        if self.master is not None:
            raise WireError(400, f"Invalid trading symbol {ts} for {es}")
        exchange = EXCHANGE_OF_SEGMENT.get(es)
        if exchange is None:
            raise WireError(400, f"Invalid exchange segment {es}")
        return Instrument(exchange=exchange, symbol=ts.upper()), ""

    def _book(self, ucc: str) -> dict[str, WireOrder]:
        return self.orders.setdefault(ucc, {})

    def _add(self, ucc: str, order: WireOrder) -> None:
        self._book(ucc)[order.number] = order
        self._client_ids.setdefault(ucc, set()).add(order.client_id)
        if order.amo and order.engine_id is None:
            self._waiting_amos.setdefault(ucc, []).append(order)

    def _has_client_id(self, ucc: str, client_id: str) -> bool:
        return client_id in self._client_ids.get(ucc, ())

    def _number(self) -> str:
        today = self.clock.now().astimezone(IST)
        return f"{today:%y%m%d}{next(self._seq):09d}"

    def _submit(self, ucc: str, order: WireOrder) -> None:
        try:
            placed = self.engine.place(ucc, order.request, self.clock.now())
        except Rejected as exc:  # refused by the matching engine (lot size, price band): a rejection
            raise WireError(400, exc.message) from None
        order.engine_id = placed.broker_order_id

    def _release_amos(self, ucc: str) -> None:
        """AMOs wait for the next 09:15 IST after they were placed, then go to the exchange."""
        waiting = self._waiting_amos.get(ucc)
        if not waiting:
            return
        now = self.clock.now()
        for order in waiting:  # in the order they were placed, as the book is
            if order.engine_id is None and not order.cancelled_amo:
                placed = order.placed.astimezone(IST)
                open_at = dt.datetime.combine(placed.date(), MARKET_OPEN, IST)
                if placed >= open_at:
                    open_at += dt.timedelta(days=1)
                if now >= open_at:
                    self._submit(ucc, order)
        waiting[:] = [o for o in waiting if o.engine_id is None and not o.cancelled_amo]

    def _find(self, ucc: str, number: Any) -> WireOrder:
        self._release_amos(ucc)
        order = self._book(ucc).get(str(number or ""))
        if order is None:
            raise WireError(CODE_NOT_FOUND, "Order already cancelled or not found.")
        return order

    def _exit_position(self, ucc: str, order: WireOrder, current: Order) -> None:
        req = order.request
        exit_req = OrderRequest(client_order_id=f"{order.client_id}-exit", instrument=req.instrument,
                                side=req.side.opposite, quantity=current.filled_quantity,
                                order_type=OrderType.MARKET, product=req.product)
        number = self._number()
        child = WireOrder(number, exit_req.client_order_id, order.es, order.ts, order.token, order.prod,
                          False, None, exit_req, self.clock.now())
        self._submit(ucc, child)
        self._add(ucc, child)
        self._record(ucc, child, ["put order req received"])

    # -- reports ------------------------------------------------------------------------------------
    def _engine_order(self, ucc: str, order: WireOrder) -> Order | None:
        if order.engine_id is None:
            return None
        return self.engine.get(ucc, order.engine_id, self.clock.now())

    def _row(self, ucc: str, order: WireOrder, current: Order | None) -> dict[str, Any]:
        """The row Kotak shows for ``order``, ``current`` being its engine state (_engine_order)."""
        req = order.request
        if current is None:
            status = "cancelled" if order.cancelled_amo else AMO_STATUS
            filled, avg, qty = 0, None, req.quantity
            price, trigger, updated = req.price, req.trigger_price, order.placed
            reason = "--"
        else:
            status = ORDST_OF_STATUS[current.status]
            filled, avg, qty = current.filled_quantity, current.average_price, current.quantity
            price, trigger = current.price, current.trigger_price
            updated = current.updated_at or order.placed
            reason = current.reject_reason or "--"
        order_type = current.order_type if current is not None else req.order_type
        local = updated.astimezone(IST)
        cancelled = qty - filled if status == "cancelled" else 0
        return {
            "nOrdNo": order.number, "ordSt": status, "stat": status, "trdSym": order.ts, "tok": order.token,
            "exSeg": order.es, "trnsTp": "B" if req.side.value == "BUY" else "S",
            "prcTp": ORDER_TYPE_CODE[order_type], "prod": order.prod, "qty": qty, "fldQty": filled,
            "unFldSz": 0 if status in ("complete", "cancelled", "rejected") else qty - filled,
            "cnlQty": cancelled, "prc": plain(price) if price is not None else "0.00",
            "avgPrc": plain(avg) if avg is not None else "0.00",
            "trgPrc": plain(trigger) if trigger is not None else "0.00",
            "vldt": req.validity.value, "rejRsn": reason, "exOrdId": f"1100{order.number[-12:]}",
            "ordDtTm": f"{order.placed.astimezone(IST):%d-%b-%Y %H:%M:%S}",
            "hsUpTm": f"{local:%Y/%m/%d %H:%M:%S}", "GuiOrdId": order.client_id if order.client_id else "",
            "lotSz": str(req.instrument.lot_size or 1), "multiplier": plain(req.instrument.multiplier),
            "precision": "2",
            "algId": "NA", "ordGenTp": "AMO" if order.amo else "NA",
            "updRecvTm": int(updated.timestamp()) * 1_000_000_000 + next(self._ns),
        }

    def _record(self, ucc: str, order: WireOrder, before: list[str]) -> None:
        row = self._row(ucc, order, self._engine_order(ucc, order))
        for status in before:
            order.history.append({**row, "ordSt": status, "stat": status, "fldQty": 0,
                                  "updRecvTm": row["updRecvTm"] - 1_000 + next(self._ns)})
        order.history.append({**row, "updRecvTm": row["updRecvTm"] + next(self._ns)})

    def _current(self, ucc: str, order: WireOrder) -> dict[str, Any]:
        current = self._engine_order(ucc, order)
        last = order.history[-1] if order.history else None
        # a whole row is built only when what it shows has changed (reads in a burst mostly see no change)
        if last is not None and _shown(order, current) == tuple(last.get(k) for k in _SHOWN):
            return last
        row = self._row(ucc, order, current)
        row["updRecvTm"] = max(row["updRecvTm"], (last or {}).get("updRecvTm", 0) + 1)
        order.history.append(row)
        return row


_SHOWN = ("ordSt", "fldQty", "qty", "prc", "trgPrc")  # a row field that changed makes a new history entry


def _shown(order: WireOrder, current: Order | None) -> tuple[Any, ...]:
    """The _SHOWN fields of the row _row would build (without building it)."""
    if current is None:
        status = "cancelled" if order.cancelled_amo else AMO_STATUS
        req = order.request
        filled, qty, price, trigger = 0, req.quantity, req.price, req.trigger_price
    else:
        status, filled, qty = ORDST_OF_STATUS[current.status], current.filled_quantity, current.quantity
        price, trigger = current.price, current.trigger_price
    return (status, filled, qty, plain(price) if price is not None else "0.00",
            plain(trigger) if trigger is not None else "0.00")


def _login_error(message: str) -> WireError:
    err = WireError(400, message, http_status=400)
    err.body = {"error": [{"code": "400", "message": message}]}
    return err


def _totp_ok(secret: str, code: str, now: dt.datetime) -> bool:
    ts = now.timestamp()
    return any(totp(secret, ts + drift) == code for drift in (-30, 0, 30))  # one step of clock skew


def _segment_of(instrument: Instrument) -> str:
    from runner.brokers.kotak_neo.wire import SEGMENT_OF_EXCHANGE

    return SEGMENT_OF_EXCHANGE.get(instrument.exchange.upper(), instrument.exchange.lower())


def _apply(req: OrderRequest, change: Modification) -> OrderRequest:
    from dataclasses import replace

    return replace(req, quantity=change.quantity or req.quantity,
                   order_type=change.order_type or req.order_type,
                   price=change.price, trigger_price=change.trigger_price)
