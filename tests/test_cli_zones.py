"""Every human-facing time names its zone and is in the playbook's zone (issue 15, "Time"); JSON keeps
ISO 8601 with the offset. Run ids of new runs carry the playbook's local date."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from runner.cli import EXIT_OK, main

PLAYBOOK = """\
version: 1
name: zones-demo
timezone: Asia/Kolkata
instruments:
  rel: {exchange: NSE, symbol: RELIANCE}
steps:
  - {kind: place, id: bid, instrument: rel, side: BUY, quantity: 1, type: LIMIT, price: 1300}
  - {kind: cancel, id: tidy, all_open: {}}
"""
IST_TIME = re.compile(r"2026-12-01 \d\d:\d\d:\d\d IST")
UTC_ISO = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|\+00:00)")


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    for var in ("RUNNER_ACCOUNTS", "RUNNER_RISK", "RUNNER_DB", "NO_COLOR"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "pb.yaml").write_text(PLAYBOOK)
    db = f"sqlite:///{tmp_path / 'j.db'}"
    monkeypatch.setenv("RUNNER_DB", db)
    return db


def _rehearse(capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["rehearse", "pb.yaml", "--date", "2026-12-01", "--db", os.environ["RUNNER_DB"]]) == EXIT_OK
    capsys.readouterr()
    assert main(["history", "--json"]) == EXIT_OK
    (run,) = json.loads(capsys.readouterr().out)
    return str(run["run_id"])


def test_a_rehearsal_of_1_december_is_labelled_1_december(
    ws: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = _rehearse(capsys)
    # the local date and time of the slot (midnight IST), the offset marking the id scheme
    assert run_id.startswith("20261201-000000+0530-"), run_id


def test_history_and_show_print_the_playbooks_zone(ws: str, capsys: pytest.CaptureFixture[str]) -> None:
    run_id = _rehearse(capsys)
    assert main(["history"]) == EXIT_OK
    text = capsys.readouterr().out
    assert IST_TIME.search(text) and not UTC_ISO.search(text), text
    assert main(["show", run_id]) == EXIT_OK
    text = capsys.readouterr().out
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("scheduled"))
    assert "scheduled 2026-12-01 00:00:00 IST" in line and not UTC_ISO.search(line), line
    # JSON keeps ISO 8601 with the offset
    assert main(["show", run_id, "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["run"]["scheduled_for"] == "2026-11-30T18:30:00+00:00"


def test_halt_and_status_agree_on_one_named_zone(ws: str, capsys: pytest.CaptureFixture[str]) -> None:
    _rehearse(capsys)
    assert main(["halt", "--reason", "drill"]) == EXIT_OK
    halted = capsys.readouterr().out
    since = re.search(r"since (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d IST)", halted)
    assert since and "UTC" not in halted, halted
    assert main(["status"]) == EXIT_OK
    text = capsys.readouterr().out
    assert f"since {since.group(1)}" in text or re.search(r"since \S+ \S+ IST", text), text
    assert not UTC_ISO.search(text), text
    assert main(["resume"]) == EXIT_OK
