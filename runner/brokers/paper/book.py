"""The paper market's book state: one account's orders, positions and fills, and their plain-data form.

Mutable state the matching engine (:mod:`runner.brokers.paper.matching`) advances, with the conversions
the paper broker persists it with and the wire simulators build on (``to_dict`` / ``from_dict``). No
matching rules here: those live in the engine.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from runner.model import (
    Fill,
    Instrument,
    Order,
    OrderStatus,
    OrderType,
    Position,
    Product,
    Side,
    Validity,
    check_transition,
    instrument_from_dict,
    instrument_to_dict,
)

_S = OrderStatus
_Q4 = Decimal("0.0001")


class RejectCode(enum.StrEnum):
    DUPLICATE = "duplicate"
    PRICE_BAND = "price_band"
    LOT_SIZE = "lot_size"
    FREEZE_QUANTITY = "freeze_quantity"
    TICK_SIZE = "tick_size"
    TRIGGER = "trigger"
    QUANTITY = "quantity"
    MULTILEG = "multileg"
    NOT_FOUND = "not_found"
    NOT_MODIFIABLE = "not_modifiable"


def money(value: Decimal) -> Decimal:
    """Four decimals at most, no trailing zeros, never exponent notation."""
    q = value.quantize(_Q4)
    return q.quantize(Decimal(1)) if q == q.to_integral_value() else q.normalize()


def _utc(second: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(second, dt.UTC)


# --- plain data helpers (persistence and wire simulators) ------------------------------------------


def _dec(v: str | None) -> Decimal | None:
    return None if v is None else Decimal(v)


def _str(v: Decimal | None) -> str | None:
    return None if v is None else str(v)


# --- mutable state ---------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class OrderState:
    seq: int
    broker_order_id: str
    client_order_id: str
    instrument: Instrument
    side: Side
    quantity: int
    order_type: OrderType
    product: Product
    validity: Validity
    price: Decimal | None
    trigger_price: Decimal | None
    tag: str | None
    placed_second: int
    expires_second: int | None
    status: OrderStatus = _S.PENDING_NEW
    filled_quantity: int = 0
    fill_value: Decimal = Decimal(0)
    fill_count: int = 0
    triggered: bool = False
    rested: bool = False  # looked at without filling: from now on a crossing fills at the limit
    last_fill_second: int | None = None
    cancel_second: int | None = None
    reject_code: RejectCode | None = None
    reject_reason: str | None = None
    group: str | None = None  # multileg client id
    updated_second: int = 0
    repeat: int = 0  # earlier orders with this client id (only without idempotent client ids)
    checked_second: int | None = None  # in memory only: already evaluated at this second, unchanged

    def set_status(self, new: OrderStatus) -> None:
        self.status = check_transition(self.status, new)

    def snapshot(self) -> Order:
        avg = money(self.fill_value / self.filled_quantity) if self.filled_quantity else None
        return Order(
            client_order_id=self.client_order_id,
            broker_order_id=self.broker_order_id,
            instrument=self.instrument,
            side=self.side,
            quantity=self.quantity,
            order_type=self.order_type,
            product=self.product,
            status=self.status,
            filled_quantity=self.filled_quantity,
            average_price=avg,
            price=self.price,
            trigger_price=self.trigger_price,
            validity=self.validity,
            tag=self.tag,
            reject_reason=self.reject_reason,
            updated_at=_utc(self.updated_second),
            raw_status=self.status.value,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "broker_order_id": self.broker_order_id,
            "client_order_id": self.client_order_id,
            "instrument": instrument_to_dict(self.instrument),
            "side": self.side.value,
            "quantity": self.quantity,
            "order_type": self.order_type.value,
            "product": self.product.value,
            "validity": self.validity.value,
            "price": _str(self.price),
            "trigger_price": _str(self.trigger_price),
            "tag": self.tag,
            "placed_second": self.placed_second,
            "expires_second": self.expires_second,
            "status": self.status.value,
            "filled_quantity": self.filled_quantity,
            "fill_value": str(self.fill_value),
            "fill_count": self.fill_count,
            "triggered": self.triggered,
            "rested": self.rested,
            "last_fill_second": self.last_fill_second,
            "cancel_second": self.cancel_second,
            "reject_code": self.reject_code.value if self.reject_code else None,
            "reject_reason": self.reject_reason,
            "group": self.group,
            "updated_second": self.updated_second,
            "repeat": self.repeat,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OrderState:
        return cls(
            seq=d["seq"],
            broker_order_id=d["broker_order_id"],
            client_order_id=d["client_order_id"],
            instrument=instrument_from_dict(d["instrument"]),
            side=Side(d["side"]),
            quantity=d["quantity"],
            order_type=OrderType(d["order_type"]),
            product=Product(d["product"]),
            validity=Validity(d["validity"]),
            price=_dec(d["price"]),
            trigger_price=_dec(d["trigger_price"]),
            tag=d["tag"],
            placed_second=d["placed_second"],
            expires_second=d["expires_second"],
            status=OrderStatus(d["status"]),
            filled_quantity=d["filled_quantity"],
            fill_value=Decimal(d["fill_value"]),
            fill_count=d["fill_count"],
            triggered=d["triggered"],
            rested=d["rested"],
            last_fill_second=d["last_fill_second"],
            cancel_second=d["cancel_second"],
            reject_code=RejectCode(d["reject_code"]) if d["reject_code"] else None,
            reject_reason=d["reject_reason"],
            group=d["group"],
            updated_second=d["updated_second"],
            repeat=d.get("repeat", 0),  # absent in books written before repeats existed
        )


@dataclass(slots=True, eq=False)
class PositionState:
    instrument: Instrument
    product: Product
    quantity: int = 0
    open_value: Decimal = Decimal(0)  # |quantity| * average price, exact
    realized: Decimal = Decimal(0)
    day: str = ""  # local trading date of the day counters
    day_buy: int = 0
    day_sell: int = 0

    @property
    def key(self) -> tuple[str, Product]:
        return (self.instrument.key, self.product)

    def apply(self, side: Side, qty: int, price: Decimal, day: str) -> None:
        if day != self.day:
            self.day, self.day_buy, self.day_sell = day, 0, 0
        if side is Side.BUY:
            self.day_buy += qty
        else:
            self.day_sell += qty
        sign = side.sign
        held = abs(self.quantity)
        if self.quantity == 0 or (self.quantity > 0) == (sign > 0):
            self.quantity += sign * qty
            self.open_value += price * qty
            return
        closing = min(qty, held)
        avg = self.open_value / held
        # Long closed by a sell gains (price - avg); short closed by a buy gains (avg - price).
        gain = (price - avg) * closing * (1 if self.quantity > 0 else -1)
        self.realized += gain * self.instrument.multiplier  # money: per price point of the whole unit
        self.open_value = Decimal(0) if closing == held else self.open_value - avg * closing
        self.quantity += sign * closing
        rest = qty - closing
        if rest:
            self.quantity += sign * rest
            self.open_value = price * rest

    def snapshot(self, today: str) -> Position:
        avg = money(self.open_value / abs(self.quantity)) if self.quantity else Decimal(0)
        same_day = self.day == today
        return Position(
            instrument=self.instrument,
            product=self.product,
            quantity=self.quantity,
            average_price=avg,
            realized_pnl=money(self.realized),
            day_buy_quantity=self.day_buy if same_day else 0,
            day_sell_quantity=self.day_sell if same_day else 0,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "instrument": instrument_to_dict(self.instrument),
            "product": self.product.value,
            "quantity": self.quantity,
            "open_value": str(self.open_value),
            "realized": str(self.realized),
            "day": self.day,
            "day_buy": self.day_buy,
            "day_sell": self.day_sell,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PositionState:
        return cls(
            instrument=instrument_from_dict(d["instrument"]),
            product=Product(d["product"]),
            quantity=d["quantity"],
            open_value=Decimal(d["open_value"]),
            realized=Decimal(d["realized"]),
            day=d["day"],
            day_buy=d["day_buy"],
            day_sell=d["day_sell"],
        )


def fill_to_dict(f: Fill) -> dict[str, Any]:
    return {
        "client_order_id": f.client_order_id,
        "broker_order_id": f.broker_order_id,
        "instrument": instrument_to_dict(f.instrument),
        "side": f.side.value,
        "quantity": f.quantity,
        "price": str(f.price),
        "at": f.at.isoformat(),
        "trade_id": f.trade_id,
    }


def fill_from_dict(d: Mapping[str, Any]) -> Fill:
    return Fill(
        client_order_id=d["client_order_id"],
        broker_order_id=d["broker_order_id"],
        instrument=instrument_from_dict(d["instrument"]),
        side=Side(d["side"]),
        quantity=d["quantity"],
        price=Decimal(d["price"]),
        at=dt.datetime.fromisoformat(d["at"]),
        trade_id=d["trade_id"],
    )


@dataclass(slots=True, eq=False)
class Book:
    """One account: orders, positions and fills. ``changed_*`` collect what a pass touched, for
    whoever persists the book (cleared by :meth:`drain`)."""

    account: str
    orders: dict[str, OrderState] = field(default_factory=dict)  # by broker id, in placement order
    by_client: dict[str, OrderState] = field(default_factory=dict)
    working: dict[str, OrderState] = field(default_factory=dict)
    positions: dict[tuple[str, Product], PositionState] = field(default_factory=dict)
    fills: list[Fill] = field(default_factory=list)
    next_seq: int = 1
    last_second: int | None = None
    changed_orders: dict[str, OrderState] = field(default_factory=dict)
    changed_positions: dict[tuple[str, Product], PositionState] = field(default_factory=dict)
    new_fills: list[Fill] = field(default_factory=list)

    def add_order(self, o: OrderState) -> None:
        """Insert or replace an order (also used when loading from storage)."""
        old = self.orders.get(o.broker_order_id)
        if old is not None and old.client_order_id != o.client_order_id:
            self.by_client.pop(old.client_order_id, None)
        self.orders[o.broker_order_id] = o
        latest = self.by_client.get(o.client_order_id)
        if latest is None or latest.seq <= o.seq:  # a repeated client id: the latest order answers
            self.by_client[o.client_order_id] = o
        if o.status.is_working or o.status is _S.PENDING_NEW:
            self.working[o.broker_order_id] = o
        else:
            self.working.pop(o.broker_order_id, None)
        self.next_seq = max(self.next_seq, o.seq + 1)

    def touch(self, o: OrderState, second: int) -> None:
        o.updated_second = second
        self.changed_orders[o.broker_order_id] = o
        if o.status.is_terminal:
            self.working.pop(o.broker_order_id, None)

    @property
    def dirty(self) -> bool:
        return bool(self.changed_orders or self.changed_positions or self.new_fills)

    def drain(self) -> tuple[list[OrderState], list[PositionState], list[Fill]]:
        out = (list(self.changed_orders.values()), list(self.changed_positions.values()), self.new_fills)
        self.changed_orders, self.changed_positions, self.new_fills = {}, {}, []
        return out
