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

Pure translation (model <-> wire dicts, no I/O); :class:`runner.brokers.odin.client.OdinBroker` does
the I/O.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import hmac
import logging
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from runner.errors import (
    BrokerError,
    InstrumentUnknown,
    NotFound,
    NotModifiable,
    RateLimited,
    Rejected,
    SessionExpired,
)
from runner.model import (
    Instrument,
    Modification,
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
from runner.wirejson import to_decimal, to_int

if TYPE_CHECKING:
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
        return SessionExpired(message, code=code, broker=BROKER)
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
        avg = to_decimal(first(row, side_avg, side_avg.replace("_average", "_avg")))
    realized = to_decimal(first(row, "realized_pnl", "realised_pnl", "booked_pnl"))
    return Position(
        instrument=instrument_from_row(row, master),
        product=product_from_odin(first(row, "product_type", "product"), exchange),
        quantity=net,
        average_price=avg or Decimal(0),
        realized_pnl=realized or Decimal(0),
        day_buy_quantity=buy,
        day_sell_quantity=sell,
        average_price_reported=avg is not None,
        realized_pnl_reported=realized is not None,
    )
