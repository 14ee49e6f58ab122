"""Every order placed (place steps, spread legs): facts resolved once, then small checks in a fixed list.

The checks run in the order of :data:`ORDER_CHECKS` for one order before the next order; diagnostics at
the same position keep that order (the report is sorted by position only)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runner.playbook.checks import instruments, limits, price_rules, quantities
from runner.playbook.checks.doc import CASH, DERIVATIVES, Doc, Path, instrument_label
from runner.playbook.checks.sink import Sink
from runner.playbook.checks.values import number


@dataclass
class Order:
    path: Path
    fields: dict[str, Any]
    what: str  # "a place step" / "a spread leg"
    otype: str
    spec: dict[str, Any] | None  # None: unknown instrument (already reported)
    price: Any  # resolved number, or None (absent, relative to LTP, or unresolvable)
    trigger: Any
    qty: Any  # quantity as written (resolved)
    lots: Any
    label: str  # the instrument as "NFO NIFTY 2026-12-29 24000 CE", "?" if unknown

    @property
    def lot(self) -> Any:
        return self.spec.get("lot_size") if self.spec is not None else None

    @property
    def quantity(self) -> Any:
        """Total quantity: lots x lot size when both are known, else the quantity as written."""
        lot = self.lot
        return self.lots * lot if self.lots is not None and lot is not None else self.qty


def resolve_order(doc: Doc, sink: Sink, path: Path, fields: dict[str, Any], what: str) -> Order:
    spec = instruments.resolve(doc, sink, (*path, "instrument"), fields["instrument"])
    get = fields.get
    return Order(
        path,
        fields,
        what,
        get("type", "MARKET"),
        spec,
        number(doc, sink, (*path, "price"), get("price"), whole=False),
        number(doc, sink, (*path, "trigger_price"), get("trigger_price"), whole=False),
        number(doc, sink, (*path, "quantity"), get("quantity"), whole=True),
        number(doc, sink, (*path, "lots"), get("lots"), whole=True),
        instrument_label(spec) if spec is not None else "?",
    )


def check_order_type(doc: Doc, sink: Sink, o: Order) -> None:
    """Which of price / trigger_price each order type needs or forbids."""
    path, order, otype = o.path, o.fields, o.otype
    has_price, has_trigger = "price" in order, "trigger_price" in order
    if otype in ("LIMIT", "SL") and not has_price:
        sink.add(path, f"a {otype} order needs a price", "add price: ... (or use type: MARKET)")
    if otype in ("SL", "SL-M") and not has_trigger:
        sink.add(path, f"an {otype} order needs a trigger_price", "add trigger_price: ...")
    if otype in ("MARKET", "SL-M") and has_price:
        relative = isinstance(order["price"], dict)
        sink.add(
            (*path, "price"),
            f"a {otype} order must not have a price"
            + (" (not even one relative to LTP)" if relative else ""),
            (
                "remove price, or use type: LIMIT"
                + (" to place a limit at the LTP offset" if relative else "")
                if otype == "MARKET"
                else "use type: SL for a limit stop-loss"
            ),
            key=True,
        )
    if otype in ("MARKET", "LIMIT") and has_trigger:
        sink.add(
            (*path, "trigger_price"),
            f"a {otype} order has no trigger_price",
            "remove it, or use type: SL / SL-M",
            key=True,
        )


def check_product(doc: Doc, sink: Sink, o: Order) -> None:
    """The product must suit the segment (delivery equity vs carry-forward derivatives)."""
    if o.spec is None:
        return
    exchange, product = o.spec.get("exchange"), o.fields.get("product")
    if exchange in DERIVATIVES and product == "CNC":
        sink.add((*o.path, "product"), f"CNC is delivery equity; {exchange} orders use NRML or MIS")
    if exchange in CASH and product == "NRML":
        sink.add((*o.path, "product"), f"NRML is for derivatives; {exchange} equity uses CNC or MIS")


OrderCheck = Callable[[Doc, Sink, Order], None]


ORDER_CHECKS: tuple[OrderCheck, ...] = (
    check_order_type,
    quantities.check_quantity_or_lots,
    price_rules.check_relative_stop,
    quantities.check_lot_size,
    check_product,
    price_rules.check_ticks,
    price_rules.check_stop,
    limits.check_order_limits,
    quantities.check_freeze,
    quantities.check_disclosed,
)


def check_orders(doc: Doc, sink: Sink) -> None:
    for path, fields, what in doc.orders():
        order = resolve_order(doc, sink, path, fields, what)
        for check in ORDER_CHECKS:
            check(doc, sink, order)
