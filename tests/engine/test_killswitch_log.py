"""The kill switch's log line names the reason, or says there was none (never ``None``)."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pytest

from runner.engine.killswitch import ControlStore, ControlWatcher, Mode
from runner.journal.db import make_engine

T0 = dt.datetime(2026, 11, 25, 4, 0, tzinfo=dt.UTC)


async def test_resume_without_a_reason_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = ControlStore(make_engine(f"sqlite:///{tmp_path / 'j.db'}"))
    watcher = ControlWatcher(store)
    with caplog.at_level(logging.INFO):
        store.set(Mode.HALT, "exchange glitch", "ops@host", T0)
        await watcher.poll_once()
        store.set(Mode.NORMAL, None, "ops@host", T0 + dt.timedelta(minutes=5))
        await watcher.poll_once()
    lines = [r.getMessage() for r in caplog.records if "kill switch" in r.getMessage()]
    assert lines == [
        "kill switch: normal -> halt (exchange glitch, by ops@host)",
        "kill switch: halt -> normal (no reason given, by ops@host)",
    ]


def test_resume_takes_a_reason_and_says_when_none_was_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from runner.cli import main

    db = f"sqlite:///{tmp_path / 'j.db'}"
    assert main(["halt", "--db", db, "--reason", "glitch"]) == 0
    assert main(["resume", "--db", db, "--reason", "all clear"]) == 0
    assert "resumed: orders allowed" in capsys.readouterr().out
    assert ControlStore(make_engine(db)).get().reason == "all clear"
    assert main(["resume", "--db", db]) == 0
    assert "no reason given" in capsys.readouterr().out
