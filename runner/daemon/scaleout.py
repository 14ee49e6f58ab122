"""Scale-out on PostgreSQL (issue 16): the loops that keep membership, renew this daemon's claim leases
and take over unsent claims of holders whose lease lapsed. Pure rules live in
:mod:`runner.daemon.membership` and :mod:`runner.daemon.leasing`; the SQL in
:mod:`runner.journal.claim_leases`. On SQLite (one daemon) none of this runs: it owns everything."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from runner.brokers.burst import LateSends
from runner.daemon.leasing import LEASE, RENEW_EVERY, LeaseBook
from runner.daemon.membership import Membership, read_members
from runner.journal import claim_leases
from runner.journal.fires import FireRow, FireStore
from runner.journal.health import PROCESS, JournalHealth

log = logging.getLogger("runner.scheduler")
T = TypeVar("T")

SLOW_RENEWAL = 0.3  # of a lease: a renewal slower than this is said
MEMBERS_EVERY = 1.0  # seconds between membership reads
TAKEOVER_EVERY = 0.25  # seconds to the next look for lapsed unsent claims after a failed one
SCAN_AT_LEAST = 0.1  # seconds between looks at least
SCAN_AFTER_LAPSE = 0.02  # seconds after a lease's expiry the look for it runs (same clock: the database's)


def next_scan_in(scan: claim_leases.Scan, lease: float = LEASE) -> float:
    """Seconds to sleep until the next takeover look: until the earliest live lease that could lapse
    unsent does (plus a little), at most one lease (a claim written after this look cannot lapse sooner
    than one lease after its write), at least :data:`SCAN_AT_LEAST`. Measured on the database's clock,
    both ends, so host clock skew does not enter; a lease renewed meanwhile only means a look that finds
    nothing and sleeps again."""
    if scan.next_lapse is None:
        return lease
    wait = (scan.next_lapse - scan.now).total_seconds() + SCAN_AFTER_LAPSE
    return min(lease, max(SCAN_AT_LEAST, wait))


class ScaleOut:
    def __init__(
        self,
        store: FireStore,
        membership: Membership,
        leases: LeaseBook,
        now: Callable[[], dt.datetime],
        take: Callable[[FireRow], Awaitable[None]],
        on_change: Callable[[], None],
    ) -> None:
        self.store = store
        self.membership = membership
        self.leases = leases
        self.now = now
        self.take = take  # runs a claim taken over (re-armed: prepared and released)
        # Clears the old holder's runs of the claims just taken, all in one go, before any is re-armed:
        # they are then prepared together (one arming group commit), not one by one as each clears. On
        # the takeover's thread; the claims it cleared need no clearing of their own.
        self.clear: Callable[[list[FireRow]], None] | None = None
        # The takeover's journal work on a thread of its own: at the instant the shared worker pool is
        # queued with the survivor's own fires' writes, and a takeover waiting behind them is late.
        self._pool: ThreadPoolExecutor | None = None
        self.on_change = on_change
        # Noted as soon as lapsed claims are found: the answered fires' follow-up work waits for them
        # (the daemon hands its release's in; see LateSends).
        self.late = LateSends()
        self.tasks: set[asyncio.Task[None]] = set()  # claims taken over, running
        self.health: JournalHealth = PROCESS  # the daemon hands it its own: outages said once
        self.next_scan = SCAN_AT_LEAST  # seconds from the last takeover look to the next
        self.sleep: Callable[[float], Awaitable[None]] = self._sleep_or_wake  # tests: a fake clock's
        self._wake: asyncio.Event | None = None  # set when a claim of ours is forfeited: look now
        self._wake_when_back = False  # a look is asked for when the journal is back
        leases.on_forfeit = self.wake

    async def refresh_members(self) -> bool:
        members = await asyncio.to_thread(read_members, self.store.engine)
        changed = self.membership.update(members)
        if changed:
            log.warning("members now %s", ", ".join(self.membership.members))
            self.on_change()
        return changed

    def renew_now(self) -> None:
        """One renewal of every live lease this daemon holds (blocking: the renewal thread's work)."""
        if self.leases.idle():
            return
        before = self.leases.stamp()
        held = claim_leases.renew_held(self.store, self.leases.lease)
        self.leases.renewed(held, before)
        took = self.leases.stamp() - before
        if took > SLOW_RENEWAL * self.leases.lease:  # the journal is slow to take writes: claims at risk
            log.warning("claim lease renewal took %.2f s (leases last %.1f s)", took, self.leases.lease)

    async def take_over_once(self) -> list[FireRow]:
        """Take over the lapsed unsent claims this daemon succeeds to; returns those it took. The look,
        the takeover and the clearing of the old runs are ONE hop to the takeover's thread: at the
        instant this daemon's loop is busy with its own fires, and each hop back to it waited its turn
        (a look found 171 lapsed claims at +3.2 s, taken at +4.7 s)."""
        own = sorted(self.leases.forfeited)
        try:
            found, mine, taken, failed = await self.off_loop(self._look, own)
        except BaseException:
            self.late.drop_all()  # whatever was noted: nothing was taken that is known here
            raise
        self.next_scan = next_scan_in(found, self.leases.lease)
        if failed is not None and not self.health.trouble(failed, "clearing the runs of claims taken over"):
            log.error("clearing the runs of %d claims taken over failed: %r", len(taken), failed)
        won = {row.fire_id for row in taken}
        for row in mine:
            if row.fire_id not in won:
                self.late.done(row.fire_id)
        for row in taken:
            task = asyncio.ensure_future(self.take(row))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            task.add_done_callback(functools.partial(self._taken_done, row.fire_id))
        return taken

    def _taken_done(self, fire_id: str, _task: asyncio.Task[None]) -> None:
        self.late.done(fire_id)  # however it ended: its first request goes no more

    def _look(
        self, own: list[str]
    ) -> tuple[claim_leases.Scan, list[FireRow], list[FireRow], Exception | None]:
        """On the takeover's thread: the look, the compare-and-sets of those this daemon succeeds to, and
        the clearing of their old runs (a failure of which is returned: each is then cleared on its own).
        Returns the look, the claims tried, those taken, and that failure."""
        found = claim_leases.scan(self.store, own)
        mine = []
        for row in found.rows:
            if row.claimed_by == self.store.owner:
                # our own, given up unsent: take it back if we still own the playbook, or if our give-up
                # did not land (a journal outage), so that no survivor can see it as takeable
                lost_give_up = row.lease_expires is not None and row.lease_expires > row.scheduled_for
                if not (self.membership.owns(row.playbook) or lost_give_up):
                    continue
            elif self.membership.successor(row.playbook, row.claimed_by) != self.store.owner:
                continue
            mine.append(row)
        if not mine:
            return found, [], [], None
        log.info("takeover: %d lapsed unsent claims to take", len(mine))  # bench/scaleout.py: lapse seen
        self.late.note(row.fire_id for row in mine)  # answered fires' follow-ups hold back from now on
        before = self.leases.stamp()
        won = claim_leases.take_over_many(self.store, mine, self.now(), self.leases.lease)
        taken = [row for row in mine if row.fire_id in won]
        self.leases.granted([row.fire_id for row in taken], before)
        for row in taken:
            self.leases.forfeited.discard(row.fire_id)
            log.warning(
                "took over fire %s of %s at %s from %s (its lease lapsed unsent)",
                row.fire_id,
                row.playbook,
                row.scheduled_for.isoformat(),
                "itself" if row.claimed_by == self.store.owner else row.claimed_by,
            )
        failed = None
        if self.clear is not None and taken:
            try:
                self.clear(taken)
            except Exception as exc:
                failed = exc
        return found, mine, taken, failed

    async def off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the takeover's own thread (see ``_pool``)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="takeover")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def run(self) -> None:
        """Membership and takeovers, each on its own period, and renewals on a thread of their own; a
        failure is logged and retried."""
        stop = threading.Event()
        renewer = threading.Thread(target=self._renew_loop, args=(stop,), name="lease-renewal", daemon=True)
        renewer.start()
        try:
            await asyncio.gather(
                self._every(MEMBERS_EVERY, self.refresh_members, "membership read"),
                self.take_over_loop(),
            )
        finally:
            stop.set()

    async def take_over_loop(self) -> None:
        """Takeover looks, each sleeping until the next lease could lapse (:func:`next_scan_in`), not
        every daemon every 0.25 s; a claim this daemon forfeits wakes it at once."""
        while True:
            wait = self.leases.lease
            if self.health.idle():  # down: the heartbeat probes it; a look would only fail
                if not self._wake_when_back:  # claims lapsed in the outage are looked for as it ends
                    self._wake_when_back = True
                    self.health.when_back(self._back)
            else:
                try:
                    await self.take_over_once()
                    wait = self.next_scan
                except Exception as exc:
                    if not self.health.trouble(exc, "takeover scan"):
                        log.exception("takeover scan failed")
                    wait = TAKEOVER_EVERY
            await self.sleep(wait)

    def _back(self) -> None:
        self._wake_when_back = False
        self.wake()

    def wake(self) -> None:
        """Look for claims to take over now (a claim of ours was just forfeited: on the event loop)."""
        if self._wake is not None:
            self._wake.set()

    async def _sleep_or_wake(self, seconds: float) -> None:
        if self._wake is None:
            self._wake = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    def _renew_loop(self, stop: threading.Event) -> None:
        """Renewals on a thread, not the event loop nor its shared worker pool: a live holder whose loop
        is busy preparing fires (first logins, a queue of journal writes in the pool) must keep its
        leases, or its healthy claims lapse and are taken over. A frozen process (SIGSTOP) freezes this
        thread too, so a lease still proves the holder runs."""
        while not stop.wait(RENEW_EVERY):
            try:  # tried even while the journal is down: a lease renewed in a blip keeps its fire
                self.renew_now()
            except Exception as exc:
                if not self.health.trouble(exc, "claim lease renewal"):
                    log.exception("claim lease renewal failed")

    async def _every(self, period: float, work: Callable[[], Awaitable[object]], what: str) -> None:
        while True:
            if not self.health.idle():  # down: the heartbeat probes it; a scan would only fail
                try:
                    await work()
                except Exception as exc:
                    if not self.health.trouble(exc, what):
                        log.exception("%s failed", what)
            await asyncio.sleep(period)


def clear_unsent_run(journal: Any, row: FireRow, now: dt.datetime) -> None:
    """Before re-arming a claim taken over: the old holder's armed run (its lease proves nothing left)
    is taken back out of the journal, so the run is armed afresh under the same run id and client order
    ids; a run it had opened without arming is closed STOPPED (reopened by the new holder)."""
    from runner.journal.errors import JournalError
    from runner.journal.tables import RunStatus
    from runner.model import OrderStatus

    run = journal.get_run(row.run_id)
    if run is None:
        return
    for intent in journal.intents(run_id=row.run_id, statuses=[OrderStatus.PENDING_NEW]):
        try:
            journal.discard_armed(row.run_id, intent.client_order_id)
        except JournalError:
            log.warning("run %s of a taken-over fire: armed intent kept", row.run_id)
    if journal.get_run(row.run_id) is not None:
        why = f"claim taken over from {row.claimed_by} (its lease lapsed before the instant; nothing sent)"
        journal.close_interrupted_run(row.run_id, now, why, RunStatus.STOPPED)
