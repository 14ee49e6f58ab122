"""Catch-up at start: journal the fires due while no daemon ran (policy in :mod:`runner.daemon.policy`).

Synchronous database and rule work: run :func:`catch_up` in a worker thread, then start the fires it
returns in ``run_now`` on the event loop.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from runner.daemon.calendar_gate import CalendarGate
from runner.daemon.loader import Entry
from runner.daemon.policy import (
    CatchUpAction,
    CatchUpItem,
    catch_up_since,
    gone_at_start,
    interrupted_item,
    plan_catch_up,
)
from runner.ids import run_id_in
from runner.journal.fires import Claim, FireState, FireStore, read_daemon_beats


@dataclass
class CatchUp:
    report: list[CatchUpItem] = field(default_factory=list)
    run_now: list[tuple[Entry, dt.datetime]] = field(default_factory=list)  # within ``late: run-within``


def mark_interrupted(
    store: FireStore,
    now: dt.datetime,
    gone: Callable[[list[dict[str, Any]]], set[str]] | None = None,
    *,
    release_unstarted: bool = False,
) -> list[CatchUpItem]:
    """Claimed/running fires of daemons that are gone (``gone``: from the daemons table; by default the
    start-up rule :func:`gone_at_start`), but for claims whose lease lapsed no later than their instant
    (provably unsent: a survivor takes them over). Both writes are conditional (still unfinished, same
    claimer; still RUNNING), so a fire or run that just finished keeps its end.

    * Nothing journaled for its run (the daemon died before arming it): nothing can have been sent.
      With ``release_unstarted`` (start-up, before the catch-up plan) the claim is given back and the
      slot planned again by its ``late`` policy; otherwise it is journaled MISSED, saying why.
    * Otherwise UNKNOWN, never re-run here. Its run, if still RUNNING (a crash mid-run, or while armed
      before the instant), is closed as FAILED: a RUNNING run's unsettled orders are left to that run
      itself, which will not start again, while a closed run's are looked up by the account's next run
      (never re-sent blindly)."""
    from runner.journal.claim_leases import lapsed_unsent
    from runner.journal.store import Journal

    daemons = read_daemon_beats(store.engine)
    dead = gone(daemons) if gone is not None else gone_at_start(daemons, store.owner, now)
    # A claim whose lease lapsed no later than its instant was provably never sent: it stays takeable
    # (a survivor re-arms it by its late policy), however long no survivor took it.
    rows = [
        r
        for r in store.unfinished()
        if r.claimed_by in dead and not (r.state is FireState.CLAIMED and lapsed_unsent(r))
    ]
    items: list[CatchUpItem] = []
    journal = Journal(engine=store.engine) if rows else None
    for r in rows:
        assert journal is not None
        why = f"daemon {r.claimed_by} stopped while {r.state}"
        if r.state is FireState.CLAIMED and journal.get_run(r.run_id) is None:
            unsent = f"claimed by daemon {r.claimed_by}, which stopped before journaling anything: not sent"
            if release_unstarted:
                if store.release(r.fire_id, r.claimed_by):
                    items.append(CatchUpItem(r.playbook, r.scheduled_for, CatchUpAction.RELEASED, unsent))
            elif store.mark_interrupted(r.fire_id, r.claimed_by, unsent, now, FireState.MISSED):
                items.append(CatchUpItem(r.playbook, r.scheduled_for, CatchUpAction.MISSED, unsent))
            continue
        if not store.mark_interrupted(r.fire_id, r.claimed_by, why, now):
            continue
        run = journal.get_run(r.run_id)
        items.append(interrupted_item(r, run.timezone if run is not None else None))
        note = f"interrupted: {why}; its unsettled orders are looked up by the account's next run"
        journal.close_interrupted_run(r.run_id, now, note)
    return items


def catch_up(
    store: FireStore,
    entries: Sequence[Entry],
    calendars: CalendarGate,
    now: dt.datetime,
    window: dt.timedelta,
    playbook_dir: str,
    *,
    at_start: bool = True,
) -> CatchUp:
    """Per playbook, the slots since its last journaled fire (or the directory's last heartbeat), at
    most ``window`` back: missed ones journaled (and reported), the latest returned to run if its
    ``late`` policy allows. At start for every playbook; while running (``at_start`` False) for those a
    reload added: one code path, so a playbook added late is caught up as at a restart."""
    # first: released slots replan (at start; the periodic sweep handles dead daemons' fires later)
    out = CatchUp(mark_interrupted(store, now, release_unstarted=True) if at_start else [])
    from runner.journal.store import Journal

    journal = Journal(engine=store.engine)  # a slot's run journaled under the legacy id scheme keeps it
    last = store.last_fire_times()
    beat = store.last_heartbeat(playbook_dir)
    for entry in entries:
        since = catch_up_since(last.get(entry.name), beat, now, window, entry.late)
        if since is None:
            continue
        slots = entry.rule.between(since, now)
        if not slots:
            continue
        taken = [r.scheduled_for for r in store.history(entry.name, len(slots))]
        closed = partial(calendars.closed, entry.playbook.calendar, entry.playbook.timezone)
        plan = plan_catch_up(slots, taken, now, entry.late, entry.late_policy, closed)
        claims = [
            Claim(
                entry.name,
                entry.version,
                m.scheduled_for,
                run_id_in(journal.has_run, entry.name, m.scheduled_for, ZoneInfo(entry.playbook.timezone)),
                m.state,
                m.outcome,
            )
            for m in plan.missed
        ]
        won = store.claim_many(claims, now)
        out.report += [
            CatchUpItem(entry.name, m.scheduled_for, m.action, m.detail, entry.playbook.timezone)
            for m, c in zip(plan.missed, claims, strict=True)
            if c.fire_id in won
        ]
        if plan.run_now is not None:
            out.report.append(
                CatchUpItem(
                    entry.name,
                    plan.run_now,
                    CatchUpAction.RUNNING_NOW,
                    plan.run_now_detail,
                    entry.playbook.timezone,
                )
            )
            out.run_now.append((entry, plan.run_now))
    out.report.sort(key=lambda i: (i.scheduled_for, i.playbook))
    return out
