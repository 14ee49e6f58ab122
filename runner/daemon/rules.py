"""When a schedule fires: pure rules from a playbook's ``schedule`` to UTC instants.

Fire times are computed in the playbook's IANA zone from *wall-clock* candidates mapped to instants: an
ambiguous wall time (autumn fall-back) fires once, at its first occurrence; a wall time that does not
exist (spring-forward gap) fires once, when the gap ends. (APScheduler 3.x's CronTrigger fires the
fall-back hour twice, so it is only used as a zone-free cron field parser.) No I/O, no event loop.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterator
from zoneinfo import ZoneInfo

from runner import timefmt
from runner.playbook.models import Schedule, parse_duration, parse_time

CATCH_UP_MAX = 10_000  # slots listed per playbook in a catch-up report
_DOW = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}
_CRON_DOW = ["sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def localize(wall: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    """The UTC instant of a naive local wall time: first occurrence if ambiguous, gap end if missing."""
    first = wall.replace(tzinfo=tz, fold=0).astimezone(dt.UTC)
    if first.astimezone(tz).replace(tzinfo=None) == wall:
        return first
    # Inside a spring-forward gap: fold=0 reads it with the old offset (the later instant), fold=1 with
    # the new one (the earlier). The transition lies between them; find it to the second.
    lo = int(wall.replace(tzinfo=tz, fold=1).astimezone(dt.UTC).timestamp())
    hi = math.ceil(first.timestamp())
    after = first.astimezone(tz).utcoffset()
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if dt.datetime.fromtimestamp(mid, tz).utcoffset() == after:
            hi = mid
        else:
            lo = mid
    return dt.datetime.fromtimestamp(hi, dt.UTC)


class Rule:
    """Fire times of one schedule. Subclasses yield naive wall times >= ``start`` in order."""

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz

    def walls_from(self, start: dt.datetime) -> Iterator[dt.datetime]:
        raise NotImplementedError

    def next_after(self, after: dt.datetime) -> dt.datetime | None:
        """First fire instant strictly after ``after`` (aware), as aware UTC."""
        start = after.astimezone(self.tz).replace(tzinfo=None, microsecond=0)
        for wall in self.walls_from(start):
            instant = localize(wall, self.tz)
            if instant > after:
                return instant
        return None

    def between(self, since: dt.datetime, until: dt.datetime, limit: int = CATCH_UP_MAX) -> list[dt.datetime]:
        """Fire instants in ``(since, until]``, at most ``limit`` (the latest ones)."""
        out: list[dt.datetime] = []
        t = since
        while (nxt := self.next_after(t)) is not None and nxt <= until:
            out.append(nxt)
            t = nxt
            if len(out) > limit:
                out.pop(0)
        return out


def _dates(start: dt.date, days: frozenset[int] | None, horizon: int = 800) -> Iterator[dt.date]:
    for i in range(horizon):
        d = start + dt.timedelta(days=i)
        if days is None or d.weekday() in days:
            yield d


class DailyRule(Rule):
    def __init__(self, tz: ZoneInfo, at: dt.time, days: frozenset[int] | None) -> None:
        super().__init__(tz)
        self.at, self.days = at, days

    def walls_from(self, start: dt.datetime) -> Iterator[dt.datetime]:
        for d in _dates(start.date(), self.days):
            wall = dt.datetime.combine(d, self.at)
            if wall >= start:
                yield wall


class IntervalRule(Rule):
    """Every ``every`` from the window start to its end (inclusive); the grid restarts each day."""

    def __init__(
        self,
        tz: ZoneInfo,
        every: dt.timedelta,
        window: tuple[dt.time, dt.time] | None,
        days: frozenset[int] | None,
    ) -> None:
        super().__init__(tz)
        if every <= dt.timedelta(0):
            raise ValueError("every must be positive")
        if window is not None and window[1] <= window[0]:
            raise ValueError(f"between {window[0]:%H:%M}-{window[1]:%H:%M}: the end must be after the start")
        self.every, self.window, self.days = every, window, days

    def walls_from(self, start: dt.datetime) -> Iterator[dt.datetime]:
        for d in _dates(start.date(), self.days):
            if self.window is None:
                ws = dt.datetime.combine(d, dt.time())
                we = ws + dt.timedelta(days=1) - dt.timedelta(microseconds=1)
            else:
                ws, we = dt.datetime.combine(d, self.window[0]), dt.datetime.combine(d, self.window[1])
            if start > we:
                continue
            k = max(0, math.ceil((start - ws) / self.every))
            wall = ws + k * self.every
            while wall <= we:
                yield wall
                wall += self.every


class CronRule(Rule):
    """Standard 5-field crontab (0 or 7 = Sunday), evaluated on local wall time."""

    def __init__(self, tz: ZoneInfo, expr: str) -> None:
        super().__init__(tz)
        from apscheduler.triggers.cron import CronTrigger

        fields = expr.split()
        if len(fields) != 5:
            raise ValueError(f"cron {expr!r}: expected 5 fields (minute hour day month weekday)")
        fields[4] = _cron_weekdays(fields[4])
        # UTC here only because it has no DST: the trigger enumerates wall times, localize() maps them.
        self.trigger = CronTrigger(
            minute=fields[0],
            hour=fields[1],
            day=fields[2],
            month=fields[3],
            day_of_week=fields[4],
            timezone=dt.UTC,
        )

    def walls_from(self, start: dt.datetime) -> Iterator[dt.datetime]:
        now = start.replace(tzinfo=dt.UTC)
        while (t := self.trigger.get_next_fire_time(None, now)) is not None:
            yield t.replace(tzinfo=None)
            now = t + dt.timedelta(seconds=1)


def _cron_weekdays(text: str) -> str:
    """Crontab weekday numbers (0=Sun) to names: APScheduler 3.x numbers Monday as 0."""
    if not re.search(r"\d", text):
        return text
    days: set[int] = set()
    for term in text.split(","):
        base, _, step_text = term.partition("/")
        step = int(step_text) if step_text else 1
        if base == "*":
            lo, hi = 0, 6
        elif "-" in base:
            a, b = base.split("-")
            lo, hi = _cron_day(a), _cron_day(b)
        else:
            lo = hi = _cron_day(base)
            if step_text:
                hi = 6
        if hi < lo:
            raise ValueError(f"cron weekday range {base!r} runs backwards")
        days.update(range(lo, hi + 1, step))
    return ",".join(_CRON_DOW[d] for d in sorted({d % 7 for d in days}))


def _cron_day(token: str) -> int:
    token = token.strip().lower()
    if token.isdigit() and 0 <= int(token) <= 7:
        return int(token)
    if token[:3] in _CRON_DOW:
        return _CRON_DOW.index(token[:3])
    raise ValueError(f"cron weekday {token!r} is not 0-7 or a day name")


class OnceRule(Rule):
    def __init__(self, tz: ZoneInfo, when: dt.datetime) -> None:
        super().__init__(tz)
        self.instant = localize(when, tz) if when.tzinfo is None else when.astimezone(dt.UTC)

    def next_after(self, after: dt.datetime) -> dt.datetime | None:
        return self.instant if self.instant > after else None


def build_rule(schedule: Schedule, timezone: str) -> Rule:
    tz = ZoneInfo(timezone)
    days = frozenset(_DOW[d] for d in schedule.days) if schedule.days else None
    kinds = [k for k in ("daily", "cron", "every", "once") if getattr(schedule, k) is not None]
    if len(kinds) != 1:
        raise ValueError(f"schedule needs exactly one of daily, cron, every, once (got {kinds or 'none'})")
    if schedule.daily is not None:
        return DailyRule(tz, parse_time(schedule.daily), days)
    if schedule.cron is not None:
        return CronRule(tz, schedule.cron)
    if schedule.every is not None:
        window = None
        if schedule.between is not None:
            window = (parse_time(schedule.between[0]), parse_time(schedule.between[1]))
        return IntervalRule(tz, parse_duration(schedule.every), window, days)
    assert schedule.once is not None
    return OnceRule(tz, schedule.once)


def late_window(schedule: Schedule) -> dt.timedelta | None:
    """``None`` for ``late: skip``; the allowed lateness for ``late: run-within <duration>``."""
    if schedule.late == "skip":
        return None
    return parse_duration(schedule.late.split(None, 1)[1])


def daily_at(at: str, timezone: str) -> DailyRule:
    """Every day at ``HH:MM`` local time (e.g. an account's daily re-login)."""
    return DailyRule(ZoneInfo(timezone), parse_time(at), None)


def format_local(when: dt.datetime | None, timezone: str) -> str:
    """A daemon line's instant in the playbook's zone, zone named: :func:`runner.timefmt.when` (the one
    formatter of what a person reads), ``none`` when there is no next fire."""
    return "none" if when is None else timefmt.when(when, timezone)
