"""The burst of first requests released at one instant goes out before any follow-up work.

Fires due at one instant are released together (:class:`runner.daemon.release.InstantGate`). Once one
fire's order-entry request is answered, its follow-up work (an adapter's verify read, the journal writes
of the ack, the run's read-back) would otherwise run on the event loop, and at the broker, while other
fires' requests are still waiting to go out: measured by bench/lateness.py, ~2 ms of synchronous journal
commits per answered fire on PostgreSQL, and one more request per fire queued at the broker.

So a fire of a burst, once its request is answered, waits (:func:`after_send`) until every fire of the
burst has had its request answered, or :data:`BOUND` seconds after the last was released, whichever
comes first. Nothing is reported
or journaled in between that would otherwise have been earlier: the intent was committed before the send
and the ack's row is written after the wait, in the same order as before (a crash meanwhile leaves the
intent PENDING, looked up by the next start, as a crash a moment before the ack's row always did).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import datetime as dt
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

BOUND = 0.5  # seconds an answered fire waits at most for the rest of its burst, once all were released
UNRELEASED_BOUND = 5.0  # ... and at most this long while the burst is still being released (never ends)
LATE_BOUND = 2.0  # seconds a late first request (LateSends) holds answered fires back at most


class LateSends:
    """First requests still to go out after their instant: fires taken over from a dead daemon, noted
    when the lapsed claims are found (on the takeover's thread) and until each is answered or ended.

    The rule of a burst extends to them: an answered fire's follow-up work (its journal writes, a verify
    read) waits while any is outstanding, each for at most :data:`LATE_BOUND` seconds from when it was
    noted (then it holds no one). Preparing a taken fire is a chain of short journal hops, each waiting
    its turn on the event loop; with ~330 answered fires' bookkeeping ahead of each turn, the chain took
    2-3 s (issue 16, bench/scaleout.py). A follow-up delayed is harmless: its intent was committed before
    its send."""

    def __init__(self, bound: float = LATE_BOUND, mono: Callable[[], float] = time.monotonic) -> None:
        self.bound = bound
        self.mono = mono
        self._noted: dict[str, float] = {}  # fire id -> monotonic time noted (in that order)
        self._lock = threading.Lock()  # noted from the takeover's thread, cleared on the event loop
        self._clear: asyncio.Future[None] | None = None  # resolved once nothing is outstanding

    def _prune(self, now: float) -> None:
        """Forget the ids noted longer than ``bound`` ago (oldest first; under the lock)."""
        stale = []
        for fid, at in self._noted.items():
            if at + self.bound > now:
                break
            stale.append(fid)
        for fid in stale:
            del self._noted[fid]

    def note(self, fire_ids: Iterable[str]) -> None:
        """Fires whose first request is still to go (any thread)."""
        now = self.mono()
        with self._lock:
            self._prune(now)
            for fid in fire_ids:
                self._noted.setdefault(fid, now)

    def done(self, fire_id: str) -> None:
        """Its first request was answered, or it ended without one (on the event loop; idempotent)."""
        with self._lock:
            self._noted.pop(fire_id, None)
            self._prune(self.mono())
            empty = not self._noted
        if empty and self._clear is not None:
            clear, self._clear = self._clear, None
            if not clear.done():
                clear.set_result(None)

    def drop_all(self) -> None:
        """Nothing outstanding any more (a takeover look failed after noting its claims)."""
        with self._lock:
            ids = list(self._noted)
        for fid in ids:
            self.done(fid)

    def outstanding(self) -> int:
        with self._lock:
            self._prune(self.mono())
            return len(self._noted)

    async def wait(self) -> None:
        """Until none is outstanding, or the bound of the last one noted passed (on the event loop)."""
        now = self.mono()
        with self._lock:
            self._prune(now)
            if not self._noted:
                return
            left = max(self._noted.values()) + self.bound - now
        if self._clear is None:
            self._clear = asyncio.get_running_loop().create_future()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._clear), left)


FREED_PER_TURN = 16  # members let go per turn of the event loop once their burst settled


class Burst:
    """The fires released at one instant: :meth:`member` once per fire, before it runs; :meth:`released`
    once every fire waiting for the instant was let go (the gate).

    Once settled, the waiting members are let go :data:`FREED_PER_TURN` per turn of the event loop:
    their bookkeeping includes synchronous journal commits (~1-2 ms each on PostgreSQL), and 300 of them
    woken at once held the loop for seconds, long enough for claim leases to lapse (bench/lateness.py)."""

    def __init__(self, bound: float = BOUND, late: LateSends | None = None) -> None:
        self.bound = bound
        self.late = late  # its gate's first requests still to go after their instant
        self._left = 0
        self._settled = True  # no member yet: nothing to wait for
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self._give_up: asyncio.TimerHandle | None = None
        self._on_settled: list[Callable[[], None]] = []
        self.released_at: dt.datetime | None = None  # when the gate let the burst go (its clock)

    def on_settled(self, callback: Callable[[], None]) -> None:
        """``callback()`` once the burst settled (at once if it has)."""
        if self._settled:
            callback()
        else:
            self._on_settled.append(callback)

    def member(self, late_id: str | None = None) -> Member:
        self._left += 1
        self._settled = False
        return Member(self, late_id)

    def released(self, at: dt.datetime | None = None) -> None:
        """Every fire of the instant was let go (at ``at``, by the gate's clock): a member still not
        answered ``bound`` seconds from now (a slow reply, a step waiting for its time) holds the others
        no longer. Counting from here, not from each member's wait, keeps the answered fires'
        bookkeeping out of the release itself."""
        if at is not None and self.released_at is None:
            self.released_at = at
        if self._give_up is None and not self._settled:
            self._give_up = asyncio.get_running_loop().call_later(self.bound, self._settle)

    def _done(self) -> None:
        self._left -= 1
        if self._left <= 0:
            self._settle()

    def _settle(self) -> None:
        if self._give_up is not None:
            self._give_up.cancel()
        if not self._settled:
            self._settled = True
            self._free()
            callbacks, self._on_settled = self._on_settled, []
            for callback in callbacks:
                callback()

    def _free(self) -> None:
        for _ in range(FREED_PER_TURN):
            if not self._waiting:
                return
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
        if self._waiting:
            asyncio.get_running_loop().call_soon(self._free)

    async def settled(self) -> None:
        """Until every member is answered (or gone), or ``bound`` after the burst was released; then
        while late first requests are outstanding (:class:`LateSends`, bounded too)."""
        if not self._settled:
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter, UNRELEASED_BOUND)
        if self.late is not None:
            await self.late.wait()


class Member:
    """One fire of a burst. :meth:`answered` (its first request answered) and :meth:`gone` (it ended,
    whether or not it sent) each count it once."""

    def __init__(self, burst: Burst, late_id: str | None = None) -> None:
        self.burst = burst
        self.late_id = late_id  # a late first request's fire (LateSends), done with this member
        self._counted = False
        self._waited = False

    def gone(self) -> None:
        if not self._counted:
            self._counted = True
            self.burst._done()
            if self.late_id is not None and self.burst.late is not None:
                self.burst.late.done(self.late_id)

    async def answered(self) -> None:
        self.gone()
        if not self._waited:  # only its first request waits: later steps' requests are no burst
            self._waited = True
            await self.burst.settled()


_MEMBER: contextvars.ContextVar[Member | None] = contextvars.ContextVar("runner_burst_member", default=None)


@contextmanager
def joined(member: Member) -> Iterator[None]:
    """Calls made inside (this task and the tasks it starts) belong to ``member``'s fire; it is counted
    gone when the block ends."""
    token = _MEMBER.set(member)
    try:
        yield
    finally:
        _MEMBER.reset(token)
        member.gone()


def released_at() -> dt.datetime | None:
    """When the gate released the burst the calling fire belongs to; None outside a burst. A fire's own
    turn on the event loop comes after every fire released before it: its lateness is the gate's, not
    that of the burst's own synchronous work ahead of it."""
    member = _MEMBER.get()
    return None if member is None else member.burst.released_at


async def after_send() -> None:
    """Called once an order-entry request was answered, before any follow-up request or bookkeeping: in a
    burst, waits for the rest of it (bounded); otherwise returns at once."""
    member = _MEMBER.get()
    if member is not None:
        await member.answered()
