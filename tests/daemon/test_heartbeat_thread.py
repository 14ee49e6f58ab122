"""The daemon's heartbeat lands while the loop's shared worker pool is busy (issue 16): a burst of fires
queues journal work there for seconds, and beats stuck behind it made live peers drop out of the
membership (MEMBER_STALE, 4 s), moving their playbooks mid-burst."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from typing import Any

from runner.clock import VirtualClock
from runner.daemon.status import Heartbeat, Quiet


class Store:
    def __init__(self) -> None:
        self.beats = asyncio.Queue[bool]()
        self.loop = asyncio.get_running_loop()

    def heartbeat(self, now: dt.datetime, status: Any = None, stopped: bool = False) -> None:
        self.loop.call_soon_threadsafe(self.beats.put_nowait, stopped)


async def test_a_beat_lands_while_every_worker_of_the_shared_pool_is_blocked() -> None:
    clock = VirtualClock(dt.datetime(2026, 11, 25, 3, 0, tzinfo=dt.UTC))
    store = Store()
    beat = Heartbeat(store, clock, lambda: {}, Quiet(clock, (), {}), 0.01)  # type: ignore[arg-type]
    release = threading.Event()
    loop = asyncio.get_running_loop()
    blocked = [loop.run_in_executor(None, release.wait) for _ in range(64)]  # the pool, saturated
    task = asyncio.ensure_future(beat.run())
    try:
        assert await asyncio.wait_for(store.beats.get(), 30) is False
        assert await asyncio.wait_for(store.beats.get(), 30) is False  # and the next one
    finally:
        task.cancel()
        release.set()
        await asyncio.gather(task, *blocked, return_exceptions=True)
    await beat.stopped()
    while (stopped := await store.beats.get()) is False:
        pass
    assert stopped is True


async def test_a_stream_of_fires_starting_never_holds_the_beat_back_for_long() -> None:
    """Quiet around instants defers the beat; a daemon starting late fires one after another for many
    seconds is never quiet, and its peers counted it gone (MEMBER_STALE) while it worked."""
    clock = VirtualClock(dt.datetime(2026, 11, 25, 3, 0, tzinfo=dt.UTC))
    store = Store()

    class Starting:  # a fire that started just now, whenever asked
        @property
        def started_at(self) -> dt.datetime:
            return clock.now()

    running: dict[str, Any] = {"f": Starting()}
    beat = Heartbeat(store, clock, lambda: {}, Quiet(clock, (), running), 0.05)  # type: ignore[arg-type]
    task = asyncio.ensure_future(beat.run())
    try:
        assert await asyncio.wait_for(store.beats.get(), 30) is False
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
