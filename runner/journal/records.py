"""What the journal hands out (runs, steps, order intents) and how they map to and from table rows."""

from __future__ import annotations

import datetime as dt
import functools
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from runner.journal.tables import Purpose, Resolution, RunStatus, StepOutcome
from runner.model import (
    Instrument,
    OrderRequest,
    OrderStatus,
    OrderType,
    Product,
    Side,
    Validity,
    instrument_from_dict,
    instrument_to_dict,
)

# A RUNNING run without an owner was journaled by a release before runs had owners; its process cannot
# be asked. It counts as dead once nothing of it was written for this long: far beyond liveness's
# STALE_AFTER, since such a process may sit in a long wait step without writing anything.
OWNERLESS_STALE_AFTER = dt.timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class RunRecord:
    run_id: str
    playbook: str
    account: str
    mode: str
    scheduled_for: dt.datetime
    started_at: dt.datetime
    updated_at: dt.datetime
    finished_at: dt.datetime | None
    starts: int
    status: RunStatus
    message: str | None
    resumed: bool = False
    owner: str | None = None  # runner.liveness token of the process that executes (executed) it
    timezone: str | None = None  # the playbook's zone (None: not journaled, older runs)


@dataclass(frozen=True, slots=True)
class StepRecord:
    run_id: str
    step_id: str
    position: int
    kind: str
    outcome: StepOutcome
    message: str | None
    started_at: dt.datetime
    finished_at: dt.datetime | None
    parallel_group: str | None = None  # the ``parallel`` group it ran in


@dataclass(frozen=True, slots=True)
class Intent:
    """One order we mean to send (or sent), with everything needed to send it again under the same id."""

    client_order_id: str
    run_id: str
    account: str
    step_id: str
    slot: str
    leg: int
    attempt: int
    purpose: Purpose
    request: OrderRequest
    created_at: dt.datetime
    resolution: Resolution = Resolution.PENDING
    status: OrderStatus = OrderStatus.PENDING_NEW
    broker_order_id: str | None = None
    filled_quantity: int = 0
    average_price: Decimal | None = None
    group_id: str | None = None
    updated_at: dt.datetime | None = None
    sent_at: dt.datetime | None = None  # the last send (see order_intents.sent_at); None: created_at

    @property
    def last_sent(self) -> dt.datetime:
        """When the request last may have left: absence is measured from here."""
        return self.sent_at or self.created_at


@functools.lru_cache(maxsize=4096)  # instruments are frozen; a run places many orders on few of them
def instrument_to_json(ins: Instrument) -> str:
    return json.dumps(instrument_to_dict(ins), sort_keys=True)


def instrument_from_json(text: str) -> Instrument:
    return instrument_from_dict(json.loads(text))


def intent_from_row(row: Any) -> Intent:
    request = OrderRequest(
        client_order_id=row["client_order_id"],
        instrument=instrument_from_json(row["instrument"]),
        side=Side(row["side"]),
        quantity=row["quantity"],
        order_type=OrderType(row["order_type"]),
        product=Product(row["product"]),
        validity=Validity(row["validity"]),
        price=row["price"],
        trigger_price=row["trigger_price"],
        disclosed_quantity=row["disclosed_quantity"],
        tag=row["tag"],
    )
    return Intent(
        client_order_id=row["client_order_id"],
        run_id=row["run_id"],
        account=row["account"],
        step_id=row["step_id"],
        slot=row["slot"],
        leg=row["leg"],
        attempt=row["attempt"],
        purpose=Purpose(row["purpose"]),
        request=request,
        created_at=row["created_at"],
        resolution=Resolution(row["resolution"]),
        status=OrderStatus(row["status"]),
        broker_order_id=row["broker_order_id"],
        filled_quantity=row["filled_quantity"],
        average_price=row["average_price"],
        group_id=row["group_id"],
        updated_at=row["updated_at"],
        sent_at=row["sent_at"],
    )


def run_from_row(row: Any, resumed: bool = False) -> RunRecord:
    return RunRecord(
        run_id=row["run_id"],
        playbook=row["playbook"],
        account=row["account"],
        mode=row["mode"],
        scheduled_for=row["scheduled_for"],
        started_at=row["started_at"],
        updated_at=row["updated_at"],
        finished_at=row["finished_at"],
        starts=row["starts"],
        status=RunStatus(row["status"]),
        message=row["message"],
        resumed=resumed,
        owner=row.get("owner"),
        timezone=row["timezone"],
    )


def dead_holder(run: RunRecord) -> str:
    """Why a RUNNING run counts as dead, as a person reads it."""
    from runner.liveness import describe

    if run.owner is None:
        minutes = OWNERLESS_STALE_AFTER.total_seconds() / 60
        return f"no owner recorded and nothing written for {minutes:.0f} min"
    return f"its process ({describe(run.owner)}) is gone"


def step_from_row(row: Any) -> StepRecord:
    return StepRecord(
        run_id=row["run_id"],
        step_id=row["step_id"],
        position=row["position"],
        kind=row["kind"],
        outcome=StepOutcome(row["outcome"]),
        message=row["message"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        parallel_group=row.get("parallel_group"),
    )


def intent_values(intent: Intent) -> dict[str, Any]:
    r = intent.request
    return {  # every column: the compiled INSERT names them all
        "client_order_id": intent.client_order_id,
        "run_id": intent.run_id,
        "account": intent.account,
        "step_id": intent.step_id,
        "slot": intent.slot,
        "leg": intent.leg,
        "attempt": intent.attempt,
        "purpose": intent.purpose.value,
        "group_id": intent.group_id,
        "instrument": instrument_to_json(r.instrument),
        "instrument_key": r.instrument.key,
        "side": r.side.value,
        "quantity": r.quantity,
        "order_type": r.order_type.value,
        "product": r.product.value,
        "validity": r.validity.value,
        "price": r.price,
        "trigger_price": r.trigger_price,
        "disclosed_quantity": r.disclosed_quantity,
        "tag": r.tag,
        "resolution": intent.resolution.value,
        "status": intent.status.value,
        "broker_order_id": intent.broker_order_id,
        "filled_quantity": intent.filled_quantity,
        "average_price": intent.average_price,
        "created_at": intent.created_at,
        "updated_at": intent.created_at,
        "sent_at": intent.sent_at or intent.created_at,  # this insert is the commit before the first send
        "current_price": r.price,
        "current_type": r.order_type.value,
    }
