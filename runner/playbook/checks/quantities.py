"""Quantities and lots: one of the two, whole lots of the instrument, freeze quantity, disclosed part."""

from __future__ import annotations

from typing import TYPE_CHECKING

from runner.playbook.checks.doc import Doc
from runner.playbook.checks.instruments import is_rolling
from runner.playbook.checks.sink import Sink

if TYPE_CHECKING:
    from runner.playbook.checks.orders import Order


def check_quantity_or_lots(doc: Doc, sink: Sink, o: Order) -> None:
    if ("quantity" in o.fields) == ("lots" in o.fields):
        sink.add(
            o.path,
            f"{o.what} needs exactly one of quantity or lots",
            "e.g. lots: 1 (uses the instrument's lot_size) or quantity: 75",
        )


def check_lot_size(doc: Doc, sink: Sink, o: Order) -> None:
    if o.spec is None:
        return
    lot, qty = o.lot, o.qty
    if o.lots is not None:
        if lot is None and not is_rolling(o.spec):  # a rolling contract's lot size comes from the master
            sink.add(
                (*o.path, "lots"),
                f"lots needs the lot size of {o.label}",
                "add lot_size: to the instrument, or give quantity",
                key=True,
            )
    elif qty is not None and lot is not None and qty % lot:
        lower = max(lot, int(qty) // lot * lot)
        sink.add(
            (*o.path, "quantity"),
            f"quantity {qty} is not a multiple of the lot size {lot} of {o.label}",
            f"use quantity: {lower} or {lower + lot}, or lots: {max(1, int(qty) // lot)}",
        )


def check_freeze(doc: Doc, sink: Sink, o: Order) -> None:
    if o.spec is None:
        return
    qty, freeze = o.quantity, o.spec.get("freeze_quantity")
    if qty is not None and freeze and qty > freeze:
        sink.warn(
            o.path,
            f"quantity {qty} is above the freeze quantity {freeze} of {o.label}",
            "the exchange rejects it unless sliced",
        )


def check_disclosed(doc: Doc, sink: Sink, o: Order) -> None:
    if o.spec is None:
        return
    disclosed, qty = o.fields.get("disclosed_quantity"), o.quantity
    if isinstance(disclosed, int) and qty is not None and disclosed > qty:
        sink.add((*o.path, "disclosed_quantity"), "disclosed_quantity is larger than the quantity")
