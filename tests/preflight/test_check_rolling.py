"""``runner check`` resolves the due playbooks' rolling instruments now, against `runner sim kotak_neo`
(its own process, real sockets): an ATM strike set from an LTP far outside the listed strikes (here the
wrong underlying) is a FAIL naming the alias, the LTP and the listed range; a sound one is OK."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.cli import main

DATE = "2026-12-01"  # a Tuesday, an NSE trading day

ROLLING = """\
version: 1
name: check-rolling
account: sim
timezone: Asia/Kolkata
calendar: NSE
schedule: {{daily: "09:20"}}
instruments:
  ce: {{exchange: NFO, symbol: NIFTY, expiry: {{nearest: weekly}}, strike: atm, option_type: CE{extra}}}
steps:
  - {{kind: place, id: entry, instrument: ce, side: BUY, lots: 1, type: MARKET, product: MIS}}
"""


@pytest.fixture(scope="module")
def sim_line(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    out = tmp_path_factory.mktemp("sim-kotak") / "master.csv"
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "sim", "kotak_neo", "--master-out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    assert proc.stdout is not None
    try:
        yield json.loads(proc.stdout.readline())
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()


def _check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    line: dict[str, Any], extra: str,
) -> tuple[int, dict[str, Any]]:
    monkeypatch.delenv("RUNNER_ACCOUNTS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    for key, value in line["env"].items():
        monkeypatch.setenv(key, value)
    accounts = tmp_path / "accounts.yaml"
    accounts.write_text(json.dumps({"version": 1, "accounts": {"sim": line["account"]}}))
    book = tmp_path / "roll.yaml"
    book.write_text(ROLLING.format(extra=extra))
    code = main(["check", str(book), "--accounts", str(accounts), "--date", DATE, "--json"])
    got = capsys.readouterr()
    rows = {r["check"]: r for r in json.loads(got.out)["rows"]}
    return code, rows


def test_atm_from_a_far_ltp_fails_the_check(
    sim_line: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    extra = ", underlying: {exchange: NSE, symbol: RELIANCE}"  # a stock's price: far below NIFTY's strikes
    code, rows = _check(tmp_path, monkeypatch, capsys, sim_line, extra)
    assert code == 4, rows
    row = rows["rolling"]
    assert row["status"] == "FAIL", row
    what = "instrument 'ce' (NFO NIFTY nearest weekly atm CE)"
    assert f"{what}: the underlying NSE RELIANCE LTP " in row["reason"]
    assert "below the listed strikes" in row["reason"] and "sync the instrument master" in row["reason"]


def test_a_sound_atm_is_resolved_ok(
    sim_line: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, rows = _check(tmp_path, monkeypatch, capsys, sim_line, "")
    row = rows["rolling"]
    assert row["status"] == "OK" and row["reason"] == "1 resolved now", row
    assert row["details"][0].startswith("roll.yaml: ce = NFO NIFTY "), row
    assert "(NSE NIFTY LTP " in row["details"][0] and code == 0, rows
