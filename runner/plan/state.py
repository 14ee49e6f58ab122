"""The observed state a plan is computed from: live orders, non-flat positions and this run's journal
state. The plan file records its fingerprint so ``runner apply`` can refuse when the account drifted (see
:mod:`runner.plan.apply`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from runner.brokers.base import Broker
from runner.engine.gateway import is_live
from runner.engine.steps.square_off import position_key
from runner.journal.store import Journal
from runner.model import Order, Position


def _money(v: Decimal | None) -> str | None:
    return None if v is None else format(v.normalize(), "f")


def order_row(o: Order) -> dict[str, Any]:
    return {
        "client_order_id": o.client_order_id,
        "broker_order_id": o.broker_order_id,
        "instrument": o.instrument.key,
        "side": o.side.value,
        "quantity": o.quantity,
        "filled_quantity": o.filled_quantity,
        "status": o.status.value,
        "order_type": o.order_type.value,
        "product": o.product.value,
        "price": _money(o.price),
        "trigger_price": _money(o.trigger_price),
        "tag": o.tag,
    }


def order_key(o: Order | dict[str, Any]) -> str:
    cid, boid = (
        (o.client_order_id, o.broker_order_id)
        if isinstance(o, Order)
        else (
            o["client_order_id"],
            o["broker_order_id"],
        )
    )
    return cid or f"#{boid}"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the plan was computed from: live orders, non-flat positions, and this run's journal state."""

    open_orders: tuple[dict[str, Any], ...]
    positions: tuple[dict[str, Any], ...]
    run: dict[str, Any]

    @property
    def fingerprint(self) -> str:
        doc = {"open_orders": self.open_orders, "positions": self.positions, "run": self.run}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "open_orders": list(self.open_orders),
            "positions": list(self.positions),
            "run": self.run,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Snapshot:
        return cls(tuple(d["open_orders"]), tuple(d["positions"]), d["run"])


@dataclass(frozen=True, slots=True)
class Observed:
    snapshot: Snapshot
    open_orders: tuple[Order, ...]
    positions: tuple[Position, ...]


async def observe(broker: Broker, journal: Journal, run_id: str) -> Observed:
    """Read-only: the broker's open orders and positions, and what the journal holds for ``run_id``."""
    opens = sorted((o for o in await broker.open_orders() if is_live(o)), key=order_key)
    positions = sorted((p for p in await broker.positions() if p.quantity), key=position_key)
    steps = journal.steps_of(run_id)
    run = {
        "steps": {k: v.outcome.value for k, v in sorted(steps.items())},
        "intents": {i.client_order_id: i.status.value for i in journal.intents(run_id=run_id)},
    }
    snap = Snapshot(
        tuple(order_row(o) for o in opens),
        tuple(
            {"instrument": p.instrument.key, "product": p.product.value, "quantity": p.quantity}
            for p in positions
        ),
        run,
    )
    return Observed(snap, tuple(opens), tuple(positions))


def drift(planned: Snapshot, live: Snapshot) -> list[str]:
    """Human-readable differences between the state a plan was made from and the live state."""
    out: list[str] = []
    before = {order_key(o): o for o in planned.open_orders}
    after = {order_key(o): o for o in live.open_orders}
    for k in sorted(before.keys() | after.keys()):
        a, b = before.get(k), after.get(k)
        if a == b:
            continue
        if a is None:
            assert b is not None
            out.append(f"+ open order {k}: {_row_text(b)} (new since the plan)")
        elif b is None:
            out.append(f"- open order {k}: {_row_text(a)} (no longer open)")
        else:
            changes = ", ".join(f"{f} {a[f]} -> {b[f]}" for f in a if a[f] != b.get(f))
            out.append(f"~ open order {k}: {changes}")
    pos_a = {f"{p['instrument']} {p['product']}": p["quantity"] for p in planned.positions}
    pos_b = {f"{p['instrument']} {p['product']}": p["quantity"] for p in live.positions}
    for k in sorted(pos_a.keys() | pos_b.keys()):
        if pos_a.get(k, 0) != pos_b.get(k, 0):
            out.append(f"~ position {k}: {pos_a.get(k, 0)} -> {pos_b.get(k, 0)}")
    for part in ("steps", "intents"):
        a_, b_ = planned.run.get(part, {}), live.run.get(part, {})
        for k in sorted(a_.keys() | b_.keys()):
            if a_.get(k) != b_.get(k):
                what = "step" if part == "steps" else "order"
                out.append(f"~ journal: this run's {what} {k}: {a_.get(k, '-')} -> {b_.get(k, '-')}")
    return out


def _row_text(o: dict[str, Any]) -> str:
    price = f" @ {o['price']}" if o.get("price") else ""
    return f"{o['side']} {o['quantity']} {o['instrument']} {o['order_type']}{price} {o['status']}"


__all__ = ["Observed", "Snapshot", "drift", "observe", "order_key", "order_row"]
