"""ODIN Cloud REST Pro API (63 moons / Synapsewave) adapter.

Sources, in order of authority: the Cloud REST Pro API docs at developer.synapsewave.com
(``/docs/CloudRestProAPI/...``: envelope, place/modify/cancel multileg), the ``nebsl-b2c-api`` SDK on PyPI
(GitHub giridhargk/nebslB2C: ``pycloudrestapi/connect.py`` routes and login body, README bodies, its
``logs/`` with real gateway replies), then seed 004 and our broker note. Where they disagree we send what the
SDK/docs send and accept every spelling seen (comments say which).

Wire facts used here:
* headers ``x-api-key`` always, ``Authorization: Bearer <access_token>`` after login; JSON bodies;
* envelope ``{status: success, code: "s-101", message, data}`` / ``{status: error, code, message, errors}``
  where ``errors`` is a list in the docs and a sub-code string (``"e-17"``) in real replies;
* order ids such as ``NXHCO000012<`` must be URI-encoded in paths;
* a regular modify carries every field, including ``traded_quantity`` fresh from the order book;
* multileg modify/cancel is ``PUT /transactional/v1/orders/multileg/{order_flag}/{gateway_order_no}``
  with all legs in the body.

Pure translation (model <-> wire dicts) is in plain functions at the top; :class:`OdinBroker` does I/O.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import functools
import hashlib
import hmac
import logging
import re
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from runner.brokers.base import Capability, read_positions
from runner.clock import Clock, SystemClock
from runner.errors import (
    AuthExpired,
    BrokerError,
    InstrumentUnknown,
    NotFound,
    NotModifiable,
    OutcomeUnknown,
    RateLimited,
    Rejected,
    Retryable,
)
from runner.ids import split_leg_client_id
from runner.model import (
    Instrument,
    Modification,
    MultilegRequest,
    OptionType,
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
from runner.wirejson import dumps, loads, to_decimal, to_int

if TYPE_CHECKING:
    import httpx

    from runner.accounts import Account
    from runner.brokers.instruments import InstrumentMaster, MasterRow

log = logging.getLogger("runner.brokers.odin")  # stable name, not __name__: people filter on it

BROKER = "odin"
_int = functools.partial(to_int, broker=BROKER)  # whole numbers exactly, or Malformed naming the field
SUCCESS_CODE = "s-101"

# Routes exactly as pycloudrestapi/connect.py spells them.
SESSION_PATH = "/authentication/v1/user/session"
REGULAR_PATH = "/transactional/v1/orders/regular"
MULTILEG_PATH = "/transactional/v1/orders/multileg"
ORDERS_PATH = "/transactional/v1/orders"
TRADES_PATH = "/transactional/v1/trades"
POSITIONS_PATH = "/transactional/v1/portfolio/positions"

# ---------------------------------------------------------------------------------------------------------
# Enumerations on the wire
# ---------------------------------------------------------------------------------------------------------

# Canonical exchange (as playbooks write it) -> ODIN exchange segment. ODIN spellings pass through unchanged.
EXCHANGE_TO_ODIN: dict[str, str] = {
    "NSE": "NSE_EQ",
    "NFO": "NSE_FO",
    "BSE": "BSE_EQ",
    "BFO": "BSE_FO",
    "MCX": "MCX_FO",
    "NCDEX": "NCDEX_FO",
    "CDS": "NSE_CUR",
    "BCD": "BSE_CUR",
}
ODIN_TO_EXCHANGE = {v: k for k, v in EXCHANGE_TO_ODIN.items()}
ODIN_EXCHANGES = frozenset(EXCHANGE_TO_ODIN.values()) | {"NSE_COMM", "BSE_COMM"}

ORDER_TYPE_TO_ODIN = {
    OrderType.LIMIT: "RL",
    OrderType.MARKET: "RL-MKT",
    OrderType.SL: "SL",
    OrderType.SL_M: "SL-MKT",
}
ODIN_TO_ORDER_TYPE = {v: k for k, v in ORDER_TYPE_TO_ODIN.items()}

# ODIN has INTRADAY/DELIVERY/MTF/BTST; DELIVERY is carry-forward for derivatives (NRML) and CNC for cash.
PRODUCT_TO_ODIN = {Product.MIS: "INTRADAY", Product.NRML: "DELIVERY", Product.CNC: "DELIVERY"}

_S = OrderStatus
# Explicit status table. Underscore-less spellings are what real gateways send (``ADMINREJECT`` in the SDK's
# logged order book; ``OMSXMITTED``/``EXXMITTED``/``AMOACCEPTED`` in newer docs), so both are accepted.
# PENDING with a traded quantity is refined to PARTIALLY_FILLED in :func:`map_status`.
STATUS_TABLE: dict[str, OrderStatus] = {
    "NOT_INITIATED": _S.PENDING_NEW,
    "CLIENT_XMITTED": _S.PENDING_NEW,
    "GATEWAY_XMITTED": _S.PENDING_NEW,
    "OMS_XMITTED": _S.PENDING_NEW,
    "EXCHANGE_XMITTED": _S.PENDING_NEW,
    "EX_XMITTED": _S.PENDING_NEW,
    "PENDING": _S.OPEN,
    "M.PENDING": _S.OPEN,  # a modification in flight: still working
    "ADMIN_PENDING": _S.OPEN,
    "ADMIN_ACCEPT": _S.OPEN,
    "ADMIN_MODIFY": _S.OPEN,
    "FROZEN": _S.OPEN,  # held by the broker's RMS, still cancellable
    "STOPPED": _S.OPEN,  # stop order waiting for its trigger
    "AMO_SUBMITTED": _S.OPEN,
    "AMO_ACCEPTED": _S.OPEN,
    "EXECUTED": _S.FILLED,
    "COMPLETED": _S.FILLED,
    "CANCELLED": _S.CANCELLED,
    "ADMIN_CANCEL": _S.CANCELLED,
    "AMO_CANCELLED": _S.CANCELLED,
    "OMS_REJECT": _S.REJECTED,
    "GATEWAY_REJECT": _S.REJECTED,
    "ORDER_ERROR": _S.REJECTED,
    "ADMIN_REJECT": _S.REJECTED,
    "EXPIRED": _S.EXPIRED,
}
for _name, _status in list(STATUS_TABLE.items()):
    STATUS_TABLE.setdefault(_name.replace("_", ""), _status)
STATUS_TABLE["EXXMITTED"] = _S.PENDING_NEW
# Statuses in which the docs allow modify/cancel (README: "only PENDING or OMS_XMITTED").
MODIFIABLE = frozenset({"PENDING", "OMS_XMITTED", "OMSXMITTED", "M.PENDING", "AMO_SUBMITTED", "AMOACCEPTED"})


def normalize_status(raw: str | None) -> str:
    return (raw or "").strip().upper().replace(" ", "_")


def map_status(raw: str | None, traded: int = 0, total: int = 0) -> OrderStatus:
    """Broker status string -> OrderStatus; unknown strings become UNKNOWN (and are logged), never guessed."""
    key = normalize_status(raw)
    status = STATUS_TABLE.get(key)
    if status is None:
        log.warning("odin: unknown order status %r mapped to UNKNOWN", raw)
        return OrderStatus.UNKNOWN
    if status is OrderStatus.OPEN and 0 < traded < (total or traded + 1):
        return OrderStatus.PARTIALLY_FILLED
    return status


# ---------------------------------------------------------------------------------------------------------
# Small value helpers
# ---------------------------------------------------------------------------------------------------------


def first(row: Mapping[str, Any], *names: str) -> Any:
    """The first present, non-empty field among ``names`` (doc families spell fields differently)."""
    for name in names:
        value = row.get(name)
        if value not in (None, ""):
            return value
    return None


def order_identifier(client_order_id: str) -> str:
    """Our id in ODIN's ``order_identifier`` (<= 10 chars): deterministic, so a lookup can find it again."""
    if len(client_order_id) <= 10:
        return client_order_id
    digest = hashlib.blake2b(client_order_id.encode(), digest_size=8).digest()
    return "r" + base64.b32encode(digest).decode().lower()[:9]


def odin_exchange(instrument: Instrument, row: MasterRow | None = None) -> str:
    if row is not None and row.extra.get("odin_exchange"):
        return row.extra["odin_exchange"].upper()
    ex = instrument.exchange.upper()
    if ex in ODIN_EXCHANGES:
        return ex
    try:
        return EXCHANGE_TO_ODIN[ex]
    except KeyError:
        raise InstrumentUnknown(f"exchange {ex!r} has no ODIN segment", broker=BROKER) from None


def canonical_exchange(odin: str) -> str:
    return ODIN_TO_EXCHANGE.get(odin.upper(), odin.upper())


def is_derivative_segment(exchange: str) -> bool:
    return not exchange.upper().endswith("_EQ")


def scrip_token(row: MasterRow) -> int:
    raw = row.extra.get("scrip_token") or row.token
    if raw is None:
        raise InstrumentUnknown(f"instrument {row.instrument.key!r} has no ODIN scrip_token", broker=BROKER)
    return int(raw)


def totp(secret_b32: str, at: dt.datetime, *, step: int = 30, digits: int = 6) -> str:
    """RFC 6238 TOTP (SHA-1), for ``second_auth_type: TOTP`` logins."""
    key = base64.b32decode(secret_b32.replace(" ", "").upper() + "=" * (-len(secret_b32) % 8))
    counter = int(at.timestamp()) // step
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    code = (struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF) % 10**digits
    return str(code).zfill(digits)


# ---------------------------------------------------------------------------------------------------------
# Requests: canonical model -> wire bodies
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WireOptions:
    # The SDK README and the MyCloudRest docs give option strikes in paise; CloudRestPro examples look like
    # rupees. Paise by default, configurable per account (``options.strike_in_paise``).
    strike_in_paise: bool = True
    client_id: str | None = None  # optional ``client_id`` in multileg bodies (dealer accounts)
    decimal_loc: int = 2


def scrip_info(row: MasterRow, opts: WireOptions) -> dict[str, Any]:
    inst = row.instrument
    info: dict[str, Any] = {
        "exchange": odin_exchange(inst, row),
        "scrip_token": scrip_token(row),
        "symbol": row.trading_symbol or inst.symbol,
    }
    if inst.is_derivative:
        strike = inst.strike if inst.strike is not None else Decimal(0)
        info["expiry_date"] = inst.expiry.isoformat() if inst.expiry else ""
        info["strike_price"] = int(strike * 100) if opts.strike_in_paise else strike
        info["option_type"] = inst.option_type.value if inst.option_type else ""
    else:
        info["series"] = row.extra.get("series", "EQ")
    return info


def _price(request: OrderRequest | Modification, order_type: OrderType) -> Decimal:
    if order_type in (OrderType.MARKET, OrderType.SL_M):
        return Decimal(0)
    return request.price if request.price is not None else Decimal(0)


def place_body(request: OrderRequest, row: MasterRow, opts: WireOptions = WireOptions()) -> dict[str, Any]:
    """POST /transactional/v1/orders/regular body, field set and order as in the SDK README / its logs."""
    return {
        "scrip_info": scrip_info(row, opts),
        "transaction_type": request.side.value,
        "product_type": PRODUCT_TO_ODIN[request.product],
        "order_type": ORDER_TYPE_TO_ODIN[request.order_type],
        "quantity": request.quantity,
        "price": _price(request, request.order_type),
        "trigger_price": request.trigger_price if request.trigger_price is not None else Decimal(0),
        "disclosed_quantity": request.disclosed_quantity,
        "validity": request.validity.value,
        "validity_days": 0,
        "is_amo": False,
        "order_identifier": order_identifier(request.client_order_id),
        "part_code": "",
        "algo_id": "",
        "strategy_id": "",
        "vender_code": "",  # sic: the SDK's spelling
    }


def modify_body(order: Order, change: Modification, *, exchange: str, traded_quantity: int) -> dict[str, Any]:
    """PUT /transactional/v1/orders/regular/{exchange}/{order_id}: every field, as the README requires."""
    order_type = change.order_type or order.order_type
    price = change.price if change.price is not None else order.price
    if order_type in (OrderType.MARKET, OrderType.SL_M):
        price = Decimal(0)
    trigger = change.trigger_price if change.trigger_price is not None else order.trigger_price
    if order_type in (OrderType.LIMIT, OrderType.MARKET):
        trigger = Decimal(0)
    return {
        "exchange": exchange,
        "order_id": order.broker_order_id,
        "order_type": ORDER_TYPE_TO_ODIN[order_type],
        "quantity": change.quantity if change.quantity is not None else order.quantity,
        "traded_quantity": traded_quantity,
        "price": price if price is not None else Decimal(0),
        "trigger_price": trigger if trigger is not None else Decimal(0),
        "disclosed_quantity": 0,
        "validity": order.validity.value,
        "validity_days": 0,
    }


def order_path(exchange: str, order_id: str) -> str:
    return f"{REGULAR_PATH}/{quote(exchange, safe='')}/{quote(order_id, safe='')}"


def multileg_type(legs: Sequence[Instrument]) -> str:
    """``SPREAD`` for a two-leg futures calendar spread, else ``2L``/``3L`` (ODIN has no 4-leg type)."""
    futures = len(legs) == 2 and all(i.option_type is None and i.expiry for i in legs)
    if futures and legs[0].symbol == legs[1].symbol and legs[0].expiry != legs[1].expiry:
        return "SPREAD"
    if len(legs) in (2, 3):
        return f"{len(legs)}L"
    raise Rejected(f"ODIN multileg orders take 2 or 3 legs, not {len(legs)}", broker=BROKER)


def multileg_order_type(order_types: Sequence[OrderType]) -> str:
    kinds = set(order_types)
    if kinds == {OrderType.LIMIT}:
        return "RL"
    if kinds == {OrderType.MARKET}:
        return "RL-MKT"
    raise Rejected("ODIN multileg orders are all-limit (RL) or all-market (RL-MKT)", broker=BROKER)


@dataclass(frozen=True, slots=True)
class LegSpec:
    """One leg as the multileg body needs it; built from an OrderRequest or an Order."""

    row: MasterRow
    side: Side
    quantity: int
    order_type: OrderType
    price: Decimal | None


def leg_body(leg_no: int, leg: LegSpec, opts: WireOptions) -> dict[str, Any]:
    inst = leg.row.instrument
    price = leg.price if leg.order_type is OrderType.LIMIT and leg.price is not None else Decimal(0)
    decimal_loc = _int(leg.row.extra.get("decimal_loc"), "decimal_loc", default=opts.decimal_loc)  # optional
    return {
        "leg_no": leg_no,
        "scrip_info": scrip_info(leg.row, opts),
        "transaction_type": leg.side.value,
        "quantity": leg.quantity,
        "price": format(price, "f"),  # a string in the multileg docs
        "others": {
            "market_lot": inst.lot_size or 1,
            "price_tick": inst.tick_size or Decimal("0.05"),
            "decimal_loc": decimal_loc,
        },
    }


def multileg_body(
    legs: Sequence[LegSpec], *, identifier: str, validity: Validity, opts: WireOptions = WireOptions()
) -> dict[str, Any]:
    """POST /transactional/v1/orders/multileg body (CloudRestPro "Place multileg / spread order")."""
    body: dict[str, Any] = {}
    if opts.client_id:
        body["client_id"] = opts.client_id
    body.update(
        {
            "type": multileg_type([leg.row.instrument for leg in legs]),
            "order_type": multileg_order_type([leg.order_type for leg in legs]),
            "order_identifier": identifier,
            "validity": validity.value,
            "leg_details": [leg_body(i, leg, opts) for i, leg in enumerate(legs, start=1)],
        }
    )
    return body


def multileg_path(order_flag: str, gateway_order_no: str) -> str:
    if order_flag not in ("modify", "cancel"):
        raise ValueError(f"order_flag must be modify or cancel, not {order_flag!r}")
    return f"{MULTILEG_PATH}/{order_flag}/{quote(gateway_order_no, safe='')}"


def login_body(
    *, user_id: str, password: str, api_key: str, second_auth: str, second_auth_type: str | None,
    login_type: str = "PASSWORD", source: str = "WEBAPI",
) -> dict[str, Any]:
    """POST /authentication/v1/user/session body (connect.py ``login``; note adds ``second_auth_type``)."""
    body: dict[str, Any] = {"user_id": user_id, "login_type": login_type, "password": password}
    if second_auth_type:
        body["second_auth_type"] = second_auth_type
    body.update({"second_auth": second_auth, "api_key": api_key, "source": source})
    return body


# ---------------------------------------------------------------------------------------------------------
# Replies: envelope, errors, order book rows, positions
# ---------------------------------------------------------------------------------------------------------

_AUTH_RE = re.compile(r"(session|token|jwt).{0,30}(expired|invalid)|(invalid|expired).{0,30}(session|token)"
                      r"|not logged in|unauthori[sz]ed|login required", re.I)
_NOT_FOUND_RE = re.compile(
    r"order.{0,20}not found|no (such )?order|invalid order (id|no)|does not exist", re.I)
_NOT_MODIFIABLE_RE = re.compile(
    r"(cannot|can ?not|not allowed to|unable to) (be )?(modif|cancel)"
    r"|already (executed|cancelled|rejected|traded)"
    r"|not in (a )?(pending|open|modifiable)|only pending", re.I)
_RATE_RE = re.compile(r"too many requests|rate limit|throttl", re.I)
# Sub-codes seen in real replies (SDK logs). Both are login/config problems: refuse, do not loop on login.
KNOWN_ERROR_CODES = {"e-14": "gateway license error", "e-17": "incorrect TOTP"}


def error_from_envelope(http_status: int, body: Any) -> BrokerError:
    """Map an ODIN error reply (any HTTP status) onto the error taxonomy. Pure: used by tests directly."""
    if not isinstance(body, Mapping):
        return Rejected(f"HTTP {http_status} with a non-JSON body", code=str(http_status), broker=BROKER)
    message = str(body.get("message") or "error")
    errors = body.get("errors")
    sub = errors if isinstance(errors, str) and errors else None
    if isinstance(errors, list) and errors:
        first_err = errors[0]
        if isinstance(first_err, Mapping):
            sub = str(first_err.get("code") or "") or None
            message = f"{message}: {first_err.get('message', '')}".rstrip(": ")
        else:
            sub = str(first_err)
    code = sub or str(body.get("code") or http_status)
    if sub in KNOWN_ERROR_CODES:
        return Rejected(message, code=code, broker=BROKER)
    # 401 is a dead session (log in again); 403 (bad x-api-key, IP) is configuration: refuse.
    if http_status == 401 or (http_status != 403 and _AUTH_RE.search(message)):
        return AuthExpired(message, code=code, broker=BROKER)
    if http_status == 429 or _RATE_RE.search(message):
        return RateLimited(message, code=code, broker=BROKER)
    if http_status == 404 or _NOT_FOUND_RE.search(message):
        return NotFound(message, code=code, broker=BROKER)
    if _NOT_MODIFIABLE_RE.search(message):
        return NotModifiable(message, code=code, broker=BROKER)
    return Rejected(message, code=code, broker=BROKER)


def unwrap(http_status: int, body: Any) -> Any:
    """``data`` of a success envelope; raise the mapped error otherwise."""
    if isinstance(body, Mapping) and str(body.get("status", "")).lower() == "success":
        return body.get("data")
    raise error_from_envelope(http_status, body)


def instrument_from_row(row: Mapping[str, Any], master: InstrumentMaster | None) -> Instrument:
    token = first(row, "scrip_token", "token")
    if master is not None and token is not None:
        try:
            return master.by_token(str(token)).instrument
        except InstrumentUnknown:
            pass
    exchange = canonical_exchange(str(first(row, "exchange") or ""))
    expiry_raw = first(row, "expiry_date")
    strike = to_decimal(first(row, "strike_price"))
    opt = str(first(row, "option_type") or "").strip().upper()
    return Instrument(
        exchange=exchange,
        symbol=str(first(row, "symbol") or token or "").upper(),
        expiry=dt.date.fromisoformat(str(expiry_raw)[:10]) if expiry_raw else None,
        strike=strike if strike else None,
        option_type=OptionType(opt) if opt in ("CE", "PE") else None,
    )


def product_from_odin(value: str | None, exchange: str) -> Product:
    v = (value or "").upper()
    if v == "INTRADAY":
        return Product.MIS
    # DELIVERY (and BTST/MTF, which only exist for cash) carry the position overnight.
    return Product.NRML if is_derivative_segment(exchange) else Product.CNC


def parse_timestamp(value: Any, tz: dt.tzinfo) -> dt.datetime | None:
    """``yyyy-mm-dd HH:mm:ss`` in exchange local time (docs, "Data Types")."""
    if not value:
        return None
    try:
        return dt.datetime.strptime(str(value)[:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=tz)
    except ValueError:
        return None


_SIDES = {"BUY": Side.BUY, "SELL": Side.SELL}
# Shape of order_identifier(client_order_id) for our (long) ids: how a restarted process knows its rows.
_OUR_TAG = re.compile(r"r[a-z2-7]{9}")


def order_from_row(
    row: Mapping[str, Any], *, client_order_id: str, master: InstrumentMaster | None, tz: dt.tzinfo,
    broker_order_id: str | None = None, product: Product | None = None,
) -> Order:
    """An order-book row (regular or one leg of the multileg book) -> Order."""
    exchange = str(first(row, "exchange") or "")
    # Both are in every book row (the modify body is built from the book's traded_quantity): a missing
    # one is Malformed, never "0 filled".
    total = _int(first(row, "total_quantity", "quantity"), "total_quantity")
    traded = _int(first(row, "traded_quantity", "filled_quantity"), "traded_quantity")
    raw_status = str(first(row, "status", "order_status") or "")
    status = map_status(raw_status, traded, total)
    odin_type = str(first(row, "order_type") or "RL").upper()
    order_type = ODIN_TO_ORDER_TYPE.get(odin_type)
    side = _SIDES.get(str(first(row, "transaction_type") or "BUY").strip().upper())
    if order_type is None or side is None:
        # Unreadable, not refused (so not Rejected): the adapter decides whether the row may be skipped.
        raise BrokerError(f"unmapped order_type/transaction_type {odin_type!r}/"
                          f"{first(row, 'transaction_type')!r} in order {first(row, 'order_id')}",
                          broker=BROKER)
    price = to_decimal(first(row, "order_price", "price"))
    trigger = to_decimal(first(row, "trigger_price"))
    # The published book row has no average price; accept the spellings other ODIN builds use.
    avg = to_decimal(first(row, "average_price", "avg_price", "average_traded_price", "traded_price"))
    validity_raw = str(first(row, "validity") or "DAY").upper()
    reason = str(first(row, "error_reason", "reject_reason") or "").strip() or None
    return Order(
        client_order_id=client_order_id,
        broker_order_id=broker_order_id or str(first(row, "order_id") or "") or None,
        instrument=instrument_from_row(row, master),
        side=side,
        quantity=total,
        order_type=order_type,
        product=product or product_from_odin(first(row, "product_type"), exchange),
        status=status,
        filled_quantity=traded,
        average_price=avg if traded and avg else None,
        price=price if order_type in (OrderType.LIMIT, OrderType.SL) else None,
        trigger_price=trigger if order_type in (OrderType.SL, OrderType.SL_M) else None,
        validity=Validity.IOC if validity_raw == "IOC" else Validity.DAY,
        tag=str(first(row, "order_identifier") or "") or None,
        reject_reason=reason if status is OrderStatus.REJECTED else None,
        updated_at=parse_timestamp(first(row, "order_modified_timestamp", "exchange_timestamp",
                                         "order_timestamp"), tz),
        raw_status=raw_status or None,
    )


def multileg_leg_id(gateway_order_no: str, leg_no: int) -> str:
    """broker_order_id of one leg: ODIN addresses the legs only through the multileg's gateway_order_no."""
    return f"{gateway_order_no}#L{leg_no}"


def leg_number(row: Mapping[str, Any]) -> int:
    return _int(first(row, "leg_indicator", "leg_no"), "leg_indicator", default=1)  # a regular row: no legs


def split_leg_id(broker_order_id: str) -> tuple[str, int] | None:
    head, sep, tail = broker_order_id.rpartition("#L")
    if not sep or not tail.isdigit():
        return None
    return head, int(tail)


def position_from_row(row: Mapping[str, Any], master: InstrumentMaster | None) -> Position:
    """A positions row -> Position. Field names vary between ODIN builds; every seen spelling is read."""
    exchange = str(first(row, "exchange") or "")
    # With a net field the net is the broker's own and the day quantities only inform (absent: 0).
    # Without one the net is computed, so buy and sell must be there; carry-forward fields exist only
    # in builds that report them (a DAY positions read carries nothing forward): absent means 0.
    net_raw = first(row, "net_quantity", "net_qty")
    day = 0 if net_raw is not None else None
    buy = _int(first(row, "buy_quantity", "day_buy_quantity", "total_buy_quantity"), "buy_quantity",
               default=day)
    sell = _int(first(row, "sell_quantity", "day_sell_quantity", "total_sell_quantity"), "sell_quantity",
                default=day)
    cf_buy = _int(first(row, "cf_buy_quantity", "carry_forward_buy_quantity"), "cf_buy_quantity", default=0)
    cf_sell = _int(first(row, "cf_sell_quantity", "carry_forward_sell_quantity"), "cf_sell_quantity",
                   default=0)
    net = _int(net_raw, "net_quantity") if net_raw is not None else cf_buy - cf_sell + buy - sell
    avg = to_decimal(first(row, "net_average_price", "net_avg_price", "average_price"))
    if avg is None:
        side_avg = "buy_average_price" if net >= 0 else "sell_average_price"
        avg = to_decimal(first(row, side_avg, side_avg.replace("_average", "_avg"))) or Decimal(0)
    return Position(
        instrument=instrument_from_row(row, master),
        product=product_from_odin(first(row, "product_type", "product"), exchange),
        quantity=net,
        average_price=avg,
        realized_pnl=to_decimal(first(row, "realized_pnl", "realised_pnl", "booked_pnl")) or Decimal(0),
        day_buy_quantity=buy,
        day_sell_quantity=sell,
    )


# ---------------------------------------------------------------------------------------------------------
# I/O: the Broker implementation
# ---------------------------------------------------------------------------------------------------------

_IST = dt.timezone(dt.timedelta(hours=5, minutes=30), "IST")


class OdinBroker:
    """:class:`runner.brokers.base.MultilegBroker` over the ODIN Cloud REST Pro API."""

    name = BROKER
    capabilities = frozenset({
        Capability.NATIVE_MULTILEG,
        Capability.MODIFY,
        Capability.MARKET_ORDERS,
        Capability.STOP_ORDERS,
    })

    def __init__(
        self,
        account: Account,
        *,
        master: InstrumentMaster,
        transport: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        from runner.brokers.ratelimit import RateLimiter

        base = account.endpoints.get("base_url") or account.endpoints.get("rest")
        if not base:
            raise ValueError(f"account {account.name!r}: endpoints.base_url is required for ODIN")
        self.account = account
        self.base_url = base.rstrip("/")
        self.master = master
        self.transport = transport or account.options.get("http_transport")
        opts = account.options
        self.wire = WireOptions(
            strike_in_paise=bool(opts.get("strike_in_paise", True)),
            client_id=opts.get("client_id"),
        )
        self.positions_type = str(opts.get("positions_type", "NET"))
        self.confirm_place = bool(opts.get("confirm_place", True))
        self.page_size = int(opts.get("page_size", 200))
        self.clock: Clock = clock or SystemClock()
        rl = account.rate_limit
        self.limiter = RateLimiter(rl.orders_per_second, rl.burst)
        self._client: httpx.AsyncClient | None = None
        self._token: str | None = None
        self._login_lock = asyncio.Lock()
        self._tz: dt.tzinfo = _IST
        # Our full client ids by their 10-char order_identifier, and multileg legs by client id, for
        # orders this process placed or looked up. Only a cache: get_order recomputes the identifier
        # from the client id (a leg's from its group id), so a restarted process finds its orders.
        self._by_tag: dict[str, str] = {}
        # leg client id -> (multileg tag, leg_no, product as requested if this process sent it)
        self._legs: dict[str, tuple[str, int, Product | None]] = {}
        self._requests: dict[str, OrderRequest] = {}  # regular orders this process sent, by client id

    # -- session ----------------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "x-api-key": self.account.secret("x_api_key").reveal()}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    async def connect(self) -> None:
        if self._client is None:
            from runner.brokers.http import make_client

            self._client = make_client(self.base_url, timeout=self.account.timeout_seconds,
                                       transport=self.transport)
        if self._token is None:
            await self._login()

    async def relogin(self) -> None:
        if self._client is None:
            await self.connect()  # a first login is a fresh one
            return
        await self._login()  # the current token counts as stale: a new one is fetched

    async def _login(self) -> None:
        stale = self._token
        async with self._login_lock:
            if self._token is not None and self._token != stale:
                return  # another task logged in while we waited
            self._token = None
            acct = self.account
            creds = acct.credentials
            if "totp_secret" in creds:
                # Wall time, not self.clock: the code must match the authenticator's, even in rehearsal.
                second_auth = totp(acct.secret("totp_secret").reveal(), dt.datetime.now(dt.UTC))
                second_type: str | None = "TOTP"
            else:
                second_auth = acct.secret("second_auth").reveal() if "second_auth" in creds else ""
                second_type = acct.options.get("second_auth_type")
            body = login_body(
                user_id=acct.secret("user_id").reveal(),
                password=acct.secret("password").reveal(),
                api_key=acct.secret("api_key").reveal(),
                second_auth=second_auth,
                second_auth_type=second_type,
                login_type=str(acct.options.get("login_type", "PASSWORD")),
            )
            data = await self._raw("POST", SESSION_PATH, body=body, mutating=False, auth=False)
            token = data.get("access_token") if isinstance(data, Mapping) else None
            if not token:
                raise AuthExpired("login reply carried no access_token", broker=BROKER)
            self._token = secret(str(token))  # scrubbed from every log line and journal row

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            self._token = None
            await client.aclose()

    # -- transport --------------------------------------------------------------------------------------

    async def _raw(
        self, method: str, path: str, *, body: Any = None, params: Mapping[str, Any] | None = None,
        mutating: bool, auth: bool = True,
    ) -> Any:
        from runner.brokers.http import send

        if self._client is None:
            await self.connect()
        assert self._client is not None
        kwargs: dict[str, Any] = {"headers": self._headers()}
        if body is not None:
            kwargs["content"] = dumps(body).encode()
        if params:
            kwargs["params"] = dict(params)
        response = await send(self._client, method, path, broker=BROKER, mutating=mutating, **kwargs)
        try:
            payload = loads(response.content) if response.content else None
        except ValueError:
            payload = None
        return unwrap(response.status_code, payload)

    async def _call(
        self, method: str, path: str, *, body: Any = None, params: Mapping[str, Any] | None = None,
        mutating: bool,
    ) -> Any:
        """One request. A read refused for a dead session is sent once more after one re-login; a write
        never is (the engine's gateway logs in through connect() and retries it, journaled). Every other
        error surfaces at once: the gateway owns backoff."""
        if self._token is None:
            await self.connect()
        try:
            return await self._raw(method, path, body=body, params=params, mutating=mutating)
        except AuthExpired:
            if mutating:
                self._token = None  # so that the caller's connect() logs in again
                raise
            await self._login()
        try:
            return await self._raw(method, path, body=body, params=params, mutating=mutating)
        except AuthExpired:
            self._token = None
            raise

    async def _read(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return await self._call("GET", path, params=params, mutating=False)

    async def _write(self, method: str, path: str, *, exchange: str, body: Any = None) -> Any:
        from runner.brokers.ratelimit import segment_of

        key = (self.account.name, segment_of(exchange) if self.account.rate_limit.per_segment else None)
        await self.limiter.acquire(key)
        try:
            return await self._call(method, path, body=body, mutating=True)
        except RateLimited as exc:
            self.limiter.penalize(key, exc.retry_after if exc.retry_after is not None else 1.0)
            raise

    # -- orders -----------------------------------------------------------------------------------------

    def _resolve(self, instrument: Instrument) -> MasterRow:
        row = self.master.resolve(instrument)
        scrip_token(row)  # fail before sending if the master row lacks the token
        return row

    async def place(self, request: OrderRequest) -> Order:
        row = self._resolve(request.instrument)
        body = place_body(request, row, self.wire)
        tag = body["order_identifier"]
        if tag in self._by_tag:
            # ODIN does not de-duplicate order_identifier: never send an id twice without looking first.
            existing = await self.get_order(request.client_order_id)
            if existing is not None:
                return existing
        self._by_tag[tag] = request.client_order_id
        self._requests[request.client_order_id] = request
        try:
            data = await self._write("POST", REGULAR_PATH, exchange=body["scrip_info"]["exchange"], body=body)
        except OutcomeUnknown:
            # Resolve by reading (never by re-sending): found -> confirm it; else the engine decides.
            found = await self._lookup_after_unknown(request.client_order_id)
            if found is None:
                raise
            return (await self._confirm([found]))[0]
        order_id = str(first(data or {}, "orderId", "order_id") or "")
        if not order_id:
            # Accepted without an id: the order may exist. Resolve by lookup, never by re-sending.
            raise OutcomeUnknown("place acknowledged without an orderId", broker=BROKER)
        ack = Order.from_request(request, OrderStatus.PENDING_NEW, broker_order_id=order_id,
                                 updated_at=self.clock.now()).evolve(instrument=row.instrument, tag=tag)
        # "Order Entry Sent to OMS" is not a confirmation: the OMS rejects afterwards, in the book.
        return (await self._confirm([ack]))[0]

    async def _lookup_after_unknown(self, client_order_id: str) -> Order | None:
        try:
            return await self.get_order(client_order_id)
        except (Retryable, AuthExpired):
            return None

    async def _confirm(self, acks: Sequence[Order]) -> Sequence[Order]:
        """Read acknowledged orders back once; raise Rejected if the OMS rejected them."""
        if not self.confirm_place:
            return acks
        try:
            back = [(await self.get_order_by_broker_id(a.broker_order_id or "")).evolve(
                client_order_id=a.client_order_id) for a in acks]
        except (Retryable, AuthExpired, NotFound):
            return acks  # the ack stands; the engine reads the order back later anyway
        rejected = next((o for o in back if o.status is OrderStatus.REJECTED), None)
        if rejected is not None:
            raise Rejected(rejected.reject_reason or "rejected by the OMS", code=rejected.raw_status,
                           broker=BROKER)
        return back

    async def modify(self, order: Order, change: Modification) -> Order:
        if order.broker_order_id is None:
            raise NotFound("order has no broker id", broker=BROKER)
        if split_leg_id(order.broker_order_id):
            raise NotModifiable("a multileg leg is modified with modify_multileg (all legs)", broker=BROKER)
        current = await self.get_order_by_broker_id(order.broker_order_id)
        if current.status.is_terminal:
            raise NotModifiable(f"order is {current.raw_status}", broker=BROKER)
        exchange = odin_exchange(current.instrument, self.master.resolve(current.instrument))
        body = modify_body(current, change, exchange=exchange, traded_quantity=current.filled_quantity)
        await self._write("PUT", order_path(exchange, order.broker_order_id), exchange=exchange, body=body)
        try:
            back = await self.get_order_by_broker_id(order.broker_order_id)
        except (Retryable, AuthExpired):
            # The modify was accepted; a failed read-back must not make the caller send it again.
            trigger = change.trigger_price if change.trigger_price is not None else current.trigger_price
            return current.evolve(
                quantity=body["quantity"], order_type=change.order_type or current.order_type,
                price=change.price if change.price is not None else current.price, trigger_price=trigger,
                client_order_id=order.client_order_id)
        return back.evolve(client_order_id=order.client_order_id)

    async def cancel(self, order: Order) -> Order:
        if order.broker_order_id is None:
            raise NotFound("order has no broker id", broker=BROKER)
        if split_leg_id(order.broker_order_id):
            return (await self.cancel_multileg([order]))[0]
        exchange = odin_exchange(order.instrument, self.master.resolve(order.instrument))
        await self._write("DELETE", order_path(exchange, order.broker_order_id), exchange=exchange)
        # A cancel ack is not a cancel: report PENDING_CANCEL unless the book already shows the outcome.
        try:
            current = await self.get_order_by_broker_id(order.broker_order_id)
        except (Retryable, AuthExpired):
            # Accepted; a failed read-back must not make the caller cancel again (and see NotModifiable).
            return order.evolve(status=OrderStatus.PENDING_CANCEL)
        current = current.evolve(client_order_id=order.client_order_id)
        if current.status.is_working:
            return current.evolve(status=OrderStatus.PENDING_CANCEL)
        return current

    # -- reads ------------------------------------------------------------------------------------------

    async def _book(self, extra: Mapping[str, Any] | None = None) -> list[Mapping[str, Any]]:
        """Every row of the order book, page by page (``offset`` is 1-based; de-duplicated either way)."""
        rows: list[Mapping[str, Any]] = []
        seen: set[tuple[Any, ...]] = set()
        page = 1
        while True:
            params: dict[str, Any] = {"offset": page, "limit": self.page_size, "orderStatus": -1}
            params.update(extra or {})
            data = await self._read(ORDERS_PATH, params)
            batch = [r for r in (data or []) if isinstance(r, Mapping)]
            fresh = 0
            for r in batch:
                key = (r.get("order_id"), r.get("gateway_order_no"), r.get("leg_indicator"))
                if key not in seen:
                    seen.add(key)
                    rows.append(r)
                    fresh += 1
            if len(batch) < self.page_size or fresh == 0:
                return rows
            page += 1

    def _readable(
        self, row: Mapping[str, Any], read: Callable[[], Order], *, ours: bool = False
    ) -> Order | None:
        """``read()`` of a book row, or None for a foreign row that cannot be read (a manual order of a
        type this adapter does not map, placed from the broker's own terminal): skipped and logged, so one
        such row cannot break every read on the account. Our own orders are never skipped: one this
        process sent comes back from its request with status UNKNOWN (resolved by a later read); one it
        cannot rebuild raises BrokerError."""
        try:
            return read()
        except (BrokerError, ValueError) as exc:
            why = exc.message if isinstance(exc, BrokerError) else str(exc)
            tag = str(first(row, "order_identifier") or "").strip()
            oid = str(first(row, "order_id") or "")
            cid = self._by_tag.get(tag)
            request = self._requests.get(cid) if cid and first(row, "gateway_order_no") is None else None
            if request is not None:
                log.error("odin: our order %s (%s) is unreadable: %s", oid, cid, why)
                return Order.from_request(request, OrderStatus.UNKNOWN, broker_order_id=oid or None,
                                          raw_status=str(first(row, "status", "order_status") or "") or None,
                                          tag=tag)
            legs = {leg_tag for leg_tag, _no, _prod in self._legs.values()}
            if ours or cid is not None or tag in legs or _OUR_TAG.fullmatch(tag):
                raise BrokerError(f"order {oid} ({tag}) is unreadable: {why}", broker=BROKER) from exc
            log.warning("odin: skipping foreign order %s: %s", oid, why)
            return None

    def _cid_for(self, row: Mapping[str, Any]) -> str:
        tag = str(first(row, "order_identifier") or "")
        return self._by_tag.get(tag) or tag or str(first(row, "order_id") or "")

    def _row_to_order(self, row: Mapping[str, Any], cid: str | None = None) -> Order:
        return order_from_row(row, client_order_id=cid or self._cid_for(row), master=self.master, tz=self._tz)

    def _leg_to_order(self, row: Mapping[str, Any], cid: str | None = None) -> Order:
        gw = str(first(row, "gateway_order_no") or "")
        leg_no = leg_number(row)
        tag = str(first(row, "order_identifier") or "")
        product = None
        if cid is None:
            for leg_cid, (leg_tag, no, prod) in self._legs.items():
                if leg_tag == tag and no == leg_no:
                    cid, product = leg_cid, prod
                    break
        else:
            product = self._legs.get(cid, ("", 0, None))[2]
        return order_from_row(row, client_order_id=cid or f"{tag}#L{leg_no}", master=self.master, tz=self._tz,
                              broker_order_id=multileg_leg_id(gw, leg_no), product=product)

    async def _multileg_rows(self, tag: str) -> dict[int, Mapping[str, Any]]:
        """Rows of the multileg book carrying our identifier, by leg number."""
        return {leg_number(r): r for r in await self._book({"orderType": "multileg"})
                if str(first(r, "order_identifier") or "").strip() == tag}

    def _leg_ref(self, client_order_id: str) -> tuple[str, int] | None:
        """(multileg tag, leg number) of a leg client id: remembered, or derived from the group id (see
        runner.ids.leg_client_id) so that it survives a restart."""
        known = self._legs.get(client_order_id)
        if known is not None:
            return known[0], known[1]
        derived = split_leg_client_id(client_order_id)
        if derived is None:
            return None
        group, leg_no = derived
        return order_identifier(group), leg_no

    async def get_order(self, client_order_id: str) -> Order | None:
        """Look an order up by our id: ODIN indexes neither it nor our tag, so scan the day's books."""
        leg = self._leg_ref(client_order_id)
        if leg is not None:
            tag, leg_no = leg
            row = (await self._multileg_rows(tag)).get(leg_no)
            if row is None:
                return None
            self._legs.setdefault(client_order_id, (tag, leg_no, None))
            return self._own(row, partial(self._leg_to_order, row, client_order_id))
        tag = order_identifier(client_order_id)
        for row in await self._book():
            if str(first(row, "order_identifier") or "").strip() == tag:
                self._by_tag[tag] = client_order_id
                return self._own(row, partial(self._row_to_order, row, client_order_id))
        return None

    def _own(self, row: Mapping[str, Any], read: Callable[[], Order]) -> Order:
        order = self._readable(row, read, ours=True)
        assert order is not None  # ours=True: unreadable raises
        return order

    async def get_order_by_broker_id(self, broker_order_id: str) -> Order:
        leg = split_leg_id(broker_order_id)
        if leg is not None:
            gw, leg_no = leg
            for row in await self._book({"orderType": "multileg"}):
                if str(first(row, "gateway_order_no")) == gw and leg_number(row) == leg_no:
                    return self._own(row, partial(self._leg_to_order, row))
            raise NotFound(f"no multileg leg {broker_order_id}", broker=BROKER)
        data = await self._read(ORDERS_PATH, {"offset": 1, "limit": self.page_size, "orderStatus": -1,
                                              "order_id": broker_order_id})
        for row in data or []:
            if isinstance(row, Mapping) and str(first(row, "order_id")) == broker_order_id:
                return self._own(row, partial(self._row_to_order, row))
        raise NotFound(f"no order {broker_order_id}", broker=BROKER)

    async def orders(self) -> Sequence[Order]:
        regular = [self._readable(r, partial(self._row_to_order, r)) for r in await self._book()]
        legs = [self._readable(r, partial(self._leg_to_order, r))
                for r in await self._book({"orderType": "multileg"})]
        return [o for o in regular + legs if o is not None]

    async def open_orders(self) -> Sequence[Order]:
        return [o for o in await self.orders() if o.status.is_working or o.status is OrderStatus.PENDING_NEW]

    async def positions(self) -> Sequence[Position]:
        data = await self._read(f"{POSITIONS_PATH}/{quote(self.positions_type, safe='')}")
        rows = [r for r in (data or []) if isinstance(r, Mapping)]
        return read_positions(rows, lambda r: position_from_row(r, self.master),
                              lambda r: f"{first(r, 'exchange') or ''}:{first(r, 'symbol') or ''}")

    # -- multileg ---------------------------------------------------------------------------------------

    async def _existing_multileg(self, request: MultilegRequest, tag: str) -> list[Order] | None:
        """The legs of a multileg already in the book under ``tag``; None when there is none. A partial
        match cannot be a multileg we sent (legs are accepted all or none): ambiguous, say so."""
        rows = await self._multileg_rows(tag)
        if not rows:
            return None
        if set(rows) != set(range(1, len(request.legs) + 1)):
            raise OutcomeUnknown(f"multileg {tag} in the book has legs {sorted(rows)}", broker=BROKER)
        return [self._leg_to_order(rows[n], leg.client_order_id)
                for n, leg in enumerate(request.legs, start=1)]

    async def place_multileg(self, request: MultilegRequest) -> Sequence[Order]:
        rows = [self._resolve(leg.instrument) for leg in request.legs]
        specs = [LegSpec(r, leg.side, leg.quantity, leg.order_type, leg.price)
                 for r, leg in zip(rows, request.legs, strict=True)]
        # The identifier comes from the group id, so a lookup by any leg's derived client id (after a
        # restart, too) finds the multileg again; see get_order.
        tag = order_identifier(request.client_order_id)
        body = multileg_body(specs, identifier=tag, validity=request.legs[0].validity, opts=self.wire)
        for i, leg in enumerate(request.legs, start=1):
            self._legs[leg.client_order_id] = (tag, i, leg.product)
        # ODIN does not de-duplicate order_identifier and this process may be a restarted one: look
        # first (one read of the multileg book), send only when the group is certainly absent.
        existing = await self._existing_multileg(request, tag)
        if existing is not None:
            return existing
        exchange = body["leg_details"][0]["scrip_info"]["exchange"]
        try:
            data = await self._write("POST", MULTILEG_PATH, exchange=exchange, body=body)
        except OutcomeUnknown:
            try:
                found = await self._existing_multileg(request, tag)
            except (Retryable, AuthExpired):
                found = None
            if found is None:
                raise
            return await self._confirm(found)
        gw = str(first(data or {}, "gateway_order_no", "gatewayOrderNo") or "")
        if not gw:
            raise OutcomeUnknown("multileg place acknowledged without a gateway_order_no", broker=BROKER)
        now = self.clock.now()
        acks = [
            Order.from_request(leg, OrderStatus.PENDING_NEW, broker_order_id=multileg_leg_id(gw, i),
                               updated_at=now).evolve(instrument=row.instrument, tag=tag)
            for i, (leg, row) in enumerate(zip(request.legs, rows, strict=True), start=1)
        ]
        return await self._confirm(acks)

    async def _multileg_action(
        self, order_flag: str, legs: Sequence[Order], changes: Sequence[Modification | None]
    ) -> Sequence[Order]:
        ids = [split_leg_id(o.broker_order_id or "") for o in legs]
        gws = {i[0] for i in ids if i is not None}
        if len(gws) != 1 or None in ids:
            raise NotFound("legs must all belong to one ODIN multileg order", broker=BROKER)
        gw = gws.pop()
        # The body must carry every leg (seed 004): read the whole multileg back, then apply changes.
        book = [r for r in await self._book({"orderType": "multileg"})
                if str(first(r, "gateway_order_no")) == gw]
        if not book:
            raise NotFound(f"no multileg order {gw}", broker=BROKER)
        current = sorted((self._leg_to_order(r) for r in book),
                         key=lambda o: split_leg_id(o.broker_order_id or "") or ("", 0))
        if all(o.status.is_terminal for o in current):
            raise NotModifiable("multileg order is no longer pending", broker=BROKER)
        by_no = {ids[k][1]: changes[k] for k in range(len(legs)) if ids[k] is not None}  # type: ignore[index]
        specs = []
        for o in current:
            no = (split_leg_id(o.broker_order_id or "") or ("", 0))[1]
            ch = by_no.get(no)
            specs.append(LegSpec(
                self.master.resolve(o.instrument), o.side,
                ch.quantity if ch and ch.quantity is not None else o.quantity,
                (ch.order_type if ch and ch.order_type else o.order_type),
                ch.price if ch and ch.price is not None else o.price,
            ))
        tag = current[0].tag or ""
        body = multileg_body(specs, identifier=tag, validity=current[0].validity, opts=self.wire)
        exchange = body["leg_details"][0]["scrip_info"]["exchange"]
        await self._write("PUT", multileg_path(order_flag, gw), exchange=exchange, body=body)
        after = {o.broker_order_id: o for o in
                 (self._leg_to_order(r) for r in await self._book({"orderType": "multileg"})
                  if str(first(r, "gateway_order_no")) == gw)}
        out = []
        for leg in legs:
            now = after.get(leg.broker_order_id, leg).evolve(client_order_id=leg.client_order_id)
            if order_flag == "cancel" and now.status.is_working:
                now = now.evolve(status=OrderStatus.PENDING_CANCEL)
            out.append(now)
        return out

    async def cancel_multileg(self, legs: Sequence[Order]) -> Sequence[Order]:
        return await self._multileg_action("cancel", legs, [None] * len(legs))

    async def modify_multileg(
        self, legs: Sequence[Order], changes: Sequence[Modification]
    ) -> Sequence[Order]:
        """Modify a pending multileg order; ODIN wants every leg in the body, changed or not."""
        if len(changes) != len(legs):
            raise ValueError("one Modification per leg")
        return await self._multileg_action("modify", legs, list(changes))


def create(account: Account, **context: Any) -> OdinBroker:
    """Factory used by the broker registry. ``context`` may carry ``master`` (an InstrumentMaster)."""
    master = context.get("master")
    if master is None:
        from runner.brokers.instruments import InstrumentMaster

        if not account.instruments:
            raise ValueError(f"account {account.name!r}: an instrument master (instruments:) is required")
        master = InstrumentMaster.load(account.instruments, broker=BROKER)
    return OdinBroker(account, master=master, transport=context.get("transport"), clock=context.get("clock"))
