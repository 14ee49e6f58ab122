"""The ODIN simulator's state and wire handling, apart from its server (:mod:`runner.brokers.odin.sim`).

Users, accounts and their orders as the simulated gateway keeps them; request fields read off the wire
(a bad one is a :class:`SimError`, the gateway's 400); order-book rows written in the field names of the
real book. No I/O.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from runner.brokers.instruments import InstrumentMaster, MasterRow, row_from_mapping
from runner.brokers.odin import wire
from runner.errors import InstrumentUnknown
from runner.model import (
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    Product,
    Side,
    Validity,
)
from runner.wirejson import to_decimal

IST = dt.timezone(dt.timedelta(hours=5, minutes=30), "IST")

# Canonical status -> what the ODIN book shows. A cancel stays PENDING until the exchange confirms it;
# end-of-day expiry shows as CANCELLED on ODIN.
STATUS_OUT: dict[OrderStatus, str] = {
    OrderStatus.PENDING_NEW: "OMS_XMITTED",
    OrderStatus.OPEN: "PENDING",
    OrderStatus.PARTIALLY_FILLED: "PENDING",
    OrderStatus.PENDING_CANCEL: "PENDING",
    OrderStatus.FILLED: "EXECUTED",
    OrderStatus.CANCELLED: "CANCELLED",
    OrderStatus.EXPIRED: "CANCELLED",
    OrderStatus.REJECTED: "OMS_REJECT",
    OrderStatus.UNKNOWN: "PENDING",
}
# Exchange -> market segment id, as pycloudrestapi/utils.py numbers them (multileg book ``segment_id``).
SEGMENT_ID = {"NSE_EQ": 1, "NSE_FO": 2, "BSE_EQ": 3, "BSE_FO": 4, "MCX_FO": 5, "NCDEX_FO": 7, "NSE_CUR": 13,
              "BSE_CUR": 38}
POSITION_TYPES = frozenset({"NET", "DAY", "ALL", "DAILY", "EXPIRY"})  # SDK: DAY/NET; [O5]: all/daily/expiry

# A small master so ``runner sim odin`` works without files; tests pass their own.
DEFAULT_MASTER_CSV = [
    {"exchange": "NSE", "symbol": "RELIANCE", "token": "2885", "lot_size": "1", "tick_size": "0.05"},
    {"exchange": "NSE", "symbol": "IDEA", "token": "14366", "lot_size": "1", "tick_size": "0.01"},
    {"exchange": "NFO", "symbol": "NIFTY", "expiry": "2026-12-29", "token": "35001", "lot_size": "75",
     "tick_size": "0.10"},
    {"exchange": "NFO", "symbol": "NIFTY", "expiry": "2027-01-26", "token": "35002", "lot_size": "75",
     "tick_size": "0.10"},
    {"exchange": "NFO", "symbol": "NIFTY", "expiry": "2026-12-29", "strike": "24500", "option_type": "CE",
     "token": "45001", "lot_size": "75", "tick_size": "0.05"},
    {"exchange": "NFO", "symbol": "NIFTY", "expiry": "2026-12-29", "strike": "24500", "option_type": "PE",
     "token": "45002", "lot_size": "75", "tick_size": "0.05"},
    {"exchange": "NFO", "symbol": "NIFTY", "expiry": "2026-12-29", "strike": "25000", "option_type": "CE",
     "token": "45003", "lot_size": "75", "tick_size": "0.05"},
]


def default_master() -> InstrumentMaster:
    from runner.brokers.paper.master import venue_master  # plus every generated contract (paper master)

    return venue_master("odin", (row_from_mapping(r) for r in DEFAULT_MASTER_CSV), first_id=60_000)


@dataclass
class SimUser:
    user_id: str
    password: str
    api_key: str
    totp_secret: str | None = None  # TOTP second factor; else ``second_auth`` must match (PAN style)
    second_auth: str | None = None
    user_code: str = "SIMUC"


@dataclass
class SimOrder:
    odin_id: str
    engine_id: str
    exchange: str
    row: MasterRow
    product_type: str
    tag: str
    placed_at: dt.datetime
    modified_at: dt.datetime
    gateway_order_no: str | None = None  # set on multileg legs
    leg_no: int = 0
    multileg_order_id: str | None = None


@dataclass
class SimAccount:
    user: SimUser
    orders: dict[str, SimOrder] = field(default_factory=dict)  # odin id -> order, placement order
    multilegs: dict[str, list[SimOrder]] = field(default_factory=dict)  # gateway_order_no -> legs
    # order_identifiers in ``orders`` (regular and legs) and in ``multilegs`` (legs only): the duplicate
    # check on each place is a lookup, not a scan of the day's book (which made a burst quadratic)
    tags: set[str] = field(default_factory=set)
    multileg_tags: set[str] = field(default_factory=set)

    def add(self, so: SimOrder) -> None:
        """Book ``so`` (a regular order or one leg), keeping the tag index."""
        self.orders[so.odin_id] = so
        self.tags.add(so.tag)

    def add_multileg(self, gateway_order_no: str, legs: list[SimOrder]) -> None:
        self.multilegs[gateway_order_no] = legs
        self.multileg_tags.update(so.tag for so in legs)


class SimError(Exception):
    def __init__(self, status: int, message: str, errors: Any = None, code: str = "e-101") -> None:
        super().__init__(message)
        self.status, self.message, self.errors, self.code = status, message, errors, code


def envelope(data: Any, message: str, **extra: Any) -> dict[str, Any]:
    return {"status": "success", "code": wire.SUCCESS_CODE, "message": message, "data": data, **extra}


def _dec(value: Any, name: str) -> Decimal:
    """A price field: absent is zero (as the gateway treats it), unparsable is a 400."""
    if value is None or value == "":
        return Decimal(0)
    parsed = to_decimal(value)
    if parsed is None:
        raise SimError(400, f"Invalid {name}")
    return parsed


def _money(value: Decimal | None) -> str:
    return f"{(value or Decimal(0)):.2f}"


FOREIGN_DONE = frozenset({"EXECUTED", "CANCELLED", "OMS_REJECT", "ADMINREJECT", "EXPIRED"})


# ---------------------------------------------------------------------------------------------------------
# Requests: wire fields -> model (a SimError is the gateway's 400)
# ---------------------------------------------------------------------------------------------------------


def second_auth_ok(user: SimUser, body: Mapping[str, Any]) -> bool:
    given = str(body.get("second_auth") or "")
    if user.totp_secret:
        now = dt.datetime.now(dt.UTC)  # TOTP is wall-clock time on both sides, not the sim clock
        window = [now + dt.timedelta(seconds=30 * k) for k in (-1, 0, 1)]
        return str(body.get("second_auth_type", "TOTP")).upper() == "TOTP" and any(
            wire.totp(user.totp_secret, at) == given for at in window)
    return user.second_auth is None or given == user.second_auth


def scrip_row(master: InstrumentMaster, info: Any) -> MasterRow:
    if not isinstance(info, Mapping) or not info.get("exchange"):
        raise SimError(400, "scrip_info.exchange is required")
    token = info.get("scrip_token")
    try:
        row = master.by_token(str(int(str(token))))
    except (InstrumentUnknown, TypeError, ValueError):
        raise SimError(400, f"Invalid scrip token {token!r}") from None
    if wire.odin_exchange(row.instrument, row) != str(info["exchange"]).upper():
        raise SimError(400, f"scrip token {token} does not trade on {info['exchange']}")
    return row


def parse_product(product_type: Any, exchange: str) -> Product:
    value = str(product_type or "").upper()
    if value not in ("INTRADAY", "DELIVERY", "MTF", "BTST"):
        raise SimError(400, f"Invalid product_type {product_type!r}")
    return wire.product_from_odin(value, exchange)


def parse_order_type(value: Any) -> OrderType:
    try:
        return wire.ODIN_TO_ORDER_TYPE[str(value).upper()]
    except KeyError:
        raise SimError(400, f"Invalid order_type {value!r}") from None


def parse_side(value: Any) -> Side:
    if str(value).upper() not in ("BUY", "SELL"):
        raise SimError(400, f"Invalid transaction_type {value!r}")
    return Side(str(value).upper())


def parse_validity(value: Any, default: str = "DAY") -> Validity:
    v = str(value or default).upper()
    if v not in ("DAY", "IOC", "GTD", "GTC"):
        raise SimError(400, f"Invalid validity {value!r}")
    return Validity.IOC if v == "IOC" else Validity.DAY


def parse_quantity(value: Any) -> int:
    ok = isinstance(value, int | Decimal) and not isinstance(value, bool)
    if not ok or int(value) != value or value <= 0:
        raise SimError(400, f"Invalid quantity {value!r}")
    return int(value)


def order_request(cid: str, row: MasterRow, side: Side, qty: int, otype: OrderType, product: Product,
                  validity: Validity, price: Decimal, trigger: Decimal, tag: str) -> OrderRequest:
    try:
        return OrderRequest(
            client_order_id=cid, instrument=row.instrument, side=side, quantity=qty, order_type=otype,
            product=product, validity=validity,
            price=price if otype in (OrderType.LIMIT, OrderType.SL) else None,
            trigger_price=trigger if otype in (OrderType.SL, OrderType.SL_M) else None, tag=tag or None,
        )
    except (ValueError, TypeError) as exc:
        raise SimError(400, str(exc)) from None


def parse_legs(
    master: InstrumentMaster, body: Mapping[str, Any]
) -> list[tuple[int, MasterRow, Side, int, Decimal]]:
    legs = body.get("leg_details")
    if not isinstance(legs, list) or not legs:
        raise SimError(400, "leg_details is required")
    out = []
    for leg in legs:
        if not isinstance(leg, Mapping) or not isinstance(leg.get("leg_no"), int):
            raise SimError(400, "leg_no is required")
        price = leg.get("price", "0")
        if not isinstance(price, str):
            raise SimError(400, "leg price must be a string")
        row = scrip_row(master, leg.get("scrip_info"))
        side = parse_side(leg.get("transaction_type"))
        out.append((leg["leg_no"], row, side, parse_quantity(leg.get("quantity")), _dec(price, "price")))
    if sorted(n for n, *_ in out) != list(range(1, len(out) + 1)):
        raise SimError(400, "leg_no must number the legs 1..n")
    return sorted(out, key=lambda leg: leg[0])


def check_multileg_type(body: Mapping[str, Any], n_legs: int) -> OrderType:
    mtype = str(body.get("type") or "").upper()
    if mtype not in ("SPREAD", "2L", "3L") or (mtype == "3L") != (n_legs == 3):
        raise SimError(400, f"Invalid multileg type {body.get('type')!r} for {n_legs} legs")
    otype = parse_order_type(body.get("order_type", "RL"))
    if otype not in (OrderType.LIMIT, OrderType.MARKET):
        raise SimError(400, "Multileg order_type must be RL or RL-MKT")
    return otype


# ---------------------------------------------------------------------------------------------------------
# Books: model -> wire rows
# ---------------------------------------------------------------------------------------------------------


def stamp(at: dt.datetime) -> str:
    return at.astimezone(IST).strftime("%Y-%m-%d %H:%M:%S")


def scrip_fields(row: MasterRow) -> dict[str, Any]:
    inst = row.instrument
    return {
        "scrip_token": int(wire.scrip_token(row)),
        "symbol": row.trading_symbol or inst.symbol,
        "series": "EQ" if not inst.is_derivative else "",
        "expiry_date": inst.expiry.isoformat() if inst.expiry else "",
        "strike_price": _money(inst.strike),
        "option_type": inst.option_type.value if inst.option_type else "  ",
    }


def book_row(acct: SimAccount, so: SimOrder, o: Order) -> dict[str, Any]:
    """An order-book row with the field names of the real one logged by the SDK."""
    otype = wire.ORDER_TYPE_TO_ODIN[o.order_type]
    row: dict[str, Any] = {
        "client_id": acct.user.user_id,
        "order_id": so.multileg_order_id or so.odin_id,
        "exchange": so.exchange,
        **scrip_fields(so.row),
        "exchange_order_no": "0" if o.status is OrderStatus.REJECTED else f"1{so.engine_id}",
        "status": STATUS_OUT[o.status],
        "error_reason": o.reject_reason or "",
        "transaction_type": o.side.value,
        "product_type": so.product_type,
        "order_type": otype,
        "total_quantity": o.quantity,
        "pending_quantity": 0 if o.status.is_terminal else o.quantity - o.filled_quantity,
        "traded_quantity": o.filled_quantity,
        "disclosed_quantity": 0,
        "order_price": _money(o.price),
        "trigger_price": _money(o.trigger_price),
        # Not in the SDK's logged row; ODIN builds differ. The adapter accepts several spellings.
        "average_price": _money(o.average_price),
        "validity": o.validity.value,
        "validity_days": 0,
        "market_lot": so.row.instrument.lot_size or 1,
        "order_timestamp": stamp(so.placed_at),
        "exchange_timestamp": stamp(o.updated_at or so.modified_at),
        "is_amo_order": False,
        "order_identifier": so.tag,
    }
    if so.gateway_order_no is not None:
        row.update({
            "client_order_no": int(so.gateway_order_no[5:]),
            "gateway_order_no": so.gateway_order_no,
            "segment_id": SEGMENT_ID.get(so.exchange, 0),
            "book_type": "RL",
            "leg_indicator": so.leg_no,
            "order_modified_timestamp": stamp(o.updated_at or so.modified_at),
        })
    return row
