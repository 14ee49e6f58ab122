"""Arming: one APScheduler date job per playbook, waking it ``lead`` seconds before its next instant.

The lead grows with the number of fires due at the same instant, so claiming and preparing all of them
finishes before it (see :func:`wake_lead`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

from runner.clock import Clock
from runner.daemon.loader import Entry

MAX_LEAD = 30.0  # seconds


def wake_lead(lead: float, lead_per_fire: float, due_together: int) -> float:
    """Seconds before the instant to wake a fire due with ``due_together - 1`` others. Their count is
    rounded up to a power of two, so the fires of one instant wake in a few groups (each claims in one
    transaction) rather than one by one."""
    others = 0 if due_together <= 1 else 1 << (due_together - 1).bit_length()
    return min(MAX_LEAD, lead + lead_per_fire * others)


class Timers:
    """Date jobs on APScheduler's AsyncIOScheduler; jobs set before :meth:`start` are dropped."""

    def __init__(self) -> None:
        self._scheduler: Any = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        self._scheduler = AsyncIOScheduler(timezone=dt.UTC, event_loop=loop)
        self._scheduler.start()

    def set(
        self, job_id: str, when: dt.datetime, func: Callable[..., Awaitable[None]], *args: Any, **opts: Any
    ) -> None:
        if self._scheduler is None:
            return
        from apscheduler.triggers.date import DateTrigger

        self._scheduler.add_job(
            func,
            DateTrigger(when),
            args=args,
            id=job_id,
            replace_existing=True,
            misfire_grace_time=None,
            **opts,
        )

    def cancel(self, job_id: str) -> None:
        if self._scheduler is not None and self._scheduler.get_job(job_id) is not None:
            self._scheduler.remove_job(job_id)

    def shutdown(self) -> None:
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=False)


class Arming:
    """Keeps each entry's ``next_fire`` and its wake-up job; counts the fires due per instant."""

    def __init__(
        self,
        timers: Timers,
        clock: Clock,
        wake: Callable[[str, dt.datetime], Awaitable[None]],
        lead: Callable[[int], float],
        on_change: Callable[[], None],
    ) -> None:
        self.timers = timers
        self.clock = clock
        self.wake = wake  # job body: (playbook name, instant)
        self.lead = lead  # fires due together -> seconds of lead
        self.on_change = on_change
        self.due: dict[dt.datetime, int] = {}  # next fire instant -> entries due then (sizes the lead)

    def _count(self, when: dt.datetime | None, delta: int) -> int:
        if when is None:
            return 0
        n = self.due.get(when, 0) + delta
        if n > 0:
            self.due[when] = n
        else:
            self.due.pop(when, None)
        return n

    def arm(self, entry: Entry, after: dt.datetime | None = None) -> None:
        """Set ``entry.next_fire`` to its first instant after now, ``after`` and its last wake-up."""
        base = max(x for x in (self.clock.now(), after, entry.armed_for) if x is not None)
        self._count(entry.next_fire, -1)
        entry.next_fire = entry.rule.next_after(base)
        due_together = self._count(entry.next_fire, +1)
        self.on_change()
        if entry.next_fire is None:
            self.timers.cancel(entry.name)
            return
        wake = entry.next_fire - dt.timedelta(seconds=self.lead(due_together))
        self.timers.set(
            entry.name, wake, self.wake, entry.name, entry.next_fire, coalesce=True, max_instances=1000
        )

    def replaced(self, old: Entry) -> None:
        """``old`` was swapped for a new version (armed next): it no longer counts as due."""
        self._count(old.next_fire, -1)

    def disarm(self, entry: Entry) -> None:
        self._count(entry.next_fire, -1)
        self.timers.cancel(entry.name)
        self.on_change()
