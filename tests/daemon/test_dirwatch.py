"""The reload loop scans the playbook directory only when it may have changed (issue 16: an idle daemon
stat-ed every file every second): a filesystem event, the directory's mtime moving, or the backstop.
An edit in place (the directory's mtime stays) is still seen."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
from pathlib import Path
from zoneinfo import ZoneInfo

from helpers.sched import DayCalendar, RecordingExecutor, make_daemon, playbook_text

from runner.clock import VirtualClock
from runner.daemon.dirwatch import DirectoryWatch
from runner.daemon.loader import content_version

OLD = 1_700_000_000  # a directory mtime long past: trusted (not racy)
DEADLINE = 30.0  # generous bound for a loaded box; the watcher reports within ~0.3 s


class Ticks:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _age(path: Path) -> None:
    os.utime(path, (OLD, OLD))


def _edit_in_place(path: Path, text: str) -> None:
    with path.open("r+") as f:  # same inode, the directory entry untouched: its mtime stays
        f.write(text)


def test_nothing_changed_no_scan_until_the_backstop(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("a")
    _age(tmp_path)
    ticks = Ticks()
    watch = DirectoryWatch(tmp_path, full_every=30, unwatched_every=5, monotonic=ticks)
    assert watch.due()  # never scanned
    watch.scanning()
    ticks.t += 4.9
    assert not watch.due()
    ticks.t += 0.1  # no watcher: the backstop sees an edit in place within unwatched_every
    assert watch.due()


def test_a_file_added_moves_the_directory_mtime(tmp_path: Path) -> None:
    _age(tmp_path)
    watch = DirectoryWatch(tmp_path, monotonic=Ticks())
    watch.scanning()
    assert not watch.due()
    (tmp_path / "new.yaml").write_text("x")
    assert watch.due()
    (tmp_path / "new.yaml").unlink()
    _age(tmp_path)
    watch.scanning()
    assert not watch.due()


def test_a_recent_directory_mtime_is_not_trusted(tmp_path: Path) -> None:
    """A file added in the same coarse mtime tick as the scan's listing leaves the mtime as recorded."""
    (tmp_path / "a.yaml").write_text("a")  # the directory's mtime is now
    watch = DirectoryWatch(tmp_path, monotonic=Ticks())
    watch.scanning()
    assert watch.due()
    _age(tmp_path)
    watch.scanning()
    assert not watch.due()


def test_the_watcher_sees_an_edit_in_place(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("version: 1\n")
    _age(tmp_path)
    ticks = Ticks()
    watch = DirectoryWatch(tmp_path, full_every=3600, unwatched_every=3600, monotonic=ticks)
    watch.start()
    try:
        watch.scanning()
        assert watch.watching and not watch.due()
        end = time.monotonic() + DEADLINE
        seen = False
        while not seen and time.monotonic() < end:  # edits until one lands after the watch is set up
            _edit_in_place(path, "version: 2\n")
            for _ in range(10):
                if watch.due():
                    seen = True
                    break
                time.sleep(0.05)
        assert seen, "an edit in place was not reported"
        assert os.stat(tmp_path).st_mtime_ns == OLD * 10**9  # the directory's mtime did not move
        watch.scanning()
        assert not watch.due()
    finally:
        watch.stop()


IST = ZoneInfo("Asia/Kolkata")


async def test_an_idle_reload_loop_does_not_scan_and_an_edit_in_place_is_reloaded(tmp_path: Path) -> None:
    pbdir = tmp_path / "playbooks"
    pbdir.mkdir()
    path = pbdir / "a.yaml"
    path.write_text(playbook_text("a", 'daily: "09:15"', calendar="NSE"))
    _age(pbdir)
    clock = VirtualClock(dt.datetime(2026, 11, 25, 8, 0, tzinfo=IST).astimezone(dt.UTC))
    daemon = make_daemon(pbdir, f"sqlite:///{tmp_path / 'j.db'}", clock, RecordingExecutor(clock), "d1",
                         DayCalendar({2026}, set()))  # fmt: skip
    daemon.opts.reload_interval = 0.01
    scans = 0
    looks = 0
    scan, due = daemon.directory.scan, daemon.dirwatch.due

    def counted_scan() -> object:
        nonlocal scans
        scans += 1
        return scan()

    def counted_due() -> bool:
        nonlocal looks
        looks += 1
        return due()

    daemon.directory.scan = counted_scan  # type: ignore[method-assign]
    daemon.dirwatch.due = counted_due  # type: ignore[method-assign]
    await daemon.start()
    try:
        v1 = daemon.entries["a"].version
        end = time.monotonic() + DEADLINE
        while looks < 20 and time.monotonic() < end:
            await asyncio.sleep(0.01)
        first = scans
        assert first <= 2  # the start-up load and the loop's first look; nothing changed since: no more
        while looks < 40 and time.monotonic() < end:
            await asyncio.sleep(0.01)
        assert scans == first and looks >= 40
        text = playbook_text("a", 'daily: "09:20"', calendar="NSE")
        end = time.monotonic() + DEADLINE
        while daemon.entries["a"].version == v1 and time.monotonic() < end:
            path.write_text(text)  # in place (truncate + write): the directory's mtime stays
            await asyncio.sleep(0.2)
        assert daemon.entries["a"].version == content_version(text.encode())
    finally:
        await daemon.shutdown()
    assert not daemon.dirwatch.watching


def test_the_watcher_logs_no_line_per_change(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    """The daemon logs its own reload lines; the library's "1 change detected" is not one of them."""
    import logging

    caplog.set_level(logging.INFO)
    path = tmp_path / "a.yaml"
    path.write_text("x")
    _age(tmp_path)
    watch = DirectoryWatch(tmp_path, full_every=3600, unwatched_every=3600, monotonic=Ticks())
    watch.start()
    try:
        watch.scanning()
        end = time.monotonic() + DEADLINE
        while not watch.due() and time.monotonic() < end:
            _edit_in_place(path, "y")
            time.sleep(0.1)
        assert watch.due()
    finally:
        watch.stop()
    assert [r for r in caplog.records if r.name.startswith("watchfiles")] == []
