"""`runner halt` / `runner resume` alone (no daemon running) publish kill_switch_engaged / _released with
who and why, delivered before the command exits (a loopback capture server, a real socket)."""

from __future__ import annotations

import getpass
import json
import socket
from pathlib import Path

import pytest
from helpers.alerts_capture import Capture

from runner.cli import main


def test_halt_and_resume_alert_who_and_why(
    tmp_path: Path, capture: Capture, capsys: pytest.CaptureFixture[str]
) -> None:
    alerts = tmp_path / "alerts.yaml"
    alerts.write_text(f"version: 1\ntargets:\n  desk: {capture.url}\n")
    db = f"sqlite:///{tmp_path / 'j.db'}"
    who = f"{getpass.getuser()}@{socket.gethostname()}"

    assert main(["halt", "--reason", "exchange glitch", "--db", db, "--alerts", str(alerts), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mode"] == "halt"
    (engaged,) = capture.posts  # delivered by the time the command returned
    assert "kill_switch_engaged" in engaged["title"]
    assert f"by {who}" in engaged["message"] and "exchange glitch" in engaged["message"], engaged

    assert main(["resume", "--db", db, "--alerts", str(alerts)]) == 0
    capsys.readouterr()
    released = capture.posts[1]
    assert "kill_switch_released" in released["title"]
    assert f"by {who}" in released["message"] and "no reason given" in released["message"], released


def test_a_halt_is_engaged_even_when_the_alerts_file_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite:///{tmp_path / 'j.db'}"
    code = main(["halt", "--db", db, "--alerts", str(tmp_path / "nope.yaml")])
    out, err = capsys.readouterr()
    assert code == 2 and "HALTED" in out and "no such alerts file" in err
    assert main(["status", "--db", db, "--json"]) in (0, 4, 5)
    assert json.loads(capsys.readouterr().out)["control"]["mode"] == "halt"
