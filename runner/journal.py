"""The journal: runs, steps, order intents, every broker call, status transitions, fills and events.

SQLAlchemy Core only (no dialect-specific SQL in queries) so PostgreSQL can replace SQLite. Two rules
carry the weight of "never send an order twice":

* an intent row is committed before the request leaves (:meth:`Journal.add_intent`);
* an order's status only moves along :data:`runner.model.TRANSITIONS`; an illegal move is recorded as an
  error row and the stored status is left alone (:meth:`Journal.record_order` raises after recording).

SQLite runs in WAL mode with ``synchronous=NORMAL``: a committed row survives a killed process (the
crash test kills with SIGKILL); only an OS crash / power loss can drop the last commits.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.types import TypeDecorator

from runner.model import (
    IllegalTransition,
    Instrument,
    OptionType,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    Product,
    Side,
    Validity,
    check_transition,
)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Aware datetimes stored as naive UTC, read back as aware UTC (portable across dialects)."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("journal times must be timezone-aware")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        return None if value is None else value.replace(tzinfo=dt.UTC)


class DecimalText(TypeDecorator[Decimal]):
    """Money as exact decimal text: no float anywhere, same on every dialect."""

    impl = sa.String(40)
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"money must be Decimal, got {type(value).__name__}")
        return format(value, "f")

    def process_result_value(self, value: str | None, dialect: Any) -> Decimal | None:
        return None if value is None else Decimal(value)


class RunStatus(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # some step failed
    REFUSED = "refused"  # a step was refused by pre-trade limits
    STOPPED = "stopped"  # a wait asked the run to stop; nothing failed


class StepOutcome(enum.StrEnum):
    RUNNING = "running"  # started, not finished: a crash leaves it so and a resume re-enters it
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"  # condition not met, late, or an earlier step failed
    REFUSED = "refused"  # pre-trade risk check said no; nothing was sent
    STOPPED = "stopped"  # wait timed out with on_timeout: stop
    TIMED_OUT = "timed_out"  # wait timed out with on_timeout: continue

    @property
    def is_final(self) -> bool:
        return self is not StepOutcome.RUNNING


class Resolution(enum.StrEnum):
    """What we know about whether an intent reached the broker."""

    PENDING = "pending"  # journaled; the request may be in flight or may never have left
    CONFIRMED = "confirmed"  # the broker has it (ack or lookup)
    ABSENT = "absent"  # a lookup by client id proved the broker never got it: safe to send again


class Purpose(enum.StrEnum):
    ENTRY = "entry"
    REPLACE = "replace"  # cancel + new order on brokers without in-place modify
    UNWIND = "unwind"
    SQUARE_OFF = "square_off"

    @property
    def reduces_risk(self) -> bool:
        return self in (Purpose.UNWIND, Purpose.SQUARE_OFF)


metadata = sa.MetaData()

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("playbook", sa.String(64), nullable=False, index=True),
    sa.Column("account", sa.String(64), nullable=False),
    sa.Column("mode", sa.String(16), nullable=False),
    sa.Column("scheduled_for", UTCDateTime(), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime()),
    sa.Column("starts", sa.Integer, nullable=False, default=1),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("message", sa.Text),
)

steps = sa.Table(
    "steps",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.run_id"), nullable=False),
    sa.Column("step_id", sa.String(64), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("message", sa.Text),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime()),
    sa.UniqueConstraint("run_id", "step_id", name="uq_steps_run_step"),
)

order_intents = sa.Table(
    "order_intents",
    metadata,
    sa.Column("client_order_id", sa.String(64), primary_key=True),
    sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.run_id"), nullable=False, index=True),
    sa.Column("account", sa.String(64), nullable=False, index=True),
    sa.Column("step_id", sa.String(64), nullable=False),
    sa.Column("slot", sa.String(200), nullable=False),  # step id, or step:instrument for square-offs
    sa.Column("leg", sa.Integer, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("purpose", sa.String(16), nullable=False),
    sa.Column("group_id", sa.String(64)),  # native multileg: the group's client id
    sa.Column("instrument", sa.Text, nullable=False),  # JSON
    sa.Column("instrument_key", sa.String(120), nullable=False),
    sa.Column("side", sa.String(4), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("order_type", sa.String(8), nullable=False),
    sa.Column("product", sa.String(8), nullable=False),
    sa.Column("validity", sa.String(8), nullable=False),
    sa.Column("price", DecimalText()),
    sa.Column("trigger_price", DecimalText()),
    sa.Column("disclosed_quantity", sa.Integer, nullable=False, default=0),
    sa.Column("tag", sa.String(40)),
    sa.Column("resolution", sa.String(16), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("broker_order_id", sa.String(64), index=True),
    sa.Column("filled_quantity", sa.Integer, nullable=False, default=0),
    sa.Column("average_price", DecimalText()),
    sa.Column("current_price", DecimalText()),  # after modifies
    sa.Column("current_type", sa.String(8)),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("run_id", "slot", "leg", "attempt", name="uq_intents_slot"),
)

broker_calls = sa.Table(
    "broker_calls",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), index=True),
    sa.Column("step_id", sa.String(64)),
    sa.Column("client_order_id", sa.String(64), index=True),
    sa.Column("method", sa.String(32), nullable=False),
    sa.Column("request", sa.Text),  # JSON, secrets redacted
    sa.Column("response", sa.Text),  # JSON, secrets redacted
    sa.Column("error", sa.String(40)),  # error class name
    sa.Column("error_message", sa.Text),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("duration_us", sa.Integer),
)

status_transitions = sa.Table(
    "status_transitions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("client_order_id", sa.String(64), nullable=False, index=True),
    sa.Column("old_status", sa.String(20), nullable=False),
    sa.Column("new_status", sa.String(20), nullable=False),
    sa.Column("legal", sa.Boolean, nullable=False),
    sa.Column("raw_status", sa.String(64)),
    sa.Column("at", UTCDateTime(), nullable=False),
)

fills = sa.Table(
    "fills",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("client_order_id", sa.String(64), nullable=False, index=True),
    sa.Column("run_id", sa.String(64), nullable=False, index=True),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("price", DecimalText()),
    sa.Column("cumulative_quantity", sa.Integer, nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), index=True),
    sa.Column("step_id", sa.String(64)),
    sa.Column("client_order_id", sa.String(64)),
    sa.Column("level", sa.String(8), nullable=False),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
)


# Hot-path statements built once: constructing Core statements per call costs more than SQLite does.
_INS_CALL = broker_calls.insert()
_INS_INTENT = order_intents.insert()
_INS_TRANSITION = status_transitions.insert()
_INS_FILL = fills.insert()
_INS_EVENT = events.insert()
_SEL_INTENT = sa.select(order_intents).where(order_intents.c.client_order_id == sa.bindparam("b_cid"))
_SEL_INTENT_STATE = sa.select(
    order_intents.c.status,
    order_intents.c.broker_order_id,
    order_intents.c.filled_quantity,
    order_intents.c.average_price,
    order_intents.c.run_id,
    order_intents.c.step_id,
).where(order_intents.c.client_order_id == sa.bindparam("b_cid"))
_UPD_INTENT = order_intents.update().where(order_intents.c.client_order_id == sa.bindparam("b_cid"))


class DuplicateIntent(Exception):
    """An intent with this client id (or slot) is already journaled."""


class JournalError(Exception):
    pass


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


def instrument_to_json(ins: Instrument) -> str:
    return json.dumps(
        {
            "exchange": ins.exchange,
            "symbol": ins.symbol,
            "expiry": ins.expiry.isoformat() if ins.expiry else None,
            "strike": format(ins.strike, "f") if ins.strike is not None else None,
            "option_type": ins.option_type.value if ins.option_type else None,
            "lot_size": ins.lot_size,
            "tick_size": format(ins.tick_size, "f") if ins.tick_size is not None else None,
            "freeze_quantity": ins.freeze_quantity,
        },
        sort_keys=True,
    )


def instrument_from_json(text: str) -> Instrument:
    d = json.loads(text)
    return Instrument(
        exchange=d["exchange"],
        symbol=d["symbol"],
        expiry=dt.date.fromisoformat(d["expiry"]) if d.get("expiry") else None,
        strike=Decimal(d["strike"]) if d.get("strike") is not None else None,
        option_type=OptionType(d["option_type"]) if d.get("option_type") else None,
        lot_size=d.get("lot_size"),
        tick_size=Decimal(d["tick_size"]) if d.get("tick_size") is not None else None,
        freeze_quantity=d.get("freeze_quantity"),
    )


def _intent_from_row(row: Any) -> Intent:
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
    )


def _run_from_row(row: Any, resumed: bool = False) -> RunRecord:
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
    )


def _step_from_row(row: Any) -> StepRecord:
    return StepRecord(
        run_id=row["run_id"],
        step_id=row["step_id"],
        position=row["position"],
        kind=row["kind"],
        outcome=StepOutcome(row["outcome"]),
        message=row["message"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


class Journal:
    """Synchronous, short transactions; every write method commits before it returns."""

    def __init__(self, url: str | None = None, *, engine: Engine | None = None) -> None:
        if engine is None:
            from runner.db import shared_engine

            engine = shared_engine(url)
        self.engine = engine
        metadata.create_all(engine)

    def close(self) -> None:
        """Engines are shared per URL in a process (runner.db); nothing to release per journal."""

    def _read(self) -> Connection:
        return self.engine.connect().execution_options(sqlite_begin="DEFERRED")

    # --- runs -------------------------------------------------------------------------------------

    def start_run(
        self,
        run_id: str,
        *,
        playbook: str,
        account: str,
        scheduled_for: dt.datetime,
        mode: str,
        now: dt.datetime,
    ) -> RunRecord:
        """Create the run, or reopen it (``resumed=True``) when this run id was started before."""
        with self.engine.begin() as c:
            row = c.execute(sa.select(runs).where(runs.c.run_id == run_id)).mappings().first()
            if row is None:
                try:
                    c.execute(
                        runs.insert().values(
                            run_id=run_id,
                            playbook=playbook,
                            account=account,
                            mode=mode,
                            scheduled_for=scheduled_for,
                            started_at=now,
                            updated_at=now,
                            starts=1,
                            status=RunStatus.RUNNING.value,
                        )
                    )
                except sa.exc.IntegrityError:
                    raise JournalError(f"run {run_id} was created concurrently") from None
                row = c.execute(sa.select(runs).where(runs.c.run_id == run_id)).mappings().one()
                return _run_from_row(row)
            if row["account"] != account:
                raise JournalError(f"run {run_id} belongs to account {row['account']!r}, not {account!r}")
            c.execute(
                runs.update().where(runs.c.run_id == run_id).values(starts=runs.c.starts + 1, updated_at=now)
            )
            row = c.execute(sa.select(runs).where(runs.c.run_id == run_id)).mappings().one()
            return _run_from_row(row, resumed=True)

    def finish_run(
        self, run_id: str, status: RunStatus, now: dt.datetime, message: str | None = None
    ) -> None:
        with self.engine.begin() as c:
            c.execute(
                runs.update()
                .where(runs.c.run_id == run_id)
                .values(status=status.value, finished_at=now, updated_at=now, message=message)
            )

    def reopen_run(self, run_id: str, now: dt.datetime) -> None:
        with self.engine.begin() as c:
            c.execute(
                runs.update()
                .where(runs.c.run_id == run_id)
                .values(status=RunStatus.RUNNING.value, finished_at=None, updated_at=now)
            )

    def get_run(self, run_id: str) -> RunRecord | None:
        with self._read() as c:
            row = c.execute(sa.select(runs).where(runs.c.run_id == run_id)).mappings().first()
        return None if row is None else _run_from_row(row)

    def find_runs(self, prefix: str) -> list[RunRecord]:
        with self._read() as c:
            rows = c.execute(sa.select(runs).where(runs.c.run_id.startswith(prefix, autoescape=True)))
            return [_run_from_row(r) for r in rows.mappings()]

    def list_runs(self, limit: int = 50, playbook: str | None = None) -> list[RunRecord]:
        q = sa.select(runs).order_by(runs.c.started_at.desc(), runs.c.run_id).limit(limit)
        if playbook:
            q = q.where(runs.c.playbook == playbook)
        with self._read() as c:
            return [_run_from_row(r) for r in c.execute(q).mappings()]

    def last_activity(self, run_id: str) -> dt.datetime | None:
        """The latest time anything of this run was journaled (rehearse resumes its clock from here)."""
        with self._read() as c:
            candidates = [
                c.execute(sa.select(sa.func.max(runs.c.updated_at)).where(runs.c.run_id == run_id)).scalar(),
                c.execute(
                    sa.select(sa.func.max(steps.c.started_at)).where(steps.c.run_id == run_id)
                ).scalar(),
                c.execute(
                    sa.select(sa.func.max(steps.c.finished_at)).where(steps.c.run_id == run_id)
                ).scalar(),
                c.execute(
                    sa.select(sa.func.max(order_intents.c.updated_at)).where(order_intents.c.run_id == run_id)
                ).scalar(),
                c.execute(
                    sa.select(sa.func.max(broker_calls.c.at)).where(broker_calls.c.run_id == run_id)
                ).scalar(),
            ]
        # func.max bypasses the type decorator on some dialects: normalise here.
        found: list[dt.datetime] = []
        for v in candidates:
            if isinstance(v, str):  # SQLite hands back text for an aggregate over a DateTime column
                v = dt.datetime.fromisoformat(v)
            if isinstance(v, dt.datetime):
                found.append(v if v.tzinfo else v.replace(tzinfo=dt.UTC))
        return max(found) if found else None

    # --- steps ------------------------------------------------------------------------------------

    def steps_of(self, run_id: str) -> dict[str, StepRecord]:
        with self._read() as c:
            rows = c.execute(sa.select(steps).where(steps.c.run_id == run_id).order_by(steps.c.position))
            return {r["step_id"]: _step_from_row(r) for r in rows.mappings()}

    def start_step(self, run_id: str, step_id: str, *, position: int, kind: str, now: dt.datetime) -> None:
        with self.engine.begin() as c:
            found = c.execute(
                sa.select(steps.c.id).where(steps.c.run_id == run_id, steps.c.step_id == step_id)
            ).first()
            if found is None:
                c.execute(
                    steps.insert().values(
                        run_id=run_id,
                        step_id=step_id,
                        position=position,
                        kind=kind,
                        outcome=StepOutcome.RUNNING.value,
                        started_at=now,
                    )
                )
            c.execute(runs.update().where(runs.c.run_id == run_id).values(updated_at=now))

    def finish_step(
        self, run_id: str, step_id: str, outcome: StepOutcome, now: dt.datetime, message: str | None = None
    ) -> None:
        with self.engine.begin() as c:
            c.execute(
                steps.update()
                .where(steps.c.run_id == run_id, steps.c.step_id == step_id)
                .values(outcome=outcome.value, message=message, finished_at=now)
            )

    # --- intents ----------------------------------------------------------------------------------

    def add_intent(self, intent: Intent) -> None:
        """Commit the intent. Raises :class:`DuplicateIntent` if its id or slot is already journaled."""
        self.add_intents([intent])

    def add_intents(self, intents: Sequence[Intent]) -> None:
        """Commit several intents atomically (the legs of a native spread: all or none)."""
        try:
            with self.engine.begin() as c:
                c.execute(_INS_INTENT, [_intent_values(i) for i in intents])
        except sa.exc.IntegrityError:
            raise DuplicateIntent(", ".join(i.client_order_id for i in intents)) from None

    def get_intent(self, client_order_id: str) -> Intent | None:
        with self._read() as c:
            row = c.execute(_SEL_INTENT, {"b_cid": client_order_id}).mappings().first()
        return None if row is None else _intent_from_row(row)

    def intents(
        self,
        *,
        run_id: str | None = None,
        step_id: str | None = None,
        slot: str | None = None,
        account: str | None = None,
        resolution: Iterable[Resolution] | None = None,
        statuses: Iterable[OrderStatus] | None = None,
    ) -> list[Intent]:
        q = sa.select(order_intents).order_by(order_intents.c.created_at, order_intents.c.client_order_id)
        if run_id is not None:
            q = q.where(order_intents.c.run_id == run_id)
        if step_id is not None:
            q = q.where(order_intents.c.step_id == step_id)
        if slot is not None:
            q = q.where(order_intents.c.slot == slot)
        if account is not None:
            q = q.where(order_intents.c.account == account)
        if resolution is not None:
            q = q.where(order_intents.c.resolution.in_([r.value for r in resolution]))
        if statuses is not None:
            q = q.where(order_intents.c.status.in_([s.value for s in statuses]))
        with self._read() as c:
            return [_intent_from_row(r) for r in c.execute(q).mappings()]

    def client_ids_of_playbook(self, playbook: str) -> set[str]:
        q = (
            sa.select(order_intents.c.client_order_id)
            .join(runs, runs.c.run_id == order_intents.c.run_id)
            .where(runs.c.playbook == playbook)
        )
        with self._read() as c:
            return {r[0] for r in c.execute(q)}

    def count_intents(self, run_id: str, *, exclude: Sequence[Purpose] = ()) -> int:
        q = sa.select(sa.func.count()).select_from(order_intents).where(order_intents.c.run_id == run_id)
        if exclude:
            q = q.where(order_intents.c.purpose.not_in([p.value for p in exclude]))
        with self._read() as c:
            return int(c.execute(q).scalar_one())

    def set_resolution(self, client_order_id: str, resolution: Resolution, now: dt.datetime) -> None:
        with self.engine.begin() as c:
            c.execute(
                order_intents.update()
                .where(order_intents.c.client_order_id == client_order_id)
                .values(resolution=resolution.value, updated_at=now)
            )

    def record_order(
        self, order: Order, now: dt.datetime, *, call: Mapping[str, Any] | None = None
    ) -> OrderStatus:
        """Apply the broker's view of one of our orders: status (checked), broker id, fills.

        ``call`` (a broker_calls row) is written in the same transaction. Returns the stored status.
        Raises :class:`IllegalTransition` after recording an illegal move (status left unchanged).
        """
        illegal: IllegalTransition | None = None
        with self.engine.begin() as c:
            if call is not None:
                c.execute(_INS_CALL, dict(call))
            row = c.execute(_SEL_INTENT_STATE, {"b_cid": order.client_order_id}).mappings().first()
            if row is None:
                return order.status
            old = OrderStatus(row["status"])
            new = order.status
            values: dict[str, Any] = {"resolution": Resolution.CONFIRMED.value, "updated_at": now}
            if order.broker_order_id and not row["broker_order_id"]:
                values["broker_order_id"] = order.broker_order_id
            if order.price is not None:
                values["current_price"] = order.price
            values["current_type"] = order.order_type.value
            if old is not new:
                try:
                    check_transition(old, new)
                    values["status"] = new.value
                    legal = True
                except IllegalTransition as exc:
                    illegal, legal = exc, False
                c.execute(
                    _INS_TRANSITION,
                    {
                        "client_order_id": order.client_order_id,
                        "old_status": old.value,
                        "new_status": new.value,
                        "legal": legal,
                        "raw_status": order.raw_status,
                        "at": now,
                    },
                )
                if not legal:
                    c.execute(
                        events.insert().values(
                            run_id=row["run_id"],
                            step_id=row["step_id"],
                            client_order_id=order.client_order_id,
                            level="error",
                            kind="illegal_transition",
                            message=str(illegal),
                            at=now,
                        )
                    )
            if illegal is None:
                old_filled, old_avg = row["filled_quantity"], row["average_price"]
                if order.filled_quantity > old_filled:
                    qty = order.filled_quantity - old_filled
                    price = _fill_price(old_filled, old_avg, order.filled_quantity, order.average_price)
                    c.execute(
                        _INS_FILL,
                        {
                            "client_order_id": order.client_order_id,
                            "run_id": row["run_id"],
                            "quantity": qty,
                            "price": price,
                            "cumulative_quantity": order.filled_quantity,
                            "at": order.updated_at or now,
                        },
                    )
                    values["filled_quantity"] = order.filled_quantity
                    values["average_price"] = order.average_price
            c.execute(_UPD_INTENT, {**values, "b_cid": order.client_order_id})
        if illegal is not None:
            raise illegal
        return new

    def mark_unknown(self, client_order_id: str, now: dt.datetime) -> None:
        """The request may have reached the broker: status UNKNOWN until a lookup says otherwise."""
        with self.engine.begin() as c:
            row = c.execute(
                sa.select(order_intents.c.status).where(order_intents.c.client_order_id == client_order_id)
            ).first()
            if row is None or OrderStatus(row[0]).is_terminal:
                return
            old = OrderStatus(row[0])
            if old is not OrderStatus.UNKNOWN:
                c.execute(
                    status_transitions.insert().values(
                        client_order_id=client_order_id,
                        old_status=old.value,
                        new_status=OrderStatus.UNKNOWN.value,
                        legal=True,
                        at=now,
                    )
                )
            c.execute(
                order_intents.update()
                .where(order_intents.c.client_order_id == client_order_id)
                .values(status=OrderStatus.UNKNOWN.value, updated_at=now)
            )

    # --- calls, events, reads for history/show ------------------------------------------------------

    def record_call(self, call: Mapping[str, Any]) -> None:
        with self.engine.begin() as c:
            c.execute(_INS_CALL, dict(call))

    def record_event(
        self,
        run_id: str | None,
        kind: str,
        message: str,
        now: dt.datetime,
        *,
        level: str = "info",
        step_id: str | None = None,
        client_order_id: str | None = None,
    ) -> None:
        with self.engine.begin() as c:
            c.execute(
                events.insert().values(
                    run_id=run_id,
                    step_id=step_id,
                    client_order_id=client_order_id,
                    level=level,
                    kind=kind,
                    message=message,
                    at=now,
                )
            )

    def rows(self, table: sa.Table, run_id: str) -> list[dict[str, Any]]:
        q = sa.select(table).where(table.c.run_id == run_id)
        if "id" in table.c:
            q = q.order_by(table.c.id)
        with self._read() as c:
            return [dict(r) for r in c.execute(q).mappings()]

    def transitions(self, client_order_id: str) -> list[dict[str, Any]]:
        q = (
            sa.select(status_transitions)
            .where(status_transitions.c.client_order_id == client_order_id)
            .order_by(status_transitions.c.id)
        )
        with self._read() as c:
            return [dict(r) for r in c.execute(q).mappings()]

    def calls(self, *, run_id: str | None = None, client_order_id: str | None = None) -> list[dict[str, Any]]:
        q = sa.select(broker_calls).order_by(broker_calls.c.id)
        if run_id is not None:
            q = q.where(broker_calls.c.run_id == run_id)
        if client_order_id is not None:
            q = q.where(broker_calls.c.client_order_id == client_order_id)
        with self._read() as c:
            return [dict(r) for r in c.execute(q).mappings()]


def _intent_values(intent: Intent) -> dict[str, Any]:
    r = intent.request
    return {
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
        "created_at": intent.created_at,
        "updated_at": intent.created_at,
        "current_price": r.price,
        "current_type": r.order_type.value,
    }


def _fill_price(
    old_qty: int, old_avg: Decimal | None, new_qty: int, new_avg: Decimal | None
) -> Decimal | None:
    """Price of the increment between two cumulative (qty, average) reports."""
    if new_avg is None:
        return None
    if old_qty == 0 or old_avg is None:
        return new_avg
    return (new_avg * new_qty - old_avg * old_qty) / (new_qty - old_qty)
