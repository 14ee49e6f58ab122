"""The daemon's fire path on a real SQLite journal, driven by a virtual clock: calendars (fail closed),
``late`` policies, restart catch-up, exactly-once across two daemons, hot reload, halt."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from helpers.sched import DayCalendar, RecordingExecutor, make_daemon, playbook_text

from runner.clock import VirtualClock
from runner.daemon.policy import STALE_AFTER
from runner.daemon.scheduler import Daemon
from runner.engine.killswitch import Mode
from runner.ids import run_id as make_run_id
from runner.journal.fires import Claim, FireState

IST = ZoneInfo("Asia/Kolkata")
HOLIDAY = dt.date(2026, 11, 24)  # a Tuesday, declared closed in the test calendar
CAL = DayCalendar({2026}, {HOLIDAY})


def ist(y: int, mo: int, d: int, h: int, mi: int, s: int = 0) -> dt.datetime:
    return dt.datetime(y, mo, d, h, mi, s, tzinfo=IST).astimezone(dt.UTC)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'journal.db'}"


@pytest.fixture
def pbdir(tmp_path: Path) -> Path:
    d = tmp_path / "playbooks"
    d.mkdir()
    return d


def write(path: Path, text: str, bump: int = 0) -> None:
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + bump * 1_000_000_000))


async def daemon_at(
    when: dt.datetime, pbdir: Path, db_url: str, owner: str = "d1", calendar: DayCalendar | None = CAL
) -> tuple[Daemon, VirtualClock, RecordingExecutor]:
    clock = VirtualClock(when)
    executor = RecordingExecutor(clock)
    daemon = make_daemon(pbdir, db_url, clock, executor, owner, calendar)
    await daemon.prepare()
    return daemon, clock, executor


async def test_fire_runs_at_the_instant_and_is_journaled(pbdir: Path, db_url: str) -> None:
    write(pbdir / "open.yaml", playbook_text("nifty_open", 'daily: "09:15"', calendar="NSE"))
    daemon, clock, ex = await daemon_at(ist(2026, 11, 23, 9, 0), pbdir, db_url)
    entry = daemon.entries["nifty_open"]
    assert entry.next_fire == ist(2026, 11, 23, 9, 15)
    clock._now = entry.next_fire - dt.timedelta(seconds=0.05)  # APScheduler wakes the job early
    await daemon.fire(entry, entry.next_fire)
    [(fire, started)] = ex.calls
    assert started == entry.next_fire  # sleep_until finished the wait
    assert fire.run_id.startswith("20261123-091500+0530-")  # the local date and time, zone offset
    row = daemon.store.get(fire.fire_id)
    assert row is not None and row.state is FireState.SUCCEEDED and row.claimed_by == "d1"


async def test_holiday_is_skipped_and_journaled(
    pbdir: Path, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    write(pbdir / "open.yaml", playbook_text("nifty_open", 'daily: "09:15"', calendar="NSE"))
    daemon, _clock, ex = await daemon_at(ist(2026, 11, 24, 9, 15), pbdir, db_url)
    with caplog.at_level(logging.WARNING, "runner.scheduler"):
        await daemon.fire(daemon.entries["nifty_open"], ist(2026, 11, 24, 9, 15))
    assert ex.calls == []
    row = daemon.store.slot("nifty_open", ist(2026, 11, 24, 9, 15))
    assert row is not None and row.state is FireState.SKIPPED
    assert row.outcome == "NSE closed on 2026-11-24"
    assert "closed on 2026-11-24" in caplog.text


async def test_weekday_without_calendar_entry_runs(pbdir: Path, db_url: str) -> None:
    write(pbdir / "open.yaml", playbook_text("nifty_open", 'daily: "09:15"', calendar="NSE"))
    daemon, _clock, ex = await daemon_at(ist(2026, 11, 25, 9, 15), pbdir, db_url)
    await daemon.fire(daemon.entries["nifty_open"], ist(2026, 11, 25, 9, 15))
    assert len(ex.calls) == 1


async def test_calendar_not_covering_the_day_fails_closed_loudly(
    pbdir: Path, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    write(pbdir / "open.yaml", playbook_text("nifty_open", 'daily: "09:15"', calendar="NSE"))
    when = ist(2027, 1, 4, 9, 15)  # a Monday the 2026-only calendar does not cover
    daemon, _clock, ex = await daemon_at(when, pbdir, db_url)
    with caplog.at_level(logging.ERROR, "runner.scheduler"):
        await daemon.fire(daemon.entries["nifty_open"], when)
    assert ex.calls == []
    row = daemon.store.slot("nifty_open", when)
    assert row is not None and row.state is FireState.SKIPPED
    assert "does not cover 2027-01-04" in (row.outcome or "")
    assert any(r.levelno == logging.ERROR and "fail closed" in r.getMessage() for r in caplog.records)


async def test_calendar_that_cannot_load_fails_closed(pbdir: Path, db_url: str) -> None:
    write(pbdir / "open.yaml", playbook_text("nifty_open", 'daily: "09:15"', calendar="MCX"))
    clock = VirtualClock(ist(2026, 11, 25, 9, 15))
    ex = RecordingExecutor(clock)
    daemon = make_daemon(pbdir, db_url, clock, ex, "d1")

    def broken(exchange: str) -> DayCalendar:
        raise FileNotFoundError(f"no calendar data for {exchange}")

    daemon.calendars = broken
    await daemon.prepare()
    await daemon.fire(daemon.entries["nifty_open"], ist(2026, 11, 25, 9, 15))
    assert ex.calls == []
    row = daemon.store.slot("nifty_open", ist(2026, 11, 25, 9, 15))
    assert row is not None and row.state is FireState.SKIPPED and "fail closed" in (row.outcome or "")


@pytest.mark.parametrize(
    ("late", "minutes_late", "runs"),
    [("skip", 10, False), ("run-within 15m", 10, True), ("run-within 5m", 10, False), ("skip", 0, True)],
)
async def test_late_policy_for_a_late_wake(
    pbdir: Path, db_url: str, late: str, minutes_late: int, runs: bool
) -> None:
    write(pbdir / "open.yaml", playbook_text("nifty_open", f'daily: "09:15"\nlate: {late}', calendar="NSE"))
    due = ist(2026, 11, 25, 9, 15)
    daemon, _clock, ex = await daemon_at(due + dt.timedelta(minutes=minutes_late), pbdir, db_url)
    await daemon.fire(daemon.entries["nifty_open"], due)
    assert len(ex.calls) == (1 if runs else 0)
    row = daemon.store.slot("nifty_open", due)
    assert row is not None
    assert row.state is (FireState.SUCCEEDED if runs else FireState.MISSED)


async def test_restart_catch_up_report_skip_and_run_within(pbdir: Path, db_url: str) -> None:
    write(pbdir / "a.yaml", playbook_text("skipper", 'daily: "09:15"\nlate: skip', calendar="NSE"))
    write(
        pbdir / "b.yaml",
        playbook_text(
            "catcher", 'every: 5m\nbetween: ["09:15", "15:30"]\nlate: run-within 3m', calendar="NSE"
        ),
    )
    # First daemon: both fire on Monday, then it goes down.
    d1, _c1, ex1 = await daemon_at(ist(2026, 11, 23, 9, 15), pbdir, db_url, owner="d1")
    await d1.fire(d1.entries["skipper"], ist(2026, 11, 23, 9, 15))
    await d1.fire(d1.entries["catcher"], ist(2026, 11, 23, 9, 15))
    assert len(ex1.calls) == 2
    # Back up Wednesday 09:27: Tuesday is a holiday in the calendar but the report lists slots due.
    d2, _c2, ex2 = await daemon_at(ist(2026, 11, 25, 9, 27), pbdir, db_url, owner="d2")
    report = d2.catch_up_report
    by = {(i.playbook, i.scheduled_for.astimezone(IST).strftime("%a %H:%M")): i.action for i in report}
    assert by[("skipper", "Tue 09:15")] == "skipped"  # the calendar's holiday, not a miss
    assert by[("skipper", "Wed 09:15")] == "missed"
    assert by[("catcher", "Wed 09:20")] == "missed"
    assert by[("catcher", "Wed 09:25")] == "running now"  # 2 min late, within run-within 3m
    assert ("catcher", "Mon 09:15") not in by  # already fired
    await asyncio.gather(*d2._tasks)
    assert [f.scheduled_for for f, _ in ex2.calls] == [ist(2026, 11, 25, 9, 25)]
    missed = d2.store.slot("skipper", ist(2026, 11, 25, 9, 15))
    assert missed is not None and missed.state is FireState.MISSED
    # A third start finds nothing new to catch up.
    d3, _c3, _ex3 = await daemon_at(ist(2026, 11, 25, 9, 28), pbdir, db_url, owner="d3")
    assert d3.catch_up_report == []


async def test_restart_marks_interrupted_fires_unknown(pbdir: Path, db_url: str) -> None:
    write(pbdir / "a.yaml", playbook_text("slow", 'daily: "09:15"', calendar="NSE"))
    due = ist(2026, 11, 23, 9, 15)
    clock = VirtualClock(due)
    ex = RecordingExecutor(clock, block=True)
    d1 = make_daemon(pbdir, db_url, clock, ex, "d1", CAL)
    await d1.prepare()
    task = asyncio.ensure_future(d1.fire(d1.entries["slow"], due))
    await ex.started.wait()
    await asyncio.sleep(0.05)  # let the RUNNING mark land (worker thread)
    task.cancel()  # what a crash leaves behind: the row stays RUNNING once we put it back
    await asyncio.gather(task, return_exceptions=True)
    fire_id = ex.calls[0][0].fire_id
    d1.store.set_state(fire_id, FireState.RUNNING, None, clock.now())
    d2, _c2, ex2 = await daemon_at(due + dt.timedelta(minutes=1), pbdir, db_url, owner="d2")
    [item] = d2.catch_up_report
    assert item.action == "interrupted" and item.playbook == "slow"
    row = d2.store.get(fire_id)
    assert row is not None and row.state is FireState.UNKNOWN
    assert ex2.calls == []  # never re-run


async def test_a_daemon_that_died_during_a_quick_restart_is_swept_once_its_heartbeat_is_stale(
    pbdir: Path, db_url: str
) -> None:
    write(pbdir / "a.yaml", playbook_text("slow", 'daily: "09:15"', calendar="NSE"))
    due = ist(2026, 11, 23, 9, 15)
    clock = VirtualClock(due)
    ex = RecordingExecutor(clock, block=True)
    d1 = make_daemon(pbdir, db_url, clock, ex, "d1", CAL)
    await d1.prepare()  # registers d1 with a heartbeat at `due`
    task = asyncio.ensure_future(d1.fire(d1.entries["slow"], due))
    await ex.started.wait()
    await asyncio.sleep(0.05)  # let the RUNNING mark land (worker thread)
    task.cancel()  # SIGKILL: the row stays RUNNING once we put it back
    await asyncio.gather(task, return_exceptions=True)
    fire_id = ex.calls[0][0].fire_id
    d1.store.set_state(fire_id, FireState.RUNNING, None, clock.now())
    # restarted 2 s later (systemd): d1's heartbeat still looks fresh, so start-up leaves its fire alone
    start = due + dt.timedelta(seconds=2)
    d2, c2, ex2 = await daemon_at(start, pbdir, db_url, owner="d2")
    assert d2.catch_up_report == [] and await d2.sweep_interrupted() == []  # d1's heartbeat noted
    c2._now = start + STALE_AFTER - dt.timedelta(seconds=1)
    assert await d2.sweep_interrupted() == []  # unchanged, but not for STALE_AFTER of d2's time yet
    row = d2.store.get(fire_id)
    assert row is not None and row.state is FireState.RUNNING
    c2._now = start + STALE_AFTER  # the running daemon's sweep, once d1's heartbeat stood that long
    [item] = await d2.sweep_interrupted()
    assert item.action == "interrupted" and item.playbook == "slow"
    row = d2.store.get(fire_id)
    assert row is not None and row.state is FireState.UNKNOWN and ex2.calls == []  # never re-run


async def test_marking_a_fire_interrupted_never_overwrites_one_that_finished(
    pbdir: Path, db_url: str
) -> None:
    write(pbdir / "a.yaml", playbook_text("nifty_open", 'daily: "09:15"', calendar="NSE"))
    due = ist(2026, 11, 25, 9, 15)
    d1, _c1, _ = await daemon_at(due, pbdir, db_url, owner="d1")
    await d1.fire(d1.entries["nifty_open"], due)
    [row] = d1.store.history("nifty_open")
    assert row.state is FireState.SUCCEEDED
    assert not d1.store.mark_interrupted(row.fire_id, "d1", "daemon d1 stopped while running", due)
    assert not d1.store.mark_interrupted(row.fire_id, "someone-else", "stopped", due)
    [row] = d1.store.history("nifty_open")
    assert row.state is FireState.SUCCEEDED


async def claimed_then_died(pbdir: Path, db_url: str, due: dt.datetime) -> Daemon:
    """d1 wakes for ``due`` (lead early), claims the fire, and dies before journaling anything for it."""
    schedule = 'daily: "09:15"\nlate: run-within 1m'
    write(pbdir / "a.yaml", playbook_text("early", schedule, calendar="NSE"))
    d1, c1, _ = await daemon_at(due - dt.timedelta(seconds=1.5), pbdir, db_url, owner="d1")
    entry = d1.entries["early"]
    claim = Claim("early", entry.version, due, make_run_id("early", due))
    assert await d1.batcher.claim(claim, c1.now())
    return d1


async def test_a_claim_a_dead_daemon_never_acted_on_is_planned_again_at_start(
    pbdir: Path, db_url: str
) -> None:
    due = ist(2026, 11, 25, 9, 15)
    await claimed_then_died(pbdir, db_url, due)
    # restarted 10 s after the instant: nothing was journaled for the claimed fire, so nothing can have
    # been sent; the claim is given back and the slot planned again (`late: run-within 1m`: run now)
    d2, _c2, ex2 = await daemon_at(due + dt.timedelta(seconds=10), pbdir, db_url, owner="d2")
    assert [(i.action, i.scheduled_for) for i in d2.catch_up_report] == [
        ("released", due),
        ("running now", due),
    ]
    assert "not sent" in d2.catch_up_report[0].detail
    await asyncio.gather(*d2._tasks)
    row = d2.store.slot("early", due)
    assert row is not None and row.state is FireState.SUCCEEDED and len(ex2.calls) == 1


async def test_the_sweep_journals_a_claim_a_dead_daemon_never_acted_on_as_missed(
    pbdir: Path, db_url: str
) -> None:
    due = ist(2026, 11, 25, 9, 15)
    await claimed_then_died(pbdir, db_url, due)
    d2, c2, ex2 = await daemon_at(due, pbdir, db_url, owner="d2")  # d1 still looks alive at start
    assert d2.catch_up_report == [] and await d2.sweep_interrupted() == []
    c2._now = due + STALE_AFTER
    [item] = await d2.sweep_interrupted()
    assert item.action == "missed" and "not sent" in item.detail
    row = d2.store.slot("early", due)
    assert row is not None and row.state is FireState.MISSED and ex2.calls == []


async def test_two_daemons_one_journal_fire_exactly_once(pbdir: Path, db_url: str) -> None:
    write(pbdir / "a.yaml", playbook_text("nifty_open", 'daily: "09:15"', calendar="NSE"))
    due = ist(2026, 11, 25, 9, 15)
    d1, _c1, ex1 = await daemon_at(due - dt.timedelta(seconds=0.05), pbdir, db_url, owner="d1")
    d2, _c2, ex2 = await daemon_at(due - dt.timedelta(seconds=0.05), pbdir, db_url, owner="d2")
    for _ in range(3):  # repeated wakes (reload, duplicate jobs) change nothing either
        await asyncio.gather(d1.fire(d1.entries["nifty_open"], due), d2.fire(d2.entries["nifty_open"], due))
    assert len(ex1.calls) + len(ex2.calls) == 1
    rows = d1.store.history("nifty_open")
    assert len(rows) == 1 and rows[0].state is FireState.SUCCEEDED


async def test_a_new_version_cannot_refire_the_same_slot(pbdir: Path, db_url: str) -> None:
    path = pbdir / "a.yaml"
    write(path, playbook_text("nifty_open", 'daily: "09:15"', calendar="NSE"))
    due = ist(2026, 11, 25, 9, 15)
    d1, _c1, ex1 = await daemon_at(due, pbdir, db_url, owner="d1")
    await d1.fire(d1.entries["nifty_open"], due)
    write(path, playbook_text("nifty_open", 'daily: "09:15"', calendar="NSE", quantity=2), bump=5)
    d2, _c2, ex2 = await daemon_at(due, pbdir, db_url, owner="d2")
    assert d2.entries["nifty_open"].version != d1.entries["nifty_open"].version
    await d2.fire(d2.entries["nifty_open"], due)
    assert len(ex1.calls) == 1 and ex2.calls == []


async def test_hot_reload_invalid_edit_keeps_previous_version(pbdir: Path, db_url: str) -> None:
    path = pbdir / "a.yaml"
    write(path, playbook_text("nifty_open", 'daily: "09:15"', calendar="NSE"))
    daemon, _clock, _ex = await daemon_at(ist(2026, 11, 25, 8, 0), pbdir, db_url)
    v1 = daemon.entries["nifty_open"].version
    write(path, playbook_text("nifty_open", 'daily: "25:99"', calendar="NSE"), bump=1)
    changes = await daemon.reload()
    assert len(changes) == 1 and "invalid; keeping the previous version of nifty_open" in changes[0]
    entry = daemon.entries["nifty_open"]
    assert entry.version == v1 and entry.next_fire == ist(2026, 11, 25, 9, 15)
    assert str(path) in daemon.status()["invalid"]
    write(path, playbook_text("nifty_open", 'daily: "09:20"', calendar="NSE"), bump=2)
    changes = await daemon.reload()
    assert "reloaded" in changes[0]
    assert daemon.entries["nifty_open"].next_fire == ist(2026, 11, 25, 9, 20)
    assert daemon.status()["invalid"] == {}
    path.unlink()
    changes = await daemon.reload()
    assert "unscheduled" in changes[0] and daemon.entries == {}


async def test_invalid_playbooks_at_start_are_reported_others_scheduled(pbdir: Path, db_url: str) -> None:
    write(pbdir / "good.yaml", playbook_text("good", 'daily: "09:15"'))
    (pbdir / "bad.yaml").write_text("version: 1\nname: bad\nsteps: []\n")
    (pbdir / "notes.txt").write_text("not a playbook")
    daemon, _clock, _ex = await daemon_at(ist(2026, 11, 25, 8, 0), pbdir, db_url)
    assert list(daemon.entries) == ["good"]
    assert list(daemon.reload_errors) == [str(pbdir / "bad.yaml")]


async def test_duplicate_playbook_name_is_refused(pbdir: Path, db_url: str) -> None:
    write(pbdir / "a.yaml", playbook_text("same", 'daily: "09:15"'))
    write(pbdir / "b.yaml", playbook_text("same", 'daily: "10:15"'))
    daemon, _clock, _ex = await daemon_at(ist(2026, 11, 25, 8, 0), pbdir, db_url)
    assert daemon.entries["same"].path.name == "a.yaml"
    assert "already used by a.yaml" in daemon.reload_errors[str(pbdir / "b.yaml")][0]


async def test_halt_skips_fires_and_is_seen_within_a_poll(pbdir: Path, db_url: str) -> None:
    write(pbdir / "a.yaml", playbook_text("nifty_open", 'daily: "09:15"', calendar="NSE"))
    due = ist(2026, 11, 25, 9, 15)
    daemon, clock, ex = await daemon_at(due, pbdir, db_url)
    from runner.engine.killswitch import ControlStore

    ControlStore(daemon.store.engine).set(Mode.HALT, "desk says stop", "ops", clock.now())
    assert daemon.watcher.state.mode is Mode.NORMAL
    await daemon.watcher.poll_once()  # what the 0.25 s poller does
    assert daemon.watcher.state.mode is Mode.HALT
    await daemon.fire(daemon.entries["nifty_open"], due)
    assert ex.calls == []
    row = daemon.store.slot("nifty_open", due)
    assert row is not None and row.state is FireState.SKIPPED and "desk says stop" in (row.outcome or "")


async def test_real_nse_calendar_holiday_muhurat_and_not_covered(pbdir: Path, db_url: str) -> None:
    from runner.daemon.scheduler import default_calendar_loader

    write(pbdir / "a.yaml", playbook_text("eve", 'daily: "18:15"', calendar="NSE"))
    clock = VirtualClock(ist(2026, 11, 8, 18, 15))
    ex = RecordingExecutor(clock)
    daemon = make_daemon(pbdir, db_url, clock, ex, "d1")
    daemon.calendars = default_calendar_loader()
    await daemon.prepare()
    entry = daemon.entries["eve"]
    for day, expect in (
        (ist(2026, 11, 8, 18, 15), FireState.SUCCEEDED),  # Sunday Muhurat session
        (ist(2026, 11, 24, 18, 15), FireState.SKIPPED),  # Guru Nanak Jayanti
        (ist(2028, 1, 3, 18, 15), FireState.SKIPPED),
    ):  # beyond the data: fail closed
        clock._now = day
        await daemon.fire(entry, day)
        row = daemon.store.slot("eve", day)
        assert row is not None and row.state is expect, (day, row)
    assert "does not cover 2028-01-03" in (daemon.store.slot("eve", ist(2028, 1, 3, 18, 15)).outcome or "")
    assert len(ex.calls) == 1


@pytest.mark.parametrize("finishes", [True, False])
async def test_shutdown_waits_for_running_fire_or_journals_unknown(
    pbdir: Path, db_url: str, finishes: bool
) -> None:
    write(pbdir / "a.yaml", playbook_text("slow", 'daily: "09:15"'))
    due = ist(2026, 11, 25, 9, 15)
    clock = VirtualClock(due)
    ex = RecordingExecutor(clock, block=True)
    daemon = make_daemon(pbdir, db_url, clock, ex, "d1")
    daemon.opts.shutdown_grace = 0.2
    await daemon.prepare()
    task = asyncio.ensure_future(daemon.fire(daemon.entries["slow"], due))
    await ex.started.wait()
    if finishes:
        asyncio.get_running_loop().call_soon(ex.release.set)
    await daemon.shutdown()
    await asyncio.gather(task, return_exceptions=True)
    row = daemon.store.slot("slow", due)
    assert row is not None
    assert row.state is (FireState.SUCCEEDED if finishes else FireState.UNKNOWN)


async def test_apscheduler_path_never_fires_early(pbdir: Path, db_url: str) -> None:
    """The one real-time test of the scheduler: APScheduler's own timers and the precise wait on the
    wall clock (everything else runs on a virtual clock). It waits ~3 s: the fire must lie beyond the
    daemon's 1.5 s preparation lead so that the armed, not-yet-due state can be asserted."""
    from runner.clock import SystemClock

    when = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=3)
    write(pbdir / "a.yaml", playbook_text("soon", f'once: "{when.isoformat()}"'))
    clock = SystemClock()
    ex = RecordingExecutor(clock)
    daemon = make_daemon(pbdir, db_url, clock, ex, "d1")
    await daemon.start()
    try:
        assert daemon.entries["soon"].next_fire == when
        await asyncio.wait_for(ex.started.wait(), timeout=30)
    finally:
        daemon.request_stop()
        await daemon.wait_stopped()
    [(fire, started)] = ex.calls
    assert fire.scheduled_for == when and started >= when
    assert daemon.entries["soon"].next_fire is None
