"""``runner sim BROKER``'s first-line account is enough to download the broker's own master from the
simulator (separate process, real socket), and the download agrees with the master the simulator trades
(the CSV it wrote)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from runner.accounts import Account
from runner.brokers.instruments import InstrumentMaster
from runner.brokers.masters import master_format


@pytest.mark.parametrize("broker", ["blitz", "alphapoint"])
def test_first_line_account_downloads_the_sims_master(broker: str, tmp_path: Path) -> None:
    master_out = tmp_path / "instruments.csv"
    sim = subprocess.Popen(
        [sys.executable, "-m", "runner", "sim", broker, "--master-out", str(master_out)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert sim.stdout is not None
        line = json.loads(sim.stdout.readline())
        account = Account(name="sim", **line["account"])
        fmt = master_format(broker)
        assert fmt is not None
        files = asyncio.run(fmt.download(account))
        got = {r.instrument.key: r.token for r in fmt.parse(files)}
        traded = InstrumentMaster.load(master_out)
        # the broker's own id of each instrument, as the adapter reads it (token or instrument_id column)
        assert got and got == {r.instrument.key: r.token or r.extra["instrument_id"] for r in traded}
    finally:
        sim.terminate()
        sim.wait(timeout=10)
        if sim.stdout is not None:
            sim.stdout.close()
