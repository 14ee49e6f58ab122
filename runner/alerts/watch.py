"""The daemon's alert checks, apart from events the code raises where they happen.

* a square-off not flat ``square_off_minutes_before_close`` before its calendar's session close: checked
  every :data:`TICK` seconds from that moment until the close, so the page comes before the close (a
  playbook with a ``square_off`` step and a ``calendar``; flat = today's run has its square-off steps
  SUCCEEDED);
* orders whose outcome is still unknown ``unknown_outcome_seconds`` after they were sent;
* calendar data ending within ``calendar_coverage_days`` trading days (once a day per calendar);
* the dead-man's switch: ``heartbeat.url`` requested every ``heartbeat.every`` (httpx).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Iterable
from typing import Any

from runner.alerts.config import AlertsConfig
from runner.alerts.events import Alert, AlertEvent
from runner.alerts.publish import publish

log = logging.getLogger("runner.alerts")

TICK = 15.0  # seconds between checks


def has_square_off(pb: Any) -> bool:
    return any(getattr(s, "kind", None) == "square_off" for s in pb.steps)


def square_off_deadline(
    cal: Any, now: dt.datetime, before: dt.timedelta
) -> tuple[dt.datetime, dt.datetime] | None:
    """(page from, session close) of today's session in the calendar's zone; None on a closed day."""
    tz = cal.tz
    day = now.astimezone(tz).date()
    session = cal.session(day) if cal.covers(day) else None
    if session is None:
        return None
    close = dt.datetime.combine(day, session[1], tzinfo=tz)
    return close - before, close


def square_off_flat(journal: Any, pb: Any, day: dt.date) -> tuple[bool, str | None, str]:
    """Whether today's runs of ``pb`` squared off: (flat, run id, what the journal says)."""
    from runner.journal.tables import StepOutcome

    ids = {s.id for s in pb.steps if getattr(s, "kind", None) == "square_off"}
    runs = [
        r for r in journal.list_runs(limit=20, playbook=pb.name)
        if r.scheduled_for.astimezone(_zone(pb.timezone)).date() == day
    ]  # fmt: skip
    if not runs:
        return False, None, "no run of it today"
    run = runs[0]
    steps = journal.steps_of(run.run_id)
    states = {i: steps[i] for i in ids if i in steps}
    if ids and all(s.outcome is StepOutcome.SUCCEEDED for s in states.values()) and len(states) == len(ids):
        return True, run.run_id, "flat"
    said = (
        "; ".join(
            f"{i}: {s.outcome.value}" + (f" ({s.message})" if s.message else "") for i, s in states.items()
        )
        or "square-off not started"
    )
    return False, run.run_id, said


def _zone(name: str) -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


class AlertWatch:
    """The daemon's periodic checks. ``entries`` gives the loaded playbooks, ``calendar`` a calendar by
    exchange (or an exception), ``quiet`` waits out the moments around an instant."""

    def __init__(
        self,
        config: AlertsConfig,
        journal: Any,
        clock: Any,
        entries: Callable[[], Iterable[Any]],
        calendar: Callable[[str], Any],
        quiet: Callable[[], Any] | None = None,
    ) -> None:
        self.config = config
        self.journal = journal
        self.clock = clock
        self.entries = entries
        self.calendar = calendar
        self.quiet = quiet
        self._paged: set[tuple[str, dt.date]] = set()  # (playbook, day) square-off pages sent
        self._unknown: set[str] = set()  # client ids already reported
        self._coverage: set[tuple[str, dt.date]] = set()
        self.heartbeats = 0
        self.heartbeat_failures = 0

    def check(self) -> list[Alert]:
        """One pass of every check (a worker thread: journal reads); returns what it published."""
        now = self.clock.now()
        out = self.check_square_offs(now) + self.check_unknown(now) + self.check_calendars(now)
        for alert in out:
            publish(alert)
        return out

    def check_square_offs(self, now: dt.datetime) -> list[Alert]:
        out = []
        before = self.config.thresholds.square_off_before_close
        for entry in self.entries():
            pb = entry.playbook
            if pb.calendar is None or not has_square_off(pb):
                continue
            cal = self.calendar(pb.calendar)
            if isinstance(cal, Exception):
                continue
            window = square_off_deadline(cal, now, before)
            if window is None or not (window[0] <= now < window[1]):
                continue
            day = window[1].date()
            if (pb.name, day) in self._paged:
                continue
            flat, run_id, said = square_off_flat(self.journal, pb, now.astimezone(_zone(pb.timezone)).date())
            if flat:
                continue
            self._paged.add((pb.name, day))
            close = window[1].strftime("%H:%M %Z")
            left = int((window[1] - now).total_seconds() // 60)
            out.append(
                Alert(AlertEvent.SQUARE_OFF_NOT_FLAT,
                      f"square-off not flat {left} min before the {pb.calendar} close at {close}: {said}",
                      at=now, playbook=pb.name, account=pb.account, run_id=run_id, owner=pb.owner,
                      key=f"notflat|{pb.name}|{day}")
            )  # fmt: skip
        return out

    def check_unknown(self, now: dt.datetime) -> list[Alert]:
        from runner.model import OrderStatus

        limit = self.config.thresholds.unknown_outcome
        out = []
        for intent in self.journal.intents(statuses=[OrderStatus.UNKNOWN]):
            since = intent.sent_at or intent.created_at
            if intent.client_order_id in self._unknown or now - since < limit:
                continue
            self._unknown.add(intent.client_order_id)
            run = self.journal.get_run(intent.run_id)
            secs = int((now - since).total_seconds())
            out.append(
                Alert(AlertEvent.OUTCOME_UNKNOWN,
                      f"order {intent.client_order_id}: outcome still unknown {secs}s after it was sent",
                      at=now, playbook=run.playbook if run else None, account=intent.account,
                      step=intent.step_id, run_id=intent.run_id, key=f"unknown|{intent.client_order_id}")
            )  # fmt: skip
        return out

    def check_calendars(self, now: dt.datetime) -> list[Alert]:
        out = []
        days = self.config.thresholds.calendar_coverage_days
        for name in sorted({e.playbook.calendar for e in self.entries() if e.playbook.calendar}):
            cal = self.calendar(name)
            if isinstance(cal, Exception):
                continue
            today = now.astimezone(cal.tz).date()
            if (name, today) in self._coverage:
                continue
            self._coverage.add((name, today))
            day, trading = today, 0
            while day < cal.valid_to and trading <= days:
                day += dt.timedelta(days=1)
                trading += cal.is_trading_day(day)
            if trading <= days:
                out.append(
                    Alert(AlertEvent.CALENDAR_COVERAGE,
                          f"calendar {name} data ends {cal.valid_to} ({trading} trading days left); "
                          "fires after it fail closed",
                          at=now, key=f"coverage|{name}|{today}")
                )  # fmt: skip
        return out

    async def run(self) -> None:
        while True:
            if self.quiet is not None:
                await self.quiet()
            try:
                await asyncio.to_thread(self.check)
            except Exception as exc:
                log.exception("alert checks failed")
                publish(Alert(AlertEvent.JOURNAL_UNREACHABLE, f"the daemon's alert checks failed: {exc}",
                              key="journal_unreachable"))  # fmt: skip
            await asyncio.sleep(TICK)

    async def heartbeat(self) -> None:
        """The dead-man's switch: a GET of ``heartbeat.url`` every ``heartbeat.every``; failures are logged
        and counted, never fatal (the monitor pages when the pings stop)."""
        import httpx

        url = self.config.heartbeat_url
        if url is None:
            return
        async with httpx.AsyncClient(timeout=10.0) as client:
            while True:
                if self.quiet is not None:
                    await self.quiet()
                try:
                    reply = await client.get(url)
                    reply.raise_for_status()
                    self.heartbeats += 1
                except Exception as exc:
                    self.heartbeat_failures += 1
                    log.warning("heartbeat ping failed: %s", type(exc).__name__)
                await asyncio.sleep(self.config.heartbeat_every.total_seconds())
