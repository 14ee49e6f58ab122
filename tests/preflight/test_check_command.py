"""``runner check``: against each simulator (``runner sim`` in its own process, real sockets), with a missing
credential, an unknown instrument, an inline lot size the master contradicts, an over-budget instant, an
unreachable broker, a date the calendar does not cover, and Kotak's static-IP refusal in those words."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.brokers.descriptions import KOTAK_NEO, ODIN
from runner.brokers.kotak_neo.wire import error_for
from runner.cli import main
from runner.commands.sim import SIMS
from runner.preflight.probe import refusal

DATE = "2026-12-01"  # a Tuesday, an NSE trading day

ENTRY = """\
version: 1
name: check-entry
account: {account}
timezone: Asia/Kolkata
calendar: NSE
schedule: {{daily: "09:15"}}
instruments:
  rel: {{exchange: NSE, symbol: {symbol}}}
steps:
  - {{kind: place, id: entry, instrument: rel, side: BUY, quantity: 1, type: LIMIT, price: 100, product: MIS}}
"""


class Sim:
    def __init__(self, line: dict[str, Any], proc: subprocess.Popen[str]) -> None:
        self.line = line
        self.proc = proc


@pytest.fixture(scope="module", params=SIMS)
def sim(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    out = tmp_path_factory.mktemp(f"sim-{request.param}") / "master.csv"
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "sim", request.param, "--master-out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    assert proc.stdout is not None
    try:
        yield Sim(json.loads(proc.stdout.readline()), proc)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RUNNER_ACCOUNTS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)


def _accounts(tmp_path: Path, accounts: dict[str, Any]) -> Path:
    path = tmp_path / "accounts.yaml"
    path.write_text(json.dumps({"version": 1, "accounts": accounts}))  # JSON is YAML
    return path


def _check(
    capsys: pytest.CaptureFixture[str], accounts: Path, *books: Path
) -> tuple[int, dict[tuple[str, str], dict[str, Any]]]:
    code = main(["check", *map(str, books), "--accounts", str(accounts), "--date", DATE, "--json"])
    doc = json.loads(capsys.readouterr().out)
    rows = {(r["account"], r["check"]): r for r in doc["rows"]}
    assert doc["ready"] is (code == 0)
    return code, rows


def _use_sim(
    sim: Sim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, symbol: str = "RELIANCE"
) -> tuple[Path, Path]:
    for key, value in sim.line["env"].items():
        monkeypatch.setenv(key, value)
    book = tmp_path / "entry.yaml"
    book.write_text(ENTRY.format(account="sim", symbol=symbol))
    return _accounts(tmp_path, {"sim": sim.line["account"]}), book


def test_ready_against_each_simulator(
    sim: Sim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    accounts, book = _use_sim(sim, tmp_path, monkeypatch)
    code, rows = _check(capsys, accounts, book)
    statuses = {check: row["status"] for (_acct, check), row in rows.items()}
    assert statuses == {
        "due": "OK", "calendar": "OK", "credentials": "OK", "login": "OK", "master": "OK",
        "instruments": "OK", "rate budget": "OK",
    }, rows
    assert code == 0
    # The same account, one credential's variable unset: every such one named, no login tried.
    first = next(iter(sim.line["env"]))
    monkeypatch.delenv(first)
    code, rows = _check(capsys, accounts, book)
    assert code == 4
    assert rows[("sim", "credentials")]["status"] == "FAIL"
    assert f"environment variable {first} is not set" in " ".join(rows[("sim", "credentials")]["details"])
    assert first in rows[("sim", "credentials")]["action"]
    assert rows[("sim", "login")]["reason"] == "not tried: credentials missing"


def test_unknown_instrument_and_a_wrong_inline_lot(
    sim: Sim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if sim.line["broker"] != "kotak_neo":
        pytest.skip("one simulator is enough for the instrument rules")
    accounts, book = _use_sim(sim, tmp_path, monkeypatch, symbol="NOSUCHCO")
    code, rows = _check(capsys, accounts, book)
    assert code == 4
    row = rows[("sim", "instruments")]
    assert row["status"] == "FAIL"
    assert "NSE NOSUCHCO is not in the broker's instrument master" in row["reason"]
    # NIFTY futures are 75 a lot in the simulator's master; the playbook says 50.
    future = "{exchange: NFO, symbol: NIFTY, expiry: 2026-12-29, lot_size: 50}"
    text = ENTRY.format(account="sim", symbol="RELIANCE")
    text = text.replace("{exchange: NSE, symbol: RELIANCE}", future)
    book.write_text(text.replace("quantity: 1", "lots: 1"))
    code, rows = _check(capsys, accounts, book)
    assert code == 4
    assert "lot_size 50 disagrees with the broker's master (75)" in rows[("sim", "instruments")]["reason"]


def _many(path: Path, n: int) -> Path:
    head = ENTRY.format(account="desk", symbol="RELIANCE").split("steps:\n")[0]
    body = "".join(
        f"  - {{kind: place, id: e{i}, instrument: rel, side: BUY, quantity: 1, type: LIMIT, price: 100}}\n"
        for i in range(n)
    )
    path.write_text(head + "steps:\n" + body)
    return path


def test_over_budget_instant(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """12 orders at 09:15 on one segment at 8/s burst 1: the last leaves 11/8 = 1.375 s late (FAIL); 9
    leave within 1 s (8/8: WARN, ready). Counted across the account's playbooks."""
    accounts = _accounts(tmp_path, {"desk": {"broker": "paper", "rate_limit": {"orders_per_second": 8}}})
    one, two = _many(tmp_path / "one.yaml", 6), _many(tmp_path / "two.yaml", 6)
    code, rows = _check(capsys, accounts, one, two)
    row = rows[("desk", "rate budget")]
    assert code == 4 and row["status"] == "FAIL", row
    assert "09:15:00 IST on NSE: 12 order(s), the last +1.38 s" in row["reason"]
    _many(two, 3)
    code, rows = _check(capsys, accounts, one, two)
    row = rows[("desk", "rate budget")]
    assert row["status"] == "WARN" and code == 0, row
    assert "09:15:00 IST on NSE: 9 order(s), the last +1.00 s" in row["details"][0]


def test_unreachable_broker_is_exit_5(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    master = tmp_path / "master.csv"
    master.write_text("exchange,symbol,lot_size,tick_size,token\nNSE,RELIANCE,1,0.05,1\n")
    creds = {k: {"env": f"X_{k.upper()}"} for k in ("x_api_key", "user_id", "password", "api_key")}
    for ref in creds.values():
        monkeypatch.setenv(ref["env"], "value-of-it")
    accounts = _accounts(tmp_path, {"desk": {
        "broker": "odin", "endpoints": {"base_url": f"http://127.0.0.1:{port}"},
        "credentials": creds, "instruments": str(master), "timeout_seconds": 2,
    }})
    book = tmp_path / "entry.yaml"
    book.write_text(ENTRY.format(account="desk", symbol="RELIANCE"))
    code, rows = _check(capsys, accounts, book)
    assert code == 5
    login = rows[("desk", "login")]
    assert login["unreachable"] and "cannot reach the broker" in login["reason"]


def test_date_the_calendar_does_not_cover(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    accounts = _accounts(tmp_path, {"desk": {"broker": "paper"}})
    book = tmp_path / "entry.yaml"
    book.write_text(ENTRY.format(account="desk", symbol="RELIANCE"))
    code = main(["check", str(book), "--accounts", str(accounts), "--date", "2039-06-01", "--json"])
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert code == 4
    calendar = [r for r in rows if r["check"] == "calendar"]
    assert calendar and calendar[0]["status"] == "FAIL" and "does not cover" in calendar[0]["reason"]


def test_kotak_static_ip_refusal_is_said_in_those_words() -> None:
    # The reply Kotak (and its simulator) sends for an order from a host that is not whitelisted.
    exc = error_for({"stat": "Not_Ok", "stCode": 100008, "emsg": "IP not whitelisted"})
    assert exc is not None
    reason, action, unreachable = refusal(exc, KOTAK_NEO)
    assert "this host's IP is not the account's registered static IP" in reason and not unreachable
    assert "run runner check on the trading host" in action
    mismatch = error_for({"stat": "Not_Ok", "stCode": 1037, "emsg": "session was created from another IP"})
    assert mismatch is not None and "registered static IP" in refusal(mismatch, KOTAK_NEO)[0]
    # Another broker's same code means nothing of the kind.
    assert "registered static IP" not in refusal(exc, ODIN)[0]


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--help"]) == 0
    out = capsys.readouterr().out
    assert "4 not ready" in out and "5 a broker could not be reached" in out


def test_table_on_a_terminal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    accounts = _accounts(tmp_path, {"desk": {"broker": "paper"}})
    book = tmp_path / "entry.yaml"
    book.write_text(ENTRY.format(account="desk", symbol="RELIANCE"))
    assert main(["check", str(book), "--accounts", str(accounts), "--date", DATE]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["ACCOUNT", "CHECK", "STATUS", "REASON", "ACTION"]
    assert "ready" in out.splitlines()[-1]
    assert os.path.basename(book) in out


def test_a_failing_check_is_alerted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With an alerts file, each FAIL row goes out as a pre-open alert (captured over a real socket)."""
    from helpers.alerts_capture import Capture

    capture = Capture()
    try:
        alerts = tmp_path / "alerts.yaml"
        alerts.write_text(f"version: 1\ntargets:\n  desk: {capture.url}\n")
        accounts = _accounts(tmp_path, {"desk": {"broker": "paper", "rate_limit": {"orders_per_second": 8}}})
        one = _many(tmp_path / "one.yaml", 12)
        code = main(["check", str(one), "--accounts", str(accounts), "--date", DATE, "--json",
                     "--alerts", str(alerts), "--db", f"sqlite:///{tmp_path / 'j.db'}"])
        capsys.readouterr()
        assert code == 4
        bodies = [p.get("message", "") + p.get("title", "") for p in capture.posts]
        assert any("rate budget" in b and "desk" in b for b in bodies), capture.posts
    finally:
        capture.close()
