"""The status payload keeps each playbook's part while it stands (issue 16: rebuilding 3,000 of them on
every heartbeat through a burst of fires was a daemon's fixed cost), and shows every change."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

from helpers.sched import DayCalendar, RecordingExecutor, make_daemon, playbook_text

from runner.clock import VirtualClock
from runner.daemon.status import status_payload

IST = ZoneInfo("Asia/Kolkata")


async def test_parts_are_kept_while_they_stand_and_follow_every_change(tmp_path: Path) -> None:
    pbdir = tmp_path / "pb"
    pbdir.mkdir()
    for name, at in (("a", "09:15"), ("b", "10:00"), ("c", "11:00")):
        (pbdir / f"{name}.yaml").write_text(playbook_text(name, f'daily: "{at}"', calendar="NSE"))
    clock = VirtualClock(dt.datetime(2026, 11, 25, 8, 0, tzinfo=IST).astimezone(dt.UTC))
    daemon = make_daemon(pbdir, f"sqlite:///{tmp_path / 'j.db'}", clock, RecordingExecutor(clock), "d1",
                         DayCalendar({2026}, {dt.date(2026, 11, 25)}))  # fmt: skip
    await daemon.prepare()
    for entry in daemon.entries.values():
        daemon.owned.arm(entry)

    def uncached() -> dict[str, object]:
        return status_payload(daemon.owner, daemon.dir, daemon.watcher.state, daemon.entries.values(),
                              daemon.running.values(), daemon.reload_errors, daemon.upcoming)  # fmt: skip

    first = daemon.status()
    assert first["playbooks"] == uncached()["playbooks"]
    assert first["playbooks"]["a"]["skips"]  # today is a holiday: its 09:15 is listed as skipped
    second = daemon.status()
    assert all(second["playbooks"][n] is first["playbooks"][n] for n in "abc")  # kept, not rebuilt
    entry = daemon.entries["b"]
    entry.next_fire = entry.next_fire + dt.timedelta(days=1) if entry.next_fire else None
    third = daemon.status()
    assert third["playbooks"]["b"] is not first["playbooks"]["b"]
    assert third["playbooks"] == uncached()["playbooks"]
    assert third["playbooks"]["a"] is first["playbooks"]["a"]
    (pbdir / "c.yaml").unlink()
    await daemon.reload()
    fourth = daemon.status()
    assert sorted(fourth["playbooks"]) == ["a", "b"] and fourth["playbooks"] == uncached()["playbooks"]
    assert sorted(daemon._status_parts) == ["a", "b"]
