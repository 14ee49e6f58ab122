"""A journal outage is said once (ERROR + alert), its end once, and what was put off runs when it ends."""

from __future__ import annotations

import logging
import sqlite3

import pytest

from runner.journal.health import JournalHealth


def test_an_outage_is_said_once_and_its_end_runs_what_was_put_off(caplog: pytest.LogCaptureFixture) -> None:
    health = JournalHealth()
    done: list[str] = []
    caplog.set_level(logging.DEBUG, logger="runner.journal")
    locked = sqlite3.OperationalError("database is locked")
    assert health.trouble(locked, "heartbeat write")
    assert health.trouble(locked, "kill switch poll")
    health.when_back(lambda: done.append("claimed"))
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "journal unreachable (heartbeat write failed)" in errors[0].getMessage()
    assert health.as_dict()["reachable"] is False and health.outages == 1
    assert done == []
    health.ok()
    health.ok()
    assert done == ["claimed"]  # once
    assert health.as_dict() == {"reachable": True, "down_since": None, "problem": None, "outages": 1}
    assert sum("reachable again" in r.getMessage() for r in caplog.records) == 1
    assert health.trouble(locked, "heartbeat write") and health.outages == 2  # a new outage: said again


def test_a_bug_is_not_an_outage() -> None:
    health = JournalHealth()
    assert not health.trouble(ValueError("a bug"), "heartbeat write")
    assert health.reachable
