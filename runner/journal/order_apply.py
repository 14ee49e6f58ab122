"""Applying one broker report of an order to the journal inside a write transaction: the checked status
move (an illegal one is recorded as a transition row plus an error event, the stored status left alone),
the fill increment and the order's stored state. Used by :class:`runner.journal.store.Journal`.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from runner.journal.fastpath import INS_EVENT, INS_FILL, INS_TRANSITION, SEL_STATE, UPD_STATE
from runner.journal.tables import Resolution
from runner.model import IllegalTransition, Order, OrderStatus, check_transition


def apply_order(
    t: Any, order: Order, now: dt.datetime, resolution: Resolution
) -> IllegalTransition | None:
    """Apply one broker report inside transaction ``t``; returns the illegal transition, if any."""
    cid = order.client_order_id
    illegal: IllegalTransition | None = None
    row = t.execute(SEL_STATE, {"b_cid": cid}).fetchone()
    if row is None:  # not ours: only the call row
        return None
    stored, stored_boid, old_filled, old_avg_text, run_id, step_id = row
    old = OrderStatus(stored)
    new = order.status
    status = old
    if old is not new:
        try:
            check_transition(old, new)
            status = new
        except IllegalTransition as exc:
            illegal = exc
        t.execute(
            INS_TRANSITION,
            {
                "client_order_id": cid,
                "old_status": old.value,
                "new_status": new.value,
                "legal": illegal is None,
                "raw_status": order.raw_status,
                "at": now,
            },
        )
        if illegal is not None:
            t.execute(
                INS_EVENT,
                {
                    "run_id": run_id,
                    "step_id": step_id,
                    "client_order_id": cid,
                    "level": "error",
                    "kind": "illegal_transition",
                    "message": str(illegal),
                    "at": now,
                },
            )
    filled = old_filled
    avg = None if old_avg_text is None else Decimal(old_avg_text)
    if illegal is None and order.filled_quantity > old_filled:
        t.execute(
            INS_FILL,
            {
                "client_order_id": cid,
                "run_id": run_id,
                "quantity": order.filled_quantity - old_filled,
                "price": _fill_price(old_filled, avg, order.filled_quantity, order.average_price),
                "cumulative_quantity": order.filled_quantity,
                "at": order.updated_at or now,
            },
        )
        filled, avg = order.filled_quantity, order.average_price
    t.execute(
        UPD_STATE,
        {
            "b_cid": cid,
            "resolution": resolution.value,
            "status": status.value,
            "broker_order_id": stored_boid or order.broker_order_id or stored_boid,
            "filled_quantity": filled,
            "average_price": avg,
            "current_price": order.price,
            "current_type": order.order_type.value,
            "updated_at": now,
        },
    )
    return illegal


def _fill_price(
    old_qty: int, old_avg: Decimal | None, new_qty: int, new_avg: Decimal | None
) -> Decimal | None:
    """Price of the increment between two cumulative (qty, average) reports."""
    if new_avg is None:
        return None
    if old_qty == 0 or old_avg is None:
        return new_avg
    return (new_avg * new_qty - old_avg * old_qty) / (new_qty - old_qty)
