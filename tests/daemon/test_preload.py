"""A daemon's per-process first-fire costs (the engine and HTTP transport imports, the TLS context) are
paid at start, not in the first instant's lead time, where N daemons paid them N times (issue 16)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.sched import RecordingExecutor, make_daemon, playbook_text

from runner.clock import VirtualClock

CHECK = """
import sys
import runner.daemon.scheduler
from runner.brokers import http
lazy = ("runner.engine.core", "httpx_aiohttp")
assert not [m for m in lazy if m in sys.modules], [m for m in lazy if m in sys.modules]
assert http.default_ssl_context.cache_info().currsize == 0
from runner.daemon.preload import preload
preload()
assert all(m in sys.modules for m in lazy)
assert http.default_ssl_context.cache_info().currsize == 1
"""


def test_preload_imports_what_the_first_fire_would_and_builds_the_tls_context() -> None:
    """In a fresh process (this one has long imported everything): the daemon's modules leave the fire
    path's imports for later; preload does them."""
    env = {"RUNNER_HTTP_TRANSPORT": "aiohttp", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr


async def test_start_preloads_before_any_timer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from runner.daemon import scheduler

    pbdir = tmp_path / "playbooks"
    pbdir.mkdir()
    (pbdir / "p.yaml").write_text(playbook_text("p", 'daily: "09:15"'))
    clock = VirtualClock(dt.datetime(2026, 3, 2, 3, 0, tzinfo=dt.UTC))
    daemon = make_daemon(pbdir, f"sqlite:///{tmp_path / 'j.db'}", clock, RecordingExecutor(clock), "d1")
    timers_started: list[bool] = []  # at each preload: whether timers were running yet

    def preload() -> None:
        timers_started.append(daemon.timers._scheduler is not None)

    monkeypatch.setattr(scheduler, "preload", preload)
    await daemon.start()
    try:
        assert timers_started == [False]
    finally:
        await daemon.shutdown()
