"""The burst of first requests released at one instant goes out before any follow-up work.

Fires due at one instant are released together (:class:`runner.daemon.release.InstantGate`). Once one
fire's order-entry request is answered, its follow-up work (an adapter's verify read, the journal writes
of the ack, the run's read-back) would otherwise run on the event loop, and at the broker, while other
fires' requests are still waiting to go out: measured by bench/lateness.py, ~2 ms of synchronous journal
commits per answered fire on PostgreSQL, and one more request per fire queued at the broker.

So a fire of a burst, once its request is answered, waits (:func:`after_send`) until every fire of the
burst has had its request answered, or :data:`BOUND` seconds, whichever comes first. Nothing is reported
or journaled in between that would otherwise have been earlier: the intent was committed before the send
and the ack's row is written after the wait, in the same order as before (a crash meanwhile leaves the
intent PENDING, looked up by the next start, as a crash a moment before the ack's row always did).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

BOUND = 0.5  # seconds an answered fire waits at most for the rest of its burst


class Burst:
    """The fires released at one instant: :meth:`member` once per fire, before it runs."""

    def __init__(self, bound: float = BOUND) -> None:
        self.bound = bound
        self._left = 0
        self._all = asyncio.Event()
        self._all.set()  # no member yet: nothing to wait for

    def member(self) -> Member:
        self._left += 1
        self._all.clear()
        return Member(self)

    def _done(self) -> None:
        self._left -= 1
        if self._left <= 0:
            self._all.set()

    async def settled(self) -> None:
        """Until every member is answered (or gone), at most ``bound`` seconds."""
        if self._all.is_set():
            return
        # a member still waiting for its reply (or its step's time) holds no one longer than that
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all.wait(), self.bound)


class Member:
    """One fire of a burst. :meth:`answered` (its first request answered) and :meth:`gone` (it ended,
    whether or not it sent) each count it once."""

    def __init__(self, burst: Burst) -> None:
        self.burst = burst
        self._counted = False
        self._waited = False

    def gone(self) -> None:
        if not self._counted:
            self._counted = True
            self.burst._done()

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


async def after_send() -> None:
    """Called once an order-entry request was answered, before any follow-up request or bookkeeping: in a
    burst, waits for the rest of it (bounded); otherwise returns at once."""
    member = _MEMBER.get()
    if member is not None:
        await member.answered()
