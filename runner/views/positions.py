"""Positions and P&L per account and instrument, read through the adapters (positions + quotes).

A figure the broker does not report (``Position.average_price_reported`` / ``realized_pnl_reported``
false, e.g. ODIN) is computed from the day's order book (filled quantity at average price, average
cost) when the day's orders account for the whole net position, else shown "n/a" (``None``): never 0.
Unrealised P&L needs both an average price and an LTP; without either it is "n/a". Money is a price
difference x quantity x the instrument's price multiplier (commodity and currency contracts; 1 otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from runner.brokers.base import Broker, MarketData, Quote, unreadable_positions
from runner.model import Order, Position, Product


@dataclass(frozen=True, slots=True)
class PositionLine:
    account: str
    instrument: str
    product: Product
    quantity: int
    average_price: Decimal | None
    ltp: Decimal | None
    realised: Decimal | None
    unrealised: Decimal | None
    computed: tuple[str, ...] = ()  # figures computed from the day's orders, not reported by the broker

    def to_json(self) -> dict[str, Any]:
        def m(v: Decimal | None) -> str | None:
            return str(v) if v is not None else None

        return {
            "account": self.account,
            "instrument": self.instrument,
            "product": self.product.value,
            "quantity": self.quantity,
            "average_price": m(self.average_price),
            "ltp": m(self.ltp),
            "realised": m(self.realised),
            "unrealised": m(self.unrealised),
            "computed_from_orders": list(self.computed),
        }


@dataclass(frozen=True, slots=True)
class DayFigures:
    quantity: int  # net of the day's fills
    average_price: Decimal | None  # of the open quantity; None when flat
    realised: Decimal


def day_figures(orders: Sequence[Order]) -> DayFigures:
    """Average-cost figures of one instrument's filled orders, in book order; ``realised`` in price
    points x quantity (money once times the instrument's :attr:`~runner.model.Instrument.multiplier`)."""
    qty, cost, realised = 0, Decimal(0), Decimal(0)
    for o in orders:
        if o.filled_quantity <= 0 or o.average_price is None:
            continue
        signed = o.filled_quantity * o.side.sign
        if qty == 0 or (qty > 0) == (signed > 0):
            qty, cost = qty + signed, cost + o.average_price * signed
            continue
        closing = min(abs(signed), abs(qty))
        direction = 1 if qty > 0 else -1
        avg = cost / qty
        realised += (o.average_price - avg) * closing * direction
        cost -= avg * closing * direction
        qty -= closing * direction
        rest = abs(signed) - closing
        if rest:  # the order flipped the position: the rest opens the other way
            qty, cost = rest * -direction, o.average_price * rest * -direction
    return DayFigures(qty, (cost / qty) if qty else None, realised)


def line_of(account: str, p: Position, day: DayFigures | None, ltp: Decimal | None) -> PositionLine:
    computed: list[str] = []
    avg: Decimal | None = p.average_price if p.quantity else None
    if not p.average_price_reported and p.quantity:
        avg = None
        if day is not None and day.quantity == p.quantity and day.average_price is not None:
            avg = day.average_price  # the day's orders explain the whole position
            computed.append("average_price")
    realised: Decimal | None = p.realized_pnl
    if not p.realized_pnl_reported:
        realised = None
        if day is not None and day.quantity == p.quantity:  # no carried quantity closed today
            realised = day.realised * p.instrument.multiplier  # the day's figures are in price points
            computed.append("realised")
    unrealised = (
        (ltp - avg) * p.quantity * p.instrument.multiplier if ltp is not None and avg is not None else None
    )
    if not p.quantity:
        unrealised = Decimal(0)  # flat: nothing open, so nothing unrealised (a fact, not a default)
    return PositionLine(
        account=account,
        instrument=p.instrument.key,
        product=p.product,
        quantity=p.quantity,
        average_price=avg,
        ltp=ltp,
        realised=realised,
        unrealised=unrealised,
        computed=tuple(computed),
    )


async def read_positions(broker: Broker, account: str) -> tuple[list[PositionLine], list[str]]:
    """The account's positions with LTPs; and the rows the broker returned but could not be read."""
    positions = await broker.positions()
    problems = [f"{u.instrument}: {u.reason}" for u in unreadable_positions(positions)]
    needs_orders = any(not (p.average_price_reported and p.realized_pnl_reported) for p in positions)
    by_key: dict[tuple[str, Product], list[Order]] = {}
    if needs_orders:
        for o in await broker.orders():
            by_key.setdefault((o.instrument.key, o.product), []).append(o)
    quotes: Mapping[str, Quote] = {}
    if isinstance(broker, MarketData) and any(p.quantity for p in positions):
        quotes = await broker.quotes([p.instrument for p in positions if p.quantity])
    lines = []
    for p in positions:
        orders = by_key.get((p.instrument.key, p.product))
        day = day_figures(orders) if orders else None  # no order today: nothing to compute from
        q = quotes.get(p.instrument.key)
        lines.append(line_of(account, p, day, q.ltp if q is not None else None))
    return lines, problems
