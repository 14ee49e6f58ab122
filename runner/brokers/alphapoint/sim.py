"""Loopback AlphaPoint APEX simulator: a real WebSocket server speaking the ``{m,i,n,o}`` frames.

Behaviour follows the APEX docs (alphapoint/slate): AuthenticateUser (password or API-key signature),
SendOrder / CancelOrder / CancelReplaceOrder / ModifyOrder, GetOrderStatus / GetOpenOrders /
GetOrderHistory / GetOrdersHistory, GetAccountPositions / GetAccountTrades, SubscribeAccountEvents
(OrderStateEvent, OrderTradeEvent, AccountPositionEvent, NewOrderRejectEvent, CancelOrderRejectEvent).
Request keys are read case-insensitively, as the docs say APEX does. Execution goes through the paper
matching engine (see :class:`SimExchange`). Faults come from :class:`runner.brokers.faults.FaultPlan`.

Usage in tests: ``async with start(faults=..., clock=...) as sim: sim.url``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hmac
import itertools
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from runner.brokers.alphapoint.wire import (
    ERR_INVALID_REQUEST,
    ERR_NOT_AUTHORIZED,
    ERR_NOT_FOUND,
    ERR_NOT_SUPPORTED,
    ERR_OPERATION_FAILED,
    ERR_SERVER_ERROR,
    MessageType,
    api_key_signature,
    ci,
)
from runner.brokers.faults import Fault, FaultPlan
from runner.brokers.instruments import InstrumentMaster, MasterRow
from runner.brokers.paper.matching import MatchingConfig, MatchingEngine
from runner.brokers.paper.price_paths import PricePath, RandomWalk
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
from runner.wirejson import dumps, loads, to_decimal

log = logging.getLogger("runner.sims.alphapoint")  # the name before the move: people filter on it
# Data the simulator needs ships inside the package (package-data), never read from tests/.
MASTER_FILE = Path(__file__).resolve().parent / "instruments.csv"

OPERATIONS = {
    "SendOrder": "place",
    "CancelOrder": "cancel",
    "CancelReplaceOrder": "modify",
    "ModifyOrder": "modify",
    "CancelAllOrders": "cancel",
    "GetOrderStatus": "get",
    "GetOrdersHistory": "get",
    "GetOrderHistory": "orders",
    "GetOpenOrders": "orders",
    "GetAccountPositions": "positions",
    "GetAccountTrades": "positions",
}
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


@dataclass
class Session:
    user: SimUser | None = None
    authenticated_at: dt.datetime | None = None
    subscribed: set[int] = field(default_factory=set)


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
        self.engine = engine or MatchingEngine(prices or RandomWalk(seed=seed), config or MatchingConfig())
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


class AlphaPointSim:
    """The WebSocket front of :class:`SimExchange`: auth, frames, faults, subscriptions."""

    def __init__(
        self,
        faults: FaultPlan | None = None,
        *,
        clock: Callable[[], dt.datetime] | None = None,
        master: InstrumentMaster | None = None,
        users: list[SimUser] | None = None,
        seed: int = 0,
        prices: PricePath | None = None,
        config: MatchingConfig | None = None,
        engine: MatchingEngine | None = None,
        silent_drop: bool = False,
        events_after_reply: bool = False,
    ) -> None:
        self.faults = faults or FaultPlan()
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.master = master or default_master()
        self.exchange = SimExchange(
            self.master, clock=self.clock, engine=engine, prices=prices, seed=seed, config=config
        )
        self.users: dict[str, SimUser] = {}
        for u in users or [
            SimUser(
                "trader",
                "trader-pass",
                user_id=96,
                account_id=9,
                api_key="28c68ac3fcfafc3d4e8d653fe57e5baf",
                api_secret="apex-secret",
            )
        ]:
            self.add_user(u)
        self.silent_drop = silent_drop  # drop = swallow the reply (client times out) vs. close the socket
        # APEX does not promise an order's events before the reply: True sends them one request later.
        self.events_after_reply = events_after_reply
        self.received: list[tuple[str, dict[str, Any]]] = []  # (function, raw payload) as the client sent it
        self.raw_frames: list[dict[str, Any]] = []
        self.counts: dict[str, int] = {}
        self.fault_log: list[tuple[str, Fault]] = []
        self.logins = 0  # successful AuthenticateUser calls
        self._sessions: dict[ServerConnection, Session] = {}
        self._server: Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/WSGateway/"

    def inject_foreign_row(self, account_id: int, record: Mapping[str, Any]) -> None:
        """Show ``record`` verbatim in the account's order history (and open orders while its OrderState
        is Working): an order entered outside the runner."""
        self.exchange.foreign.setdefault(account_id, []).append(dict(record))

    def add_user(self, user: SimUser) -> SimUser:
        self.users[user.user_name] = user
        return user

    def user_for_account(self, account_id: int) -> SimUser | None:
        return next((u for u in self.users.values() if u.account_id == account_id), None)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._server = await serve(self._handle, host, port, compression=None, max_size=2**24)
        self.port = next(iter(self._server.sockets)).getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def tick(self) -> None:
        """Advance matching to the clock's now and push the resulting events."""
        self.exchange.engine.process(self.clock())
        await self._publish()

    async def drop_connections(self) -> None:
        """Close every client socket (a venue restart / network blip)."""
        for ws in list(self._sessions):
            await ws.close()

    # -- connection ----------------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        session = self._sessions[ws] = Session()
        try:
            async for raw in ws:
                try:
                    outer = json.loads(raw)
                    m, seq, name = int(outer.get("m", 0)), int(outer.get("i", 0)), str(outer.get("n", ""))
                    o = outer.get("o")
                    payload = loads(o) if isinstance(o, str) and o.strip() else (o or {})
                except (ValueError, TypeError):
                    continue  # APEX ignores garbage frames
                self.raw_frames.append(outer)
                if m not in (MessageType.REQUEST, MessageType.SUBSCRIBE, MessageType.UNSUBSCRIBE):
                    continue
                if not await self._dispatch(
                    ws, session, seq, name, payload if isinstance(payload, dict) else {}
                ):
                    return
        except ConnectionClosed:
            pass
        finally:
            self._sessions.pop(ws, None)

    async def _send(self, ws: ServerConnection, m: int, seq: int, name: str, body: Any) -> None:
        with contextlib.suppress(ConnectionClosed):
            await ws.send(json.dumps({"m": m, "i": seq, "n": name, "o": dumps(body)}))

    async def _publish(self) -> None:
        self.exchange.collect_events()
        events, self.exchange.events = self.exchange.events, []
        for account, name, body in events:
            for ws, sess in list(self._sessions.items()):
                if account in sess.subscribed:
                    await self._send(ws, MessageType.EVENT, 0, name, body)

    def _expired(self, session: Session) -> bool:
        limit = self.faults.expire_after
        if limit is None or session.authenticated_at is None:
            return False
        return (self.clock() - session.authenticated_at).total_seconds() >= limit

    async def _dispatch(
        self, ws: ServerConnection, session: Session, seq: int, name: str, payload: dict[str, Any]
    ) -> bool:
        """Handle one request; False closes the connection."""
        self.received.append((name, payload))
        self.counts[name] = self.counts.get(name, 0) + 1
        body = ci(payload)
        if name in ("AuthenticateUser", "WebAuthenticateUser"):
            await self._send(ws, MessageType.REPLY, seq, name, self._authenticate(session, body))
            return True
        if name == "Ping":
            await self._send(ws, MessageType.REPLY, seq, name, {"msg": "PONG"})
            return True
        if session.user is None or self._expired(session):
            session.user = None
            await self._send(ws, MessageType.ERROR, seq, name, _err(ERR_NOT_AUTHORIZED, "Not Authorized"))
            return True
        op = OPERATIONS.get(name, name)
        fault = self.faults.draw(op)
        if fault is not Fault.NONE:
            self.fault_log.append((name, fault))
        delay = self.faults.delay()
        if delay:
            await asyncio.sleep(delay)
        if fault in (Fault.RESET, Fault.DISCONNECT):
            await ws.close()  # before acting: the request was never processed
            return False
        if fault is Fault.ERROR_5XX:
            await self._send(ws, MessageType.ERROR, seq, name, _err(ERR_SERVER_ERROR, "Server Error"))
            return True
        if fault is Fault.RATE_LIMIT:
            await self._send(
                ws,
                MessageType.ERROR,
                seq,
                name,
                _err(ERR_OPERATION_FAILED, "Operation Failed", "Rate limit exceeded, retry after 1s"),
            )
            return True
        if self.events_after_reply:
            await self._publish()  # the previous requests' events: this one's wait for the next request
        try:
            reply = self._call(session, name, body)
            m = MessageType.REPLY
        except ApiError as exc:
            reply, m = exc.body, (MessageType.ERROR if exc.frame else MessageType.REPLY)
        if not self.events_after_reply:
            await self._publish()
        if fault is Fault.DROP_REPLY:
            if self.silent_drop:
                return True  # acted, never answered: the client times out
            await ws.close()  # acted, then the connection died before the reply
            return False
        await self._send(ws, m, seq, name, reply)
        return True

    def _authenticate(self, session: Session, b: Mapping[str, Any]) -> dict[str, Any]:
        user: SimUser | None = None
        if "apikey" in b:
            user = next((u for u in self.users.values() if u.api_key == b.get("apikey")), None)
            nonce, user_id = str(b.get("nonce") or ""), str(b.get("userid") or "")
            if (
                user is None
                or user.api_secret is None
                or str(user.user_id) != user_id
                or not hmac.compare_digest(
                    api_key_signature(user.api_secret, nonce, user_id, user.api_key or ""),
                    str(b.get("signature") or ""),
                )
            ):
                user = None
        else:
            cand = self.users.get(str(b.get("username") or ""))
            if cand is not None and hmac.compare_digest(cand.password, str(b.get("password") or "")):
                user = cand
        if user is None:
            session.user = None
            return {"Authenticated": False, "Locked": False, "errormsg": "Invalid username or password"}
        session.user = user
        session.authenticated_at = self.clock()
        self.logins += 1
        return {
            "Authenticated": True,
            "User": {
                "UserId": user.user_id,
                "UserName": user.user_name,
                "Email": "",
                "EmailVerified": True,
                "AccountId": user.account_id,
                "OMSId": user.oms_id,
                "Use2FA": False,
            },
            "Locked": False,
            "Requires2FA": False,
            "TwoFAType": None,
            "TwoFAToken": None,
            "errormsg": None,
        }

    def _account(self, session: Session, b: Mapping[str, Any]) -> tuple[int, int, SimUser]:
        user = session.user
        assert user is not None
        account = _int(b, "AccountId", default=user.account_id)
        if account != user.account_id:
            raise ApiError(ERR_NOT_AUTHORIZED, "Not Authorized")
        oms = _int(b, "OMSId", default=user.oms_id) or user.oms_id
        return account or user.account_id, oms, user

    def _call(self, session: Session, name: str, b: Mapping[str, Any]) -> Any:
        ex = self.exchange
        account, oms, user = self._account(session, b)
        if name == "SendOrder":
            return ex.send_order(account, oms, user, b)
        if name == "CancelOrder":
            ex.cancel(account, ex.find(account, b))
            return OK  # receipt only: the cancel completes (or is refused) later
        if name == "CancelAllOrders":
            for order in ex.open_orders(account):
                ex.cancel(account, order)
            return OK
        if name == "ModifyOrder":
            return ex.modify(account, ex.find(account, b), b)
        if name == "CancelReplaceOrder":
            return ex.cancel_replace(account, oms, user, b)
        if name == "GetOrderStatus":
            oid = _int(b, "OrderId")
            raw = [r for r in ex.foreign.get(account, []) if oid and r.get("OrderId") == oid]
            return raw[0] if raw else ex.record(account, ex.find(account, b))
        foreign = ex.foreign.get(account, [])
        if name == "GetOpenOrders":
            working = [r for r in foreign if r.get("OrderState") == "Working"]
            return [ex.record(account, o) for o in ex.open_orders(account)] + working
        if name in ("GetOrderHistory", "GetOrdersHistory"):
            recs = [ex.record(account, o) for o in ex.history(account)] + foreign
            if name == "GetOrdersHistory":
                if cid := _int(b, "ClientOrderId"):
                    recs = [r for r in recs if r.get("ClientOrderId") == cid]
                if oid := _int(b, "OrderId"):
                    recs = [r for r in recs if r.get("OrderId") == oid]
            return recs
        if name == "GetOrderHistoryByOrderId":
            return [ex.record(account, ex.find(account, b))]
        if name == "GetAccountPositions":
            return ex.positions(account, oms)
        if name == "GetAccountTrades":
            start = _int(b, "StartIndex", default=0) or 0
            count = min(_int(b, "Count", default=200) or 200, 200)
            return list(reversed(ex.trades(account)))[start : start + count]
        if name == "SubscribeAccountEvents":
            session.subscribed.add(account)
            return {"Subscribe": True}
        if name == "LogOut":
            session.user = None
            return {"result": True, "errormsg": None}
        raise ApiError(ERR_NOT_SUPPORTED, "Operation Not Supported", f"unknown function {name}", frame=True)


def default_master() -> InstrumentMaster:
    """The instrument master shipped in this package (NSE/NFO rows with ``instrument_id``)."""
    path = MASTER_FILE
    if path.is_file():
        return InstrumentMaster.load(path, broker="alphapoint")
    from runner.brokers.instruments import row_from_mapping

    rows = [
        row_from_mapping(
            {
                "exchange": "NSE",
                "symbol": "RELIANCE",
                "instrument_id": "9",
                "lot_size": "1",
                "tick_size": "0.05",
            }
        )
    ]
    return InstrumentMaster(rows, broker="alphapoint")


@contextlib.asynccontextmanager
async def start(
    port: int = 0, faults: FaultPlan | str | None = None, **kwargs: Any
) -> AsyncIterator[AlphaPointSim]:
    plan = FaultPlan.parse(faults) if isinstance(faults, str) or faults is None else faults
    sim = AlphaPointSim(plan, **kwargs)
    await sim.start(port=port)
    try:
        yield sim
    finally:
        await sim.stop()


@contextlib.asynccontextmanager
async def bench_setup(
    accounts: int, faults: FaultPlan | str | None = None, **kwargs: Any
) -> AsyncIterator[tuple[AlphaPointSim, list[Any]]]:
    """For bench/adapters.py: one in-process simulator with ``accounts`` users and a connected adapter
    per user. Simulator credentials are throwaway values passed through the environment, as real
    ones would be."""
    import os

    from runner.accounts import Account, RateLimit
    from runner.brokers.alphapoint.client import create

    users = [
        SimUser(f"bench{i}", f"bench-pass-{i}", user_id=1000 + i, account_id=5000 + i)
        for i in range(accounts)
    ]
    master = MASTER_FILE
    async with start(faults=faults, users=users, **kwargs) as sim:
        brokers = []
        for i, u in enumerate(users):
            os.environ[f"RUNNER_AP_BENCH_USER_{i}"] = u.user_name
            os.environ[f"RUNNER_AP_BENCH_PASS_{i}"] = u.password
            account = Account(
                name=f"apbench{i}",
                broker="alphapoint",
                endpoints={"ws": sim.url},
                instruments=str(master),
                credentials={
                    "username": {"env": f"RUNNER_AP_BENCH_USER_{i}"},
                    "password": {"env": f"RUNNER_AP_BENCH_PASS_{i}"},
                },
                rate_limit=RateLimit(orders_per_second=1000, burst=1000),
            )
            broker = create(account)
            await broker.connect()
            brokers.append(broker)
        try:
            yield sim, brokers
        finally:
            for b in brokers:
                await b.close()


async def serve_forever(host: str, port: int, faults: FaultPlan, options: Mapping[str, Any]) -> None:
    master = None
    if options.get("instruments"):
        master = InstrumentMaster.load(options["instruments"], broker="alphapoint")
    sim = AlphaPointSim(
        faults, master=master, seed=int(options.get("seed", 0)), config=MatchingConfig.from_options(options)
    )
    await sim.start(host, port)
    # One machine-readable line (scripts read the port from it); the gateway path is /WSGateway/.
    url = f"ws://{host}:{sim.port}/WSGateway/"
    print(json.dumps({"broker": "alphapoint", "url": url, "port": sim.port}), flush=True)
    try:
        await asyncio.Future()
    finally:
        await sim.stop()


__all__ = ["AlphaPointSim", "SimExchange", "SimUser", "bench_setup", "serve_forever", "start"]
