"""Calendar gating of fires: closed days and times outside the day's sessions are not traded.

Fails closed: a day the calendar does not cover, or a calendar that cannot load, counts as closed.
Calendars are loaded once per exchange and cached; :meth:`CalendarGate.warm` loads them ahead of time
(from a worker thread) so no fire reads calendar files on the event loop.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Iterable
from typing import NamedTuple, Protocol
from zoneinfo import ZoneInfo


class Calendar(Protocol):
    def covers(self, day: dt.date) -> bool: ...

    def is_trading_day(self, day: dt.date) -> bool: ...


CalendarLoader = Callable[[str], Calendar]


def default_calendar_loader(overrides_dir: str | None = None) -> CalendarLoader:
    def load(exchange: str) -> Calendar:
        from runner.trading_calendars import load_calendar

        return load_calendar(exchange, overrides_dir=overrides_dir)

    return load


class ClosedKind(enum.StrEnum):
    UNAVAILABLE = "unavailable"  # the calendar would not load: fail closed
    FAILED = "failed"  # the calendar raised for the day: fail closed
    NOT_COVERED = "not_covered"  # the day lies outside the calendar's data: fail closed
    HOLIDAY = "holiday"  # weekend or holiday
    OUTSIDE_SESSION = "outside_session"

    @property
    def fails_closed(self) -> bool:
        """Closed for want of calendar data rather than by the calendar: worth an error, not a warning."""
        return self in (ClosedKind.UNAVAILABLE, ClosedKind.FAILED, ClosedKind.NOT_COVERED)


class Closed(NamedTuple):
    kind: ClosedKind
    reason: str


class CalendarGate:
    def __init__(self, loader: CalendarLoader) -> None:
        self._loader = loader
        self._cache: dict[str, Calendar | Exception] = {}

    @property
    def loader(self) -> CalendarLoader:
        return self._loader

    @loader.setter
    def loader(self, loader: CalendarLoader) -> None:
        self._loader = loader
        self._cache.clear()

    def calendar(self, exchange: str) -> Calendar | Exception:
        cached = self._cache.get(exchange)
        if cached is None:
            try:
                cached = self._loader(exchange)
            except Exception as exc:  # missing/broken calendar data: fail closed on every fire
                cached = exc
            self._cache[exchange] = cached
        return cached

    def missing(self, exchanges: Iterable[str | None]) -> bool:
        """Whether any of these calendars is not loaded yet."""
        return any(e is not None and e not in self._cache for e in exchanges)

    def warm(self, exchanges: Iterable[str | None]) -> None:
        """Load these calendars now (call from a worker thread: it reads files)."""
        for exchange in exchanges:
            if exchange is not None:
                self.calendar(exchange)

    def closed(self, exchange: str | None, timezone: str, instant: dt.datetime) -> Closed | None:
        """Why ``exchange``'s calendar forbids trading at ``instant`` (None: open, or no calendar)."""
        if exchange is None:
            return None
        tz = ZoneInfo(timezone)
        day = instant.astimezone(tz).date()
        cal = self.calendar(exchange)
        if isinstance(cal, Exception):
            why = f"calendar {exchange} unavailable ({cal}): not trading (fail closed)"
            return Closed(ClosedKind.UNAVAILABLE, why)
        try:
            covered = cal.covers(day)
            trading = covered and cal.is_trading_day(day)
        except Exception as exc:
            why = f"calendar {exchange} failed for {day} ({exc}): not trading (fail closed)"
            return Closed(ClosedKind.FAILED, why)
        if not covered:
            why = (
                f"calendar {exchange} does not cover {day}: not trading (fail closed); "
                f"add the year's calendar or an override file"
            )
            return Closed(ClosedKind.NOT_COVERED, why)
        if not trading:
            return Closed(ClosedKind.HOLIDAY, f"{exchange} closed on {day}")
        outside = outside_sessions(cal, exchange, instant, day, tz)
        return None if outside is None else Closed(ClosedKind.OUTSIDE_SESSION, outside)


def outside_sessions(
    cal: Calendar, name: str, instant: dt.datetime, day: dt.date, tz: ZoneInfo
) -> str | None:
    """Why ``instant`` lies outside the day's session (pre-open included), or None. Calendars without
    session data (only trading days) allow the whole day."""
    info = getattr(cal, "session_info", None)
    session = info(day) if info is not None else None
    if session is None:
        return None
    zone = getattr(cal, "tz", None) or tz
    local = instant.astimezone(zone)
    start = session.pre_open[0] if session.pre_open else session.open
    if start <= local.time().replace(tzinfo=None) <= session.close:
        return None
    label = f" ({session.name})" if session.name else ""
    return (
        f"{name} session on {day}{label} is {start:%H:%M}-{session.close:%H:%M} {zone}: "
        f"{local:%H:%M} is outside it"
    )
