"""While the journal is down the daemon probes it on a backoff (issue 16): the heartbeat write is the
probe, 0.5 s doubling to 5 s, so a blip ends fast and a dead server is not hammered; the other journal
loops (kill switch poll, membership, takeover scans) wait for it; the end is said once, with how long."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sqlite3
from typing import Any

import pytest

from runner.clock import VirtualClock
from runner.daemon.status import Heartbeat, Quiet
from runner.journal.health import PROBE_FIRST, PROBE_MAX, JournalHealth

OUTAGE = sqlite3.OperationalError("unable to open database file")
START = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


def test_the_probe_backs_off_to_a_cap_and_starts_over_with_each_outage() -> None:
    health = JournalHealth()
    assert not health.idle()
    assert health.trouble(OUTAGE, "heartbeat write")
    assert not health.idle(), "nobody probes: the loops keep retrying themselves"
    health.probed = True
    assert health.idle()
    assert [health.probe_delay() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert (PROBE_FIRST, PROBE_MAX) == (0.5, 5.0)
    health.ok()
    assert not health.idle()
    health.trouble(OUTAGE, "heartbeat write")
    assert health.probe_delay() == 0.5  # a new outage starts fast again


class Store:
    """A journal that refuses the first ``down`` heartbeat writes."""

    def __init__(self, down: int) -> None:
        self.down = down
        self.writes = 0

    def heartbeat(self, now: dt.datetime, status: Any, stopped: bool = False) -> None:
        self.writes += 1
        if self.writes <= self.down:
            raise OUTAGE


class Stop(Exception):
    pass


def test_the_heartbeat_probes_a_down_journal_on_the_backoff_and_says_its_end_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = VirtualClock(START)
    store = Store(down=5)
    beat = Heartbeat(store, clock, lambda: {}, Quiet(clock, (), {}), interval=1.0)  # type: ignore[arg-type]
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 8:
            raise Stop
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    caplog.set_level(logging.WARNING, logger="runner.journal")
    with pytest.raises(Stop):
        asyncio.run(beat.run())
    # 5 refused writes: probes after 0.5, 1, 2, 4, 5 s; the 6th lands and the beat goes back to its interval
    assert slept == [0.5, 1.0, 2.0, 4.0, 5.0, 1.0, 1.0, 1.0]
    assert store.writes == 8
    assert beat.health.reachable
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "journal unreachable (heartbeat write failed)" in errors[0].getMessage()
    back = [r.getMessage() for r in caplog.records if "reachable again" in r.getMessage()]
    assert len(back) == 1 and "(5 probe(s))" in back[0], back
