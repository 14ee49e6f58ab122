"""The simulated APEX OMS behind :mod:`runner.brokers.alphapoint.sim`: APEX requests onto the paper matching
engine, its orders rendered back as APEX order objects, trades and positions, and the account events they
raise. No sockets here: :class:`runner.brokers.alphapoint.sim.AlphaPointSim` is the WebSocket front.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from runner.brokers.alphapoint.wire import ERR_INVALID_REQUEST, ERR_NOT_FOUND, ERR_OPERATION_FAILED
from runner.brokers.instruments import InstrumentMaster, MasterRow
from runner.brokers.paper.matching import MatchingConfig, MatchingEngine
from runner.brokers.paper.price_paths import PricePath, second_of
from runner.brokers.sim_prices import sim_matching, sim_price_path
from runner.errors import NotFound, NotModifiable, Rejected
from runner.model import (
    Fill,
    Modification,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    Product,
    Side,
    Validity,
)
from runner.wirejson import to_decimal

SIDES = {0: "Buy", 1: "Sell", 2: "Short"}
ORDER_TYPES = {1: "Market", 2: "Limit", 3: "StopMarket", 4: "StopLimit"}
TIFS = {1: "GTC", 2: "OPG", 3: "IOC", 4: "FOK", 5: "GTX", 6: "GTD"}
PEGS = {1: "Last", 2: "Bid", 3: "Ask", 4: "Midpoint"}
CASH = "INR"


def _err(code: int, msg: str, detail: str | None = None) -> dict[str, Any]:
    return {"result": False, "errormsg": msg, "errorcode": code, "detail": detail}


OK = {"result": True, "errormsg": None, "errorcode": 0, "detail": None}


class ApiError(Exception):
    def __init__(self, code: int, msg: str, detail: str | None = None, *, frame: bool = False) -> None:
        super().__init__(msg)
        self.body = _err(code, msg, detail)
        self.frame = frame  # send as an m=5 error frame rather than an m=1 result:false reply


@dataclass
class SimUser:
    user_name: str
    password: str
    user_id: int
    account_id: int
    oms_id: int = 1
    api_key: str | None = None
    api_secret: str | None = None


def _int(body: Mapping[str, Any], *names: str, default: int | None = None) -> int | None:
    for n in names:
        v = body.get(n.lower())
        if v is not None and v != "":
            return int(_number(v, n))
    return default


def _dec(body: Mapping[str, Any], name: str) -> Decimal:
    v = body.get(name.lower())
    return Decimal(0) if v is None or v == "" else _number(v, name)


def _number(value: Any, name: str) -> Decimal:
    d = to_decimal(value)
    if d is None or not d.is_finite():
        raise ApiError(ERR_INVALID_REQUEST, "Invalid Request", f"{name} is not a number")
    return d


def _ms(at: dt.datetime) -> int:
    return int(at.timestamp() * 1000)


STATE_OF = {
    OrderStatus.PENDING_NEW: "Working",
    OrderStatus.OPEN: "Working",
    OrderStatus.PARTIALLY_FILLED: "Working",
    # APEX has no pending-cancel state: the order stays Working until the cancel takes effect.
    OrderStatus.PENDING_CANCEL: "Working",
    OrderStatus.FILLED: "FullyExecuted",
    OrderStatus.CANCELLED: "Canceled",
    OrderStatus.REJECTED: "Rejected",
    OrderStatus.EXPIRED: "Expired",
    OrderStatus.UNKNOWN: "Unknown",
}
WIRE_SIDE = {0: Side.BUY, 1: Side.SELL, 2: Side.SELL}
WIRE_TYPE = {1: OrderType.MARKET, 2: OrderType.LIMIT, 3: OrderType.SL_M, 4: OrderType.SL}
WIRE_TIF = {1: Validity.DAY, 3: Validity.IOC, 4: Validity.IOC}


@dataclass
class Meta:
    """What APEX keeps about an order that the canonical engine order does not."""

    account: int
    oms: int
    instrument_id: int
    client_numeric: int
    user: SimUser
    received_ms: int
    tif: str
    peg: str
    display_quantity: Decimal
    orig_order_id: int
    orig_client: int
    change_reason: str = "NewInputAccepted"
    cancel_reason: str = ""
    replaced: bool = False


class SimExchange:
    """The simulated OMS: APEX requests translated onto :class:`runner.brokers.paper.matching.MatchingEngine`
    (the paper engine, one book per APEX account) and its orders rendered back as APEX order objects."""

    def __init__(
        self,
        master: InstrumentMaster,
        *,
        clock: Callable[[], dt.datetime],
        engine: MatchingEngine | None = None,
        prices: PricePath | None = None,
        seed: int = 0,
        config: MatchingConfig | None = None,
    ) -> None:
        self.master = master
        self.clock = clock
        self.engine = engine or MatchingEngine(
            prices or sim_price_path({"seed": seed}), config or sim_matching()
        )
        self.instruments: dict[int, MasterRow] = {}
        for row in master:
            raw = row.extra.get("instrument_id") or row.token
            if raw is not None:
                self.instruments[int(raw)] = row
        self._seq = itertools.count(1)
        self.meta: dict[int, Meta] = {}  # by APEX OrderId
        # Engine ids are per account book; APEX OrderIds are unique across the OMS.
        self._apex_ids = itertools.count(6500)
        self._to_engine: dict[int, str] = {}
        self._to_apex: dict[tuple[int, str], int] = {}
        self._trade_ids: dict[str, int] = {}  # engine trade id -> APEX 64-bit TradeId
        self.foreign: dict[int, list[dict[str, Any]]] = {}  # account -> raw records entered elsewhere
        self.events: list[tuple[int, str, dict[str, Any]]] = []  # (account, name, body), sent by the server

    # -- rendering ------------------------------------------------------------------------------------

    def product_symbol(self, row: MasterRow) -> str:
        return row.extra.get("product_symbol") or row.trading_symbol or row.instrument.symbol

    def _ms(self) -> int:
        return _ms(self.clock())

    def apex_id(self, account: int, order: Order) -> int:
        return self._to_apex[(account, order.broker_order_id or "")]

    def record(self, account: int, order: Order) -> dict[str, Any]:
        """An engine order as an APEX order object (GetOrderStatus / OrderStateEvent shape)."""
        oid = self.apex_id(account, order)
        m = self.meta[oid]
        state = STATE_OF[order.status]
        remaining = order.quantity - order.filled_quantity if state == "Working" else 0
        updated = _ms(order.updated_at) if order.updated_at else m.received_ms
        return {
            "Side": "Buy" if order.side is Side.BUY else "Sell",
            "OrderId": oid,
            "Price": order.price or Decimal(0),
            "Quantity": Decimal(remaining),
            "DisplayQuantity": m.display_quantity,
            "Instrument": m.instrument_id,
            "Account": m.account,
            "AccountName": m.user.user_name,
            "OrderType": ORDER_TYPES[_TYPE_NUM[order.order_type]],
            "ClientOrderId": m.client_numeric,
            "OrderState": state,
            "ReceiveTime": m.received_ms,
            "LastUpdatedTime": max(updated, m.received_ms),
            "OrigQuantity": Decimal(order.quantity),
            "QuantityExecuted": Decimal(order.filled_quantity),
            "GrossValueExecuted": (order.average_price or Decimal(0)) * order.filled_quantity,
            "AvgPrice": order.average_price or Decimal(0),
            "CounterPartyId": 0,
            "ChangeReason": m.change_reason,
            "OrigOrderId": m.orig_order_id,
            "OrigClOrdId": m.orig_client,
            "EnteredBy": m.user.user_id,
            "UserName": m.user.user_name,
            "IsQuote": False,
            "RejectReason": order.reject_reason or "" if state == "Rejected" else "",
            "CancelReason": m.cancel_reason if state == "Canceled" else "",
            "OrderFlag": "AddedToBook" if state == "Working" else "AddedToBook, RemovedFromBook",
            "UseMargin": False,
            "StopPrice": order.trigger_price or Decimal(0),
            "PegPriceType": m.peg,
            "TimeInForce": m.tif,
            "OMSId": m.oms,
        }

    def trade_id(self, engine_id: str | None) -> int:
        key = engine_id or ""
        if key not in self._trade_ids:
            self._trade_ids[key] = 900 + len(self._trade_ids)
        return self._trade_ids[key]

    def _book(self, account: int) -> str:
        return str(account)

    def _orders(self, account: int) -> list[Order]:
        return [
            o
            for o in self.engine.orders(self._book(account), self.clock())
            if (account, o.broker_order_id or "") in self._to_apex
        ]

    def order(self, account: int, order_id: int) -> Order:
        engine_id = self._to_engine.get(order_id)
        if engine_id is None or self.meta[order_id].account != account:
            raise ApiError(ERR_NOT_FOUND, "Resource Not Found")
        return self.engine.get(self._book(account), engine_id, self.clock())

    def open_orders(self, account: int) -> list[Order]:
        return [o for o in self._orders(account) if STATE_OF[o.status] == "Working"]

    def history(self, account: int) -> list[Order]:
        return sorted(self._orders(account), key=lambda o: -self.apex_id(account, o))

    def instrument(self, instrument_id: int) -> MasterRow:
        row = self.instruments.get(instrument_id)
        if row is None:
            raise ApiError(ERR_NOT_FOUND, "Resource Not Found", "Instrument not found")
        return row

    def level1(self, oms: int, b: Mapping[str, Any]) -> dict[str, Any]:
        """GetLevel1 (and the SubscribeLevel1 / Level1UpdateEvent shape) from the paper price path, the
        same path the matching engine fills at, so quotes agree with fills: the engine trades every
        second at the path price with no spread (a buy limit at or above it fills, a sell at or below it
        fills), hence BestBid = BestOffer = LastTradedPx. Field names as in alphapoint/slate
        ``_api_users_user_subscribelevel1.md`` and the APEX GetLevel1 page (``TimeStamp`` a string of ms).
        The instrument is named by ``InstrumentId`` or, as SubscribeLevel1 also allows, ``Symbol``."""
        iid = _int(b, "InstrumentId")
        if iid is None and (symbol := str(b.get("symbol") or "").upper()):
            named = (i for i, r in self.instruments.items() if self.product_symbol(r).upper() == symbol)
            iid = next(named, None)
        row = self.instrument(iid if iid is not None else -1)
        now = self.clock()
        second = second_of(now)
        px = self.engine.prices.price(row.instrument, second)
        return {
            "OMSId": oms,
            "InstrumentId": iid,
            "BestBid": px,
            "BestOffer": px,
            "LastTradedPx": px,
            "LastTradedQty": Decimal(1),
            "LastTradeTime": second * 1000,
            "SessionOpen": Decimal(0),
            "SessionHigh": Decimal(0),
            "SessionLow": Decimal(0),
            "SessionClose": Decimal(0),
            "Volume": Decimal(1),
            "CurrentDayVolume": Decimal(0),
            "CurrentDayNotional": Decimal(0),
            "CurrentDayNumTrades": 0,
            "CurrentDayPxChange": Decimal(0),
            "Rolling24HrVolume": Decimal(0),
            "Rolling24HrNotional": Decimal(0),
            "Rolling24NumTrades": 0,
            "Rolling24HrPxChange": Decimal(0),
            "TimeStamp": str(_ms(now)),
            "BidQty": Decimal(0),
            "AskQty": Decimal(0),
            "BidOrderCt": 0,
            "AskOrderCt": 0,
            "Rolling24HrPxChangePercent": Decimal(0),
        }

    # -- events ---------------------------------------------------------------------------------------

    def collect_events(self) -> None:
        """Turn what the engine changed since last time into APEX account events."""
        for account_key, book in self.engine.books.items():
            orders, positions, fills = book.drain()
            account = int(account_key)
            for f in fills:
                oid = self._to_apex.get((account, f.broker_order_id or ""), 0)
                m = self.meta.get(oid)
                if m is None:
                    continue
                m.change_reason = "Trade"
                self.events.append(
                    (
                        account,
                        "OrderTradeEvent",
                        {
                            **self._trade_fields(account, oid, m, f),
                            "TradeTimeMS": _ms(f.at),
                            "Direction": "NoChange",
                        },
                    )
                )
            for st in orders:
                if (account, st.broker_order_id) in self._to_apex:
                    self.events.append((account, "OrderStateEvent", self.record(account, st.snapshot())))
            if positions:
                for rec in self.positions(account, 1):
                    self.events.append(
                        (
                            account,
                            "AccountPositionEvent",
                            {
                                "OMSId": rec["omsId"],
                                "AccountId": account,
                                "ProductSymbol": rec["productSymbol"],
                                "ProductId": rec["productId"],
                                "Amount": rec["amount"],
                                "Hold": rec["hold"],
                            },
                        )
                    )

    # -- order entry ----------------------------------------------------------------------------------

    def send_order(
        self, account: int, oms: int, user: SimUser, b: Mapping[str, Any], *, replacing: int | None = None
    ) -> dict[str, Any]:
        instrument_id = _int(b, "InstrumentId")
        client_numeric = _int(b, "ClientOrderId", default=0) or 0
        side, otype = _int(b, "Side"), _int(b, "OrderType")
        tif = _int(b, "TimeInForce", default=1) or 1
        qty = _dec(b, "Quantity")
        if (
            side not in WIRE_SIDE
            or otype not in WIRE_TYPE
            or tif not in WIRE_TIF
            or qty <= 0
            or qty != qty.to_integral_value()
        ):
            self.events.append(
                (
                    account,
                    "NewOrderRejectEvent",
                    {
                        "OMSId": oms,
                        "AccountId": account,
                        "ClientOrderId": client_numeric,
                        "Status": "Rejected",
                        "RejectReason": "Invalid Request",
                    },
                )
            )
            return {"status": "Rejected", "errormsg": "Invalid Request", "errorcode": ERR_INVALID_REQUEST}
        if instrument_id is None or instrument_id not in self.instruments:
            return {"status": "Rejected", "errormsg": "Instrument not found", "errorcode": ERR_NOT_FOUND}
        # APEX >= 4.2 refuses a ClientOrderId that a working order of the account already carries.
        if client_numeric and any(
            self.meta[self.apex_id(account, o)].client_numeric == client_numeric
            and self.apex_id(account, o) != replacing
            for o in self.open_orders(account)
        ):
            return {
                "status": "Rejected",
                "errormsg": "Invalid_ClientOrderId",
                "errorcode": ERR_OPERATION_FAILED,
            }
        row = self.instruments[instrument_id]
        order_type = WIRE_TYPE[otype]
        limit, stop = _dec(b, "LimitPrice"), _dec(b, "StopPrice")
        try:
            request = OrderRequest(
                client_order_id=f"apex-{account}-{next(self._seq)}",
                instrument=row.instrument,
                side=WIRE_SIDE[side],
                quantity=int(qty),
                order_type=order_type,
                product=Product.MIS,
                validity=WIRE_TIF[tif],
                price=limit if order_type in (OrderType.LIMIT, OrderType.SL) and limit > 0 else None,
                trigger_price=stop if order_type in (OrderType.SL, OrderType.SL_M) and stop > 0 else None,
            )
        except ValueError as exc:
            return {
                "status": "Rejected",
                "errormsg": f"Invalid Request: {exc}",
                "errorcode": ERR_INVALID_REQUEST,
            }
        order = self.engine.place(self._book(account), request, self.clock())
        oid = next(self._apex_ids)
        self._to_engine[oid] = order.broker_order_id or ""
        self._to_apex[(account, order.broker_order_id or "")] = oid
        self.meta[oid] = Meta(
            account=account,
            oms=oms,
            instrument_id=instrument_id,
            client_numeric=client_numeric,
            user=user,
            received_ms=self._ms(),
            tif=TIFS[tif],
            peg=PEGS.get(_int(b, "PegPriceType", default=1) or 1, "Last"),
            display_quantity=_dec(b, "DisplayQuantity"),
            orig_order_id=oid,
            orig_client=client_numeric,
        )
        if order.status is OrderStatus.REJECTED:
            self.meta[oid].change_reason = "NewInputRejected"
            self.events.append(
                (
                    account,
                    "NewOrderRejectEvent",
                    {
                        "OMSId": oms,
                        "AccountId": account,
                        "ClientOrderId": client_numeric,
                        "Status": "Rejected",
                        "RejectReason": order.reject_reason or "Rejected",
                    },
                )
            )
            return {
                "status": "Rejected",
                "errormsg": order.reject_reason or "Rejected",
                "errorcode": ERR_OPERATION_FAILED,
                "OrderId": oid,
            }
        return {"status": "Accepted", "errormsg": "", "OrderId": oid}

    def find(self, account: int, b: Mapping[str, Any]) -> Order:
        order_id = _int(b, "OrderId")
        if order_id:
            return self.order(account, order_id)
        # seed 002's table spells ClOrderId, seed 003's example ClientOrderId: accept both.
        client_numeric = _int(b, "ClientOrderId", "ClOrderId", "ClientOrdId")
        if not client_numeric or _int(b, "AccountId") is None:
            raise ApiError(
                ERR_INVALID_REQUEST, "Invalid Request", "OrderId or AccountId + ClientOrderId required"
            )
        mine = [
            o
            for o in self._orders(account)
            if self.meta[self.apex_id(account, o)].client_numeric == client_numeric
        ]
        if not mine:
            raise ApiError(ERR_NOT_FOUND, "Resource Not Found")
        working = [o for o in mine if STATE_OF[o.status] == "Working"]
        return max(working or mine, key=lambda o: self.apex_id(account, o))

    def cancel(self, account: int, order: Order, reason: str = "UserModified") -> None:
        oid = self.apex_id(account, order)
        try:
            self.engine.cancel(self._book(account), order.broker_order_id or "", self.clock())
        except (NotModifiable, NotFound) as exc:
            m = self.meta[oid]
            self.events.append(
                (
                    account,
                    "CancelOrderRejectEvent",
                    {
                        "OMSId": m.oms,
                        "AccountId": account,
                        "OrderId": oid,
                        "OrderRevision": 0,
                        "OrderType": ORDER_TYPES[_TYPE_NUM[order.order_type]],
                        "InstrumentId": m.instrument_id,
                        "Status": "Rejected",
                        "RejectReason": exc.message,
                    },
                )
            )
            return
        self.meta[oid].change_reason = "UserModified"
        self.meta[oid].cancel_reason = reason

    def modify(self, account: int, order: Order, b: Mapping[str, Any]) -> dict[str, Any]:
        """ModifyOrder: ``Quantity`` is the new remaining quantity, reduce only."""
        qty = _dec(b, "Quantity")
        remaining = order.quantity - order.filled_quantity
        if STATE_OF[order.status] != "Working" or order.status is OrderStatus.PENDING_CANCEL:
            raise ApiError(ERR_OPERATION_FAILED, "Operation Failed", "Order is not working")
        if qty <= 0 or qty >= remaining or qty != qty.to_integral_value():
            raise ApiError(ERR_INVALID_REQUEST, "Invalid Quantity")
        try:
            self.engine.modify(
                self._book(account),
                str(order.broker_order_id),
                Modification(quantity=order.filled_quantity + int(qty)),
                self.clock(),
            )
        except Rejected as exc:
            raise ApiError(ERR_OPERATION_FAILED, "Operation Failed", exc.message) from None
        self.meta[self.apex_id(account, order)].change_reason = "UserModified"
        return OK

    def cancel_replace(self, account: int, oms: int, user: SimUser, b: Mapping[str, Any]) -> dict[str, Any]:
        old_id = _int(b, "OrderIdToReplace") or 0
        try:
            old = self.order(account, old_id)
        except ApiError:
            old = None
        if old is not None and old.status not in (OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED):
            raise ApiError(ERR_OPERATION_FAILED, "Operation Failed", "Order is not working")
        if old is None:
            self.events.append(
                (
                    account,
                    "CancelReplaceOrderRejectEvent",
                    {
                        "OMSId": oms,
                        "AccountId": account,
                        "OrderId": old_id,
                        "OrderIdToReplace": old_id,
                        "Status": "Rejected",
                        "RejectReason": "Order Not Found",
                    },
                )
            )
            raise ApiError(ERR_NOT_FOUND, "Resource Not Found", "Order Not Found")
        # The docs' request example spells clientOrdId, their key table ClientOrderId: accept both.
        client_numeric = _int(b, "ClientOrdId", "ClientOrderId", default=0) or 0
        body = dict(b)
        body["clientorderid"] = client_numeric
        reply = self.send_order(account, oms, user, body, replacing=old_id)
        if reply.get("status") != "Accepted":
            raise ApiError(ERR_OPERATION_FAILED, "Operation Failed", str(reply.get("errormsg")))
        self.cancel(account, old, reason="UserModified")
        old_meta = self.meta[old_id]
        new = self.meta[int(reply["OrderId"])]
        old_meta.replaced = True
        new.orig_order_id, new.orig_client = old_id, old_meta.client_numeric
        return {
            "ReplacementOrderId": int(reply["OrderId"]),
            "ReplacementClOrdId": client_numeric,
            "OrigOrderId": old_id,
            "OrigClOrdId": old_meta.client_numeric,
        }

    def positions(self, account: int, oms: int) -> list[dict[str, Any]]:
        """Balances per product: instrument products net of fills, plus the INR cash balance."""
        amounts: dict[str, Decimal] = {CASH: STARTING_CASH}
        for p in self.engine.positions(self._book(account), self.clock()):
            row = self.master.resolve(p.instrument)
            sym = self.product_symbol(row)
            amounts[sym] = amounts.get(sym, Decimal(0)) + p.quantity
        for f in self.engine.fills(self._book(account), self.clock()):
            amounts[CASH] -= f.side.sign * f.quantity * f.price
        return [
            {
                "omsId": oms,
                "accountId": account,
                "productSymbol": sym,
                "productId": pid,
                "amount": amount,
                "hold": Decimal(0),
                "pendingDeposits": Decimal(0),
                "pendingWithdraws": Decimal(0),
                "totalDayDeposits": Decimal(0),
                "totalDayWithdraws": Decimal(0),
            }
            for pid, (sym, amount) in enumerate(sorted(amounts.items()), start=1)
        ]

    def _trade_fields(self, account: int, oid: int, m: Meta, f: Fill) -> dict[str, Any]:
        """The fields a trade event and a trades-history row share (each adds its own tail)."""
        return {
            "OMSId": m.oms,
            "TradeId": self.trade_id(f.trade_id),
            "OrderId": oid,
            "AccountId": account,
            "ClientOrderId": m.client_numeric,
            "InstrumentId": m.instrument_id,
            "Side": "Buy" if f.side is Side.BUY else "Sell",
            "Quantity": Decimal(f.quantity),
            "Price": f.price,
            "Value": f.price * f.quantity,
        }

    def trades(self, account: int) -> list[dict[str, Any]]:
        out = []
        for f in self.engine.fills(self._book(account), self.clock()):
            oid = self._to_apex.get((account, f.broker_order_id or ""), 0)
            m = self.meta.get(oid)
            if m is None:
                continue
            out.append(
                {**self._trade_fields(account, oid, m, f), "Fee": Decimal(0), "TradeTimeMS": _ms(f.at)}
            )
        return out


_TYPE_NUM = {OrderType.MARKET: 1, OrderType.LIMIT: 2, OrderType.SL_M: 3, OrderType.SL: 4}
STARTING_CASH = Decimal(100_000_000)
