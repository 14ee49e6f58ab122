"""Every HTTP wire simulator serves through runner.brokers.sim_front: a real `runner sim BROKER` process
answers GET /_sim/arrivals (what bench/lateness.py and bench/scaleout.py read) next to the broker's API."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest


@pytest.mark.parametrize("broker", ["kotak_neo", "blitz", "odin"])
def test_the_simulator_process_serves_its_arrivals(broker: str) -> None:
    with subprocess.Popen([sys.executable, "-m", "runner", "sim", broker, "--loop", "asyncio"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as proc:
        try:
            assert proc.stdout is not None
            first = json.loads(proc.stdout.readline())
            assert first["broker"] == broker
            with urllib.request.urlopen(f"{first['url']}/_sim/arrivals", timeout=30) as reply:  # loopback
                assert json.loads(reply.read()) == {}
        finally:
            proc.terminate()
            proc.wait(timeout=30)
