"""Orders against the playbook's own limits: block (quantity, lots, notional, exchanges, instruments)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from runner.playbook.checks.doc import Doc
from runner.playbook.checks.sink import Sink

if TYPE_CHECKING:
    from runner.playbook.checks.orders import Order


def check_order_limits(doc: Doc, sink: Sink, o: Order) -> None:
    spec, lim = o.spec, doc.limits
    if spec is None or not lim:
        return
    path, qty, price, lot = o.path, o.quantity, o.price, o.lot
    if qty is not None and "max_quantity_per_order" in lim and qty > lim["max_quantity_per_order"]:
        sink.add(
            path, f"quantity {qty} exceeds limits.max_quantity_per_order ({lim['max_quantity_per_order']})"
        )
    if qty is not None and lot and "max_lots_per_order" in lim and qty // lot > lim["max_lots_per_order"]:
        sink.add(path, f"{qty // lot} lots exceed limits.max_lots_per_order ({lim['max_lots_per_order']})")
    if qty is not None and price is not None and "max_notional" in lim and qty * price > lim["max_notional"]:
        sink.add(path, f"notional {qty * price} exceeds limits.max_notional ({lim['max_notional']})")
    if "allowed_exchanges" in lim and spec["exchange"] not in lim["allowed_exchanges"]:
        sink.add((*path, "instrument"), f"exchange {spec['exchange']} is not in limits.allowed_exchanges")
    if lim.get("allowed_instruments") is not None and o.label not in doc.allowed_labels:
        sink.add((*path, "instrument"), f"{o.label} is not in limits.allowed_instruments")
