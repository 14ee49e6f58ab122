"""What a playbook's schedule will do next, as a person reads it: the next fire that will run, and the
fires before it its calendar will skip (a closed day, outside the session). ``runner serve``'s banner and
``runner status`` show this, not the raw next instant of the schedule: a Saturday fire of an NSE
playbook is armed (its skip is journaled at its instant) but it is not "the next fire"."""

from __future__ import annotations

import datetime as dt
from typing import Any, NamedTuple

from runner.daemon.calendar_gate import CalendarGate
from runner.daemon.loader import Entry
from runner.daemon.rules import format_local

LOOKAHEAD = 31  # closed instants looked past at most (a month of daily fires; fail-closed calendars stop)


class Skip(NamedTuple):
    at: dt.datetime
    reason: str


class Upcoming(NamedTuple):
    next_run: dt.datetime | None  # None: none within LOOKAHEAD instants (or the schedule ended)
    skips: tuple[Skip, ...]  # closed instants before ``next_run``, earliest first


def upcoming(entry: Entry, gate: CalendarGate, limit: int = LOOKAHEAD) -> Upcoming:
    """From ``entry.next_fire`` on: skip the instants its calendar closes, up to ``limit`` of them."""
    pb = entry.playbook
    when = entry.next_fire
    skips: list[Skip] = []
    while when is not None and len(skips) < limit:
        closed = gate.closed(pb.calendar, pb.timezone, when)
        if closed is None:
            return Upcoming(when, tuple(skips))
        skips.append(Skip(when, closed.reason))
        if closed.kind.fails_closed:  # no calendar data: every later day is closed too, say so once
            break
        when = entry.rule.next_after(when)
    return Upcoming(None, tuple(skips))


def upcoming_dict(up: Upcoming) -> dict[str, Any]:
    """For the status payload (JSON: ISO 8601 with the offset)."""
    return {
        "next_fire": up.next_run.isoformat() if up.next_run else None,
        "skips": [{"at": s.at.isoformat(), "reason": s.reason} for s in up.skips],
    }


def banner_line(entry: Entry, up: Upcoming) -> str:
    """One line per playbook for the ``runner serve`` banner, in the playbook's zone."""
    tz = entry.playbook.timezone
    line = f"{entry.name}: next fire {format_local(up.next_run, tz)}"
    if up.skips:
        first = up.skips[0]
        more = f" (+{len(up.skips) - 1} more)" if len(up.skips) > 1 else ""
        line += f"; skips {format_local(first.at, tz)}: {first.reason}{more}"
    return line
