"""The daemon freezes its loaded heap (runner.daemon.heap): full collections no longer walk the playbooks,
models and masters it keeps, so one cannot stall the lease renewal thread for a second before an instant."""

from __future__ import annotations

import datetime as dt
import gc
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from helpers.sched import DayCalendar, RecordingExecutor, make_daemon, playbook_text

from runner.clock import VirtualClock

IST = ZoneInfo("Asia/Kolkata")
CAL = DayCalendar({2026}, set())
NOW = dt.datetime(2026, 11, 25, 8, 0, tzinfo=IST).astimezone(dt.UTC)


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


async def test_start_and_a_reload_that_added_playbooks_freeze_the_loaded_heap(tmp_path: Path) -> None:
    pbdir = tmp_path / "playbooks"
    pbdir.mkdir()
    for i in range(3):
        (pbdir / f"p{i}.yaml").write_text(playbook_text(f"p{i}", 'daily: "09:15"', calendar="NSE"))
    clock = VirtualClock(NOW)
    daemon = make_daemon(pbdir, f"sqlite:///{tmp_path / 'j.db'}", clock, RecordingExecutor(clock), "d1", CAL)
    assert gc.get_freeze_count() == 0
    await daemon.start()
    try:
        at_start = gc.get_freeze_count()
        assert at_start > 0
        (pbdir / "added.yaml").write_text(playbook_text("added", 'daily: "09:20"', calendar="NSE"))
        await daemon.rescan()
        assert gc.get_freeze_count() > at_start
        frozen = gc.get_freeze_count()
        await daemon.rescan()  # nothing changed: nothing to freeze
        assert gc.get_freeze_count() <= frozen  # (a frozen object freed by refcount leaves the count)
    finally:
        await daemon.shutdown()
