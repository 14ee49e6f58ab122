"""Daemon log levels and ``--log-file``: a hot reload is routine (INFO, not a warning), and ``runner
serve`` writes its log to ``--log-file`` as ``runner run`` does."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from helpers.sched import RecordingExecutor, make_daemon, playbook_text

from runner.clock import VirtualClock

T0 = dt.datetime(2026, 11, 25, 9, 0, tzinfo=ZoneInfo("Asia/Kolkata"))
DEADLINE = 30.0  # generous bound for a loaded box; it normally takes about a second


async def test_hot_reload_is_logged_at_info(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pbdir = tmp_path / "pb"
    pbdir.mkdir()
    (pbdir / "a.yaml").write_text(playbook_text("a", 'daily: "10:00"'))
    clock = VirtualClock(T0)
    daemon = make_daemon(pbdir, f"sqlite:///{tmp_path / 'j.db'}", clock, RecordingExecutor(clock), "d1")
    await daemon.prepare()
    (pbdir / "b.yaml").write_text(playbook_text("b", 'daily: "10:00"'))
    (pbdir / "a.yaml").write_text(playbook_text("a", 'daily: "10:00"', quantity=2))
    with caplog.at_level(logging.DEBUG, "runner"):
        caplog.clear()  # the start's own lines
        lines = await daemon.rescan()
        (pbdir / "b.yaml").unlink()
        await daemon.rescan()
    assert len(lines) == 2
    words = ("reloaded", "scheduled", "deleted")
    reload_records = [r for r in caplog.records if any(w in r.getMessage() for w in words)]
    assert len(reload_records) == 3  # once each, not again by the reload loop
    assert all(r.levelno == logging.INFO for r in reload_records), [r.levelname for r in reload_records]


def test_serve_writes_its_log_to_log_file(tmp_path: Path) -> None:
    pbdir = tmp_path / "pb"
    pbdir.mkdir()
    (pbdir / "later.yaml").write_text(playbook_text("later", 'daily: "03:00"'))
    log_file = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if k not in ("RUNNER_ACCOUNTS", "RUNNER_CALENDARS")}
    cmd = [sys.executable, "-m", "runner", "serve", str(pbdir), "--db", f"sqlite:///{tmp_path / 'j.db'}"]
    proc = subprocess.Popen(
        [*cmd, "--log-file", str(log_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()  # printed once started
        assert "1 playbooks scheduled" in banner
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert any("later scheduled" in e["event"] and e["level"] == "info" for e in events), events
    assert "later scheduled" not in err  # the log went to the file, not stderr
