"""The instant gate keeps the cyclic GC off until the instant's burst settled (runner.daemon.release)."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc

import pytest

from runner.clock import VirtualClock
from runner.daemon import release
from runner.daemon.release import InstantGate

INSTANT = dt.datetime(2026, 11, 25, 3, 45, tzinfo=dt.UTC)


async def test_the_gc_stays_off_until_every_first_request_of_the_instant_is_answered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(release, "GC_PAUSE", 0.0)  # an HTTP burst outlasts the fixed pause
    assert gc.isenabled()
    gate = InstantGate(VirtualClock(INSTANT - dt.timedelta(seconds=1)))
    first, second = gate.join(INSTANT), gate.join(INSTANT)
    await asyncio.gather(gate.wait(INSTANT), gate.wait(INSTANT))
    try:
        first.gone()
        for _ in range(10):
            await asyncio.sleep(0)
        assert not gc.isenabled()  # the second fire's request is still out
        second.gone()
        for _ in range(3):
            await asyncio.sleep(0)
        assert gc.isenabled()
    finally:
        gc.enable()
