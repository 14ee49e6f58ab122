"""`runner serve` closes every broker it opened on the way out (SIGTERM): an HTTP adapter's sessions
(aiohttp under httpx) used to be left to the garbage collector, which logged "Unclosed client session" /
"Unclosed connector" at ERROR from asyncio, one per account, on every stop. Against each simulator whose
adapter holds aiohttp sessions (`runner sim`, its own process, real sockets)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

DEADLINE = 60.0  # a bound for a loaded CI box; the fire normally runs about 6 s after start

PLAYBOOK = """\
version: 1
name: entry
timezone: Asia/Kolkata
account: sim
schedule: {{once: "{when}", late: run-within 10s}}
steps:
  - {{kind: place, id: entry, instrument: {{exchange: NSE, symbol: RELIANCE}}, side: BUY, quantity: 1,
     product: MIS}}
"""


@pytest.mark.parametrize("broker", ["kotak_neo", "blitz", "odin"])
def test_sigterm_leaves_no_unclosed_http_session(tmp_path: Path, broker: str) -> None:
    sim = subprocess.Popen(
        [sys.executable, "-m", "runner", "sim", broker, "--master-out", str(tmp_path / "master.csv")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    assert sim.stdout is not None
    try:
        line = json.loads(sim.stdout.readline())
        accounts = tmp_path / "accounts.yaml"
        accounts.write_text(json.dumps({"version": 1, "accounts": {"sim": line["account"]}}))
        pbdir = tmp_path / "pb"
        pbdir.mkdir()
        when = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=6)).replace(microsecond=0)
        (pbdir / "entry.yaml").write_text(PLAYBOOK.format(when=when.isoformat()))
        env = {k: v for k, v in os.environ.items() if k not in ("RUNNER_ACCOUNTS", "RUNNER_CALENDARS")}
        env.update(line["env"])
        log = tmp_path / "serve.log"
        cmd = [sys.executable, "-m", "runner", "serve", str(pbdir), "--db", f"sqlite:///{tmp_path / 'j.db'}",
               "--accounts", str(accounts), "--lead", "3"]
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
        sim.terminate()
        sim.wait(timeout=10)
        sim.stdout.close()
    text = log.read_text(errors="replace")
    assert '"status": "succeeded"' in text and "runner serve: stopped" in text, text
    assert "Unclosed" not in text, text
