"""Closed days in what a person reads: ``runner serve``'s banner and ``runner status`` name the next fire
that will run (not one the calendar will skip) and list the skips; skipped fires show in ``history``."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from helpers.sched import DayCalendar, RecordingExecutor, make_daemon, playbook_text

from runner.cli import main
from runner.clock import VirtualClock
from runner.daemon.scheduler import Daemon
from runner.daemon.upcoming import banner_line

IST = ZoneInfo("Asia/Kolkata")
HOLIDAY = dt.date(2026, 11, 24)  # a Tuesday
CAL = DayCalendar({2026}, {HOLIDAY})


def ist(y: int, mo: int, d: int, h: int, mi: int) -> dt.datetime:
    return dt.datetime(y, mo, d, h, mi, tzinfo=IST).astimezone(dt.UTC)


async def daemon_at(when: dt.datetime, tmp_path: Path) -> tuple[Daemon, VirtualClock, str]:
    pbdir = tmp_path / "playbooks"
    pbdir.mkdir(exist_ok=True)
    (pbdir / "open.yaml").write_text(playbook_text("nifty_open", 'daily: "09:15"', calendar="NSE"))
    db = f"sqlite:///{tmp_path / 'journal.db'}"
    clock = VirtualClock(when)
    daemon = make_daemon(pbdir, db, clock, RecordingExecutor(clock), "d1", CAL)
    await daemon.prepare()
    return daemon, clock, db


async def test_status_and_banner_name_the_next_trading_day_fire(tmp_path: Path) -> None:
    daemon, _clock, _db = await daemon_at(ist(2026, 11, 27, 10, 0), tmp_path)  # Friday, after 09:15
    entry = daemon.entries["nifty_open"]
    assert entry.next_fire == ist(2026, 11, 28, 9, 15)  # armed: its skip is journaled at its instant
    info = daemon.status()["playbooks"]["nifty_open"]
    assert info["next_fire"] == ist(2026, 11, 30, 9, 15).isoformat()  # Monday
    weekend = [ist(2026, 11, 28, 9, 15).isoformat(), ist(2026, 11, 29, 9, 15).isoformat()]
    assert [s["at"] for s in info["skips"]] == weekend
    assert info["skips"][0]["reason"] == "NSE closed on 2026-11-28"
    line = banner_line(entry, daemon.upcoming(entry))
    assert "next fire 2026-11-30 09:15:00 IST" in line and "skips 2026-11-28 09:15:00 IST" in line


async def test_holiday_skip_is_listed_then_journaled_and_shown_by_status_and_history(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon, clock, db = await daemon_at(ist(2026, 11, 23, 10, 0), tmp_path)  # Monday, after 09:15
    info = daemon.status()["playbooks"]["nifty_open"]
    assert info["next_fire"] == ist(2026, 11, 25, 9, 15).isoformat()
    assert [s["reason"] for s in info["skips"]] == ["NSE closed on 2026-11-24"]
    clock._now = ist(2026, 11, 24, 9, 15)
    await daemon._wake("nifty_open", ist(2026, 11, 24, 9, 15))  # the armed job: re-arms, then fires
    await asyncio.gather(*daemon._fire_tasks)
    await daemon.batcher.drain()
    daemon.store.heartbeat(clock.now(), daemon.status())

    assert main(["history", "--db", db, "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["kind"], row["status"], row["message"]) == ("fire", "skipped", "NSE closed on 2026-11-24")
    assert main(["history", "--db", db]) == 0
    assert "skipped: NSE closed on 2026-11-24" in capsys.readouterr().out

    from runner.commands.status import collect

    data = collect(db, now=clock.now())
    assert data["last_outcomes"]["nifty_open"]["state"] == "skipped"
    assert data["next_fires"]["nifty_open"]["skips"] == []  # armed past the holiday now
