"""AlphaPoint APEX wire: pure translation between canonical objects and APEX JSON-RPC frames (no I/O).

Wire format (alphapoint/slate docs, npm ``alphapoint-apex-api`` ``src/APEX.js``): every message is
``{"m": type, "i": seq, "n": "FunctionName", "o": "<payload JSON as a string>"}``; ``m`` 0 request,
1 reply, 2 subscribe, 3 event, 4 unsubscribe, 5 error. Replies echo ``i``. The official client starts
``i`` at 0 and adds 2 (the team note says "start at 2"; both are even, we follow the client).

:class:`runner.brokers.alphapoint.session.ApexSession` does the socket I/O and
:class:`runner.brokers.alphapoint.client.AlphaPointBroker` implements :class:`runner.brokers.base.Broker`.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from runner.brokers.base import Quote
from runner.brokers.instruments import MasterRow
from runner.errors import (
    BrokerError,
    InstrumentUnknown,
    Malformed,
    NotFound,
    NotModifiable,
    OutcomeUnknown,
    RateLimited,
    Rejected,
    SessionExpired,
    Unavailable,
)
from runner.ids import numeric_id
from runner.model import (
    Instrument,
    Modification,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    Product,
    Side,
    Validity,
)
from runner.wirejson import dumps, loads, to_decimal, to_int

log = logging.getLogger("runner.brokers.alphapoint")  # stable name, not __name__: people filter on it
BROKER = "alphapoint"
_int = functools.partial(to_int, broker=BROKER)  # whole numbers exactly, or Malformed naming the field

# ---------------------------------------------------------------------------------------------------------
# Frames (payloads through runner.wirejson: money never passes through float)


class MessageType:
    REQUEST = 0
    REPLY = 1
    SUBSCRIBE = 2
    EVENT = 3
    UNSUBSCRIBE = 4
    ERROR = 5


def encode_frame(m: int, i: int, n: str, payload: Any) -> str:
    # ``o`` is itself a JSON *string*, as APEX.js sends it (JSON.stringify(paramObject)).
    return json.dumps({"m": m, "i": i, "n": n, "o": dumps(payload)})


@dataclass(frozen=True, slots=True)
class Frame:
    m: int
    i: int
    n: str
    o: Any  # parsed payload

    @classmethod
    def parse(cls, raw: str | bytes) -> Frame:
        outer = json.loads(raw)
        body = outer.get("o")
        if isinstance(body, str):
            body = loads(body) if body.strip() else None
        return cls(int(outer.get("m", 0)), int(outer.get("i", 0)), str(outer.get("n", "")), body)


def ci(record: Mapping[str, Any]) -> dict[str, Any]:
    """Case-insensitive view: the docs say key case "is generally not important", and replies mix
    ``OrderId`` (order objects) with ``omsId``/``productSymbol`` (positions, auth)."""
    return {str(k).lower(): v for k, v in record.items()}


# ---------------------------------------------------------------------------------------------------------
# Enumerations (ints in requests; replies spell them as strings; accept both when reading)

SIDE_TO_WIRE = {Side.BUY: 0, Side.SELL: 1}
SIDE_FROM_WIRE: dict[str, Side] = {
    "buy": Side.BUY,
    "0": Side.BUY,
    "sell": Side.SELL,
    "1": Side.SELL,
    "short": Side.SELL,
    "2": Side.SELL,
}

ORDER_TYPE_TO_WIRE = {OrderType.MARKET: 1, OrderType.LIMIT: 2, OrderType.SL_M: 3, OrderType.SL: 4}
ORDER_TYPE_FROM_WIRE: dict[str, OrderType] = {
    "market": OrderType.MARKET,
    "1": OrderType.MARKET,
    "limit": OrderType.LIMIT,
    "2": OrderType.LIMIT,
    "stopmarket": OrderType.SL_M,
    "3": OrderType.SL_M,
    "stoplimit": OrderType.SL,
    "4": OrderType.SL,
}

# APEX has no DAY validity: GTC orders are expired by the venue at session end; IOC is native.
TIF_TO_WIRE = {Validity.DAY: 1, Validity.IOC: 3}
TIF_FROM_WIRE: dict[str, Validity] = {
    "gtc": Validity.DAY,
    "1": Validity.DAY,
    "ioc": Validity.IOC,
    "3": Validity.IOC,
    "fok": Validity.IOC,
    "4": Validity.IOC,
}

PEG_PRICE_TYPES = {"last": 1, "bid": 2, "ask": 3, "midpoint": 4}

# OrderState -> canonical status. "Working" with QuantityExecuted > 0 is a partial fill (APEX has no
# partial state). Numeric spellings are the enum values the docs list next to the names.
ORDER_STATE: dict[str, OrderStatus] = {
    "working": OrderStatus.OPEN,
    "1": OrderStatus.OPEN,
    "rejected": OrderStatus.REJECTED,
    "2": OrderStatus.REJECTED,
    "canceled": OrderStatus.CANCELLED,
    "cancelled": OrderStatus.CANCELLED,
    "3": OrderStatus.CANCELLED,
    "expired": OrderStatus.EXPIRED,
    "4": OrderStatus.EXPIRED,
    "fullyexecuted": OrderStatus.FILLED,
    "5": OrderStatus.FILLED,
    "unknown": OrderStatus.UNKNOWN,
    "0": OrderStatus.UNKNOWN,
}

# Generic error codes (CancelOrder/ModifyOrder replies and m=5 frames).
ERR_NOT_AUTHORIZED = 20
ERR_INVALID_REQUEST = 100
ERR_OPERATION_FAILED = 101
ERR_SERVER_ERROR = 102
ERR_NOT_FOUND = 104
ERR_NOT_SUPPORTED = 106

MUTATING_CALLS = frozenset(
    {"SendOrder", "CancelOrder", "CancelReplaceOrder", "ModifyOrder", "CancelAllOrders"}
)


def _key(value: Any) -> str:
    return str(value).replace(" ", "").replace("_", "").lower()


def status_from_wire(state: Any, executed: int) -> OrderStatus:
    status = ORDER_STATE.get(_key(state))
    if status is None:
        log.warning("alphapoint: unknown OrderState %r, treating as unknown", state)
        return OrderStatus.UNKNOWN
    if status is OrderStatus.OPEN and executed > 0:
        return OrderStatus.PARTIALLY_FILLED
    return status


def _money(value: Decimal) -> Decimal:
    """Four decimals at most, no exponent notation (``1E+3`` -> ``1000``)."""
    q = value.quantize(Decimal("0.0001"))
    return q.quantize(Decimal(1)) if q == q.to_integral_value() else q.normalize()


def error_from_payload(payload: Mapping[str, Any], *, call: str, frame_error: bool = False) -> BrokerError:
    """Map ``{result:false, errormsg, errorcode, detail}`` (or an m=5 body) onto runner.errors."""
    body = ci(payload)
    code = body.get("errorcode")
    try:
        code_int = int(code) if code is not None else None
    except (TypeError, ValueError):
        code_int = None
    msg = str(body.get("errormsg") or body.get("detail") or "error")
    detail = str(body.get("detail") or "")
    text = f"{call}: {msg}" + (f" ({detail})" if detail and detail != msg else "")
    code_s = str(code_int) if code_int is not None else None
    low = f"{msg} {detail}".lower()
    mutating = call in MUTATING_CALLS
    # No rate-limit reply is published for APEX; venues answer with a "throttled"/"rate limit" message.
    if "rate limit" in low or "throttl" in low or "too many" in low:
        return RateLimited(text, code=code_s, broker=BROKER)
    if code_int == ERR_NOT_AUTHORIZED or "not authorized" in low or "not logged in" in low:
        return SessionExpired(text, code=code_s, broker=BROKER)
    if code_int == ERR_NOT_FOUND:
        return NotFound(text, code=code_s, broker=BROKER)
    if code_int == ERR_SERVER_ERROR or (frame_error and code_int is None):
        # A server error says nothing about whether an order request was acted on.
        return (
            OutcomeUnknown(text, code=code_s, broker=BROKER)
            if mutating
            else Unavailable(text, code=code_s, broker=BROKER)
        )
    if (
        "not modifiable" in low
        or "not working" in low
        or ("already" in low and ("cancel" in low or "filled" in low))
    ):
        return NotModifiable(text, code=code_s, broker=BROKER)
    return Rejected(text, code=code_s, broker=BROKER)


# ---------------------------------------------------------------------------------------------------------
# Canonical -> wire


@dataclass(frozen=True, slots=True)
class AccountRef:
    oms_id: int
    account_id: int


def instrument_id_of(row: MasterRow) -> int:
    raw = row.extra.get("instrument_id") or row.extra.get("InstrumentId") or row.token
    if raw is None:
        raise InstrumentUnknown(
            f"instrument {row.instrument.key!r} has no AlphaPoint InstrumentId in the master", broker=BROKER
        )
    return int(raw)


def send_order_body(
    request: OrderRequest, instrument_id: int, acct: AccountRef, *, peg_price_type: int = 1
) -> dict[str, Any]:
    """SendOrder payload, key order and spelling as in the docs' SendOrder example."""
    body: dict[str, Any] = {
        "InstrumentId": instrument_id,
        "OMSId": acct.oms_id,
        "AccountId": acct.account_id,
        "TimeInForce": TIF_TO_WIRE[request.validity],
        "ClientOrderId": numeric_id(request.client_order_id),
        "OrderIdOCO": 0,
        "UseDisplayQuantity": request.disclosed_quantity > 0,
        "Side": SIDE_TO_WIRE[request.side],
        "Quantity": request.quantity,
        "OrderType": ORDER_TYPE_TO_WIRE[request.order_type],
        "PegPriceType": peg_price_type,
    }
    if request.price is not None and request.order_type in (OrderType.LIMIT, OrderType.SL):
        body["LimitPrice"] = request.price
    if request.trigger_price is not None and request.order_type in (OrderType.SL, OrderType.SL_M):
        body["StopPrice"] = request.trigger_price
    if request.disclosed_quantity > 0:
        body["DisplayQuantity"] = request.disclosed_quantity
    return body


def cancel_order_body(
    acct: AccountRef, *, order_id: int | None = None, client_numeric: int | None = None
) -> dict[str, Any]:
    """By OrderId when we know it; else AccountId + ClientOrderId (OMSId alone cannot identify it)."""
    if order_id is not None:
        return {"OMSId": acct.oms_id, "AccountId": acct.account_id, "OrderId": order_id}
    if client_numeric is None:
        raise ValueError("cancel needs an OrderId or a ClientOrderId")
    return {"OMSId": acct.oms_id, "AccountId": acct.account_id, "ClientOrderId": client_numeric}


def modify_order_body(acct: AccountRef, order_id: int, instrument_id: int, quantity: int) -> dict[str, Any]:
    """ModifyOrder: reduce quantity only, keeps book priority. ``Quantity`` is the new *remaining*
    quantity, as the order object's ``Quantity`` is the remaining one."""
    return {
        "OMSId": acct.oms_id,
        "OrderId": order_id,
        "InstrumentId": instrument_id,
        "Quantity": quantity,
        "AccountId": acct.account_id,
    }


def cancel_replace_body(
    order: Order, change: Modification, instrument_id: int, acct: AccountRef, *, peg_price_type: int = 1
) -> dict[str, Any]:
    """CancelReplaceOrder: a new order (new OrderId, loses priority) with our same ClientOrderId."""
    if order.broker_order_id is None:
        raise NotFound("cannot replace an order without a broker order id", broker=BROKER)
    order_type = change.order_type or order.order_type
    total = change.quantity if change.quantity is not None else order.quantity
    price = change.price if change.price is not None else order.price
    trigger = change.trigger_price if change.trigger_price is not None else order.trigger_price
    remaining = total - order.filled_quantity
    if remaining <= 0:
        raise NotModifiable(
            f"new quantity {total} is not above the filled {order.filled_quantity}", broker=BROKER
        )
    cl = numeric_id(order.client_order_id)
    return {
        "OMSId": acct.oms_id,
        "OrderIdToReplace": int(order.broker_order_id),
        "ClientOrdId": cl,
        "OrderType": ORDER_TYPE_TO_WIRE[order_type],
        "Side": SIDE_TO_WIRE[order.side],
        "AccountId": acct.account_id,
        "InstrumentId": instrument_id,
        "UseDisplayQuantity": False,
        "DisplayQuantity": 0,
        "LimitPrice": price
        if order_type in (OrderType.LIMIT, OrderType.SL) and price is not None
        else Decimal(0),
        "StopPrice": trigger
        if order_type in (OrderType.SL, OrderType.SL_M) and trigger is not None
        else Decimal(0),
        "ReferencePrice": Decimal(0),
        "PegPriceType": peg_price_type,
        "TimeInForce": TIF_TO_WIRE[order.validity],
        "OrderIdOCO": 0,
        "Quantity": remaining,
    }


# ---------------------------------------------------------------------------------------------------------
# Wire -> canonical


def _ms_to_dt(value: Any) -> dt.datetime | None:
    try:
        ms = int(value)
    except (TypeError, ValueError):
        return None
    if ms <= 0:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def order_from_wire(
    record: Mapping[str, Any],
    *,
    instrument_of: Callable[[int], Instrument],
    client_id_of: Callable[[int], str],
    product_of: Callable[[str], Product],
) -> Order:
    r = ci(record)
    # In every order record (GetOrderStatus / GetOpenOrders docs). A venue with a QuantityIncrement
    # below 1 can report fractions: Malformed naming the field, never truncated.
    executed = _int(r.get("quantityexecuted"), "QuantityExecuted")
    remaining = _int(r.get("quantity"), "Quantity")
    orig = _int(r.get("origquantity"), "OrigQuantity")
    status = status_from_wire(r.get("orderstate"), executed)
    # Working: total = remaining + executed (ModifyOrder reduces the remaining); done: what was asked.
    if status.is_working:
        quantity = remaining + executed
    elif status is OrderStatus.FILLED:
        quantity = executed or orig
    else:
        quantity = orig or remaining + executed
    side = SIDE_FROM_WIRE.get(_key(r.get("side")))
    if side is None:
        raise BrokerError(f"unknown Side {r.get('side')!r} in order {r.get('orderid')}", broker=BROKER)
    otype = ORDER_TYPE_FROM_WIRE.get(_key(r.get("ordertype")))
    if otype is None:
        raise BrokerError(f"unsupported OrderType {r.get('ordertype')!r}", broker=BROKER)
    client_numeric = int(r.get("clientorderid") or 0)
    client_id = client_id_of(client_numeric)
    reason = r.get("rejectreason") if status is OrderStatus.REJECTED else None
    avg = to_decimal(r.get("avgprice"))
    return Order(
        client_order_id=client_id,
        broker_order_id=str(r.get("orderid")),
        instrument=instrument_of(int(r.get("instrument") or r.get("instrumentid") or 0)),
        side=side,
        quantity=quantity,
        order_type=otype,
        product=product_of(client_id),
        status=status,
        filled_quantity=executed,
        average_price=avg if executed > 0 else None,
        price=(to_decimal(r.get("price")) or None) if otype in (OrderType.LIMIT, OrderType.SL) else None,
        trigger_price=(to_decimal(r.get("stopprice")) or None)
        if otype in (OrderType.SL, OrderType.SL_M)
        else None,
        validity=TIF_FROM_WIRE.get(_key(r.get("timeinforce") or "gtc"), Validity.DAY),
        reject_reason=str(reason) if reason else None,
        updated_at=_ms_to_dt(r.get("lastupdatedtime") or r.get("receivetime")),
        raw_status=str(r.get("orderstate")),
    )


def latest_for_client(records: Sequence[Mapping[str, Any]], client_numeric: int) -> Mapping[str, Any] | None:
    """The live incarnation of our order: a CancelReplace leaves the original Canceled and a new
    OrderId with the same ClientOrderId, so the highest OrderId wins."""
    mine = [r for r in records if int(ci(r).get("clientorderid") or 0) == client_numeric]
    if not mine:
        return None
    return max(mine, key=lambda r: int(ci(r).get("orderid") or 0))


# ---------------------------------------------------------------------------------------------------------
# Auth


def api_key_signature(secret: str, nonce: str, user_id: str, api_key: str) -> str:
    """HMAC-SHA256 hex of nonce + userId + apiKey keyed with the API secret (AlphaPoint API-key login)."""
    return hmac.new(secret.encode(), f"{nonce}{user_id}{api_key}".encode(), hashlib.sha256).hexdigest()


def authenticate_body(credentials: Mapping[str, str], nonce: str) -> dict[str, str]:
    """``{UserName, Password}`` or ``{APIKey, Signature, UserId, Nonce}`` (slate AuthenticateUser)."""
    if "api_key" in credentials:
        user_id = credentials["user_id"]
        sig = api_key_signature(credentials["api_secret"], nonce, user_id, credentials["api_key"])
        return {"APIKey": credentials["api_key"], "Signature": sig, "UserId": user_id, "Nonce": nonce}
    return {"UserName": credentials["username"], "Password": credentials["password"]}


def check_reply(name: str, frame: Frame) -> Any:
    if frame.m == MessageType.ERROR:
        body = frame.o if isinstance(frame.o, Mapping) else {"errormsg": str(frame.o)}
        raise error_from_payload(body, call=name, frame_error=True)
    body = frame.o
    if isinstance(body, Mapping):
        low = ci(body)
        if low.get("result") is False:
            raise error_from_payload(body, call=name)
    return body


# ---------------------------------------------------------------------------------------------------------
# Account trades -> positions


def _sort_key(t: Mapping[str, Any]) -> tuple[int, int]:
    try:  # ordering only: an absent or unreadable stamp sorts first rather than failing the read
        return (_int(t.get("tradetimems"), "TradeTimeMS", default=0),
                _int(t.get("tradeid"), "TradeId", default=0))
    except Malformed:
        return 0, 0


def replay_trades(
    trades: Sequence[Mapping[str, Any]], bad: dict[int, str] | None = None
) -> dict[int, tuple[Decimal, Decimal, int, int]]:
    """Per InstrumentId: (average open price, realized P&L, bought, sold) from account trades, oldest
    first (APEX lists the newest first). A trade whose quantity is not a whole number (a fractional
    venue) makes its instrument unreplayable: recorded in ``bad`` (else raised), the others go on."""
    state: dict[int, list[Any]] = {}  # qty, open value, realized, bought, sold
    for t in sorted((ci(t) for t in trades), key=_sort_key):
        iid = int(t.get("instrumentid") or 0)
        side = SIDE_FROM_WIRE.get(_key(t.get("side")), Side.BUY)
        try:
            qty = _int(t.get("quantity"), "Quantity")
        except Malformed as exc:
            if bad is None:
                raise
            bad.setdefault(iid, f"trade {t.get('tradeid')}: {exc}")
            continue
        price = to_decimal(t.get("price")) or Decimal(0)
        st = state.setdefault(iid, [0, Decimal(0), Decimal(0), 0, 0])
        st[3 if side is Side.BUY else 4] += qty
        held, sign = st[0], side.sign
        if held == 0 or (held > 0) == (sign > 0):
            st[0] += sign * qty
            st[1] += price * qty
            continue
        closing = min(qty, abs(held))
        avg = st[1] / abs(held)
        st[2] += (price - avg) * closing * (1 if held > 0 else -1)
        st[1] = Decimal(0) if closing == abs(held) else st[1] - avg * closing
        st[0] += sign * closing
        if rest := qty - closing:
            st[0] += sign * rest
            st[1] = price * rest
    out: dict[int, tuple[Decimal, Decimal, int, int]] = {}
    for iid, (q, value, realized, bought, sold) in state.items():
        avg = _money(value / abs(q)) if q else Decimal(0)
        out[iid] = (avg, _money(realized), bought, sold)
    return out


# ---------------------------------------------------------------------------------------------------------
# Market data: GetLevel1 (request/reply). Official shape: alphapoint/slate
# source/includes/users/_api_users_user_subscribelevel1.md (SubscribeLevel1 reply == Level1UpdateEvent) and
# the GetLevel1 page of the APEX API docs (VulcanXOffical/API-Docs, "GetLevel1", RPCPromise example):
# request ``{"OMSId": 1, "InstrumentId": 1}``; reply ``{"OMSId", "InstrumentId", "BestBid", "BestOffer",
# "LastTradedPx", "LastTradedQty", "LastTradeTime" (ms), ..., "TimeStamp": "<ms as a string>", "BidQty",
# "AskQty", ...}``. Liberal reading: keys case-insensitively (one docs table spells ``LastTradedPX``), the
# times as JSON numbers or numeric strings, ``TimeStamp`` also as an ISO string.

LEVEL1 = "GetLevel1"


def level1_body(oms_id: int, instrument_id: int) -> dict[str, int]:
    return {"OMSId": oms_id, "InstrumentId": instrument_id}


def _price(value: Any) -> Decimal | None:
    """A Level1 price; APEX reports 0 where there is none (no trade yet, an empty side): absent."""
    d = to_decimal(value)
    return d if d is not None and d > 0 else None


def _when(value: Any) -> dt.datetime | None:
    """A Level1 time: POSIX milliseconds (number or numeric string) or, liberally, an ISO timestamp."""
    if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
        try:
            at = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        return at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at.astimezone(dt.UTC)
    try:
        return _ms_to_dt(int(to_decimal(value) or 0))
    except (ValueError, OverflowError, OSError):
        return None


def quote_from_level1(
    record: Any, instrument: Instrument, instrument_id: int, *, received_at: dt.datetime
) -> Quote | None:
    """A GetLevel1 / Level1UpdateEvent object as a Quote; None when it prices nothing (every price 0 or
    absent: never a made-up price). ``at`` is the last trade's time for a last price (the staleness that
    matters), else the snapshot's ``TimeStamp``, else ``received_at``. A reply for another instrument is
    Malformed: pricing one instrument off another's book must never happen silently."""
    if not isinstance(record, Mapping):
        if record is None:
            return None
        raise Malformed(LEVEL1, record, reason="the reply is not an object", broker=BROKER)
    r = ci(record)
    got = r.get("instrumentid")
    if got is not None and got != "" and _int(got, "InstrumentId") != instrument_id:
        raise Malformed(
            "InstrumentId", got, reason=f"{LEVEL1} asked for InstrumentId {instrument_id}", broker=BROKER
        )
    ltp, bid, ask = _price(r.get("lasttradedpx")), _price(r.get("bestbid")), _price(r.get("bestoffer"))
    if ltp is None and bid is None and ask is None:
        return None
    traded = _when(r.get("lasttradetime")) if ltp is not None else None
    # as of its receipt: GetLevel1 answers with the book as it is now (TimeStamp is the snapshot's own)
    return Quote(instrument, ltp, received_at.astimezone(dt.UTC), bid=bid, ask=ask, traded_at=traded)
