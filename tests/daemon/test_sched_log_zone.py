"""The daemon's "playbook X scheduled ... next <time>" log line shows the next fire in the playbook's zone,
zone named, through runner.timefmt (it printed the UTC datetime's repr-like form before)."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from helpers.sched import RecordingExecutor, make_daemon, playbook_text

from runner.clock import VirtualClock
from runner.daemon.rules import format_local
from runner.timefmt import when

T0 = dt.datetime(2026, 11, 25, 9, 0, tzinfo=ZoneInfo("Asia/Kolkata"))


async def test_scheduled_line_names_the_playbooks_zone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pbdir = tmp_path / "pb"
    pbdir.mkdir()
    (pbdir / "a.yaml").write_text(playbook_text("a", 'daily: "10:00"'))
    clock = VirtualClock(T0)
    daemon = make_daemon(pbdir, f"sqlite:///{tmp_path / 'j.db'}", clock, RecordingExecutor(clock), "d1")
    with caplog.at_level(logging.INFO, "runner"):
        await daemon.prepare()
    (line,) = [r.getMessage() for r in caplog.records if "scheduled version" in r.getMessage()]
    assert line.endswith("next 2026-11-25 10:00:00 IST"), line
    assert "+00:00" not in line


def test_one_formatter() -> None:
    at = dt.datetime(2026, 12, 1, 9, 45, tzinfo=dt.UTC)
    assert format_local(at, "Asia/Kolkata") == when(at, "Asia/Kolkata") == "2026-12-01 15:15:00 IST"
    assert format_local(at, "America/New_York") == "2026-12-01 04:45:00 EST"
    assert format_local(None, "Asia/Kolkata") == "none"
