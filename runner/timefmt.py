"""How a person reads an instant: in one zone (the playbook's, else the account's), the zone always named.

Every human-facing time goes through here, so ``runner run``, ``history``, ``show``, ``status``, ``halt``
and the daemon's catch-up report agree. JSON output keeps ISO 8601 with the offset instead.
Cheap to import (no engine, pydantic or sqlalchemy): ``terminal`` uses it for every ``--help``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = ZoneInfo("UTC")


def zone(name: str | dt.tzinfo | None) -> ZoneInfo:
    """The zone called ``name`` (UTC for none, e.g. runs journaled before zones were, or one this host
    lacks: a time shown in UTC and saying so beats a crash)."""
    if isinstance(name, ZoneInfo):
        return name
    if name is None or not isinstance(name, str):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def shared_zone(names: Iterable[str | None]) -> ZoneInfo:
    """The one zone all of ``names`` agree on (times not tied to one playbook: the kill switch, a
    daemon's heartbeat), else UTC, so a time is never shown in a zone it does not belong to."""
    found = {n for n in names if n}
    return zone(found.pop()) if len(found) == 1 else UTC


def when(at: dt.datetime | str | None, tz: str | dt.tzinfo | None, *, ms: bool = False) -> str:
    """``2026-12-07 15:19:00 IST``: ``at`` (an aware datetime or an ISO 8601 string) in ``tz``, zone named;
    ``-`` for none."""
    if at is None or at == "":
        return "-"
    if isinstance(at, str):
        at = dt.datetime.fromisoformat(at)
    if at.tzinfo is None:  # the journal stores UTC
        at = at.replace(tzinfo=dt.UTC)
    local = at.astimezone(zone(tz))
    frac = f".{local.microsecond // 1000:03d}" if ms else ""
    return f"{local:%Y-%m-%d %H:%M:%S}{frac} {local:%Z}"


def clock(at: dt.datetime | None, tz: str | dt.tzinfo | None) -> str:
    """``15:19:00.123``: the time of day only, for lines under a heading that names the zone (see
    :func:`label`)."""
    return "-" if at is None else at.astimezone(zone(tz)).strftime("%H:%M:%S.%f")[:-3]


def label(tz: str | dt.tzinfo | None, at: dt.datetime | None = None) -> str:
    """The zone's abbreviation at ``at`` (now if none; ``IST``, ``EST``/``EDT``), for headings."""
    z = zone(tz)
    return (at or dt.datetime.now(dt.UTC)).astimezone(z).strftime("%Z") or z.key


def countdown(seconds: float) -> str:
    """``1h02m03s`` / ``4m05s`` / ``6s``: a wait's remaining time."""
    s = max(0, int(seconds + 0.999))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s" if m else f"{sec}s"
