"""``runner sim BROKER``'s first line is enough to trade: its ``account`` goes into an accounts file as is,
its ``env`` into the environment, and ``runner run --now --ignore-calendar --account sim`` exits 0 against
the running simulator (real sockets, separate processes)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runner.commands.sim import SIMS

PLAYBOOK = """\
version: 1
name: sim-account-smoke
timezone: Asia/Kolkata
instruments:
  rel: {exchange: NSE, symbol: RELIANCE}
steps:
  - {kind: place, id: entry, instrument: rel, side: BUY, quantity: 1, type: LIMIT,
     price: {ltp: "+0.5%"}, product: MIS}
  - {kind: wait, id: filled, order: entry, status: [filled], timeout: 30s, on_timeout: fail}
"""


@pytest.mark.parametrize("broker", SIMS)
def test_first_line_account_runs_a_playbook(broker: str, tmp_path: Path) -> None:
    master_out = tmp_path / "sim" / "instruments.csv"
    sim = subprocess.Popen(
        [sys.executable, "-m", "runner", "sim", broker, "--master-out", str(master_out)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert sim.stdout is not None
        line = json.loads(sim.stdout.readline())
        assert line["broker"] == broker
        assert isinstance(line["port"], int) and str(line["port"]) in line["url"]
        account = line["account"]
        assert account["broker"] == broker
        assert all(set(ref) == {"env"} for ref in account["credentials"].values())
        refs = {ref["env"] for ref in account["credentials"].values()}
        assert refs == set(line["env"])
        # The simulator's own master, written where asked: no hand-made instrument file.
        assert Path(account["instruments"]) == master_out.resolve()
        with open(master_out, newline="") as fh:
            assert any(r["symbol"] == "RELIANCE" for r in csv.DictReader(fh))

        accounts = tmp_path / "accounts.yaml"
        accounts.write_text(json.dumps({"version": 1, "accounts": {"sim": account}}))  # JSON is YAML
        playbook = tmp_path / "smoke.yaml"
        playbook.write_text(PLAYBOOK)
        env = {**os.environ, **line["env"], "RUNNER_ACCOUNTS": str(accounts),
               "RUNNER_DB": f"sqlite:///{tmp_path / 'runner.db'}"}
        done = subprocess.run(
            [sys.executable, "-m", "runner", "run", str(playbook), "--now", "--ignore-calendar",
             "--account", "sim"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        sim.terminate()
        sim.wait(timeout=10)
        if sim.stdout is not None:
            sim.stdout.close()


def test_help_documents_default_users() -> None:
    out = subprocess.run([sys.executable, "-m", "runner", "sim", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for broker in SIMS:
        assert broker in out.stdout
    for user in ("SIM1", "trader", "sim-app-key", "2468"):
        assert user in out.stdout
