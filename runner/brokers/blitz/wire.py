"""QuantXpress Blitz wire translation: canonical model <-> Blitz JSON, status and error tables (no I/O).

Sources: seed 000 (the vendor's OMS order docs) and the official SDK Quantxpress-Technologies/blitz-api-py
at commit aa61675 (``blitzsdk/common/{auth,config}.py``, ``blitzsdk/interactive/{api_client,models}.py``,
``docs/blitzsdk/*.md``, ``Postman-collection/``). Where they disagree the SDK's spelling is what we send
by default (``dialect: sdk``); ``dialect: seed`` sends the seed's spelling and paths. Whatever we read, we
accept both spellings (``orderStatus``/``status``, ``OrderType``/``orderType``, list/map payloads...).

The adapter that does the I/O is :class:`runner.brokers.blitz.client.BlitzBroker`.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx

from runner.brokers.instruments import MasterRow
from runner.errors import (
    BrokerError,
    Malformed,
    NotFound,
    NotModifiable,
    RateLimited,
    Rejected,
    SessionExpired,
    Unavailable,
)
from runner.model import (
    Fill,
    Instrument,
    Modification,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    Position,
    Product,
    Side,
    Validity,
)
from runner.wirejson import loads, to_decimal, to_int

BROKER = "blitz"
log = logging.getLogger("runner.brokers.blitz")
_int = functools.partial(to_int, broker=BROKER)  # whole numbers exactly, or Malformed naming the field


class Dialect(enum.StrEnum):
    SDK = "sdk"  # blitz-api-py at aa61675: camelCase keys, BUY/LIMIT values, blitzOrderId for modify/cancel
    SEED = "seed"  # seed 000: OrderType/OrderSide keys, Buy/Limit values, exchangeOrderId for modify/cancel


@dataclass(frozen=True, slots=True)
class Paths:
    """Request paths relative to the trading base URL (login: relative to the auth base URL)."""

    login: str
    place: str
    modify: str
    cancel: str
    orders: str
    open_orders: str | None  # None: filter the day's orders ourselves
    order: str  # ``{id}`` is the blitzOrderId
    positions: str
    trades: str


SDK_PATHS = Paths(
    login="api/app_login",
    place="orders/placeOrder",
    modify="orders/modifyOrder",
    cancel="orders/cancelOrder",
    orders="orders",
    open_orders="orders/openOrders",
    order="orders/{id}",
    positions="positions",
    trades="trades",
)
# The seed's curls use the base ``http://uat.quantxpress.com/api/order`` (its table also shows ``orders/...``
# and ``order/cancelOrder``; the simulator accepts all of them). Positions/trades are SDK-only paths.
SEED_PATHS = Paths(
    login="api/app_login",
    place="placeOrder",
    modify="modifyOrder",
    cancel="cancelOrder",
    orders="",
    open_orders=None,
    order="orderHistory/blitzOrderId/{id}",
    positions="positions",
    trades="trades",
)

# ---------------------------------------------------------------------------------------------------------
# Instruments
# ---------------------------------------------------------------------------------------------------------

# Canonical exchange -> Blitz exchange segment (docs/blitzsdk/instruments.md "Symbol format").
SEGMENT_OF_EXCHANGE: dict[str, str] = {
    "NSE": "NSECM",
    "NFO": "NSEFO",
    "BSE": "BSECM",
    "BFO": "BSEFO",
    "CDS": "NSECD",
    "MCX": "MCXFO",
}
EXCHANGE_OF_SEGMENT: dict[str, str] = {v: k for k, v in SEGMENT_OF_EXCHANGE.items()}


def exchange_segment(row: MasterRow) -> str:
    seg = row.extra.get("exchange_segment")
    if seg:
        return seg.upper()
    return SEGMENT_OF_EXCHANGE.get(row.instrument.exchange, row.instrument.exchange)


def instrument_id(row: MasterRow) -> int:
    """Blitz ``instrumentId`` from the master: column ``instrument_id``, else ``token``."""
    raw = row.extra.get("instrument_id") or row.token
    if raw is None or not raw.strip().isdigit():
        from runner.errors import InstrumentUnknown

        raise InstrumentUnknown(
            f"no Blitz instrumentId for {row.instrument.key!r} in the master", broker=BROKER
        )
    return int(raw)


def wire_symbol(row: MasterRow) -> str:
    """``SEGMENT|NAME`` as the SDK's ``symbol`` field spells it, e.g. ``NSECM|TCS``."""
    return f"{exchange_segment(row)}|{row.trading_symbol or row.instrument.symbol}"


def master_rows_from_blitz_json(records: Iterable[Mapping[str, Any]]) -> list[MasterRow]:
    """Rows of Blitz's own instrument dump (``/v1/api/instruments/gz/download``), read by the same parser
    as a downloaded master (:mod:`runner.brokers.blitz.master`), so a saved dump and a download agree."""
    from collections import Counter

    from runner.brokers.blitz.master import parse_row, report_skipped

    skipped: Counter[str] = Counter()
    rows = [row for rec in records if (row := parse_row(rec, skipped)) is not None]
    report_skipped("instrument dump", skipped)
    return rows


# ---------------------------------------------------------------------------------------------------------
# Request bodies
# ---------------------------------------------------------------------------------------------------------


_ORDER_TYPE_SDK = {
    OrderType.LIMIT: "LIMIT",
    OrderType.MARKET: "MARKET",
    OrderType.SL: "SL",
    OrderType.SL_M: "SL-M",
}
# Seed's modify table: "Market, Limit, SL, SL-M"; its place example sends "Limit".
_ORDER_TYPE_SEED = {
    OrderType.LIMIT: "Limit",
    OrderType.MARKET: "Market",
    OrderType.SL: "SL",
    OrderType.SL_M: "SL-M",
}
_SIDE_SDK = {Side.BUY: "BUY", Side.SELL: "SELL"}
_SIDE_SEED = {Side.BUY: "Buy", Side.SELL: "Sell"}
_TIF = {Validity.DAY: "GFD", Validity.IOC: "IOC"}


def _price(order_type: OrderType, price: Decimal | None) -> Decimal:
    # SDK docs: "price: Limit price (0 for MARKET)".
    return price if order_type in (OrderType.LIMIT, OrderType.SL) and price is not None else Decimal(0)


def _stop(order_type: OrderType, trigger: Decimal | None) -> Decimal:
    return trigger if order_type in (OrderType.SL, OrderType.SL_M) and trigger is not None else Decimal(0)


def place_body(
    req: OrderRequest, row: MasterRow, client_id: str, dialect: Dialect = Dialect.SDK
) -> dict[str, Any]:
    """POST placeOrder body. Our deterministic id travels as ``correlationOrderId`` (the SDK's
    "unique client-generated order identifier"); ``clientId`` is the trading client code."""
    common = {
        "quantity": req.quantity,
        "product": req.product.value,
        "tif": _TIF[req.validity],
        "price": _price(req.order_type, req.price),
        "instrumentId": instrument_id(row),
    }
    if dialect is Dialect.SEED:
        # Key order and spelling as in seed 000's request example, plus the skeleton's correlationOrderId.
        return {
            **common,
            "OrderType": _ORDER_TYPE_SEED[req.order_type],
            "OrderSide": _SIDE_SEED[req.side],
            "disclosedQuantity": req.disclosed_quantity,
            "stopPrice": _stop(req.order_type, req.trigger_price),
            "clientId": client_id,
            "tiF_GTD_Date": "",
            "correlationOrderId": req.client_order_id,
        }
    return {
        "correlationOrderId": req.client_order_id,
        **common,
        "orderType": _ORDER_TYPE_SDK[req.order_type],
        "symbol": wire_symbol(row),
        "orderSide": _SIDE_SDK[req.side],
        "disclosedQuantity": req.disclosed_quantity,
        "stopPrice": _stop(req.order_type, req.trigger_price),
        "clientId": client_id,
        "tiF_GTD_Date": "",  # SDK hard-codes a date; GFD/IOC orders need none (seed and Postman send "")
    }


@dataclass(frozen=True, slots=True)
class OrderRef:
    """Broker-side identity of a working order, as modify/cancel need it."""

    blitz_order_id: int
    instrument_id: int
    exchange_order_id: str = ""
    strategy_instance_id: str = ""


def modify_body(
    order: Order, change: Modification, row: MasterRow, ref: OrderRef, dialect: Dialect = Dialect.SDK
) -> dict[str, Any]:
    """PUT modifyOrder body: the order's full new state (unchanged fields repeated)."""
    order_type = change.order_type or order.order_type
    price = change.price if change.price is not None else order.price
    trigger = change.trigger_price if change.trigger_price is not None else order.trigger_price
    quantity = change.quantity if change.quantity is not None else order.quantity
    if dialect is Dialect.SEED:
        # Seed example: identifies the order by exchangeOrderId + instrumentId + strategyInstanceId and
        # sends both the new (modifiedOrderQuantity) and the original (quantity) quantity.
        return {
            "disclosedQuantity": 0,
            "exchangeOrderId": ref.exchange_order_id,
            "instrumentId": ref.instrument_id,
            "modifiedOrderQuantity": quantity,
            "orderType": _ORDER_TYPE_SEED[order_type],
            "price": _price(order_type, price),
            "quantity": order.quantity,
            "stopPrice": _stop(order_type, trigger),
            "strategyInstanceId": ref.strategy_instance_id,
            "tiF_GTD_Date": "",
            "tif": _TIF[order.validity],
        }
    # SDK (tests/test_interactive_api.py and Postman 2.5): blitzOrderId + modifiedOrderQuantity.
    return {
        "blitzOrderId": ref.blitz_order_id,
        "modifiedOrderQuantity": quantity,
        "price": _price(order_type, price),
        "orderType": _ORDER_TYPE_SDK[order_type],
        "instrumentId": ref.instrument_id,
        "symbol": wire_symbol(row),
        "disclosedQuantity": 0,
        "stopPrice": _stop(order_type, trigger),
        "tif": _TIF[order.validity],
    }


def cancel_params(ref: OrderRef, dialect: Dialect = Dialect.SDK) -> dict[str, str]:
    if dialect is Dialect.SEED:
        return {
            "InstrumentId": str(ref.instrument_id),
            "ExchangeOrderId": ref.exchange_order_id,
            "StrategyInstanceId": ref.strategy_instance_id,
        }
    return {"instrumentId": str(ref.instrument_id), "blitzOrderId": str(ref.blitz_order_id)}


# ---------------------------------------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------------------------------------


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


# Blitz order status -> canonical (docs/blitzsdk/orders.md "Order statuses"; seed field table). Keys are
# normalised (lower case, no punctuation) so "PendingNew", "PENDING_NEW" and "pending new" all match.
STATUS_TABLE: dict[str, OrderStatus] = {
    "pendingnew": OrderStatus.PENDING_NEW,
    "new": OrderStatus.OPEN,
    "open": OrderStatus.OPEN,
    "triggerpending": OrderStatus.OPEN,  # SL/SL-M resting until triggered
    "pendingreplace": OrderStatus.OPEN,  # unverified: a modify in flight, the order still works
    "replaced": OrderStatus.OPEN,
    "partiallyfilled": OrderStatus.PARTIALLY_FILLED,
    "filled": OrderStatus.FILLED,
    "pendingcancel": OrderStatus.PENDING_CANCEL,
    "cancelled": OrderStatus.CANCELLED,
    "canceled": OrderStatus.CANCELLED,
    "rejected": OrderStatus.REJECTED,
    "expired": OrderStatus.EXPIRED,
}


def status_from(raw: str | None, filled: int = 0) -> OrderStatus:
    """Map a Blitz status; an unknown string becomes UNKNOWN (resolved by a later read), never a guess."""
    status = STATUS_TABLE.get(_key(raw or ""))
    if status is None:
        log.warning("blitz: unknown order status %r: treating as unknown", raw)
        return OrderStatus.UNKNOWN
    if status is OrderStatus.OPEN and filled > 0:
        return OrderStatus.PARTIALLY_FILLED
    return status


_SIDE_IN = {"buy": Side.BUY, "sell": Side.SELL, "b": Side.BUY, "s": Side.SELL}
_TYPE_IN = {
    "limit": OrderType.LIMIT,
    "market": OrderType.MARKET,
    "sl": OrderType.SL,
    "slm": OrderType.SL_M,
    "stoplimit": OrderType.SL,
    "stopmarket": OrderType.SL_M,
    "stoploss": OrderType.SL,
}


def get(row: Mapping[str, Any], *names: str, default: Any = None) -> Any:
    """First present field among ``names``, matched case-insensitively (ASP.NET binds that way)."""
    for n in names:
        if n in row and row[n] is not None:
            return row[n]
    lowered = {k.lower(): v for k, v in row.items()}
    for n in names:
        v = lowered.get(n.lower())
        if v is not None:
            return v
    return default


def epoch_ms(value: Any) -> dt.datetime | None:
    try:  # a timestamp only informs: absent or unreadable is "no time", never a failed read
        ms = _int(value, "timestamp", default=0)
    except Malformed:
        return None
    if ms <= 0:
        return None
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms)


def latest_row(rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The current state among history rows (seed: newest first; ordering by sequenceNumber is safer)."""
    if not rows:
        raise NotFound("empty order history", broker=BROKER)
    def order(ir: tuple[int, Mapping[str, Any]]) -> tuple[int, int]:
        return _int(get(ir[1], "sequenceNumber"), "sequenceNumber", default=0), -ir[0]

    return max(enumerate(rows), key=order)[1]


InstrumentLookup = Callable[[Mapping[str, Any]], Instrument]


def order_from_row(
    row: Mapping[str, Any], instrument: Instrument, *, fallback: OrderRequest | None = None
) -> Order:
    filled = _int(get(row, "cumulativeQuantity"), "cumulativeQuantity")  # in every order row (SDK)
    raw_status = get(row, "orderStatus", "status")
    status = status_from(raw_status, filled)
    otype = _TYPE_IN.get(_key(str(get(row, "orderType", default=""))))
    side = _SIDE_IN.get(_key(str(get(row, "orderSide", default=""))))
    if otype is None or side is None:
        if fallback is None:
            raise BrokerError(
                f"unreadable order row (orderType/orderSide) for {get(row, 'blitzOrderId')}", broker=BROKER
            )
        otype, side = otype or fallback.order_type, side or fallback.side
    product_raw = get(row, "productType", "product")
    try:
        product = Product(str(product_raw).upper())
    except ValueError:  # SDK order rows carry no product: keep what we asked for
        product = fallback.product if fallback else Product.MIS
    price = to_decimal(get(row, "orderPrice", "price"))
    trigger = to_decimal(get(row, "orderStopPrice", "stopPrice")) or to_decimal(get(row, "orderTriggerPrice"))
    avg = to_decimal(get(row, "averageTradedPrice"))
    reject = get(row, "rejectTypeReason") or None
    if reject is None and status is OrderStatus.REJECTED:
        rt = get(row, "rejectType")
        reject = None if rt in (None, "", "None") else str(rt)
    tif = _key(str(get(row, "tif", default="")))
    correlation = get(row, "correlationOrderId")
    return Order(
        client_order_id=str(correlation)
        if correlation is not None
        else (fallback.client_order_id if fallback else ""),
        broker_order_id=str(get(row, "blitzOrderId")),
        instrument=instrument,
        side=side,
        quantity=_int(get(row, "orderQuantity", "quantity"), "orderQuantity"),
        order_type=otype,
        product=product,
        status=status,
        filled_quantity=filled,
        average_price=avg if avg else None,
        price=price if price and otype in (OrderType.LIMIT, OrderType.SL) else None,
        trigger_price=trigger if trigger and otype in (OrderType.SL, OrderType.SL_M) else None,
        validity=Validity.IOC if tif == "ioc" else Validity.DAY,
        tag=fallback.tag if fallback else None,
        reject_reason=str(reject) if reject else None,
        updated_at=epoch_ms(
            get(row, "lastRequestDateTime", "exchangeTransactTime", "orderGeneratedDateTime")
        ),
        raw_status=str(raw_status) if raw_status is not None else None,
    )


def ref_from_row(row: Mapping[str, Any]) -> OrderRef:
    return OrderRef(
        blitz_order_id=_int(get(row, "blitzOrderId"), "blitzOrderId"),
        instrument_id=_int(get(row, "instrumentId"), "instrumentId"),
        exchange_order_id=str(get(row, "exchangeOrderId", default="") or ""),
        strategy_instance_id=str(get(row, "strategyInstanceId", default="") or ""),
    )


def rows_of(data: Any) -> list[Mapping[str, Any]]:
    """Order/trade/position payloads arrive as a list, a single object, or a map keyed by clientId."""
    if data is None:
        return []
    if isinstance(data, list):
        return [r for r in data if isinstance(r, Mapping)]
    if isinstance(data, Mapping):
        if any(k in data for k in ("blitzOrderId", "instrumentId", "BlitzOrderId")):
            return [data]
        out: list[Mapping[str, Any]] = []
        for v in data.values():  # positions: {"Algo123": [...]}
            out.extend(rows_of(v) if isinstance(v, list | Mapping) else [])
        return out
    return []


def position_from_row(row: Mapping[str, Any], instrument: Instrument) -> Position:
    net = _int(get(row, "netPosition"), "netPosition")
    avg = to_decimal(get(row, "avgBuy")) if net > 0 else to_decimal(get(row, "avgSell")) if net < 0 else None
    product_raw = get(row, "productType", "product")
    try:
        product = Product(str(product_raw).upper())
    except ValueError:
        product = Product.MIS
    return Position(
        instrument=instrument,
        product=product,
        quantity=net,
        average_price=avg or to_decimal(get(row, "avgNet")) or Decimal(0),
        realized_pnl=to_decimal(get(row, "realized")) or Decimal(0),
        day_buy_quantity=_int(get(row, "longPosition"), "longPosition"),
        day_sell_quantity=_int(get(row, "shortPosition"), "shortPosition"),
    )


def fill_from_row(row: Mapping[str, Any], instrument: Instrument) -> Fill:
    side = _SIDE_IN.get(_key(str(get(row, "orderSide", default=""))), Side.BUY)
    at = epoch_ms(get(row, "exchangeTransactTime", "lastRequestDateTime")) or dt.datetime(
        1970, 1, 1, tzinfo=dt.UTC
    )
    return Fill(
        client_order_id=str(get(row, "correlationOrderId", default="")),
        broker_order_id=str(get(row, "blitzOrderId")),
        instrument=instrument,
        side=side,
        quantity=_int(get(row, "lastTradedQuantity"), "lastTradedQuantity"),
        price=to_decimal(get(row, "lastTradedPrice")) or Decimal(0),
        at=at,
        trade_id=str(get(row, "executionId", default="")) or None,
    )


# Error envelope: {"status":"error","message":...,"error_type":...} (docs/blitzsdk/exceptions.md).
_AUTH_ERROR_TYPES = {"tokenexception", "authenticationerror"}


def error_from(status_code: int, body: Any, *, operation: str) -> BrokerError:
    env = body if isinstance(body, Mapping) else {}
    etype = str(get(env, "error_type", "errorType", default="") or "")
    message = str(get(env, "message", default="") or f"HTTP {status_code}")
    code = etype or str(status_code)
    text = f"{operation}: {message}"
    if _key(etype) in _AUTH_ERROR_TYPES or status_code == 401:
        return SessionExpired(text, code=code, broker=BROKER)
    if status_code == 403:
        # Seed: 403 = "order cannot be modified/cancelled (already executed or cancelled)";
        # SDK docs: 403 TokenException = session invalidated. error_type tells them apart.
        return NotModifiable(text, code=code, broker=BROKER)
    if status_code == 404:
        return NotFound(text, code=code, broker=BROKER)
    if status_code == 429:
        return RateLimited(text, code=code, broker=BROKER)
    if status_code >= 500:
        return Unavailable(text, code=code, broker=BROKER)
    return Rejected(text, code=code, broker=BROKER)


def parse_json(response: httpx.Response) -> Any:
    try:
        return loads(response.content) if response.content else None
    except ValueError:
        return None


def unwrap(response: httpx.Response, *, operation: str) -> Any:
    """``data`` of a success envelope, or the mapped error."""
    body = parse_json(response)
    ok_status = isinstance(body, Mapping) and str(get(body, "status", default="success")).lower() == "success"
    if response.status_code in (200, 201) and (ok_status or not isinstance(body, Mapping)):
        if isinstance(body, Mapping) and "data" in body:
            return body["data"]
        return body
    return error_from(response.status_code if response.status_code != 200 else 400, body, operation=operation)
