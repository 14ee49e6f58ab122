"""Which playbooks are due on a date, at which instants, and the orders each instant may send.

Fires come from the daemon's own rules (:mod:`runner.daemon.rules`) and calendar gate
(:mod:`runner.daemon.calendar_gate`), so ``runner check`` and ``runner serve`` agree on what is due.
A playbook without ``schedule`` is run by hand: it counts as due, its steps timed by their ``at:`` only.

How orders are counted at an instant (an upper bound: what the due steps *may* send at once): a step
runs at its ``at`` on the date (or at once when the fire comes later), else right after the step before
it, plus its ``after``; a ``wait`` step ends the count for that fire (what follows depends on fills).
``place`` is one order; a ``spread`` is one order where it goes native (``mode: native``, or ``auto`` on
a broker with native multileg), else one per leg, all at the same instant; ``cancel``, ``modify`` and
``square_off`` are not counted (their number depends on the book at the time).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from runner.daemon.calendar_gate import CalendarGate, ClosedKind
from runner.daemon.rules import build_rule, localize
from runner.playbook.models import InstrumentSpec, Playbook, SpreadStep, parse_duration, parse_time


@dataclass
class Due:
    path: str
    playbook: Playbook
    fires: list[dt.datetime]  # aware UTC; empty for a playbook run by hand
    outside_session: list[str] = field(default_factory=list)  # fires the calendar skips, and why


@dataclass
class NotDue:
    path: str
    playbook: Playbook
    reason: str
    fails_closed: bool = False  # the calendar could not say (no data for the date): an error


def _day_bounds(day: dt.date, tz: ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    start = localize(dt.datetime.combine(day, dt.time()), tz)
    end = localize(dt.datetime.combine(day + dt.timedelta(days=1), dt.time()), tz)
    return start - dt.timedelta(microseconds=1), end - dt.timedelta(microseconds=1)


def due_on(
    playbooks: Sequence[tuple[str, Playbook]], day: dt.date, gate: CalendarGate
) -> tuple[list[Due], list[NotDue]]:
    due: list[Due] = []
    not_due: list[NotDue] = []
    for path, pb in playbooks:
        tz = ZoneInfo(pb.timezone)
        since, until = _day_bounds(day, tz)
        if pb.schedule is None:
            noon = localize(dt.datetime.combine(day, dt.time(12)), tz)
            closed = gate.closed(pb.calendar, pb.timezone, noon)
            if closed is not None and closed.kind is not ClosedKind.OUTSIDE_SESSION:
                not_due.append(NotDue(path, pb, closed.reason, closed.kind.fails_closed))
            else:
                due.append(Due(path, pb, []))
            continue
        fires = build_rule(pb.schedule, pb.timezone).between(since, until)
        if not fires:
            not_due.append(NotDue(path, pb, f"its schedule has no fire on {day}"))
            continue
        kept: list[dt.datetime] = []
        outside: list[str] = []
        reasons: list[tuple[str, bool]] = []
        for fire in fires:
            closed = gate.closed(pb.calendar, pb.timezone, fire)
            if closed is None:
                kept.append(fire)
            elif closed.kind is ClosedKind.OUTSIDE_SESSION:
                outside.append(f"{fire.astimezone(tz):%H:%M:%S %Z}: {closed.reason}")
            else:
                reasons.append((closed.reason, closed.kind.fails_closed))
        if kept or outside:
            due.append(Due(path, pb, kept, outside))
        else:
            reason, fails = reasons[0]
            not_due.append(NotDue(path, pb, reason, fails))
    return due, not_due


@dataclass(frozen=True)
class Burst:
    """Orders one playbook's steps may send at one instant on one exchange segment."""

    instant: dt.datetime  # aware UTC
    segment: str
    orders: int
    source: str  # "path#step"


def order_bursts(item: Due, day: dt.date, native_multileg: bool) -> list[Burst]:
    pb = item.playbook
    tz = ZoneInfo(pb.timezone)
    out: list[Burst] = []
    if pb.schedule is not None and not item.fires:
        return []  # every fire falls outside the session: the daemon sends nothing
    fires: list[dt.datetime | None] = [*item.fires] or [None]  # None: run by hand, timed by `at:` only
    for fire in fires:
        t = fire
        for step in pb.steps:
            if step.at is not None:
                at = localize(dt.datetime.combine(day, parse_time(step.at)), tz)
                t = at if t is None else max(t, at)
            if step.after is not None and t is not None:
                t = t + parse_duration(step.after)
            if step.kind == "wait":
                break
            if t is None:
                continue
            if step.kind == "place":
                out.append(Burst(t, _segment(_exchange(pb, step.instrument)), 1, f"{item.path}#{step.id}"))
            elif isinstance(step, SpreadStep):
                native = step.mode == "native" or (step.mode == "auto" and native_multileg)
                if native:
                    first = _exchange(pb, step.legs[0].instrument)
                    out.append(Burst(t, _segment(first), 1, f"{item.path}#{step.id}"))
                else:
                    for leg in step.legs:
                        segment = _segment(_exchange(pb, leg.instrument))
                        out.append(Burst(t, segment, 1, f"{item.path}#{step.id}"))
    return out


def _exchange(pb: Playbook, ref: InstrumentSpec | str) -> str:
    """The exchange an order goes to; known for a rolling instrument too (only its contract waits)."""
    return (ref if isinstance(ref, InstrumentSpec) else pb.instruments[ref]).exchange


def _segment(exchange: str) -> str:
    from runner.brokers.ratelimit import segment_of

    return segment_of(exchange)


@dataclass(frozen=True)
class Instant:
    instant: dt.datetime
    segment: str | None  # None: the account's limiter is not per segment
    orders: int
    sources: tuple[str, ...]
    delay: float  # seconds after the instant the last of them leaves (the limiter's queue)


def instants(bursts: Sequence[Burst], per_second: float, burst: int, per_segment: bool) -> list[Instant]:
    """Bursts of one account summed per instant (and segment when the limiter is per segment). The
    limiter lets ``burst`` orders go at once and then one every 1/rate s, so the last of n leaves
    (n - burst) / rate seconds after the instant."""
    groups: dict[tuple[dt.datetime, str | None], list[Burst]] = {}
    for b in bursts:
        groups.setdefault((b.instant, b.segment if per_segment else None), []).append(b)
    out = []
    for (instant, segment), items in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        n = sum(b.orders for b in items)
        sources = tuple(dict.fromkeys(b.source for b in items))
        out.append(Instant(instant, segment, n, sources, max(0, n - burst) / per_second))
    return out
