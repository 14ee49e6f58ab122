"""Time sources. The engine never calls ``datetime.now`` or ``asyncio.sleep`` directly: it asks a clock,
so ``runner rehearse`` can run a whole trading day in virtual time."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> dt.datetime:
        """Current instant, timezone-aware (UTC)."""

    async def sleep(self, seconds: float) -> None: ...

    async def sleep_until(self, when: dt.datetime) -> None: ...


class SystemClock:
    """Wall clock. ``sleep_until`` wakes a little early and finishes the wait precisely."""

    spin_margin = 0.002  # seconds of busy-ish waiting (asyncio.sleep(0) loop) at the end

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    async def sleep(self, seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds)

    async def sleep_until(self, when: dt.datetime) -> None:
        target = when.timestamp()
        remaining = target - time.time()
        if remaining > self.spin_margin:
            await asyncio.sleep(remaining - self.spin_margin)
        while time.time() < target:
            await asyncio.sleep(0)


class VirtualClock:
    """Simulated time: sleeping moves the clock forward at once. Used by rehearse and tests."""

    def __init__(self, start: dt.datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("VirtualClock needs a timezone-aware start")
        self._now = start.astimezone(dt.UTC)

    def now(self) -> dt.datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += dt.timedelta(seconds=seconds)

    async def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.advance(seconds)
        await asyncio.sleep(0)

    async def sleep_until(self, when: dt.datetime) -> None:
        if when > self._now:
            self._now = when.astimezone(dt.UTC)
        await asyncio.sleep(0)
