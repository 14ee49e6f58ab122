"""The daemon's heartbeat and status row (read by ``runner status``), and the quiet windows around
instants that such background work keeps out of."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from runner.alerts import hooks as alerts
from runner.clock import Clock
from runner.daemon.loader import Entry
from runner.daemon.release import Running
from runner.daemon.upcoming import Upcoming, upcoming_dict
from runner.engine.killswitch import ControlState
from runner.journal import health as journal_health
from runner.journal.fires import FireStore

log = logging.getLogger("runner.scheduler")

QUIET = 0.2  # seconds around an instant kept free of background work (reload scan, heartbeat)


def status_payload(
    owner: str,
    playbook_dir: Path,
    control: ControlState,
    entries: Iterable[Entry],
    running: Iterable[Running],
    invalid: Mapping[str, tuple[str, ...]],
    upcoming: Callable[[Entry], Upcoming] | None = None,
    cache: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """``next_fire`` is the next fire that will run: with ``upcoming``, instants its calendar closes are
    listed under ``skips`` instead (:mod:`runner.daemon.upcoming`). ``cache``: each playbook's part kept
    between calls while its version, next fire and upcoming stand (rebuilding 3,000 of them on every
    heartbeat through a burst of fires was a daemon's fixed cost, issue 16)."""
    if cache is not None:
        playbooks = {}
        for e in entries:
            up = upcoming(e) if upcoming is not None else None
            key = (e.version, e.next_fire, e.path.name, up)  # up itself: held, its id never reused
            hit = cache.get(e.name)
            if hit is None or hit[0] != key:
                hit = cache[e.name] = (key, _playbook_status(e, up))
            playbooks[e.name] = hit[1]
        for gone in cache.keys() - playbooks.keys():
            del cache[gone]
        return _payload(owner, playbook_dir, control, playbooks, running, invalid)
    return _payload(
        owner,
        playbook_dir,
        control,
        {e.name: _playbook_status(e, upcoming(e) if upcoming is not None else None) for e in entries},
        running,
        invalid,
    )


def _playbook_status(e: Entry, up: Upcoming | None) -> dict[str, Any]:
    return {
        "file": e.path.name,
        "version": e.version,
        "timezone": e.playbook.timezone,
        "calendar": e.playbook.calendar,
        "account": e.playbook.account,  # the input of account-affine ownership (runner status: members)
        "next_fire": e.next_fire.isoformat() if e.next_fire else None,
        **(upcoming_dict(up) if up is not None else {}),
    }


def _payload(
    owner: str,
    playbook_dir: Path,
    control: ControlState,
    playbooks: dict[str, Any],
    running: Iterable[Running],
    invalid: Mapping[str, tuple[str, ...]],
) -> dict[str, Any]:
    return {
        "daemon_id": owner,
        "pid": os.getpid(),
        "playbook_dir": str(playbook_dir),
        "control": control.as_dict(),
        "playbooks": playbooks,
        "running": [
            {
                "playbook": r.fire.playbook.name,
                "run_id": r.fire.run_id,
                "fire_id": r.fire.fire_id,
                "scheduled_for": r.fire.scheduled_for.isoformat(),
                "started_at": r.started_at.isoformat(),
            }
            for r in running
        ],
        "invalid": {path: list(errors) for path, errors in invalid.items()},
    }


def near_instant(
    now: dt.datetime, due: Iterable[dt.datetime], started: Iterable[dt.datetime], quiet: float = QUIET
) -> bool:
    """Whether a fire is due, or started executing, within ``quiet`` seconds of ``now``."""
    return any(abs((t - now).total_seconds()) < quiet for t in due) or any(
        (now - s).total_seconds() < quiet for s in started
    )


GUARD_BEFORE = 0.010  # seconds before an instant a short poll may not start (see Quiet.around_instant)
GUARD_AFTER = 0.002  # ... and after it (the released fires' requests leave within ~1 ms)


class Quiet:
    """Keeps background work out of the moments around instants. ``due``: instants as mapping keys
    (the next fire of each playbook; the fires claimed and waiting for their instant)."""

    def __init__(
        self,
        clock: Clock,
        due: Iterable[Mapping[dt.datetime, int]],
        running: Mapping[str, Running],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,  # real time, whatever ``clock`` is
    ) -> None:
        self.clock = clock
        self.due = tuple(due)
        self.running = running
        self.sleep = sleep

    def _instants(self) -> list[dt.datetime]:
        return [t for d in self.due for t in d]

    async def wait(self, limit: float | None = None) -> None:
        """Until no fire is due or executing within ``QUIET`` of now: background work (the reload
        scan, the heartbeat's status) would otherwise take the GIL and the loop from the instant. At
        most ``limit`` seconds (real time), if given: a stream of late fires starting one after another
        is never quiet."""
        waited = 0.0
        while near_instant(self.clock.now(), self._instants(), (r.started_at for r in self.running.values())):
            if limit is not None and waited >= limit:
                return
            await self.sleep(QUIET / 2)
            waited += QUIET / 2

    def remaining(self) -> float:
        """Seconds until the quiet window around now ends (0: outside one), for a thread (the alert
        worker) that sleeps it out in one go: polling would wake it, and take the GIL, at the instant.
        May raise RuntimeError when the loop resizes a mapping meanwhile (the caller asks again)."""
        now = self.clock.now()
        ends = [(t - now).total_seconds() + QUIET for t in self._instants()]
        ends += [(r.started_at - now).total_seconds() + QUIET for r in list(self.running.values())]
        return max([e for e in ends if 0 < e < 2 * QUIET], default=0.0)

    async def around_instant(self) -> None:
        """For work that must not wait long (the kill-switch poll): if an instant is due within
        ``GUARD_BEFORE``, wait until ``GUARD_AFTER`` past it (once: at most ~12 ms). A worker thread's
        read would otherwise hold the GIL while the loop spins through the instant's last millisecond
        (seen: 1-2 ms late fires)."""
        now = self.clock.now()
        ahead = [(t - now).total_seconds() for t in self._instants()]
        close = [a for a in ahead if -GUARD_AFTER < a < GUARD_BEFORE]
        if close:
            await self.sleep(max(close) + GUARD_AFTER)


class Heartbeat:
    """Writes the heartbeat every ``interval`` and the status payload when something changed, in a
    worker thread: a journal locked by another process (SQLite's busy timeout is 30 s) delays the beat,
    never the event loop. :meth:`obstructed` tells the peer sweep when a beat could not land promptly:
    while the journal refuses our writes, it refuses our peers' too, so their silence proves nothing."""

    def __init__(
        self,
        store: FireStore,
        clock: Clock,
        status: Callable[[], dict[str, Any]],
        quiet: Quiet,
        interval: float,
    ) -> None:
        self.store = store
        self.clock = clock
        self.status = status
        self.quiet = quiet
        self.interval = interval
        self.dirty = True
        self._writing_since: float | None = None  # time.monotonic() when the beat in flight began
        self._slow = False  # a beat took longer than ``interval`` since the last obstructed() call
        self.health = journal_health.JournalHealth()  # outages said once; a landed beat ends one
        self.health.probed = True  # while down, the beat is the probe (on a backoff, below)
        # A thread of its own, not the loop's shared pool: a burst of fires queues journal work there
        # for seconds, and a beat stuck behind it made live peers drop out of the membership (issue 16).
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="heartbeat")

    def obstructed(self) -> bool:
        """Whether a beat took longer than ``interval`` (or one has been in flight that long) since the
        previous call: the journal was not taking writes for a while. Real time, whatever the clock."""
        since = self._writing_since
        slow = self._slow or (since is not None and time.monotonic() - since > self.interval)
        self._slow = False
        return slow

    def touch(self) -> None:
        """The status changed: write it with the next heartbeat."""
        self.dirty = True

    async def run(self) -> None:
        while True:
            # bounded: membership counts a daemon gone after MEMBER_STALE (4 s) without a beat, and an
            # overloaded daemon starting late fires for many seconds is never quiet (issue 16)
            await self.quiet.wait(limit=self.interval)
            status = None
            if self.dirty:
                self.dirty = False
                status = self.status()
            self._writing_since = started = time.monotonic()
            try:
                beat = functools.partial(self.store.heartbeat, self.clock.now(), status)
                await asyncio.get_running_loop().run_in_executor(self._writer, beat)
            except Exception as exc:
                if not self.health.trouble(exc, "heartbeat write"):
                    log.exception("heartbeat write failed")
                    alerts.journal_unreachable(f"heartbeat write failed: {type(exc).__name__}: {exc}")
                self.dirty = True
            else:
                self.health.ok()
            finally:
                self._writing_since = None
                if time.monotonic() - started > self.interval:
                    self._slow = True
            await asyncio.sleep(self.interval if self.health.reachable else self.health.probe_delay())

    async def stopped(self) -> None:
        last = functools.partial(self.store.heartbeat, self.clock.now(), self.status(), True)
        await asyncio.get_running_loop().run_in_executor(self._writer, last)  # after a beat in flight
        self._writer.shutdown(wait=False)
