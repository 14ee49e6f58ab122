"""A playbook added while the daemon runs is caught up as at a restart: a slot that passed a minute ago,
within its ``late: run-within`` window, runs now; one beyond it does not (one code path for both)."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

from helpers.sched import DayCalendar, RecordingExecutor, make_daemon, playbook_text

from runner.clock import VirtualClock
from runner.daemon.policy import CatchUpAction
from runner.journal.fires import FireState

IST = ZoneInfo("Asia/Kolkata")
CAL = DayCalendar({2026}, set())
DUE = dt.datetime(2026, 11, 25, 9, 15, tzinfo=IST).astimezone(dt.UTC)


def _text(name: str, late: str) -> str:
    return playbook_text(name, f'daily: "09:15"\nlate: {late}', calendar="NSE")


async def test_playbook_added_a_minute_late_is_caught_up_like_at_a_restart(tmp_path: Path) -> None:
    pbdir = tmp_path / "playbooks"
    pbdir.mkdir()
    (pbdir / "other.yaml").write_text(_text("other", "skip").replace("09:15", "14:00"))
    db = f"sqlite:///{tmp_path / 'journal.db'}"
    clock = VirtualClock(DUE - dt.timedelta(hours=1))
    ex = RecordingExecutor(clock)
    daemon = make_daemon(pbdir, db, clock, ex, "d1", CAL)
    await daemon.prepare()
    daemon.store.heartbeat(clock.now(), daemon.status())
    clock._now = DUE + dt.timedelta(minutes=1)
    daemon.store.heartbeat(clock.now(), daemon.status())  # the daemon was alive all along
    (pbdir / "late.yaml").write_text(_text("late_add", "run-within 3m"))
    (pbdir / "stale.yaml").write_text(_text("stale_add", "run-within 30s"))
    await daemon.rescan()
    await asyncio.gather(*daemon._tasks)
    assert [(f.playbook.name, f.scheduled_for) for f, _ in ex.calls] == [("late_add", DUE)]
    by = {i.playbook: i.action for i in daemon.catch_up_report}
    assert by == {"late_add": CatchUpAction.RUNNING_NOW}  # stale_add: due before its window, not "missed"
    row = daemon.store.slot("late_add", DUE)
    assert row is not None and row.state is FireState.SUCCEEDED
    assert daemon.entries["late_add"].next_fire == DUE + dt.timedelta(days=1)
    # another scan adds nothing and catches nothing up again
    await daemon.rescan()
    assert len(ex.calls) == 1


def test_catch_up_since_reaches_back_the_late_window_for_a_playbook_never_fired() -> None:
    from runner.daemon.policy import catch_up_since

    now, week, late = DUE, dt.timedelta(days=7), dt.timedelta(minutes=3)
    beat = now - dt.timedelta(seconds=1)
    assert catch_up_since(None, beat, now, week, late) == now - late  # added while running
    assert catch_up_since(None, now - dt.timedelta(hours=1), now, week, late) == now - dt.timedelta(hours=1)
    fired = now - dt.timedelta(seconds=5)
    assert catch_up_since(fired, beat, now, week, late) == fired
    assert catch_up_since(None, None, now, week, late) is None  # a journal no daemon ever used
