"""The journal's schema: its tables, the enums stored in them and exact decimal money.

Runs, steps, order intents, every broker call, status transitions, fills and events (see
:mod:`runner.journal.store` for the rules they carry).
"""

from __future__ import annotations

import enum
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator

from runner.journal.db import ScrubbedText, UTCDateTime


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
    INTERRUPTED = "interrupted"  # its process was stopped (a signal) or died; its message says by whom


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

    PENDING = "pending"  # journaled; the request may be in flight or may never have left (set again,
    # with ``sent_at``, before every send: a death between a re-send and its reply leaves it PENDING)
    CONFIRMED = "confirmed"  # the broker has it (ack or lookup)
    ABSENT = "absent"  # the broker never got it: refused on our side, or not found by a lookup made well
    # after the last send (see runner.engine.gateway.Gateway.reconcile); may be sent again, as PENDING first


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
    sa.Column("message", ScrubbedText()),
    # the runner.liveness.ProcessIdentity token of the process executing (or that last executed) it;
    # NULL on runs journaled before runs had owners
    sa.Column("owner", sa.String(200)),
    sa.Column("timezone", sa.String(64)),  # the playbook's IANA zone, for showing its times; NULL: UTC
    sa.Column("master_sha", sa.String(64)),  # the instrument-master snapshot resolved against (issue 13)
    sa.Index("ix_runs_started_at", "started_at"),  # the status page's recent runs (migration 0013)
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
    sa.Column("message", ScrubbedText()),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime()),
    sa.Column("parallel_group", sa.String(64)),  # the ``parallel`` group of a member step; NULL: none
    sa.UniqueConstraint("run_id", "step_id", name="uq_steps_run_step"),
)

order_intents = sa.Table(
    "order_intents",
    metadata,
    sa.Column("client_order_id", sa.String(64), primary_key=True),
    # No index of its own: uq_intents_slot (run_id, ...) serves run_id lookups, one b-tree less per insert.
    sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.run_id"), nullable=False),
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
    # The last send, committed before the request leaves (first send, re-send, multileg, armed instant):
    # absence is measured from it, as updated_at moves with every write. NULL (older rows): created_at.
    sa.Column("sent_at", UTCDateTime()),
    sa.UniqueConstraint("run_id", "slot", "leg", "attempt", name="uq_intents_slot"),
    # /metrics and the status page count and list by these (migration 0006); small b-trees, one write each
    sa.Index("ix_intents_status_account", "status", "account"),
    sa.Index("ix_intents_resolution", "resolution"),
)

broker_calls = sa.Table(
    "broker_calls",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), index=True),
    sa.Column("step_id", sa.String(64)),
    sa.Column("client_order_id", sa.String(64), index=True),
    sa.Column("method", sa.String(32), nullable=False),
    sa.Column("request", ScrubbedText()),  # JSON, secrets redacted
    sa.Column("response", ScrubbedText()),  # JSON, secrets redacted
    sa.Column("error", sa.String(40)),  # error class name
    sa.Column("error_message", ScrubbedText()),
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
    sa.Column("message", ScrubbedText(), nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
)
