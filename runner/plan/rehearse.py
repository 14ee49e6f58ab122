"""Rehearsal: a whole day's playbook on the paper broker in virtual time (a 15:15 square-off happens in
milliseconds). The paper book and the journal share one database: a private in-memory one by default,
or ``db_url`` to keep it (a rehearsal run restarted on the same file resumes, clock included).
Rehearsal run ids are derived from ``<playbook>.rehearse`` so they never collide with real runs.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from runner.accounts import Account
from runner.clock import VirtualClock
from runner.engine.calls import Tuning
from runner.engine.core import RunOptions, RunReport, execute
from runner.engine.events import Observer
from runner.engine.risk import RiskConfig
from runner.ids import run_id_in
from runner.journal.store import Journal
from runner.playbook.models import Playbook, parse_time

SESSION_OPEN = dt.time(9, 15)
REHEARSE_ACCOUNT = Account(
    name="rehearse", broker="paper", description="rehearsal paper book", options={"seed": "rehearse"}
)


def run_key(pb: Playbook) -> str:
    return f"{pb.name}.rehearse"


def slot_of(pb: Playbook, date: dt.date) -> dt.datetime:
    return dt.datetime.combine(date, dt.time(0), tzinfo=ZoneInfo(pb.timezone))


def rehearsal_run_id(pb: Playbook, date: dt.date, journal: Journal) -> str:
    return run_id_in(journal.has_run, run_key(pb), slot_of(pb, date), ZoneInfo(pb.timezone))


def day_start(pb: Playbook, date: dt.date, start: dt.time | None = None) -> dt.datetime:
    """The virtual clock starts at ``start``, else at the session open or the earliest ``at``."""
    if start is None:
        ats = [parse_time(s.at) for s in pb.steps if s.at is not None]
        start = min([SESSION_OPEN, *ats])
    return dt.datetime.combine(date, start, tzinfo=ZoneInfo(pb.timezone))


async def rehearse(
    pb: Playbook,
    date: dt.date,
    *,
    engine: sa.Engine | None = None,
    db_url: str | None = None,
    start: dt.time | None = None,
    account: Account = REHEARSE_ACCOUNT,
    observer: Observer | None = None,
    risk: RiskConfig | None = None,
    tuning: Tuning | None = None,
    broker_context: dict[str, Any] | None = None,
) -> RunReport:
    from runner.brokers.paper.broker import create
    from runner.journal.db import make_engine

    engine = engine or make_engine(db_url or "sqlite://")
    journal = Journal(engine=engine)
    begin = day_start(pb, date, start)
    last = journal.last_activity(rehearsal_run_id(pb, date, journal))
    clock = VirtualClock(max(begin, last) if last else begin)  # a resumed rehearsal never goes back in time
    broker = create(account, clock=clock, engine=engine, **(broker_context or {}))
    options = RunOptions(
        scheduled_for=slot_of(pb, date),
        mode="rehearse",
        risk=risk,
        tuning=tuning or Tuning(),
        run_key=run_key(pb),
    )
    try:
        return await execute(
            pb, broker, journal, clock, account=account.name, options=options, observer=observer
        )
    finally:
        await broker.close()
