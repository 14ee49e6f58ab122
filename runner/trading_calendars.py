"""Exchange trading calendars: versioned data in ``runner/data/calendars/<EXCHANGE>.yaml``.

Fail closed: a date outside the data's ``valid_from..valid_to`` is not covered. ``covers()`` is False,
``is_trading_day()`` is False, ``session()`` is None and ``next_trading_day()`` raises
:class:`NotCovered` rather than guess; callers must refuse to trade and alert.

Users may override or extend a calendar with ``<EXCHANGE>.yaml`` files in a directory given as
``overrides_dir`` or ``$RUNNER_CALENDARS``::

    holidays: {2026-12-24: "desk closed"}          # add closed days
    open_days: [2026-01-15]                        # remove a holiday
    special_sessions: {2026-12-26: {name: x, open: "10:00", close: "13:00"}}
    valid_to: 2028-12-31                           # extend coverage (with your own holiday list)
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ENV_VAR = "RUNNER_CALENDARS"
DATA_DIR = Path(__file__).resolve().parent / "data" / "calendars"
EXCHANGES = ("NSE", "BSE", "MCX")
_TIME_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class NotCovered(LookupError):
    """The calendar has no data for this date: refuse to trade."""


class CalendarError(ValueError):
    """A calendar or override file is malformed."""


@dataclass(frozen=True, slots=True)
class Session:
    open: dt.time
    close: dt.time
    name: str | None = None
    pre_open: tuple[dt.time, dt.time] | None = None


@dataclass(frozen=True)
class Calendar:
    exchange: str
    version: str
    timezone: str
    valid_from: dt.date
    valid_to: dt.date
    regular: Session
    weekly_off: frozenset[int]  # date.weekday() numbers
    holidays: dict[dt.date, str] = field(default_factory=dict)
    special_sessions: dict[dt.date, Session] = field(default_factory=dict)
    provisional_from: dt.date | None = None
    close_us_standard_time: dt.time | None = None  # MCX: later close while the US is on standard time
    sources: tuple[str, ...] = ()

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def covers(self, day: dt.date) -> bool:
        return self.valid_from <= day <= self.valid_to

    def is_provisional(self, day: dt.date) -> bool:
        return self.provisional_from is not None and day >= self.provisional_from

    def session_info(self, day: dt.date) -> Session | None:
        """The day's session (special sessions included), or None when closed or not covered."""
        if not self.covers(day):
            return None
        if day in self.special_sessions:
            return self.special_sessions[day]
        if day in self.holidays or day.weekday() in self.weekly_off:
            return None
        if self.close_us_standard_time is not None and not _us_dst(day):
            return Session(
                self.regular.open, self.close_us_standard_time, self.regular.name, self.regular.pre_open
            )
        return self.regular

    def session(self, day: dt.date) -> tuple[dt.time, dt.time] | None:
        """(open, close) local times of the day's trading session, or None."""
        info = self.session_info(day)
        return None if info is None else (info.open, info.close)

    def is_trading_day(self, day: dt.date) -> bool:
        return self.session_info(day) is not None

    def next_trading_day(self, day: dt.date) -> dt.date:
        """The first trading day strictly after ``day``. Raises :class:`NotCovered` past the data."""
        current = day + dt.timedelta(days=1)
        while self.covers(current):
            if self.is_trading_day(current):
                return current
            current += dt.timedelta(days=1)
        raise NotCovered(f"{self.exchange} calendar {self.version} has no data after {self.valid_to}")

    def regular_bounds(self) -> tuple[dt.time, dt.time]:
        """Earliest start and latest end of a normal day (pre-open and late close included)."""
        start = self.regular.pre_open[0] if self.regular.pre_open else self.regular.open
        end = max(self.regular.close, self.close_us_standard_time or self.regular.close)
        return start, end


def _us_dst(day: dt.date) -> bool:
    noon = dt.datetime(day.year, day.month, day.day, 12, tzinfo=ZoneInfo("America/New_York"))
    return bool(noon.dst())


def _time(value: Any, where: str) -> dt.time:
    m = _TIME_RE.match(str(value))
    if not m:
        raise CalendarError(f'{where}: invalid time {value!r} (write "09:15")')
    return dt.time(int(m[1]), int(m[2]), int(m[3] or 0))


def _date(value: Any, where: str) -> dt.date:
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise CalendarError(f"{where}: invalid date {value!r} (write YYYY-MM-DD)") from None


def _session(body: Any, where: str) -> Session:
    if not isinstance(body, dict) or "open" not in body or "close" not in body:
        raise CalendarError(f"{where}: a session needs open and close times")
    pre = body.get("pre_open")
    pre_open = (_time(pre[0], where), _time(pre[1], where)) if pre else None
    return Session(_time(body["open"], where), _time(body["close"], where), body.get("name"), pre_open)


def _read(path: Path) -> dict[str, Any]:
    from runner.playbook.yamlload import load_yaml, read_text

    value = load_yaml(read_text(path), str(path)).value
    if not isinstance(value, dict):
        raise CalendarError(f"{path}: a calendar file is a mapping")
    return value


def _apply(base: dict[str, Any], override: dict[str, Any], where: str) -> dict[str, Any]:
    known = {
        "holidays",
        "open_days",
        "special_sessions",
        "valid_from",
        "valid_to",
        "version",
        "regular",
        "weekly_off",
        "provisional_from",
        "exchange",
        "timezone",
    }
    if unknown := set(override) - known:
        raise CalendarError(f"{where}: unknown keys {sorted(unknown)}")
    merged = dict(base)
    merged["holidays"] = {**base.get("holidays", {}), **(override.get("holidays") or {})}
    merged["special_sessions"] = {
        **base.get("special_sessions", {}),
        **(override.get("special_sessions") or {}),
    }
    for day in override.get("open_days") or []:
        merged["holidays"].pop(str(_date(day, where)), None)
        merged["holidays"].pop(_date(day, where), None)
    for key in ("valid_from", "valid_to", "regular", "weekly_off", "provisional_from"):
        if key in override:
            merged[key] = override[key]
    merged["version"] = f"{base.get('version')}+{override.get('version', 'local')}"
    return merged


def _build(raw: dict[str, Any], exchange: str, sources: tuple[str, ...]) -> Calendar:
    where = " + ".join(sources)
    try:
        weekly = frozenset(_WEEKDAYS.index(d) for d in raw.get("weekly_off", ["sat", "sun"]))
    except ValueError:
        raise CalendarError(f"{where}: weekly_off lists day names mon..sun") from None
    regular = _session(raw.get("regular"), f"{where}: regular")
    us = raw["regular"].get("close_us_standard_time") if isinstance(raw.get("regular"), dict) else None
    return Calendar(
        exchange=exchange,
        version=str(raw.get("version", "unversioned")),
        timezone=str(raw.get("timezone", "Asia/Kolkata")),
        valid_from=_date(raw["valid_from"], f"{where}: valid_from"),
        valid_to=_date(raw["valid_to"], f"{where}: valid_to"),
        regular=regular,
        weekly_off=weekly,
        holidays={_date(k, where): str(v) for k, v in (raw.get("holidays") or {}).items()},
        special_sessions={
            _date(k, where): _session(v, f"{where}: {k}")
            for k, v in (raw.get("special_sessions") or {}).items()
        },
        provisional_from=_date(raw["provisional_from"], where) if raw.get("provisional_from") else None,
        close_us_standard_time=_time(us, where) if us else None,
        sources=sources,
    )


def load_calendar(exchange: str, overrides_dir: str | os.PathLike[str] | None = None) -> Calendar:
    """The calendar for ``exchange`` (NSE, BSE, MCX), with user overrides applied if present."""
    exchange = exchange.upper()
    if overrides_dir is None:
        overrides_dir = os.environ.get(ENV_VAR) or None
    return _load(exchange, str(Path(overrides_dir).resolve()) if overrides_dir else None)


@cache
def _load(exchange: str, overrides_dir: str | None) -> Calendar:
    path = DATA_DIR / f"{exchange}.yaml"
    if exchange not in EXCHANGES or not path.is_file():
        raise CalendarError(f"no calendar for exchange {exchange!r} (known: {', '.join(EXCHANGES)})")
    raw = _read(path)
    sources: tuple[str, ...] = (str(path),)
    if overrides_dir:
        override = Path(overrides_dir) / f"{exchange}.yaml"
        if override.is_file():
            raw = _apply(raw, _read(override), str(override))
            sources += (str(override),)
    return _build(raw, exchange, sources)


def clear_cache() -> None:
    """Forget loaded calendars (tests, or after editing an override file)."""
    _load.cache_clear()
