"""Kotak Neo Trade API wire format: pure translation, no I/O.

Wire format from the official SDK, PyPI ``kotakneoapi`` 3.0.9 = GitHub Kotak-Neo/kotak-neo-python
(``neo_api_client/settings.py``, ``services/{totp,order,modify_order,order_report,order_history,
positions}.py``, ``rest.py``, ``docs/functions/**``), seed 001 (cancel / BO-CO exit / AMO) and
shared/brokers/kotak_neo.md. Where they differ the SDK wins for what we *send*; for what we *read*
both spellings are accepted (noted where it happens).

Canonical model <-> jData / order-book rows, status and error tables, TOTP, in plain functions;
:class:`runner.brokers.kotak_neo.client.KotakNeo` does the I/O.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import hmac
import logging
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from runner.brokers.instruments import MasterRow
from runner.errors import (
    AuthExpired,
    BrokerError,
    NotFound,
    NotModifiable,
    OutcomeUnknown,
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
        return SessionExpired(_message(payload) or "invalid session", code="403", broker=BROKER)
    code = _code(payload)
    if http_status < 400 and (_is_ok(payload) or (code == 200 and "error" not in payload)):
        return None
    message = _message(payload)
    code_s = str(code) if code is not None else str(http_status)
    if code in SESSION_CODES:
        return SessionExpired(message, code=code_s, broker=BROKER)
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


def terminal_row(row: Mapping[str, Any]) -> bool:
    """Whether a book row's own status is final (complete, cancelled, rejected...): a reader that wants
    only working orders need not parse it. An unknown status is not final (it is parsed, and logged)."""
    status = STATUS_OF_ORDST.get((_text(row, "ordSt", "stat") or "").strip().lower())
    return status is not None and status.is_terminal


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
    instrument = lookup(str(row.get("exSeg", "")), _text(row, "tok"), _text(row, "trdSym"))
    if nf != 1 and instrument.price_multiplier is None:  # the row knows what the master did not say
        instrument = replace(instrument, price_multiplier=nf)
    return Position(
        instrument=instrument,
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
