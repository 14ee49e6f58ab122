"""Every change asked of an order (modify in place, a chase step, a conversion to MARKET), with the price,
trigger, type and quantity it asked for and whether the broker showed it applied: the order's price
history, which ``broker_calls`` only hints at (its request text is scrubbed and a retry repeats it).

Written by :meth:`runner.engine.gateway.Gateway.modify` once the change is read back; read by
:mod:`runner.views.run_report`.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from runner.journal.db import UTCDateTime
from runner.journal.tables import DecimalText
from runner.model import Modification, OrderType


class ChangeKind(enum.StrEnum):
    MODIFY = "modify"  # a modify step's change (price, trigger, quantity)
    CHASE = "chase"  # one chase step (numbered from 1 in ``chase_step``)
    TO_MARKET = "to_market"  # converted to a MARKET order (modify ``to_market`` or a chase's ``then_market``)


metadata = sa.MetaData()

order_changes = sa.Table(
    "order_changes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), nullable=False, index=True),
    sa.Column("client_order_id", sa.String(64), nullable=False),
    sa.Column("step_id", sa.String(64)),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("chase_step", sa.Integer),  # 1, 2, ... for ChangeKind.CHASE
    sa.Column("order_type", sa.String(8)),  # the type asked for; NULL: unchanged
    sa.Column("price", DecimalText()),
    sa.Column("trigger_price", DecimalText()),
    sa.Column("quantity", sa.Integer),
    sa.Column("applied", sa.Boolean, nullable=False),  # the read-back showed it (else: filled first, refused)
    sa.Column("at", UTCDateTime(), nullable=False),  # when it was sent
)


@dataclass(frozen=True, slots=True)
class OrderChange:
    client_order_id: str
    step_id: str | None
    kind: ChangeKind
    chase_step: int | None
    order_type: OrderType | None
    price: Decimal | None
    trigger_price: Decimal | None
    quantity: int | None
    applied: bool
    at: dt.datetime


def kind_of(change: Modification, chase_step: int | None) -> ChangeKind:
    if change.order_type is OrderType.MARKET:
        return ChangeKind.TO_MARKET
    return ChangeKind.CHASE if chase_step is not None else ChangeKind.MODIFY


def record_change(
    engine: Engine,
    run_id: str,
    client_order_id: str,
    change: Modification,
    *,
    step_id: str | None,
    chase_step: int | None,
    applied: bool,
    at: dt.datetime,
) -> None:
    with engine.begin() as conn:
        conn.execute(
            order_changes.insert().values(
                run_id=run_id,
                client_order_id=client_order_id,
                step_id=step_id,
                kind=kind_of(change, chase_step).value,
                chase_step=chase_step,
                order_type=change.order_type.value if change.order_type is not None else None,
                price=change.price,
                trigger_price=change.trigger_price,
                quantity=change.quantity,
                applied=applied,
                at=at,
            )
        )


def changes_of(engine: Engine, run_id: str) -> list[OrderChange]:
    """The run's changes, oldest first."""
    q = sa.select(order_changes).where(order_changes.c.run_id == run_id).order_by(order_changes.c.id)
    with engine.connect() as conn:
        return [
            OrderChange(
                client_order_id=r["client_order_id"],
                step_id=r["step_id"],
                kind=ChangeKind(r["kind"]),
                chase_step=r["chase_step"],
                order_type=OrderType(r["order_type"]) if r["order_type"] else None,
                price=r["price"],
                trigger_price=r["trigger_price"],
                quantity=r["quantity"],
                applied=bool(r["applied"]),
                at=r["at"],
            )
            for r in conn.execute(q).mappings()
        ]
