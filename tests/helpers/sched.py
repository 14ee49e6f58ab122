"""Shared pieces for the scheduler tests: playbook text, a recording executor, a data-driven calendar."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from runner.clock import Clock
from runner.daemon.scheduler import Daemon, DaemonOptions, Fire, FireResult
from runner.engine.killswitch import ControlStore
from runner.journal.db import make_engine
from runner.journal.fires import FireState, FireStore


def playbook_text(
    name: str, schedule: str, *, calendar: str | None = None, tz: str = "Asia/Kolkata", quantity: int = 1
) -> str:
    cal = f"calendar: {calendar}\n" if calendar else ""
    sched = "".join(f"  {line}\n" for line in schedule.strip().splitlines())
    return (
        f"version: 1\nname: {name}\ntimezone: {tz}\n{cal}schedule:\n{sched}"
        "steps:\n  - kind: place\n    id: buy\n    instrument: {exchange: NSE, symbol: RELIANCE}\n"
        f"    side: BUY\n    quantity: {quantity}\n"
    )


class RecordingExecutor:
    """Records each fire with the clock time it was started at; optionally blocks until released."""

    def __init__(self, clock: Clock, *, block: bool = False) -> None:
        self.clock = clock
        self.calls: list[tuple[Fire, dt.datetime]] = []
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        if not block:
            self.release.set()

    async def __call__(self, fire: Fire) -> FireResult:
        self.calls.append((fire, self.clock.now()))
        self.started.set()
        await self.release.wait()
        return FireResult(FireState.SUCCEEDED, "ok")


class DayCalendar:
    """A calendar from explicit data: covered years, holidays, weekends closed."""

    def __init__(self, years: set[int], holidays: set[dt.date]) -> None:
        self.years, self.holidays = years, holidays

    def covers(self, day: dt.date) -> bool:
        return day.year in self.years

    def is_trading_day(self, day: dt.date) -> bool:
        if not self.covers(day):
            raise LookupError(day)
        return day.weekday() < 5 and day not in self.holidays


def make_daemon(
    directory: Path,
    db: str | sa.Engine,
    clock: Clock,
    executor: RecordingExecutor,
    owner: str,
    calendar: DayCalendar | None = None,
    brokers: Any = None,
) -> Daemon:
    engine = make_engine(db) if isinstance(db, str) else db
    return Daemon(
        directory,
        fires=FireStore(engine, owner),
        control=ControlStore(engine),
        executor=executor,
        clock=clock,
        calendars=(lambda _exchange: calendar) if calendar else None,
        options=DaemonOptions(lead=0.05),
        brokers=brokers,
    )
