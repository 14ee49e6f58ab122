"""``runner instruments sync`` / ``search`` as a desk runs them: exit codes, tables, --json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.instruments import HEADER, MasterServer, expiry

from runner.cli import main

# A complete Kotak entry (validation wants every required credential named; none is read by a sync
# from `master_csv`).
KOTAK_KEYS = ("consumer_key", "mobile_number", "ucc", "totp_secret", "mpin")
CREDS = ", ".join(f"{k}: {{env: K_{k.upper()}}}" for k in KOTAK_KEYS)


def accounts_file(tmp_path: Path, server: MasterServer, path: str = "/nse_fo.csv") -> str:
    f = tmp_path / "accounts.yaml"
    f.write_text(
        "version: 1\naccounts:\n"
        f"  desk:\n    broker: kotak_neo\n    endpoints: {{master_csv: '{server.url}{path}'}}\n"
        f"    credentials: {{{CREDS}}}\n"
        "  other:\n    broker: paper\n"
    )
    return str(f)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_sync_good_then_quarantined_exit_codes_and_json(
    server: MasterServer, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    acc = accounts_file(tmp_path, server)
    code, out, err = cli(capsys, "instruments", "sync", "--accounts", acc, "--db", db_url)
    assert code == 0, err
    assert out.splitlines()[0].split() == [
        "ACCOUNT",
        "BROKER",
        "DAY",
        "ROWS",
        "SHA256",
        "STATUS",
        "AGE",
        "REASONS",
    ]
    assert "desk" in out and "good" in out and "62" in out
    server.files["/nse_fo.csv"] = HEADER.encode()
    code, out, err = cli(capsys, "instruments", "sync", "desk", "--accounts", acc, "--db", db_url, "--json")
    assert code == 4
    (row,) = json.loads(out)
    assert (row["account"], row["status"], row["snapshot"]["rows"]) == ("desk", "quarantined", 0)
    assert [r["reason"] for r in row["reasons"]] == ["no_rows"]
    assert row["in_force"]["status"] == "good" and row["in_force"]["rows"] == 62
    assert "master QUARANTINED" in err and "stays in force" in err


def test_a_quarantined_master_is_alerted(
    server: MasterServer, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from helpers.alerts_capture import Capture

    capture = Capture()
    try:
        alerts = tmp_path / "alerts.yaml"
        alerts.write_text(f"version: 1\ntargets:\n  desk: {capture.url}\n")
        acc = accounts_file(tmp_path, server)
        assert cli(capsys, "instruments", "sync", "desk", "--accounts", acc, "--db", db_url)[0] == 0
        assert capture.posts == []  # a good master says nothing
        server.files["/nse_fo.csv"] = HEADER.encode()
        code, _, _ = cli(capsys, "instruments", "sync", "desk", "--accounts", acc, "--db", db_url,
                         "--alerts", str(alerts))
        assert code == 4
        (post,) = capture.posts
        assert "quarantined" in post["message"] and "desk" in post["message"], post
    finally:
        capture.close()


def test_sync_download_failure_is_exit_5(
    server: MasterServer, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    acc = accounts_file(tmp_path, server, path="/missing.csv")
    code, out, err = cli(capsys, "instruments", "sync", "--accounts", acc, "--db", db_url, "--json")
    assert code == 5
    by_account = {r["account"]: r for r in json.loads(out)}
    assert by_account["desk"]["status"] == "error" and "download failed" in err


def test_sync_unknown_account_is_usage(
    server: MasterServer, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(capsys, "instruments", "sync", "nope", "--accounts", accounts_file(tmp_path, server))
    assert code == 2 and "unknown account 'nope'" in err


def test_sync_help_states_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["instruments", "sync", "--help"]) == 0
    assert "4 any download quarantined" in " ".join(capsys.readouterr().out.split())


def test_search_table_and_json(
    server: MasterServer, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    acc = accounts_file(tmp_path, server)
    code, out, err = cli(
        capsys,
        "instruments",
        "search",
        "nifty",
        "24500",
        "ce",
        "--account",
        "desk",
        "--accounts",
        acc,
        "--db",
        db_url,
    )
    assert code == 0, err  # never synced: synced now
    lines = out.splitlines()
    assert lines[0].split() == ["INSTRUMENT", "TOKEN", "TRADING", "SYMBOL", "LOT", "TICK", "FREEZE", "EXPIRY"]
    assert len(lines) == 2 and f"NFO NIFTY {expiry()} 24500 CE" in lines[1] and "75" in lines[1]
    code, out, _ = cli(
        capsys,
        "instruments",
        "search",
        "NIFTY",
        "PE",
        "--account",
        "desk",
        "--accounts",
        acc,
        "--db",
        db_url,
        "--limit",
        "3",
        "--json",
        "--expiry",
        expiry().isoformat(),
    )
    rows = json.loads(out)
    assert code == 0 and [r["strike"] for r in rows] == ["23000", "23100", "23200"]
    assert rows[0]["tick_size"] == "0.05" and rows[0]["token"] and rows[0]["trading_symbol"].endswith("PE")
