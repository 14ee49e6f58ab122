"""The simulated Blitz OMS behind :class:`runner.brokers.blitz.sim.BlitzSim`: its order records, history
and trade rows in Blitz's wire shape, order handling (place/modify/cancel) and positions.

Orders are matched by the shared paper engine (:mod:`runner.brokers.paper.matching`); the HTTP side
(auth, routing, envelopes, faults) stays in :mod:`runner.brokers.blitz.sim`.
"""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from runner.brokers.blitz.wire import exchange_segment, instrument_id
from runner.brokers.instruments import InstrumentMaster, MasterRow
from runner.brokers.paper.book import OrderState, money
from runner.brokers.paper.matching import MatchingEngine
from runner.brokers.paper.price_paths import tick_of
from runner.clock import Clock
from runner.errors import NotModifiable, Rejected
from runner.model import (
    Modification,
    OrderRequest,
    OrderStatus,
    OrderType,
    Product,
    Side,
    Validity,
)
from runner.wirejson import to_decimal

ID_BASE = 226_010_000_000_000_000  # blitzOrderId shape: 18 digits (docs show 225121947920000006)
EXCH_ID_BASE = 3_204_164_728_000_000  # exchangeOrderId shape: 16 digits
EXEC_ID_BASE = 10_000_000  # executionId


class ApiError(Exception):
    def __init__(self, status: int, message: str, error_type: str) -> None:
        super().__init__(message)
        self.status, self.message, self.error_type = status, message, error_type


def _decimal(value: Any, name: str) -> Decimal:
    if value is None or value == "":
        return Decimal(0)
    d = to_decimal(value)
    if d is None or not d.is_finite():
        raise ApiError(400, f"{name} is not a number", "InputException")
    return d


def _int(value: Any, name: str) -> int:
    d = _decimal(value, name)
    if d != d.to_integral_value():
        raise ApiError(400, f"{name} must be an integer", "InputException")
    return int(d)


_TYPES = {
    "limit": OrderType.LIMIT,
    "market": OrderType.MARKET,
    "sl": OrderType.SL,
    "slm": OrderType.SL_M,
    "stoplimit": OrderType.SL,
    "stopmarket": OrderType.SL_M,
}
_TYPE_OUT = {OrderType.LIMIT: "Limit", OrderType.MARKET: "Market", OrderType.SL: "SL", OrderType.SL_M: "SL-M"}
_SIDES = {"buy": Side.BUY, "sell": Side.SELL}
_EXEC_OF_STATUS = {
    "New": "New",
    "TriggerPending": "New",
    "Cancelled": "Canceled",
    "Rejected": "Rejected",
    "Expired": "Expired",
    "PendingCancel": "None",
    "PartiallyFilled": "PartialFill",
    "Filled": "Fill",
}


def _norm(text: Any) -> str:
    return "".join(ch for ch in str(text).lower() if ch.isalnum())


_STATUS_OUT = {
    OrderStatus.PENDING_NEW: "PendingNew",
    OrderStatus.OPEN: "New",
    OrderStatus.PARTIALLY_FILLED: "PartiallyFilled",
    OrderStatus.FILLED: "Filled",
    OrderStatus.PENDING_CANCEL: "PendingCancel",
    OrderStatus.CANCELLED: "Cancelled",
    OrderStatus.REJECTED: "Rejected",
    OrderStatus.EXPIRED: "Expired",
}


def blitz_status(st: OrderState) -> str:
    if st.status is OrderStatus.OPEN and st.order_type in (OrderType.SL, OrderType.SL_M) and not st.triggered:
        return "TriggerPending"
    return _STATUS_OUT.get(st.status, "New")


@dataclass
class SimOrder:
    """One Blitz order: the engine's order (by its broker id) plus Blitz ids and history rows."""

    blitz_order_id: int
    engine_id: str
    exchange_order_id: str
    correlation_order_id: str
    client_id: str
    row: MasterRow
    instrument_id: int
    tif: str
    history: list[dict[str, Any]] = field(default_factory=list)
    modification_count: int = 0
    trade_count: int = 0
    reported_filled: int = 0
    reported_value: Decimal = Decimal(0)
    user_id: str = ""  # who logged in to place it (clientId may name another trading code)


@dataclass
class Session:
    user_id: str
    issued_at: dt.datetime


class SimOms:
    """Order state and Blitz rows; :class:`runner.brokers.blitz.sim.BlitzSim` sets the attributes below."""

    clock: Clock
    master: InstrumentMaster
    engine: MatchingEngine
    users: dict[str, str]
    orders: dict[int, SimOrder]
    trades: list[dict[str, Any]]
    _ids: itertools.count[int]
    _seq: itertools.count[int]
    _by_engine_id: dict[tuple[str, str], SimOrder]
    _by_exchange_id: dict[str, SimOrder]
    _by_iid: dict[int, MasterRow]
    _by_symbol: dict[str, MasterRow]

    # -- rows ------------------------------------------------------------------------------------------

    def _state(self, o: SimOrder) -> OrderState:
        return self.engine.book(o.client_id).orders[o.engine_id]

    def _snapshot(
        self,
        o: SimOrder,
        execution_type: str,
        *,
        status: str | None = None,
        last_qty: int = 0,
        last_px: Decimal = Decimal(0),
        execution_id: str = "",
    ) -> dict[str, Any]:
        st = self._state(o)
        now_ms = int(self.clock.now().timestamp() * 1000)
        first_ms = o.history[0]["orderGeneratedDateTime"] if o.history else now_ms
        inst = o.row.instrument
        seg = exchange_segment(o.row)
        name = o.row.trading_symbol or inst.symbol
        filled = o.reported_filled
        avg = money(o.reported_value / filled) if filled else Decimal(0)
        status = status or blitz_status(st)
        completed = status in ("Filled", "Cancelled", "Rejected", "Expired")
        return {
            "id": o.blitz_order_id % 100000,
            "entityId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"blitz-sim/{o.client_id}")),
            "strategyId": str(uuid.uuid5(uuid.NAMESPACE_URL, "blitz-sim/manual")),
            "strategyInstanceId": str(
                uuid.uuid5(uuid.NAMESPACE_URL, f"blitz-sim/{o.client_id}/{seg}|{name}")
            ),
            "strategyInstanceName": f"{seg}|{name}",
            "strategyName": "Manual Trading",
            "ivObjectName": name,
            "instrumentId": o.instrument_id,
            "exchangeSegment": seg,
            "exchangeInstrumentId": o.instrument_id % 10_000_000,
            "instrumentName": name,
            "instrumentType": 2 if inst.is_derivative else 1,
            "blitzOrderId": o.blitz_order_id,
            "exchangeOrderId": o.exchange_order_id,
            "executionId": execution_id,
            "account": "",
            "clientId": o.client_id,
            "orderType": _TYPE_OUT[st.order_type],
            "orderSide": "Buy" if st.side is Side.BUY else "Sell",
            "orderStatus": status,
            "status": status,  # the SDK docs name the field "status", the seed "orderStatus"
            "orderQuantity": st.quantity,
            "orderPrice": st.price or Decimal(0),
            "orderStopPrice": st.trigger_price or Decimal(0),
            "orderTriggerPrice": st.trigger_price or Decimal(0),
            "lastTradedQuantity": last_qty,
            "lastTradedPrice": last_px,
            "cumulativeQuantity": filled,
            "leavesQuantity": 0 if completed else st.quantity - filled,
            "tif": o.tif,
            "orderExpiryDate": first_ms,
            "orderDisclosedQuantity": 0,
            "minimumQuantity": 0,
            "orderGeneratedDateTime": first_ms,
            "lastRequestDateTime": now_ms,
            "exchangeTransactTime": now_ms,
            "orderModificationCount": o.modification_count,
            "orderTradeCount": o.trade_count,
            "averageTradedPrice": avg,
            "averageTradedValue": o.reported_value,
            "isFictiveOrder": False,
            "rejectType": "RMS" if status == "Rejected" else "None",
            "rejectTypeReason": (st.reject_reason or "") if status == "Rejected" else "",
            "orderTag": "NormalOrder",
            "ctclId": "123456781234567",
            "algoId": "",
            "algoCategoryId": "",
            "clearingFirmId": "",
            "panId": "",
            "isOrderCompleted": completed,
            "userText": "",
            "executionType": execution_type,
            "strategyTag": "General",
            "sequenceNumber": next(self._seq),
            "correlationOrderId": o.correlation_order_id,
            "productType": st.product.value,
            "sourceResponse": None,
        }

    def _record(self, o: SimOrder, execution_type: str, **kw: Any) -> dict[str, Any]:
        row = self._snapshot(o, execution_type, **kw)
        o.history.append(row)
        return row

    def _sync(self, account: str, *, execution_type: str | None = None) -> None:
        """Turn what the engine changed (fills, status moves) into Blitz history and trade rows."""
        book = self.engine.book(account)
        changed, _positions, fills = book.drain()
        for f in fills:
            o = self._by_engine_id[(account, str(f.broker_order_id))]
            o.trade_count += 1
            o.reported_filled += f.quantity
            o.reported_value += f.price * f.quantity
            st = self._state(o)
            done = o.reported_filled >= st.quantity
            self.trades.append(
                self._record(
                    o,
                    "Fill" if done else "PartialFill",
                    status="Filled" if done else "PartiallyFilled",
                    last_qty=f.quantity,
                    last_px=f.price,
                    execution_id=f"{EXEC_ID_BASE + len(self.trades) + 1}",
                )
            )
        for st in changed:
            o = self._by_engine_id[(account, st.broker_order_id)]
            status = blitz_status(st)
            if not o.history or o.history[-1]["orderStatus"] != status or execution_type:
                kind = execution_type or _EXEC_OF_STATUS.get(status, "None")
                self._record(o, kind)
            execution_type = None

    def _process(self) -> None:
        now = self.clock.now()
        for account in list(self.engine.books):
            self.engine.process(now, account)
            self._sync(account)

    # -- orders ----------------------------------------------------------------------------------------

    def _resolve(self, body: Mapping[str, Any]) -> tuple[MasterRow, int]:
        iid_raw = body.get("instrumentid")
        if iid_raw not in (None, "", 0, "0"):
            iid = _int(iid_raw, "instrumentId")
            row = self._by_iid.get(iid)
            if row is None:
                raise ApiError(404, f"Instrument {iid} not found", "InputException")
            return row, iid
        symbol = str(body.get("symbol") or "").upper()
        seg = str(body.get("exchangesegment") or "").upper()
        row = self._by_symbol.get(symbol) or self._by_symbol.get(f"{seg}|{symbol}")
        if row is None:
            raise ApiError(404, f"Instrument not found for symbol {symbol or '<none>'}", "InputException")
        return row, instrument_id(row)

    @staticmethod
    def _order_type(raw: Any) -> OrderType:
        t = _TYPES.get(_norm(raw))
        if t is None:
            raise ApiError(400, f"invalid orderType {raw!r}", "InputException")
        return t

    def place(self, session: Session, body: Mapping[str, Any]) -> dict[str, Any]:
        row, iid = self._resolve(body)
        side = _SIDES.get(_norm(body.get("orderside")))
        if side is None:
            raise ApiError(400, f"invalid orderSide {body.get('orderside')!r}", "InputException")
        otype = self._order_type(body.get("ordertype"))
        qty = _int(body.get("quantity"), "quantity")
        price = _decimal(body.get("price"), "price")
        stop = _decimal(body.get("stopprice"), "stopPrice")
        try:
            product = Product(str(body.get("product") or "").upper())
        except ValueError:
            raise ApiError(400, f"invalid product {body.get('product')!r}", "InputException") from None
        tif = str(body.get("tif") or "GFD").upper()
        if tif not in ("GFD", "DAY", "IOC", "GTD"):
            raise ApiError(400, f"invalid tif {body.get('tif')!r}", "InputException")
        client_id = str(body.get("clientid") or session.user_id)
        if self.users and client_id not in self.users:
            raise ApiError(404, f"client {client_id} not found", "InputException")
        boid = ID_BASE + next(self._ids)
        correlation = str(body.get("correlationorderid") or boid)  # seed rows echo the blitzOrderId
        try:
            req = OrderRequest(
                client_order_id=str(boid),  # the engine refuses duplicate ids; Blitz does not: key by ours
                instrument=row.instrument,
                side=side,
                quantity=qty,
                order_type=otype,
                product=product,
                validity=Validity.IOC if tif == "IOC" else Validity.DAY,
                price=price if otype in (OrderType.LIMIT, OrderType.SL) and price else None,
                trigger_price=stop if otype in (OrderType.SL, OrderType.SL_M) and stop else None,
            )
        except ValueError as exc:
            raise ApiError(400, str(exc), "InputException") from None
        now = self.clock.now()
        self._process()
        placed = self.engine.place(client_id, req, now)
        assert placed.broker_order_id is not None
        o = SimOrder(boid, placed.broker_order_id, "", correlation, client_id, row, iid, tif)
        o.user_id = session.user_id
        self.orders[boid] = o
        self._by_engine_id[(client_id, placed.broker_order_id)] = o
        self._record(o, "None", status="PendingNew")  # registered with the OMS
        if placed.status is OrderStatus.REJECTED:
            self._sync(client_id, execution_type="Rejected")
            # The OMS validates before routing (seed: 400 "parameters are invalid").
            raise ApiError(400, f"Order rejected: {placed.reject_reason}", "OrderException")
        o.exchange_order_id = str(EXCH_ID_BASE + boid % 1_000_000)
        self._by_exchange_id[o.exchange_order_id] = o
        self._sync(client_id, execution_type="New")
        self.engine.process(now, client_id)  # a marketable order meets the market at once
        self._sync(client_id)
        return {"blitzOrderId": boid, "correlationOrderId": correlation}

    def _find(self, body: Mapping[str, Any]) -> SimOrder:
        boid = body.get("blitzorderid")
        o: SimOrder | None
        if boid not in (None, "", 0, "0"):
            o = self.orders.get(_int(boid, "blitzOrderId"))
        elif body.get("exchangeorderid") not in (None, ""):
            o = self._by_exchange_id.get(str(body["exchangeorderid"]))
        else:
            raise ApiError(400, "blitzOrderId or exchangeOrderId is required", "InputException")
        if o is None:
            raise ApiError(404, "Order not found", "OrderException")
        iid = body.get("instrumentid")
        if iid not in (None, "", 0, "0") and _int(iid, "instrumentId") != o.instrument_id:
            raise ApiError(400, "instrumentId does not match the order", "InputException")
        return o

    def modify(self, body: Mapping[str, Any]) -> str:
        o = self._find(body)
        st = self._state(o)
        qty_raw = body.get("modifiedorderquantity")
        qty = _int(qty_raw if qty_raw not in (None, "", 0) else body.get("quantity"), "quantity")
        otype = self._order_type(body.get("ordertype")) if body.get("ordertype") else st.order_type
        price = _decimal(body.get("price"), "price")
        stop = _decimal(body.get("stopprice"), "stopPrice")
        change = Modification(
            quantity=qty or None,
            order_type=otype,
            price=price if otype in (OrderType.LIMIT, OrderType.SL) and price else None,
            trigger_price=stop if otype in (OrderType.SL, OrderType.SL_M) and stop else None,
        )
        now = self.clock.now()
        try:
            self.engine.modify(o.client_id, o.engine_id, change, now)
        except NotModifiable as exc:
            raise ApiError(
                403, f"Order {o.blitz_order_id} cannot be modified: {exc.message}", "OrderException"
            ) from None
        except Rejected as exc:
            raise ApiError(400, exc.message, "OrderException") from None
        o.modification_count += 1
        self._sync(o.client_id, execution_type="Modify")
        self.engine.process(now, o.client_id)
        self._sync(o.client_id)
        return "successfully send modify order request to blitz server"

    def cancel(self, params: Mapping[str, Any]) -> str:
        o = self._find(params)
        try:
            self.engine.cancel(o.client_id, o.engine_id, self.clock.now())
        except NotModifiable as exc:
            raise ApiError(
                403, f"Order {o.blitz_order_id} cannot be cancelled: {exc.message}", "OrderException"
            ) from None
        self._sync(o.client_id)
        return "successfully send cancel order request to blitz server"

    def positions(self, accounts: set[str] | None = None) -> dict[str, list[dict[str, Any]]]:
        now = self.clock.now()
        out: dict[str, list[dict[str, Any]]] = {}
        for account in list(self.engine.books):
            if accounts is not None and account not in accounts:
                continue
            rows = []
            for p in self.engine.positions(account, now):
                mrow = self.master.resolve(p.instrument)
                iid = instrument_id(mrow)
                mine = [
                    t
                    for t in self.trades
                    if t["clientId"] == account
                    and t["instrumentId"] == iid
                    and t["productType"] == p.product.value
                ]
                buy_q = sum(t["lastTradedQuantity"] for t in mine if t["orderSide"] == "Buy")
                sell_q = sum(t["lastTradedQuantity"] for t in mine if t["orderSide"] == "Sell")
                buy_v = sum(
                    (t["lastTradedQuantity"] * t["lastTradedPrice"] for t in mine if t["orderSide"] == "Buy"),
                    Decimal(0),
                )
                sell_v = sum(
                    (
                        t["lastTradedQuantity"] * t["lastTradedPrice"]
                        for t in mine
                        if t["orderSide"] == "Sell"
                    ),
                    Decimal(0),
                )
                ltp = self.engine.last_price(p.instrument, now)
                lot = p.instrument.lot_size or 1
                net = p.quantity
                rows.append(
                    {
                        "entityId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"blitz-sim/{account}")),
                        "clientId": account,
                        "rmsEntityCode": "RMS001",
                        "instrumentId": iid,
                        "exchangeSegment": exchange_segment(mrow),
                        "instrumentName": mrow.trading_symbol or p.instrument.symbol,
                        "productType": p.product.value,  # not in the SDK's row: added so products stay apart
                        "nonAckBuyQuantity": 0,
                        "nonAckSellQuantity": 0,
                        "openBuyQuantity": self._open_qty(account, iid, Side.BUY),
                        "openSellQuantity": self._open_qty(account, iid, Side.SELL),
                        "shortPosition": sell_q,
                        "longPosition": buy_q,
                        "netPosition": net,
                        "netPositionInLot": int(net / lot),
                        "orderCount": len({t["blitzOrderId"] for t in mine}),
                        "tradeCount": len(mine),
                        "previousNetPosition": 0,
                        "tradeBuyValue": buy_v,
                        "tradeSellValue": sell_v,
                        "tradeNetValue": sell_v - buy_v,
                        "avgBuy": money(buy_v / buy_q) if buy_q else Decimal(0),
                        "avgSell": money(sell_v / sell_q) if sell_q else Decimal(0),
                        "avgNet": p.average_price,
                        "exposure": abs(net) * ltp,
                        "unrealized": money((ltp - p.average_price) * net) if net else Decimal(0),
                        "realized": p.realized_pnl,
                        "lastTradedPrice": ltp,
                        "openPositionTradeValue": abs(net) * p.average_price,
                        "turnoverValue": buy_v + sell_v,
                        "turnoverValueOptions": buy_v + sell_v if p.instrument.option_type else Decimal(0),
                    }
                )
            if rows:
                out[account] = rows
        return out

    def _open_qty(self, client: str, iid: int, side: Side) -> int:
        total = 0
        for o in self.orders.values():
            if o.client_id != client or o.instrument_id != iid:
                continue
            st = self._state(o)
            if st.side is side and not st.status.is_terminal:
                total += st.quantity - st.filled_quantity
        return total

    # -- market data -----------------------------------------------------------------------------------
    # The REST market-data API of blitz-api-py (``blitzsdk/marketdata/api_client.py``; reply shapes from
    # docs/blitzsdk/market-quotes.md at aa61675), priced from the paper path that fills the orders: the
    # LTP is the path price now, best bid/ask are where a market order would fill (± slippage ticks).

    def _instrument_ids(self, body: Mapping[str, Any]) -> list[int]:
        raw = body.get("instrumentids")
        if not isinstance(raw, list) or not raw:
            raise ApiError(400, "InstrumentIds must be a non-empty list", "InputException")
        return [_int(v, "InstrumentIds") for v in raw]

    def quote_rows(self, body: Mapping[str, Any], *, full: bool) -> dict[str, dict[str, Any]]:
        """``data`` of ``marketfeed/quote`` (``full``) or ``marketfeed/ltp``: keyed by the instrumentId as a
        string; ids not in the master are left out, as a feed has nothing for them."""
        now = self.clock.now()
        stamp = int(now.timestamp()) * 1000  # the path moves once a second: that is the last trade
        out: dict[str, dict[str, Any]] = {}
        for iid in self._instrument_ids(body):
            row = self._by_iid.get(iid)
            if row is None:
                continue
            ltp = self.engine.last_price(row.instrument, now)
            if not full:
                out[str(iid)] = {"instrumentId": iid, "ltp": ltp}
                continue
            tick = tick_of(row.instrument)
            slip = tick * self.engine.config.slippage_ticks
            lot = row.instrument.lot_size or 1
            out[str(iid)] = {
                "instrumentID": iid,
                "exchangeSegment": _SEGMENT_CODE.get(exchange_segment(row), 0),
                "exchangeInstrumentID": iid % 1_000_000_000,
                "instrumentName": row.trading_symbol or row.instrument.symbol,
                "timestamp": stamp,
                "ltp": ltp,
                "ltq": lot,
                "ltt": stamp,
                "atp": ltp,
                "vtt": 0,
                "tbq": lot,
                "tsq": lot,
                "oi": 0,
                "open": ltp,
                "high": ltp,
                "low": ltp,
                "close": ltp,
                "bidLevel": [{"qty": lot, "price": max(ltp - slip, tick), "orders": 1}],
                "askLevel": [{"qty": lot, "price": ltp + slip, "orders": 1}],
            }
        return out


# ``exchangeSegment`` codes of the quote reply (docs: "1=NSECM, 2=NSEFO, etc."; the rest unverified).
_SEGMENT_CODE = {"NSECM": 1, "NSEFO": 2, "NSECD": 3, "BSECM": 11, "BSEFO": 12, "MCXFO": 51}
