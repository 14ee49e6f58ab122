"""Canonical order model shared by the engine, the journal and every broker adapter.

Money is ``Decimal``, quantities are ``int``, times are timezone-aware. Adapters translate to and
from these types at their edge; nothing past the edge sees a broker's own spelling.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any


class Side(enum.StrEnum):
    BUY = "BUY"
    SELL = "SELL"

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1


class OrderType(enum.StrEnum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"
    SL = "SL"  # stop-loss limit: trigger_price and price
    SL_M = "SL-M"  # stop-loss market: trigger_price only


class Product(enum.StrEnum):
    MIS = "MIS"  # intraday
    NRML = "NRML"  # carry-forward derivatives
    CNC = "CNC"  # delivery equity


class Validity(enum.StrEnum):
    DAY = "DAY"
    IOC = "IOC"


class OptionType(enum.StrEnum):
    CE = "CE"
    PE = "PE"


class OrderStatus(enum.StrEnum):
    PENDING_NEW = "pending_new"  # intent journaled / request sent, no ack yet
    OPEN = "open"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    PENDING_CANCEL = "pending_cancel"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"
    UNKNOWN = "unknown"  # outcome ambiguous: resolve by lookup, never by re-send

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL

    @property
    def is_working(self) -> bool:
        """Resting at the broker and able to fill or be cancelled."""
        return self in WORKING


TERMINAL = frozenset({OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.EXPIRED})
WORKING = frozenset({OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED, OrderStatus.PENDING_CANCEL})

_S = OrderStatus
# Explicit transition table. A status may always stay as it is (idempotent re-reads). UNKNOWN can
# resolve to anything, and anything non-terminal can become UNKNOWN (a timed-out request).
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    # A cancel may arrive before the exchange acknowledges the order (Blitz shows PendingNew ->
    # PendingCancel), so PENDING_NEW -> PENDING_CANCEL is legal.
    _S.PENDING_NEW: frozenset(
        {_S.OPEN, _S.PARTIALLY_FILLED, _S.FILLED, _S.REJECTED, _S.CANCELLED, _S.EXPIRED, _S.PENDING_CANCEL,
         _S.UNKNOWN}
    ),
    _S.OPEN: frozenset(
        {_S.PARTIALLY_FILLED, _S.FILLED, _S.PENDING_CANCEL, _S.CANCELLED, _S.EXPIRED, _S.REJECTED, _S.UNKNOWN}
    ),
    _S.PARTIALLY_FILLED: frozenset(
        {_S.FILLED, _S.PENDING_CANCEL, _S.CANCELLED, _S.EXPIRED, _S.UNKNOWN}
    ),
    # A cancel can lose the race to a fill; the broker may also refuse it and the order stays open.
    _S.PENDING_CANCEL: frozenset(
        {_S.CANCELLED, _S.FILLED, _S.PARTIALLY_FILLED, _S.OPEN, _S.EXPIRED, _S.UNKNOWN}
    ),
    _S.UNKNOWN: frozenset(set(OrderStatus) - {_S.UNKNOWN}),
    _S.FILLED: frozenset(),
    _S.CANCELLED: frozenset(),
    _S.REJECTED: frozenset(),
    _S.EXPIRED: frozenset(),
}


class IllegalTransition(ValueError):
    def __init__(self, old: OrderStatus, new: OrderStatus) -> None:
        super().__init__(f"illegal order status transition {old.value} -> {new.value}")
        self.old, self.new = old, new


def check_transition(old: OrderStatus, new: OrderStatus) -> OrderStatus:
    """Return ``new`` if ``old -> new`` is legal; raise :class:`IllegalTransition` otherwise."""
    if old is new or new in TRANSITIONS[old]:
        return new
    raise IllegalTransition(old, new)


@functools.lru_cache(maxsize=8192)
def _strike_text(strike: Decimal) -> str:
    return format(strike.normalize(), "f")


@dataclass(frozen=True, slots=True)
class Instrument:
    """A broker-neutral instrument: ``NFO NIFTY 2026-12-29 24500 CE`` or ``NSE RELIANCE``."""

    exchange: str
    symbol: str
    expiry: dt.date | None = None
    strike: Decimal | None = None
    option_type: OptionType | None = None
    lot_size: int | None = None  # known from the playbook or the instrument master
    tick_size: Decimal | None = None
    freeze_quantity: int | None = None
    # Money per 1.00 of price per unit of quantity, where it is not 1: currency and commodity contracts
    # quoted per unit of a larger lot (Kotak's lMultiplier x dGenNum/dGenDen x dPriceNum/dPriceDen).
    price_multiplier: Decimal | None = None

    @property
    def multiplier(self) -> Decimal:
        """What a price difference times quantity is multiplied by to be money (1 when not known)."""
        return self.price_multiplier if self.price_multiplier is not None else Decimal(1)

    @property
    def key(self) -> str:
        """Stable identity string, independent of lot/tick metadata."""
        # Hot: a 90,000-row master computes it once per row; concatenation and a cached strike text beat
        # join() and Decimal.normalize(), and the StrEnum member is its own text (no .value descriptor).
        key = self.exchange + " " + self.symbol
        if self.expiry:
            key += " " + self.expiry.isoformat()
        if self.strike is not None:
            key += " " + _strike_text(self.strike)
        if self.option_type:
            key += " " + self.option_type
        return key

    @property
    def is_derivative(self) -> bool:
        return self.expiry is not None

    def __str__(self) -> str:
        return self.key


def instrument_to_dict(ins: Instrument) -> dict[str, Any]:
    """Plain JSON-able data (journal, paper books); Decimals as plain strings, never floats."""
    return {
        "exchange": ins.exchange,
        "symbol": ins.symbol,
        "expiry": ins.expiry.isoformat() if ins.expiry else None,
        "strike": format(ins.strike, "f") if ins.strike is not None else None,
        "option_type": ins.option_type.value if ins.option_type else None,
        "lot_size": ins.lot_size,
        "tick_size": format(ins.tick_size, "f") if ins.tick_size is not None else None,
        "freeze_quantity": ins.freeze_quantity,
    } | ({"price_multiplier": format(ins.price_multiplier, "f")} if ins.price_multiplier is not None else {})


def instrument_from_dict(d: Mapping[str, Any]) -> Instrument:
    return Instrument(
        exchange=d["exchange"],
        symbol=d["symbol"],
        expiry=dt.date.fromisoformat(d["expiry"]) if d.get("expiry") else None,
        strike=Decimal(d["strike"]) if d.get("strike") is not None else None,
        option_type=OptionType(d["option_type"]) if d.get("option_type") else None,
        lot_size=d.get("lot_size"),
        tick_size=Decimal(d["tick_size"]) if d.get("tick_size") is not None else None,
        freeze_quantity=d.get("freeze_quantity"),
        price_multiplier=Decimal(d["price_multiplier"]) if d.get("price_multiplier") is not None else None,
    )


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """What we ask a broker to do. ``client_order_id`` is deterministic (see :mod:`runner.ids`)."""

    client_order_id: str
    instrument: Instrument
    side: Side
    quantity: int
    order_type: OrderType = OrderType.MARKET
    product: Product = Product.MIS
    validity: Validity = Validity.DAY
    price: Decimal | None = None
    trigger_price: Decimal | None = None
    disclosed_quantity: int = 0
    tag: str | None = None

    def __post_init__(self) -> None:
        if self.quantity <= 0:
            raise ValueError("quantity must be positive")
        if self.order_type in (OrderType.LIMIT, OrderType.SL) and self.price is None:
            raise ValueError(f"{self.order_type.value} order needs a price")
        if self.order_type in (OrderType.SL, OrderType.SL_M) and self.trigger_price is None:
            raise ValueError(f"{self.order_type.value} order needs a trigger_price")
        for name in ("price", "trigger_price"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, Decimal):
                raise TypeError(f"{name} must be Decimal, got {type(v).__name__}")


@dataclass(frozen=True, slots=True)
class Modification:
    """Fields to change on a working order; ``None`` means unchanged."""

    quantity: int | None = None
    price: Decimal | None = None
    trigger_price: Decimal | None = None
    order_type: OrderType | None = None  # e.g. LIMIT -> MARKET at the end of a chase


@dataclass(frozen=True, slots=True)
class Order:
    """The broker's view of an order, translated to the canonical model."""

    client_order_id: str
    broker_order_id: str | None
    instrument: Instrument
    side: Side
    quantity: int
    order_type: OrderType
    product: Product
    status: OrderStatus
    filled_quantity: int = 0
    average_price: Decimal | None = None
    price: Decimal | None = None
    trigger_price: Decimal | None = None
    validity: Validity = Validity.DAY
    tag: str | None = None
    reject_reason: str | None = None
    updated_at: dt.datetime | None = None
    raw_status: str | None = None  # the broker's own status string, for the journal

    @classmethod
    def from_request(
        cls,
        request: OrderRequest,
        status: OrderStatus,
        *,
        broker_order_id: str | None = None,
        **fields: object,
    ) -> Order:
        """The order as a request describes it, e.g. right after an acknowledgement."""
        return cls(
            client_order_id=request.client_order_id,
            broker_order_id=broker_order_id,
            instrument=request.instrument,
            side=request.side,
            quantity=request.quantity,
            order_type=request.order_type,
            product=request.product,
            status=status,
            price=request.price,
            trigger_price=request.trigger_price,
            validity=request.validity,
            tag=request.tag,
            **fields,  # type: ignore[arg-type]
        )

    @property
    def pending_quantity(self) -> int:
        return 0 if self.status.is_terminal else self.quantity - self.filled_quantity

    def evolve(self, **changes: object) -> Order:
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Fill:
    client_order_id: str
    broker_order_id: str | None
    instrument: Instrument
    side: Side
    quantity: int
    price: Decimal
    at: dt.datetime
    trade_id: str | None = None


@dataclass(frozen=True, slots=True)
class Position:
    """Net position per instrument and product. ``quantity`` > 0 long, < 0 short."""

    instrument: Instrument
    product: Product
    quantity: int
    average_price: Decimal = Decimal(0)
    realized_pnl: Decimal = Decimal(0)
    day_buy_quantity: int = 0
    day_sell_quantity: int = 0
    # False where the broker's row carries no such figure (ODIN: no average price or realised P&L): the
    # 0 above then means unknown, and `runner positions` computes it from the day's orders or says n/a
    average_price_reported: bool = True
    realized_pnl_reported: bool = True

    @property
    def is_flat(self) -> bool:
        return self.quantity == 0


@dataclass(frozen=True, slots=True)
class MultilegRequest:
    """A native spread: 2-4 legs sent as one order where the broker supports it."""

    client_order_id: str
    legs: tuple[OrderRequest, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not 2 <= len(self.legs) <= 4:
            raise ValueError("a multileg order has 2 to 4 legs")
