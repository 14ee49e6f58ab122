"""`runner serve` closes every broker it opened on the way out (SIGTERM): a Kotak Neo account's HTTP
sessions (aiohttp under httpx) used to be left to the garbage collector, which logged "Unclosed client
session" / "Unclosed connector" at ERROR from asyncio, one per account, on every stop."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

from helpers.cluster import Sim, playbook

DEADLINE = 60.0  # a bound for a loaded CI box; the fire normally runs about 6 s after start


def test_sigterm_leaves_no_unclosed_http_session(tmp_path: Path) -> None:
    sim = Sim(tmp_path)
    try:
        pbdir = tmp_path / "pb"
        pbdir.mkdir()
        when = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=6)).replace(microsecond=0)
        (pbdir / "entry.yaml").write_text(playbook("entry", when))
        env = {k: v for k, v in os.environ.items() if k not in ("RUNNER_ACCOUNTS", "RUNNER_CALENDARS")}
        env.update(sim.env)
        log = tmp_path / "serve.log"
        cmd = [sys.executable, "-m", "runner", "serve", str(pbdir), "--db", f"sqlite:///{tmp_path / 'j.db'}",
               "--accounts", str(sim.file), "--lead", "3"]
        with log.open("wb") as sink:
            proc = subprocess.Popen(cmd, stdout=sink, stderr=sink, env=env, cwd=tmp_path)
        try:
            end = time.monotonic() + DEADLINE
            while '"run_finish"' not in log.read_text(errors="replace"):  # the broker logged in and sent
                assert proc.poll() is None and time.monotonic() < end, log.read_text(errors="replace")
                time.sleep(0.1)
            proc.terminate()
            assert proc.wait(timeout=DEADLINE) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        sim.stop()
    text = log.read_text(errors="replace")
    assert '"status": "succeeded"' in text and "runner serve: stopped" in text, text
    assert "Unclosed" not in text, text
