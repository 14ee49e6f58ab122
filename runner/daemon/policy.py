"""Misfire and catch-up policy as pure functions: what to do with a fire, given the clock, the playbook's
``late`` policy, the calendar's verdict and the kill switch. No I/O; the daemon journals the decisions.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from runner.daemon.calendar_gate import Closed
from runner.engine.killswitch import ControlState, Mode
from runner.journal.fires import FireRow, FireState

ON_TIME = dt.timedelta(seconds=1)  # later than this after the instant, the ``late`` policy decides
CATCH_UP_WINDOW = dt.timedelta(days=7)
ALIVE_WITHIN = dt.timedelta(seconds=5)  # a daemon whose heartbeat is older is taken for gone


class Verdict(NamedTuple):
    """CLAIMED (run it), or SKIPPED / MISSED with the reason journaled for the fire."""

    state: FireState
    reason: str | None = None
    loud: bool = False  # log as an error: the calendar failed closed


def fire_verdict(
    closed: Closed | None,
    lateness: dt.timedelta,
    late: dt.timedelta | None,
    policy: str,
    control: ControlState,
) -> Verdict:
    """Whether a woken fire may run. ``late`` None means ``late: skip``; ``policy`` is its text."""
    if closed is not None:
        return Verdict(FireState.SKIPPED, closed.reason, closed.kind.fails_closed)
    if lateness > ON_TIME and (late is None or lateness > late):
        return Verdict(FireState.MISSED, f"{format_secs(lateness)} late (late: {policy})")
    if control.mode is Mode.HALT:
        return Verdict(FireState.SKIPPED, f"halted ({control.reason or 'no reason given'})")
    return Verdict(FireState.CLAIMED)


class CatchUpAction(enum.StrEnum):
    MISSED = "missed"
    SKIPPED = "skipped"
    RUNNING_NOW = "running now"
    INTERRUPTED = "interrupted"
    RELEASED = "released"  # claimed by a daemon that died before journaling anything: planned again


@dataclass
class CatchUpItem:
    playbook: str
    scheduled_for: dt.datetime
    action: CatchUpAction
    detail: str
    timezone: str | None = None  # the playbook's, for the report; None: UTC (said so)

    def line(self, tz: str | None = None) -> str:
        from runner.timefmt import when

        at = when(self.scheduled_for, tz or self.timezone)
        return f"  {self.playbook:<24} {at}  {self.action:<12} {self.detail}"


@dataclass(frozen=True)
class Missed:
    """A slot due while no daemon ran, to journal as ``state`` (MISSED, or SKIPPED when closed)."""

    scheduled_for: dt.datetime
    state: FireState
    outcome: str  # journaled with the fire
    detail: str  # shown in the catch-up report

    @property
    def action(self) -> CatchUpAction:
        return CatchUpAction.MISSED if self.state is FireState.MISSED else CatchUpAction.SKIPPED


@dataclass(frozen=True)
class CatchUpPlan:
    missed: tuple[Missed, ...] = ()
    run_now: dt.datetime | None = None  # the latest slot, still within ``late: run-within``
    run_now_detail: str = ""


def catch_up_since(
    last_fire: dt.datetime | None,
    last_heartbeat: dt.datetime | None,
    now: dt.datetime,
    window: dt.timedelta,
    late: dt.timedelta | None = None,
) -> dt.datetime | None:
    """Where a playbook's catch-up starts: its last journaled fire, else the daemon's last heartbeat
    (never seen: nothing to catch up), at most ``window`` back. A playbook never fired goes back at
    least its ``late`` window: one added while the daemon runs (its heartbeat is a second old) gets
    the slot it is still in time for, as one found at a restart does."""
    since = last_fire or last_heartbeat
    if last_fire is None and since is not None and late is not None:
        since = min(since, now - late)
    return None if since is None else max(since, now - window)


def plan_catch_up(
    slots: Sequence[dt.datetime],
    taken: Iterable[dt.datetime],
    now: dt.datetime,
    late: dt.timedelta | None,
    policy: str,
    closed: Callable[[dt.datetime], Closed | None],
) -> CatchUpPlan:
    """Slots due in the gap (oldest first) less those already journaled: the latest runs now if
    ``late`` allows, every other one is missed (or skipped, if the calendar was closed then)."""
    done = set(taken)
    open_slots = [t for t in slots if t not in done]
    if not open_slots:
        return CatchUpPlan()
    latest = open_slots[-1]
    runnable = late is not None and now - latest <= late
    missed = []
    for t in open_slots[:-1] if runnable else open_slots:
        shut = closed(t)
        if shut is None:
            outcome = f"due while the daemon was down (late: {policy})"
            missed.append(
                Missed(t, FireState.MISSED, outcome, f"{format_secs(now - t)} late, late: {policy}")
            )
        else:
            missed.append(Missed(t, FireState.SKIPPED, shut.reason, shut.reason))
    if not runnable:
        return CatchUpPlan(tuple(missed))
    detail = f"{format_secs(now - latest)} late, within late: {policy}"
    return CatchUpPlan(tuple(missed), latest, detail)


def live_daemons(daemons: Iterable[Mapping[str, Any]], owner: str, now: dt.datetime) -> set[str]:
    """Daemons still running (not stopped, heartbeat fresh), this one included."""
    alive = {
        d["daemon_id"] for d in daemons if d["stopped_at"] is None and now - d["heartbeat_at"] < ALIVE_WITHIN
    }
    alive.add(owner)
    return alive


def gone_at_start(daemons: Iterable[Mapping[str, Any]], owner: str, now: dt.datetime) -> set[str]:
    """At start: registered daemons that stopped, or whose heartbeat is ``ALIVE_WITHIN`` old by our
    clock. A claimer not registered yet is itself starting up (it registers after its catch-up)."""
    rows = list(daemons)
    return {d["daemon_id"] for d in rows} - live_daemons(rows, owner, now)


STALE_AFTER = 3 * ALIVE_WITHIN  # a running daemon takes a peer for gone after its heartbeat stood this long


class PeerWatch:
    """While running: which other daemons are gone, judged on this daemon's own clock. A peer is gone
    once stopped, or once its heartbeat value has stood unchanged for ``STALE_AFTER`` of our time, so
    neither clock skew between hosts nor one slow heartbeat write makes a live peer look dead (closing
    its runs would expose its in-flight orders to other runs' reconciles)."""

    def __init__(self, owner: str, stale_after: dt.timedelta = STALE_AFTER) -> None:
        self.owner = owner
        self.stale_after = stale_after
        self._seen: dict[str, tuple[Any, dt.datetime]] = {}  # peer -> (its heartbeat, first seen at)

    def gone(self, daemons: Iterable[Mapping[str, Any]], now: dt.datetime) -> set[str]:
        out: set[str] = set()
        for d in daemons:
            peer = d["daemon_id"]
            if peer == self.owner:
                continue
            if d["stopped_at"] is not None:
                out.add(peer)
                continue
            seen = self._seen.get(peer)
            if seen is None or seen[0] != d["heartbeat_at"]:
                self._seen[peer] = (d["heartbeat_at"], now)
            elif now - seen[1] >= self.stale_after:
                out.add(peer)
        return out

    def forgive(self, now: dt.datetime) -> None:
        """The journal refused writes for a while (our own heartbeat could not land): no peer's could
        either, so every peer's silence so far proves nothing; count from ``now`` again."""
        self._seen = {peer: (beat, now) for peer, (beat, _) in self._seen.items()}


def interrupted_item(row: FireRow, timezone: str | None = None) -> CatchUpItem:
    return CatchUpItem(
        row.playbook,
        row.scheduled_for,
        CatchUpAction.INTERRUPTED,
        f"was {row.state.value} when daemon {row.claimed_by} stopped; "
        f"fire marked unknown; its run is closed and the account's next run looks its unsettled orders "
        f"up (check `runner show {row.run_id}`)",
        timezone,
    )


def format_secs(delta: dt.timedelta) -> str:
    s = delta.total_seconds()
    return f"{s:.3f}s" if s < 60 else f"{s / 60:.1f}m" if s < 7200 else f"{s / 3600:.1f}h"
