"""One kill-switch change, one alert: `runner halt --alerts` and the daemons that see the row flip do not
each page (the control row records that its change was alerted; a daemon alerts only for one nobody has)."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from helpers.alerts_capture import Capture
from helpers.sched import RecordingExecutor, make_daemon

from runner.alerts.config import parse_config
from runner.alerts.delivery import Dispatcher
from runner.alerts.publish import install
from runner.cli import main
from runner.clock import VirtualClock
from runner.daemon.scheduler import Daemon
from runner.journal.db import make_engine

IST = ZoneInfo("Asia/Kolkata")
NOW = dt.datetime(2026, 11, 25, 10, 0, tzinfo=IST)


class Daemons:
    """``n`` daemons on one journal file, each on its own engine and with its own dispatcher (what a daemon
    started with --alerts installs; same target as the CLI's alerts file): as separate processes."""

    def __init__(self, tmp_path: Path, db: str, n: int, capture: Capture) -> None:
        (tmp_path / "pb").mkdir(exist_ok=True)
        clock = VirtualClock(NOW)
        self.daemons: list[tuple[Daemon, Dispatcher]] = [
            (
                make_daemon(tmp_path / "pb", make_engine(db), clock, RecordingExecutor(clock), f"d{i}"),
                Dispatcher(parse_config({"version": 1, "targets": {"desk": capture.url}})).start(),
            )
            for i in range(n)
        ]

    def poll(self) -> None:
        """Each daemon's next poll of the control row, with its own dispatcher installed; delivered."""
        for daemon, dispatcher in self.daemons:
            previous = install(dispatcher)
            try:
                asyncio.run(daemon.watcher.poll_once())
            finally:
                install(previous)
            assert dispatcher.flush()

    def close(self) -> None:
        for _, dispatcher in self.daemons:
            dispatcher.close()


def _kill_switch_posts(capture: Capture) -> list[str]:
    return [p["message"] for p in capture.posts if "kill_switch" in p["title"]]


def test_halt_with_alerts_and_running_daemons_alert_once(
    tmp_path: Path, capture: Capture, capsys: pytest.CaptureFixture[str]
) -> None:
    alerts = tmp_path / "alerts.yaml"
    alerts.write_text(f"version: 1\ntargets:\n  desk: {capture.url}\n")
    db = f"sqlite:///{tmp_path / 'j.db'}"
    daemons = Daemons(tmp_path, db, 2, capture)

    assert main(["halt", "--reason", "glitch", "--db", db, "--alerts", str(alerts)]) == 0
    daemons.poll()  # each daemon sees normal -> halt
    (engaged,) = _kill_switch_posts(capture)
    assert "normal -> halt" in engaged and "glitch" in engaged

    assert main(["resume", "--db", db, "--alerts", str(alerts)]) == 0
    daemons.poll()
    assert len(_kill_switch_posts(capture)) == 2 and "halt -> normal" in _kill_switch_posts(capture)[1]
    daemons.close()
    capsys.readouterr()


def test_halt_without_alerts_is_alerted_once_by_the_daemons(
    tmp_path: Path, capture: Capture, capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite:///{tmp_path / 'j.db'}"
    daemons = Daemons(tmp_path, db, 3, capture)
    assert main(["halt", "--reason", "glitch", "--db", db]) == 0
    daemons.poll()
    (engaged,) = _kill_switch_posts(capture)  # one of three daemons, not three
    assert "normal -> halt" in engaged and "glitch" in engaged
    daemons.close()
    capsys.readouterr()
