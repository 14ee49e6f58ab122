"""The peer sweep (every 5 s on every daemon) judges peers by their heartbeats alone: it never parses
their status payloads (3,000 playbooks each: issue 16, a daemon's fixed cost that grew with peers)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from helpers.sched import DayCalendar, RecordingExecutor, make_daemon, playbook_text

import runner.journal.fires as fires_module
from runner.clock import VirtualClock
from runner.daemon.policy import STALE_AFTER
from runner.journal.fires import Claim, FireState

IST = ZoneInfo("Asia/Kolkata")
DUE = dt.datetime(2026, 11, 23, 9, 15, tzinfo=IST).astimezone(dt.UTC)


async def test_the_sweep_closes_a_dead_peers_fire_without_parsing_any_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pbdir = tmp_path / "pb"
    pbdir.mkdir()
    (pbdir / "a.yaml").write_text(playbook_text("a", 'daily: "09:15"', calendar="NSE"))
    db = f"sqlite:///{tmp_path / 'j.db'}"
    cal = DayCalendar({2026}, set())
    clock = VirtualClock(DUE)
    d1 = make_daemon(pbdir, db, clock, RecordingExecutor(clock), "d1", cal)
    await d1.prepare()
    d1.store.heartbeat(clock.now(), {"playbooks": {f"p{i}": {} for i in range(3000)}})
    assert d1.store.claim_many([Claim("a", "v1", DUE, "run-a")], clock.now())  # then d1 died holding it
    d2 = make_daemon(pbdir, db, clock, RecordingExecutor(clock), "d2", cal)
    await d2.prepare()
    parsed: list[Any] = []

    def loads(text: str, **kw: Any) -> Any:
        parsed.append(text)
        return json.loads(text, **kw)

    monkeypatch.setattr(fires_module, "json", SimpleNamespace(loads=loads, dumps=json.dumps))
    assert await d2.sweep_interrupted() == []  # d1's heartbeat noted
    clock._now = DUE + STALE_AFTER
    [item] = await d2.sweep_interrupted()
    assert item.playbook == "a"
    row = d2.store.slot("a", DUE)
    assert row is not None and row.state in (FireState.MISSED, FireState.UNKNOWN)
    assert parsed == []
