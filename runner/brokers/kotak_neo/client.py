"""Kotak Neo Trade API adapter.

Wire format from the official SDK, PyPI ``kotakneoapi`` 3.0.9 = GitHub Kotak-Neo/kotak-neo-python
(``neo_api_client/settings.py``, ``services/{totp,order,modify_order,order_report,order_history,
positions}.py``, ``rest.py``, ``docs/functions/**``), seed 001 (cancel / BO-CO exit / AMO) and
shared/brokers/kotak_neo.md. Where they differ the SDK wins for what we *send*; for what we *read*
both spellings are accepted (noted where it happens).

Login is two steps on the login host (``tradeApiLogin`` with a TOTP, then ``tradeApiValidate`` with the
MPIN); the second reply names the session's ``baseUrl``, used for every trading call that day. Write
calls are ``application/x-www-form-urlencoded`` with one field ``jData=<JSON>``.

Pure translation (canonical model <-> jData / order-book rows, status and error tables, TOTP) lives
in plain functions; :class:`KotakNeo` does the I/O.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import functools
import hashlib
import hmac
import json
import logging
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from runner.accounts import Account
from runner.brokers.base import Capability, read_positions
from runner.brokers.http import make_client, send
from runner.brokers.instruments import InstrumentMaster, MasterRow
from runner.brokers.ratelimit import RateLimiter, segment_of
from runner.clock import Clock, SystemClock
from runner.errors import (
    AuthExpired,
    BrokerError,
    NotFound,
    NotModifiable,
    OutcomeUnknown,
    RateLimited,
    Rejected,
    Unavailable,
)
from runner.ids import is_client_order_id
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
from runner.scrub import secret
from runner.wirejson import loads, plain, to_decimal, to_int

BROKER = "kotak_neo"
log = logging.getLogger("runner.brokers.kotak_neo")  # stable name, not __name__: people filter on it
_int = functools.partial(to_int, broker=BROKER)  # whole numbers exactly, or Malformed naming the field

# --- endpoints (SDK settings.py PROD_URL) ---------------------------------------------------------
LOGIN_HOST = "https://mis.kotaksecurities.com"
PATH_TOTP_LOGIN = "/login/1.0/tradeApiLogin"
PATH_TOTP_VALIDATE = "/login/1.0/tradeApiValidate"
PATH_PLACE = "/quick/order/rule/ms/place"
PATH_MODIFY = "/quick/order/vr/modify"
PATH_CANCEL = "/quick/order/cancel"
PATH_BO_EXIT = "/quick/order/bo/exit"  # seed 001
PATH_CO_EXIT = "/quick/order/co/exit"  # seed 001
PATH_HISTORY = "/quick/order/history"
PATH_ORDERS = "/quick/user/orders"
PATH_TRADES = "/quick/user/trades"
# SDK v3 reads positions from portfolio/v2/positions; the note and older SDKs use /quick/user/positions.
# The SDK wins by default; `endpoints.positions_path` may select the other (the simulator serves both).
PATH_POSITIONS = "/portfolio/v2/positions"
PATH_POSITIONS_LEGACY = "/quick/user/positions"

NEO_FIN_KEY = "neotradeapi"
ACCEPT_JSON = {"Accept": "application/json"}  # the SDK's client sends it on every call
ORDER_SOURCE = "NEOTRADEAPI"  # `os` on place/modify (SDK settings.ORDER_SOURCE)

# --- TOTP (RFC 6238 over RFC 4226, HMAC-SHA1, 30 s, 6 digits: what authenticator apps use) ------------


def hotp(secret: bytes, counter: int, digits: int = 6) -> str:
    mac = hmac.new(secret, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    code = (struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF) % 10**digits
    return str(code).zfill(digits)


def decode_base32_secret(secret: str) -> bytes:
    """Authenticator secrets come grouped, lower-case and unpadded; normalise before decoding."""
    cleaned = "".join(secret.split()).replace("-", "").upper()
    cleaned += "=" * (-len(cleaned) % 8)
    try:
        return base64.b32decode(cleaned, casefold=True)
    except (ValueError, TypeError):  # binascii.Error is a ValueError
        raise ValueError("TOTP secret is not valid base32") from None


def totp(secret_b32: str, at: dt.datetime | float, *, step: int = 30, digits: int = 6) -> str:
    ts = at.timestamp() if isinstance(at, dt.datetime) else at
    return hotp(decode_base32_secret(secret_b32), int(ts // step), digits)


# --- segments, enums -------------------------------------------------------------------------------
# Canonical exchange -> Kotak `es`; the SDK rejects aliases on the wire, so we always send the code.
SEGMENT_OF_EXCHANGE: dict[str, str] = {
    "NSE": "nse_cm",
    "BSE": "bse_cm",
    "NFO": "nse_fo",
    "BFO": "bse_fo",
    "MCX": "mcx_fo",
}
EXCHANGE_OF_SEGMENT: dict[str, str] = {v: k for k, v in SEGMENT_OF_EXCHANGE.items()}

ORDER_TYPE_CODE: dict[OrderType, str] = {
    OrderType.LIMIT: "L",
    OrderType.MARKET: "MKT",
    OrderType.SL: "SL",
    OrderType.SL_M: "SL-M",
}
# Reading: the SDK's feed model comments "MKT, LMT, etc.", so accept LMT and long names too.
ORDER_TYPE_OF_CODE: dict[str, OrderType] = {
    "L": OrderType.LIMIT, "LMT": OrderType.LIMIT, "LIMIT": OrderType.LIMIT,
    "MKT": OrderType.MARKET, "MARKET": OrderType.MARKET,
    "SL": OrderType.SL, "SL-L": OrderType.SL,
    "SL-M": OrderType.SL_M, "SLM": OrderType.SL_M,
}
# Kotak products we may read back. BO/CO/INTRADAY are intraday (MIS); MTF is a funded delivery (CNC).
PRODUCT_OF_CODE: dict[str, Product] = {
    "MIS": Product.MIS, "INTRADAY": Product.MIS, "BO": Product.MIS, "CO": Product.MIS,
    "NRML": Product.NRML, "NORMAL": Product.NRML,
    "CNC": Product.CNC, "MTF": Product.CNC,
}
SIDE_OF_CODE: dict[str, Side] = {"B": Side.BUY, "BUY": Side.BUY, "S": Side.SELL, "SELL": Side.SELL}

# --- order status (ordSt) ----------------------------------------------------------------------------
# Lifecycle from docs/functions/orders/order_history.md and websocket/orderfeed/models.py. The SDK says
# the list is not closed; unknown strings go through `unknown_status` below, explicitly.
STATUS_OF_ORDST: dict[str, OrderStatus] = {
    "put order req received": OrderStatus.PENDING_NEW,
    "validation pending": OrderStatus.PENDING_NEW,
    "open pending": OrderStatus.PENDING_NEW,
    "after market order req received": OrderStatus.OPEN,  # AMO accepted, rests until the open
    "open": OrderStatus.OPEN,
    "trigger pending": OrderStatus.OPEN,  # stop order waiting for its trigger (note: unverified)
    "modified": OrderStatus.OPEN,
    "modify pending": OrderStatus.OPEN,
    "modify validation pending": OrderStatus.OPEN,
    "not modified": OrderStatus.OPEN,  # modify refused; order still working
    "not cancelled": OrderStatus.OPEN,  # cancel refused; order still working
    "cancel pending": OrderStatus.PENDING_CANCEL,
    "complete": OrderStatus.FILLED,
    "traded": OrderStatus.FILLED,  # spelling seen in the SDK's modify docs
    "rejected": OrderStatus.REJECTED,
    "cancelled": OrderStatus.CANCELLED,
    "lapsed": OrderStatus.EXPIRED,
    "expired": OrderStatus.EXPIRED,
}
AMO_STATUS = "after market order req received"
_unknown_seen: set[str] = set()


def unknown_status(raw: str, policy: str = "open") -> OrderStatus:
    """An ``ordSt`` not in the table. Default (note K5): treat as working and log once per spelling, so
    a new intermediate state never stalls the engine; ``policy="unknown"`` makes it UNKNOWN instead."""
    if raw not in _unknown_seen:
        _unknown_seen.add(raw)
        log.warning("kotak_neo: unknown ordSt %r treated as %s", raw, policy)
    return OrderStatus.UNKNOWN if policy == "unknown" else OrderStatus.OPEN


def map_status(raw: str | None, filled: int, quantity: int, *, policy: str = "open") -> OrderStatus:
    key = (raw or "").strip().lower()
    status = STATUS_OF_ORDST.get(key)
    if status is None:
        status = unknown_status(key, policy)
    if status is OrderStatus.OPEN and 0 < filled < quantity:
        return OrderStatus.PARTIALLY_FILLED
    return status


# --- errors ----------------------------------------------------------------------------------------
CODE_NOT_FOUND = 1006  # "Order already cancelled or not found." (seed 001)
CODE_ALREADY_COMPLETE = 1021  # "order is completed" (SDK settings.ORDER_ALREADY_COMPLETE_ST_CODE)
CODE_IP_NOT_WHITELISTED = 100008  # static-IP rule (note K4): re-login cannot help
CODE_SESSION_IP_MISMATCH = 1037  # session created from another IP: log in again from this one
CODE_INVALID_SESSION = 100022  # {"stCode":100022,"errMsg":"invalid session token"} (kotak-neo-api#280)
CODE_APIM_INVALID_CREDENTIALS = 900901  # API gateway fault for a bad/expired token
SESSION_CODES = frozenset({CODE_SESSION_IP_MISMATCH, CODE_INVALID_SESSION, CODE_APIM_INVALID_CREDENTIALS})


def _is_ok(payload: Mapping[str, Any]) -> bool:
    stat = payload.get("stat")
    return isinstance(stat, str) and stat.lower() == "ok"  # docs spell both "Ok" and "ok"


def _message(payload: Mapping[str, Any]) -> str:
    # Kotak spells the message `emsg` (seed) or `errMsg` (SDK docs); login errors nest it.
    for key in ("emsg", "errMsg", "message", "Message"):
        if isinstance(payload.get(key), str) and payload[key]:
            return str(payload[key])
    errors = payload.get("error")
    if isinstance(errors, list) and errors and isinstance(errors[0], Mapping):
        return str(errors[0].get("message", "error"))
    fault = payload.get("fault")
    if isinstance(fault, Mapping):
        return str(fault.get("message", "fault"))
    stat = payload.get("stat")
    return str(stat) if stat else "error"


def _code(payload: Mapping[str, Any]) -> int | None:
    raw: Any = payload.get("stCode")
    if raw is None and isinstance(payload.get("fault"), Mapping):
        raw = payload["fault"].get("code")
    if raw is None and isinstance(payload.get("error"), list) and payload["error"]:
        first = payload["error"][0]
        raw = first.get("code") if isinstance(first, Mapping) else None
    try:
        return int(raw) if raw is not None else None
    except (TypeError, ValueError):
        return None


def error_for(payload: Mapping[str, Any], http_status: int = 200) -> BrokerError | None:
    """The error a reply carries, or None when it is a success. Pure: the adapter raises it."""
    if http_status == 403:  # docs: "Invalid session, please re-login to continue"
        return AuthExpired(_message(payload) or "invalid session", code="403", broker=BROKER)
    code = _code(payload)
    if http_status < 400 and (_is_ok(payload) or (code == 200 and "error" not in payload)):
        return None
    message = _message(payload)
    code_s = str(code) if code is not None else str(http_status)
    if code in SESSION_CODES:
        return AuthExpired(message, code=code_s, broker=BROKER)
    if code == CODE_NOT_FOUND:
        return NotFound(message, code=code_s, broker=BROKER)
    if code == CODE_ALREADY_COMPLETE:
        return NotModifiable(message, code=code_s, broker=BROKER)
    if code == CODE_IP_NOT_WHITELISTED:
        return Rejected(f"static IP not whitelisted: {message}", code=code_s, broker=BROKER)
    return Rejected(message, code=code_s, broker=BROKER)


# --- requests (jData bodies) -----------------------------------------------------------------------


def segment_for(row: MasterRow) -> str:
    """Kotak `es` for a master row: an explicit ``exchange_segment`` column wins."""
    explicit = row.extra.get("exchange_segment") or row.extra.get("pExchSeg")
    if explicit:
        return explicit.lower()
    exch = row.instrument.exchange.upper()
    if exch.lower() in EXCHANGE_OF_SEGMENT:
        return exch.lower()
    try:
        return SEGMENT_OF_EXCHANGE[exch]
    except KeyError:
        raise Rejected(f"exchange {exch!r} has no Kotak segment", broker=BROKER) from None


def trading_symbol_for(row: MasterRow) -> str:
    return row.trading_symbol or row.instrument.symbol


def place_jdata(request: OrderRequest, row: MasterRow, *, amo: bool = False) -> dict[str, str]:
    """jData for POST /quick/order/rule/ms/place, field for field as services/order.py sends it.
    ``ig`` carries our client order id; Kotak echoes it as ``GuiOrdId`` in the order book."""
    priced = request.order_type in (OrderType.LIMIT, OrderType.SL)
    stop = request.order_type in (OrderType.SL, OrderType.SL_M)
    return {
        "am": "YES" if amo else "NO",
        "dq": str(request.disclosed_quantity),
        "es": segment_for(row),
        "mp": "0",
        "pc": request.product.value,
        "pr": plain(request.price) if priced and request.price is not None else "0",
        "pt": ORDER_TYPE_CODE[request.order_type],
        "qt": str(request.quantity),
        "rt": request.validity.value,
        "tp": plain(request.trigger_price) if stop and request.trigger_price is not None else "0",
        "ts": trading_symbol_for(row),
        "tt": "B" if request.side is Side.BUY else "S",
        "ig": request.client_order_id,
        "os": ORDER_SOURCE,
    }


def modify_jdata(order: Order, change: Modification, *, amo: bool = False) -> dict[str, str]:
    """jData for POST /quick/order/vr/modify (services/modify_order.py). Validity is ``vd`` here, not
    ``rt`` as on place. Every field is mandatory, so unchanged values come from ``order``; ``qt`` is
    the new total quantity of the order."""
    if order.broker_order_id is None:
        raise NotFound("order has no broker order number", broker=BROKER)
    order_type = change.order_type or order.order_type
    price = change.price if change.price is not None else order.price
    trigger = change.trigger_price if change.trigger_price is not None else order.trigger_price
    priced = order_type in (OrderType.LIMIT, OrderType.SL)
    stop = order_type in (OrderType.SL, OrderType.SL_M)
    if priced and price is None:
        raise ValueError(f"{order_type.value} modify needs a price")
    if stop and trigger is None:
        raise ValueError(f"{order_type.value} modify needs a trigger_price")
    return {
        "mp": "0",
        "dq": "0",
        "vd": order.validity.value,
        "pr": plain(price) if priced and price is not None else "0",
        "pt": ORDER_TYPE_CODE[order_type],
        "am": "YES" if amo else "NO",
        "tp": plain(trigger) if stop and trigger is not None else "0",
        "qt": str(change.quantity if change.quantity is not None else order.quantity),
        "no": order.broker_order_id,
        "os": ORDER_SOURCE,
    }


def cancel_jdata(
    broker_order_id: str, *, amo: bool = False, trading_symbol: str | None = None
) -> dict[str, str]:
    """jData for cancel and BO/CO exit. ``ts`` is mandatory for AMO cancels (seed 001)."""
    body = {"on": broker_order_id, "am": "YES" if amo else "NO"}
    if amo:
        if not trading_symbol:
            raise ValueError("an AMO cancel needs the trading symbol")
        body["ts"] = trading_symbol
    return body


def cancel_path(wire_product: str | None) -> str:
    """Bracket and cover orders are exited on their own endpoints (seed 001)."""
    prod = (wire_product or "").upper()
    if prod in ("BO", "BRACKET ORDER"):
        return PATH_BO_EXIT
    if prod in ("CO", "COVER ORDER"):
        return PATH_CO_EXIT
    return PATH_CANCEL


# --- responses -------------------------------------------------------------------------------------
IST = ZoneInfo("Asia/Kolkata")


def _timestamp(row: Mapping[str, Any]) -> dt.datetime | None:
    ns = row.get("updRecvTm")
    if isinstance(ns, int) and ns > 0:
        seconds, nanos = divmod(ns, 1_000_000_000)
        return dt.datetime.fromtimestamp(seconds, tz=dt.UTC) + dt.timedelta(microseconds=nanos // 1000)
    for key, fmt in (("hsUpTm", "%Y/%m/%d %H:%M:%S"), ("ordDtTm", "%d-%b-%Y %H:%M:%S")):
        text = row.get(key)
        if isinstance(text, str):
            try:
                return dt.datetime.strptime(text, fmt).replace(tzinfo=IST).astimezone(dt.UTC)
            except ValueError:
                continue
    return None


def _text(row: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = row.get(key)
        if value not in (None, "", "--", "NA"):
            return str(value)
    return None


InstrumentLookup = Callable[[str, str | None, str | None], Instrument]


def default_lookup(segment: str, token: str | None, trading_symbol: str | None) -> Instrument:
    exchange = EXCHANGE_OF_SEGMENT.get(segment.lower(), segment.upper())
    return Instrument(exchange=exchange, symbol=(trading_symbol or token or "?").upper())


def parse_order(
    row: Mapping[str, Any], lookup: InstrumentLookup = default_lookup, *, policy: str = "open"
) -> Order:
    """One order-book or order-history row -> Order. History rows spell some fields differently
    (``ordDur``/``vldt``, ``exchOrdId``/``exOrdId``); both are accepted."""
    # Both are in every order-book and history row (docs order_report / order_history samples, fldQty
    # 0 included): a missing one is Malformed, never "0 filled".
    quantity = _int(row.get("qty"), "qty")
    filled = _int(row.get("fldQty"), "fldQty")
    raw = _text(row, "ordSt", "stat") or ""
    status = map_status(raw, filled, quantity, policy=policy)
    type_code = str(row.get("prcTp", "")).upper()
    # An unmapped type or side makes the row unreadable (BrokerError, not Rejected: nothing was refused);
    # the adapter decides whether that row may be skipped (see KotakNeo._readable).
    order_type = ORDER_TYPE_OF_CODE.get(type_code)
    if order_type is None:
        raise BrokerError(f"unknown order type {type_code!r} in order book", broker=BROKER)
    prod = str(row.get("prod", "")).upper()
    product = PRODUCT_OF_CODE.get(prod, Product.MIS)
    side = SIDE_OF_CODE.get(str(row.get("trnsTp", "")).upper())
    if side is None:
        raise BrokerError(f"unknown transaction type {row.get('trnsTp')!r}", broker=BROKER)
    validity_text = (_text(row, "vldt", "ordDur") or "DAY").upper()
    validity = Validity.IOC if validity_text == "IOC" else Validity.DAY
    avg = to_decimal(row.get("avgPrc"))
    price = to_decimal(row.get("prc"))
    trigger = to_decimal(row.get("trgPrc"))
    reject = _text(row, "rejRsn") if status is OrderStatus.REJECTED else None
    return Order(
        client_order_id=str(row.get("GuiOrdId") or ""),
        broker_order_id=_text(row, "nOrdNo"),
        instrument=lookup(str(row.get("exSeg", "")), _text(row, "tok"), _text(row, "trdSym")),
        side=side,
        quantity=quantity,
        order_type=order_type,
        product=product,
        status=status,
        filled_quantity=filled,
        average_price=avg if filled and avg else None,
        price=price if order_type in (OrderType.LIMIT, OrderType.SL) else None,
        trigger_price=trigger if order_type in (OrderType.SL, OrderType.SL_M) else None,
        validity=validity,
        tag=_text(row, "GuiOrdId"),
        reject_reason=reject,
        updated_at=_timestamp(row),
        raw_status=raw,
    )


def latest_row(rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """Order history lists one row per state, newest first (docs/functions/orders/order_history.md).
    The rows' ``updRecvTm`` is stamped when the reply is built (it *decreases* down the list in that
    sample), so it cannot order states; the list order is the only signal."""
    return rows[0]


def _scale(row: Mapping[str, Any]) -> Decimal:
    """NF = multiplier x genNum/genDen x prcNum/prcDen (docs/functions/portfolio/positions.md §4)."""
    nf = Decimal(1)
    for num, den in (("multiplier", None), ("genNum", "genDen"), ("prcNum", "prcDen")):
        n = to_decimal(row.get(num)) or Decimal(1)
        d = (to_decimal(row.get(den)) or Decimal(1)) if den else Decimal(1)
        nf *= n / d if d else n
    return nf


def _amount(row: Mapping[str, Any], key: str) -> Decimal:
    return to_decimal(row.get(key)) or Decimal(0)


def parse_position(row: Mapping[str, Any], lookup: InstrumentLookup = default_lookup) -> Position:
    """Net = (cfBuyQty + flBuyQty) - (cfSellQty + flSellQty). Average price is the buy side for a long,
    the sell side for a short (docs §7); carry-forward amounts (cfBuyAmt/cfSellAmt, previous close) are
    the only cost basis the API itself gives for the carried leg."""
    # All four are in every position row (docs positions sample, "0" included): none is assumed 0.
    cf_buy, cf_sell = _int(row.get("cfBuyQty"), "cfBuyQty"), _int(row.get("cfSellQty"), "cfSellQty")
    fl_buy, fl_sell = _int(row.get("flBuyQty"), "flBuyQty"), _int(row.get("flSellQty"), "flSellQty")
    buy_qty, sell_qty = cf_buy + fl_buy, cf_sell + fl_sell
    buy_amt = _amount(row, "buyAmt") + _amount(row, "cfBuyAmt")
    sell_amt = _amount(row, "sellAmt") + _amount(row, "cfSellAmt")
    nf = _scale(row)
    net = buy_qty - sell_qty
    buy_avg = buy_amt / (buy_qty * nf) if buy_qty else Decimal(0)
    sell_avg = sell_amt / (sell_qty * nf) if sell_qty else Decimal(0)
    closed = min(buy_qty, sell_qty)
    precision = _int(row.get("precision"), "precision", default=2) or 2  # price decimals; absent: paise
    quantum = Decimal(1).scaleb(-precision)
    avg = buy_avg if net > 0 else sell_avg if net < 0 else Decimal(0)
    realized = (sell_avg - buy_avg) * closed * nf if closed else Decimal(0)
    return Position(
        instrument=lookup(str(row.get("exSeg", "")), _text(row, "tok"), _text(row, "trdSym")),
        product=PRODUCT_OF_CODE.get(str(row.get("prod", "")).upper(), Product.MIS),
        quantity=net,
        average_price=avg.quantize(quantum),
        realized_pnl=realized.quantize(quantum),
        day_buy_quantity=fl_buy,
        day_sell_quantity=fl_sell,
    )


def parse_fill(row: Mapping[str, Any], lookup: InstrumentLookup = default_lookup) -> Fill:
    """One trade-book row (docs/functions/orders/trade_report.md)."""
    side = SIDE_OF_CODE.get(str(row.get("trnsTp", "")).upper(), Side.BUY)
    at: dt.datetime | None = None
    day, time_ = row.get("flDt"), row.get("flTm")
    if isinstance(day, str) and isinstance(time_, str):
        try:
            at = dt.datetime.strptime(f"{day} {time_}", "%d-%b-%Y %H:%M:%S").replace(tzinfo=IST)
        except ValueError:
            at = None
    return Fill(
        client_order_id=str(row.get("GuiOrdId") or ""),
        broker_order_id=_text(row, "nOrdNo"),
        instrument=lookup(str(row.get("exSeg", "")), _text(row, "tok"), _text(row, "trdSym")),
        side=side,
        quantity=_int(row.get("fldQty"), "fldQty"),
        price=to_decimal(row.get("avgPrc")) or Decimal(0),
        at=(at or _timestamp(row) or dt.datetime.now(dt.UTC)).astimezone(dt.UTC),
        trade_id=_text(row, "flId"),
    )


def rows_of(payload: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """``data`` list of a report. Order history arrives wrapped once more by some gateways
    (``{"data": {"stat":..., "data": [...]}}`` in the SDK docs), so unwrap nested ``data``."""
    data: Any = payload.get("data")
    while isinstance(data, Mapping):
        data = data.get("data")
    if data is None:
        return []
    if not isinstance(data, list):
        raise Rejected("malformed report: data is not a list", broker=BROKER)
    return [r for r in data if isinstance(r, Mapping)]


@dataclass(frozen=True, slots=True)
class LoginStep:
    token: str
    sid: str
    base_url: str | None
    kind: str | None  # kType: "View" after step 1, "Trade" after step 2


def parse_login(payload: Mapping[str, Any], http_status: int) -> LoginStep:
    data = payload.get("data")
    if 200 <= http_status < 300 and isinstance(data, Mapping) and data.get("token") and data.get("sid"):
        return LoginStep(str(data["token"]), str(data["sid"]), data.get("baseUrl"), data.get("kType"))
    # Login errors come as {"error":[{"code":"400","message":...}]} and must not be retried blindly.
    code = str(_code(payload) or http_status)
    raise Rejected(f"login failed: {_message(payload)}", code=code, broker=BROKER)


# --- the adapter -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Session:
    token: str
    sid: str
    base_url: str
    at: dt.datetime


@dataclass(slots=True)
class _Wire:
    """What cancel/modify need that the canonical Order does not carry."""

    prod: str
    ts: str
    amo: bool


class KotakNeo:
    name = BROKER
    capabilities = frozenset({Capability.MODIFY, Capability.MARKET_ORDERS, Capability.STOP_ORDERS,
                              Capability.BRACKET_COVER})

    def __init__(
        self,
        account: Account,
        *,
        master: InstrumentMaster | None = None,
        clock: Clock | None = None,
        limiter: RateLimiter | None = None,
        transport: str | None = None,
    ) -> None:
        self.account = account
        self.clock: Clock = clock or SystemClock()
        if master is None:
            if not account.instruments:
                raise ValueError(f"account {account.name!r}: kotak_neo needs an instruments master file")
            master = InstrumentMaster.load(account.instruments, broker=BROKER)
        self.master = master
        self._by_token: dict[tuple[str, str], Instrument] = {}
        self._by_symbol: dict[tuple[str, str], Instrument] = {}
        for row in master:
            try:
                seg = segment_for(row)
            except Rejected:
                continue
            if row.token:
                self._by_token[(seg, row.token)] = row.instrument
            self._by_symbol[(seg, trading_symbol_for(row).upper())] = row.instrument
        rl = account.rate_limit
        self.limiter = limiter or RateLimiter(rl.orders_per_second, rl.burst)
        self._transport = transport or account.options.get("http_transport")
        self._login_url = account.endpoints.get("login", LOGIN_HOST)
        self._trade_override = account.endpoints.get("trade")  # else the session's baseUrl
        self._positions_path = account.endpoints.get("positions_path", PATH_POSITIONS)
        self._amo = bool(account.options.get("amo", False))
        self._status_policy = str(account.options.get("unknown_status", "open"))
        self._verify_place = bool(account.options.get("verify_place", True))
        self._session: _Session | None = None
        self._client: httpx.AsyncClient | None = None
        self._login_lock = asyncio.Lock()
        self._wire: dict[str, _Wire] = {}
        # Client ids this process sent: acknowledged (-> order number), in flight, outcome unknown.
        self._placed: dict[str, str] = {}
        self._in_flight: set[str] = set()
        self._unresolved: set[str] = set()
        self._requests: dict[str, OrderRequest] = {}  # what this process sent, by client id
        self.logins = 0  # observable for tests and the bench

    # -- auth -------------------------------------------------------------------------------------
    def _credential(self, *keys: str) -> str:
        for key in keys:
            if key in self.account.credentials:
                return self.account.secret(key).reveal()
        for key in keys:  # identifiers (ucc, mobile) are not secret and may sit in options
            if key in self.account.options:
                return str(self.account.options[key])
        raise LookupError(f"account {self.account.name!r} has no credential {keys[0]!r}")

    def _current_totp(self) -> str:
        if "totp_secret" in self.account.credentials:
            return totp(self.account.secret("totp_secret").reveal(), self.clock.now())
        return self._credential("totp")  # a code provided from outside (one use only)

    async def connect(self) -> None:
        if self._session is None or self._stale():
            await self._login(None)

    async def relogin(self) -> None:
        await self._login(self._session)  # `failed` = the current session: log in even if it looks valid

    def _stale(self) -> bool:
        """Sessions are logged out daily: log in again once past `relogin_at` local time."""
        if self._session is None:
            return True
        if not self.account.relogin_at:
            return False
        zone = ZoneInfo(self.account.timezone)
        now = self.clock.now().astimezone(zone)
        hh, mm = (int(p) for p in self.account.relogin_at.split(":"))
        cutoff = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
        if now < cutoff:
            cutoff -= dt.timedelta(days=1)
        return self._session.at.astimezone(zone) < cutoff

    async def _login(self, failed: _Session | None) -> _Session:
        async with self._login_lock:
            if self._session is not None and self._session is not failed and not self._stale():
                return self._session  # someone else logged in while we waited
            access = self._credential("access_token", "consumer_key")
            base = {"Authorization": access, "neo-fin-key": NEO_FIN_KEY}
            async with make_client(self._login_url, timeout=self.account.timeout_seconds,
                                   transport=self._transport, headers=ACCEPT_JSON) as login:
                r1 = await send(login, "POST", PATH_TOTP_LOGIN, broker=BROKER, mutating=False,
                                headers={**base, "Content-Type": "application/json"},
                                content=json.dumps({"mobileNumber": self._credential("mobile_number"),
                                                    "ucc": self._credential("ucc"),
                                                    "totp": self._current_totp()}))
                view = parse_login(_json(r1), r1.status_code)
                r2 = await send(login, "POST", PATH_TOTP_VALIDATE, broker=BROKER, mutating=False,
                                # session values are scrubbed from every log line and journal row
                                headers={**base, "sid": secret(view.sid), "Auth": secret(view.token),
                                         "Content-Type": "application/json"},
                                content=json.dumps({"mpin": self._credential("mpin")}))
                trade = parse_login(_json(r2), r2.status_code)
            base_url = self._trade_override or trade.base_url
            if not base_url:
                raise Rejected("login reply has no baseUrl", broker=BROKER)
            if self._client is None or str(self._client.base_url).rstrip("/") != base_url.rstrip("/"):
                if self._client is not None:
                    await self._client.aclose()
                self._client = make_client(base_url, timeout=self.account.timeout_seconds,
                                           transport=self._transport, headers=ACCEPT_JSON)
            self._session = _Session(secret(trade.token), secret(trade.sid), base_url, self.clock.now())
            self.logins += 1
            return self._session

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        self._session = None

    # -- transport --------------------------------------------------------------------------------
    def _headers(self, session: _Session, *, form: bool, mutating: bool) -> dict[str, str]:
        # SDK: Sid + Auth everywhere, plus Authorization (the access token) on place/modify/cancel;
        # the seed adds neo-fin-key. We send the union.
        headers = {"Sid": session.sid, "Auth": session.token, "neo-fin-key": NEO_FIN_KEY}
        if mutating:
            headers["Authorization"] = self._credential("access_token", "consumer_key")
        if form:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        return headers

    async def _request(self, method: str, path: str, *, mutating: bool,
                       jdata: Mapping[str, str] | None = None) -> dict[str, Any]:
        """One call. A read refused for an expired session is sent once more after one re-login; a write
        never is: the session is dropped and AuthExpired raised, so the engine's gateway logs in through
        connect() and retries it, journaled. Backoff on other errors is the gateway's too."""
        for attempt in (0, 1):
            if self._session is None or self._stale():
                await self._login(self._session)
            session = self._session
            assert session is not None and self._client is not None
            headers = self._headers(session, form=jdata is not None, mutating=mutating)
            kwargs: dict[str, Any] = {"headers": headers}
            if jdata is not None:
                kwargs["data"] = {"jData": json.dumps(jdata)}
            try:
                response = await send(self._client, method, path, broker=BROKER, mutating=mutating, **kwargs)
                payload = _json(response, mutating=mutating)
                error = error_for(payload, response.status_code)
                if error is not None:
                    raise error
                return payload
            except AuthExpired:
                if attempt or mutating:
                    if self._session is session:
                        self._session = None  # connect() logs in again
                    raise
                await self._login(session)
        raise AssertionError("unreachable")

    async def _read(self, method: str, path: str, jdata: Mapping[str, str] | None = None) -> dict[str, Any]:
        return await self._request(method, path, mutating=False, jdata=jdata)

    async def _write(self, path: str, jdata: Mapping[str, str], segment: str) -> dict[str, Any]:
        key = (self.account.name, segment_of(segment)) if self.account.rate_limit.per_segment else (
            self.account.name,)
        await self.limiter.acquire(key)
        try:
            return await self._request("POST", path, mutating=True, jdata=jdata)
        except RateLimited as exc:
            self.limiter.penalize(key, exc.retry_after or 1.0)
            raise

    # -- lookups ------------------------------------------------------------------------------------
    def _lookup(self, segment: str, token: str | None, trading_symbol: str | None) -> Instrument:
        seg = segment.lower()
        if token and (seg, token) in self._by_token:
            return self._by_token[(seg, token)]
        if trading_symbol and (seg, trading_symbol.upper()) in self._by_symbol:
            return self._by_symbol[(seg, trading_symbol.upper())]
        return default_lookup(segment, token, trading_symbol)

    def _remember(self, row: Mapping[str, Any]) -> None:
        no = _text(row, "nOrdNo")
        if no:
            raw = str(row.get("ordSt", "")).lower()
            known = self._wire.get(no)
            self._wire[no] = _Wire(str(row.get("prod", "")), str(row.get("trdSym", "")),
                                   raw == AMO_STATUS or (known.amo if known else False))

    def _order(self, row: Mapping[str, Any]) -> Order:
        self._remember(row)
        return parse_order(row, self._lookup, policy=self._status_policy)

    def _readable(self, row: Mapping[str, Any], *, ours: bool = False) -> Order | None:
        """A book row as an Order, or None for a foreign row that cannot be read (a manual order of a
        type this adapter does not map, placed from Kotak's own terminal): it is skipped, logged, so one
        such row cannot break every read on the account. Our own orders are never skipped: one this
        process sent comes back from its request with status UNKNOWN (resolved by a later read); one it
        cannot rebuild raises BrokerError."""
        try:
            return self._order(row)
        except (BrokerError, ValueError) as exc:
            why = exc.message if isinstance(exc, BrokerError) else str(exc)
            cid = str(row.get("GuiOrdId") or "")
            number = _text(row, "nOrdNo")
            request = self._requests.get(cid)
            if request is not None:
                log.error("kotak_neo: our order %s (%s) is unreadable: %s", number, cid, why)
                return Order.from_request(request, OrderStatus.UNKNOWN, broker_order_id=number,
                                          raw_status=_text(row, "ordSt", "stat"), updated_at=_timestamp(row))
            if ours or is_client_order_id(cid) or cid in self._placed or cid in self._unresolved:
                raise BrokerError(f"order {number} ({cid}) is unreadable: {why}",
                                  broker=BROKER) from exc
            log.warning("kotak_neo: skipping foreign order %s: %s", number, why)
            return None

    def _readable_rows(self, rows: Sequence[Mapping[str, Any]]) -> list[Order]:
        return [o for o in (self._readable(r) for r in rows) if o is not None]

    async def orders(self) -> Sequence[Order]:
        payload = await self._read("GET", PATH_ORDERS)
        return self._readable_rows(rows_of(payload))

    async def open_orders(self) -> Sequence[Order]:
        return [o for o in await self.orders() if not o.status.is_terminal]

    async def get_order(self, client_order_id: str) -> Order | None:
        """Kotak has no lookup by tag: scan the day's order book for GuiOrdId (our `ig`). Only the
        matching rows are read, so a foreign row elsewhere in the book does not matter."""
        rows = rows_of(await self._read("GET", PATH_ORDERS))
        matching = [r for r in rows if str(r.get("GuiOrdId") or "") == client_order_id]
        found = [self._readable(r, ours=True) for r in matching]
        mine = [o for o in found if o is not None]
        if not mine:
            return None
        if len(mine) > 1:
            log.error("kotak_neo: %d orders carry client id %s", len(mine), client_order_id)
        return max(mine, key=lambda o: o.updated_at or dt.datetime.min.replace(tzinfo=dt.UTC))

    async def get_order_by_broker_id(self, broker_order_id: str) -> Order:
        payload = await self._read("POST", PATH_HISTORY, {"nOrdNo": broker_order_id})
        rows = rows_of(payload)
        if not rows:
            raise NotFound(f"order {broker_order_id} not found", code=str(CODE_NOT_FOUND), broker=BROKER)
        order = self._readable(latest_row(rows), ours=True)
        assert order is not None  # ours=True: unreadable raises
        return order

    async def positions(self) -> Sequence[Position]:
        payload = await self._read("GET", self._positions_path)
        return read_positions(rows_of(payload), lambda r: parse_position(r, self._lookup),
                              lambda r: f"{r.get('exSeg', '')}:{r.get('trdSym', '')}")

    async def trades(self) -> Sequence[Fill]:
        payload = await self._read("GET", PATH_TRADES)
        return [parse_fill(r, self._lookup) for r in rows_of(payload)]

    # -- order entry --------------------------------------------------------------------------------
    async def _already_sent(self, cid: str) -> Order | None:
        """Kotak accepts a repeated ``ig`` as a new order, so this adapter never sends an id twice:
        acknowledged -> that order; in flight -> refused; outcome unknown -> looked up in the order book
        (found -> that order; absent -> None, and the caller may send it: the broker has none)."""
        number = self._placed.get(cid)
        if number is not None:
            return (await self.get_order_by_broker_id(number)).evolve(client_order_id=cid)
        if cid in self._in_flight:
            raise Rejected(f"client id {cid} is being sent already", code="duplicate", broker=BROKER)
        if cid in self._unresolved:
            found = await self.get_order(cid)
            if found is not None:
                self._unresolved.discard(cid)
                if found.broker_order_id:
                    self._placed[cid] = found.broker_order_id
                return found
            self._unresolved.discard(cid)
        return None

    async def place(self, request: OrderRequest) -> Order:
        row = self.master.resolve(request.instrument)  # InstrumentUnknown before anything is sent
        jdata = place_jdata(request, row, amo=self._amo)
        cid = request.client_order_id
        existing = await self._already_sent(cid)
        if existing is not None:
            return existing
        self._in_flight.add(cid)
        self._requests[cid] = request
        try:
            payload = await self._write(PATH_PLACE, jdata, jdata["es"])
            number = payload.get("nOrdNo")
            if not number:
                # "Ok" without an order number: the order may exist; resolve by lookup, never re-send.
                raise OutcomeUnknown("place acknowledged without nOrdNo", broker=BROKER)
        except OutcomeUnknown:
            self._unresolved.add(cid)
            raise
        finally:
            self._in_flight.discard(cid)
        # Other errors (refused, rate limited, not connected, session expired) mean no order exists.
        self._placed[cid] = str(number)
        self._wire[str(number)] = _Wire(jdata["pc"], jdata["ts"], self._amo)
        # An ack is not an open order, let alone a fill.
        ack = Order.from_request(request, OrderStatus.PENDING_NEW, broker_order_id=str(number),
                                 updated_at=self.clock.now()).evolve(instrument=row.instrument, tag=cid)
        if not self._verify_place:
            return ack
        # Kotak acks first and rejects asynchronously (RMS / exchange): one read tells the caller at once
        # when the order was refused. If the read fails the ack stands; the engine reads back anyway.
        try:
            current = await self.get_order_by_broker_id(str(number))
        except BrokerError:
            return ack
        if current.status is OrderStatus.REJECTED:
            raise Rejected(current.reject_reason or "order rejected", code="rejected", broker=BROKER)
        return current

    async def _wire_of(self, order: Order) -> _Wire:
        assert order.broker_order_id is not None
        wire = self._wire.get(order.broker_order_id)
        if wire is None:
            await self.get_order_by_broker_id(order.broker_order_id)  # fills the cache
            wire = self._wire[order.broker_order_id]
        return wire

    def _segment(self, order: Order) -> str:
        try:
            return segment_for(self.master.resolve(order.instrument))
        except BrokerError:
            return SEGMENT_OF_EXCHANGE.get(order.instrument.exchange.upper(), order.instrument.exchange)

    async def modify(self, order: Order, change: Modification) -> Order:
        if order.broker_order_id is None:
            raise NotFound("order has no broker order number", broker=BROKER)
        wire = await self._wire_of(order)
        jdata = modify_jdata(order, change, amo=wire.amo or order.raw_status == AMO_STATUS)
        await self._write(PATH_MODIFY, jdata, self._segment(order))
        order_type = change.order_type or order.order_type
        return order.evolve(
            quantity=int(jdata["qt"]),
            order_type=order_type,
            price=change.price if change.price is not None else order.price,
            trigger_price=change.trigger_price if change.trigger_price is not None else order.trigger_price,
            updated_at=self.clock.now(),
        )

    async def cancel(self, order: Order) -> Order:
        """Regular cancel, or BO/CO exit by product. 1006 says "already cancelled or not found": read
        back to tell NotModifiable (it exists, in a final state) from NotFound."""
        if order.broker_order_id is None:
            raise NotFound("order has no broker order number", broker=BROKER)
        wire = await self._wire_of(order)
        amo = wire.amo or order.raw_status == AMO_STATUS
        jdata = cancel_jdata(order.broker_order_id, amo=amo, trading_symbol=wire.ts or None)
        try:
            await self._write(cancel_path(wire.prod), jdata, self._segment(order))
        except NotFound:
            current = await self.get_order_by_broker_id(order.broker_order_id)  # NotFound if truly absent
            raise NotModifiable(f"order {order.broker_order_id} is {current.raw_status}",
                                code=str(CODE_NOT_FOUND), broker=BROKER) from None
        if order.status.is_terminal:
            return order
        return order.evolve(status=OrderStatus.PENDING_CANCEL, updated_at=self.clock.now())


def _json(response: httpx.Response, *, mutating: bool = False) -> dict[str, Any]:
    try:
        payload = loads(response.content)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        message = f"HTTP {response.status_code}: reply is not a JSON object"
        if response.status_code == 403:
            raise AuthExpired("invalid session (HTTP 403)", code="403", broker=BROKER)
        if mutating:
            raise OutcomeUnknown(message, broker=BROKER)
        raise Unavailable(message, broker=BROKER)
    return payload


def create(account: Account, **context: Any) -> KotakNeo:
    return KotakNeo(
        account,
        master=context.get("master"),
        clock=context.get("clock"),
        limiter=context.get("limiter"),
        transport=context.get("transport"),
    )
