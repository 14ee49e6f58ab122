"""The precise release of a claimed fire: prepare it before its instant, wait for the instant (one
precise ``clock.sleep_until`` shared by every fire due then), execute, journal the result.

A halt or shutdown between preparing and the instant abandons the prepared run: nothing is sent. A
shutdown before the instant gives the claim back; one while executing leaves the fire UNKNOWN.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import enum
import gc
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from runner.alerts import hooks as alerts
from runner.brokers.burst import Burst, LateSends, Member, joined
from runner.clock import Clock
from runner.daemon.leasing import LeaseBook
from runner.journal.errors import RunBusy
from runner.journal.fires import ClaimBatcher, FireState, FireStore
from runner.journal.health import PROCESS, JournalHealth
from runner.observability import hooks
from runner.playbook.models import Playbook

log = logging.getLogger("runner.scheduler")


@dataclass(frozen=True)
class Fire:
    playbook: Playbook
    path: Path
    version: str
    scheduled_for: dt.datetime  # aware UTC
    run_id: str
    fire_id: str
    # Taken over from a holder whose claim lease lapsed unsent: prepared only once this daemon's own
    # bursts due no later than it were released (Release.yield_to_own), never at their expense.
    taken: bool = False


@dataclass(frozen=True)
class FireResult:
    state: FireState  # SUCCEEDED, FAILED or UNKNOWN
    outcome: str | None = None


Executor = Callable[[Fire], Awaitable[FireResult]]


class PreparedFire(Protocol):
    """A fire readied ahead of its instant (see :meth:`runner.daemon.executor.EngineExecutor.prepare`)."""

    async def run(self) -> FireResult: ...

    async def abandon(self, reason: str, halted: bool) -> None:
        """Not run after all (halted, or shutting down before the instant): nothing was sent."""


class Hold(enum.StrEnum):
    """Why a prepared fire is not released at its instant."""

    SHUTTING_DOWN = "shutting down"
    HALTED = "halted"


@dataclass
class Running:
    fire: Fire
    started_at: dt.datetime
    task: asyncio.Task[Any] | None = None


BUSY_RETRIES = 3  # a taken-over fire's run cleared again this often while its old holder lets go
GC_PAUSE = 0.1  # seconds after an instant the cyclic GC stays off (the released fires send meanwhile)
GC_PAUSE_MAX = 2.0  # ... at most, waiting for the instant's burst to settle
GC_AHEAD = dt.timedelta(milliseconds=5)  # the GC is paused this long before an instant
BURST_KEPT = 60.0  # seconds a released instant's burst is remembered (its members hold references anyway)


class InstantGate:
    """Fires due at the same instant share one precise ``sleep_until`` and are released together,
    instead of 1,000 tasks each spinning through the last milliseconds. The cyclic GC is paused from
    ``GC_AHEAD`` before the instant until the instant's burst settled (:meth:`_resume_gc_after`), so a
    collection does not land between the instant and the requests.

    Every fire waiting for the instant is woken in the same turn of the event loop, in arrival order. An
    armed fire whose request was primed (runner.brokers.primed) writes it in that turn and yields
    (:func:`_send_armed`): every request of the instant leaves before any fire runs its engine path to
    the reply (~0.5 ms each), which otherwise stood between the instant and the last fires' requests."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._gates: dict[dt.datetime, asyncio.Future[None]] = {}
        self._waiting: dict[dt.datetime, collections.deque[asyncio.Future[None]]] = {}  # in arrival order
        self._bursts: dict[dt.datetime, Burst] = {}  # instant -> the fires released at it
        self._released: set[dt.datetime] = set()  # instants whose gate opened (a later fire: a new burst)
        self._opened: set[dt.datetime] = set()  # instants whose gate opened, for BURST_KEPT (opened())
        self.late = LateSends()  # fires taken over, their first request still to go: every burst's

    def join(self, instant: dt.datetime, late_id: str | None = None) -> Member:
        """A fire due at ``instant`` joins its burst (:mod:`runner.brokers.burst`); one due at an instant
        already released starts a burst of its own. ``late_id``: a fire taken over (:class:`LateSends`)."""
        burst = self._bursts.get(instant)
        if burst is None or instant in self._released:
            burst = self._bursts[instant] = Burst(late=self.late)
            self._released.discard(instant)
        return burst.member(late_id)

    def _gate(self, instant: dt.datetime) -> asyncio.Future[None]:
        gate = self._gates.get(instant)
        if gate is None:
            gate = self._gates[instant] = asyncio.ensure_future(self._sleep(instant))
            gate.add_done_callback(lambda done: self._open(instant, done))
        return gate

    async def opened(self, instant: dt.datetime) -> None:
        """Until the gate of ``instant`` has opened (at once if it did within BURST_KEPT). Its waiters are
        woken first: they were queued on the gate before this caller's wake-up."""
        if instant in self._opened:
            return
        await asyncio.shield(self._gate(instant))

    async def wait(self, instant: dt.datetime) -> None:
        self._gate(instant)  # the shared sleep, started by the first fire due then
        mine = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(instant, collections.deque()).append(mine)
        await mine  # cancelled (shutdown): the release skips it

    def _open(self, instant: dt.datetime, gate: asyncio.Future[None]) -> None:
        self._gates.pop(instant, None)
        waiting = self._waiting.pop(instant, collections.deque())
        failed = None if gate.cancelled() else gate.exception()
        if gate.cancelled() or failed is not None:
            for mine in waiting:
                if not mine.done():
                    mine.cancel() if failed is None else mine.set_exception(failed)
        else:
            if instant not in self._opened:
                self._opened.add(instant)
                asyncio.get_running_loop().call_later(BURST_KEPT, self._opened.discard, instant)
            for mine in waiting:
                if not mine.done():
                    mine.set_result(None)
            burst = self._bursts.get(instant)
            if burst is not None:
                burst.released(self.clock.now())
        if instant in self._bursts:
            self._released.add(instant)
            asyncio.get_running_loop().call_later(BURST_KEPT, self._forget, instant)

    def _forget(self, instant: dt.datetime) -> None:
        if instant in self._released:
            self._released.discard(instant)
            self._bursts.pop(instant, None)

    async def _sleep(self, instant: dt.datetime) -> None:
        await self.clock.sleep_until(instant - GC_AHEAD)
        paused = _pause_gc()
        try:
            await self.clock.sleep_until(instant)
        finally:
            if paused:
                self._resume_gc_after(instant)

    def _resume_gc_after(self, instant: dt.datetime) -> None:
        """The GC comes back once the instant's burst settled (every first request answered: a burst over
        HTTP outlasts ``GC_PAUSE``, and a collection mid-burst held the last requests back ~0.4 s,
        bench/lateness.py), never later than ``GC_PAUSE_MAX``; without a burst, after ``GC_PAUSE``."""
        loop = asyncio.get_running_loop()
        once: list[bool] = []

        def resume() -> None:
            if not once:
                once.append(True)
                _resume_gc()

        loop.call_later(GC_PAUSE_MAX, resume)
        burst = self._bursts.get(instant)
        if burst is None:
            loop.call_later(GC_PAUSE, resume)
        else:
            burst.on_settled(resume)


_gc_pauses = 0  # gates holding the GC off now (instants may overlap)


def _pause_gc() -> bool:
    """Turn the cyclic GC off unless someone else already did; True if this call holds a pause."""
    global _gc_pauses
    if _gc_pauses == 0 and not gc.isenabled():
        return False
    _gc_pauses += 1
    gc.disable()
    return True


def _resume_gc() -> None:
    global _gc_pauses
    _gc_pauses -= 1
    if _gc_pauses == 0:
        gc.enable()


class Release:
    def __init__(
        self,
        executor: Executor,
        batcher: ClaimBatcher,
        store: FireStore,
        clock: Clock,
        hold: Callable[[], Hold | None],
        on_change: Callable[[], None],
    ) -> None:
        self.executor = executor
        self.batcher = batcher
        self.store = store
        self.clock = clock
        self.hold = hold  # checked at the instant: a reason not to release
        self.on_change = on_change
        self.gate = InstantGate(clock)
        self.health: JournalHealth = PROCESS  # the daemon hands it its own
        self.running: dict[str, Running] = {}  # fire_id -> running fire
        self.pending: dict[str, asyncio.Task[Any]] = {}  # fire_id -> claimed, not started yet
        self.imminent: dict[dt.datetime, int] = {}  # instant -> fires claimed for it, not finished
        self.leases: LeaseBook | None = None  # claim leases (scale-out on PostgreSQL), else None
        # A claim taken over whose run the old holder (alive, its lease lost) opened after we cleared it:
        # clears it again and says whether to retry preparing (None: no takeovers here).
        self.on_busy: Callable[[Fire], Awaitable[bool]] | None = None

    async def release(self, fire: Fire) -> None:
        """Prepare, wait for the instant, execute. ``fire`` is claimed (CLAIMED) by this daemon."""
        task = asyncio.current_task()
        if task is not None:
            self.pending[fire.fire_id] = task
        instant = fire.scheduled_for
        if fire.taken:
            await self.yield_to_own(fire)
        self.imminent[instant] = self.imminent.get(instant, 0) + 1
        forfeited = False
        member = self.gate.join(instant, fire.fire_id if fire.taken else None)
        try:
            forfeited = await self._release(fire, member)
        finally:
            member.gone()  # whatever became of it, the rest of its burst waits no longer
            # A forfeit dropped the lease already; a later done() could drop the fresh one of the same
            # claim taken back meanwhile (its send would then go unchecked).
            if self.leases is not None and not forfeited:
                self.leases.done(fire.fire_id)
            if (left := self.imminent.pop(instant, 1) - 1) > 0:
                self.imminent[instant] = left

    async def yield_to_own(self, fire: Fire) -> None:
        """A fire taken over waits until this daemon's own bursts due no later than it were released:
        preparing it is loop time (a broker opened, its journal rows written) that, spent just before an
        instant, held that instant's own burst back past LATE_GRACE, and every own armed run was then
        disarmed as released late (issue 16). Bounded by its own instant (a gate opens at its instant
        whatever is still preparing). Its claim lease is renewed meanwhile and checked at the send as
        ever. Cancelled (shutdown): the claim is given back, nothing was prepared."""
        try:
            for due in sorted(i for i, n in self.imminent.items() if n > 0 and i <= fire.scheduled_for):
                await self.gate.opened(due)
        except asyncio.CancelledError:
            self.pending.pop(fire.fire_id, None)
            if self.leases is not None:
                self.leases.done(fire.fire_id)
            await asyncio.to_thread(self.store.release, fire.fire_id)
            raise

    async def _release(self, fire: Fire, member: Member) -> bool:
        """True if the claim was forfeited (its lease lapsed before sending)."""
        prepared: PreparedFire | None = None
        try:
            prepared = await self._prepare(fire)
            await self.gate.wait(fire.scheduled_for)
        except asyncio.CancelledError:  # shutdown before the instant: it never ran, give the slot back
            self.pending.pop(fire.fire_id, None)
            if prepared is not None:
                await _abandon(fire, prepared, "shutting down before the scheduled instant", halted=False)
            await asyncio.to_thread(self.store.release, fire.fire_id)
            raise
        except Exception as exc:  # preparing failed (e.g. the broker refused to connect): a failed fire
            self.pending.pop(fire.fire_id, None)
            if self.leases is not None and not self.leases.sendable(fire.fire_id):
                # our lease lapsed meanwhile: the fire may be a survivor's now (its run too, hence a
                # RunBusy here); writing FAILED would overwrite its state
                await self._forfeit(fire, None)
                return True
            log.exception("fire %s (%s): preparing failed", fire.playbook.name, fire.run_id)
            outcome = f"preparing failed: {type(exc).__name__}: {exc}"
            alerts.fire_failed(fire.playbook, fire.run_id, outcome)
            await self.batcher.set_state(fire.fire_id, FireState.FAILED, outcome, self.clock.now())
            return False
        self.pending.pop(fire.fire_id, None)
        if (why := self.hold()) is not None:
            if prepared is not None:
                await _abandon(fire, prepared, f"{why} before the scheduled instant", why is Hold.HALTED)
            await self.batcher.set_state(fire.fire_id, FireState.SKIPPED, why.value, self.clock.now())
            return False
        if self.leases is not None:
            if not self.leases.sendable(fire.fire_id):
                await self._forfeit(fire, prepared)
                return True
            self.leases.done(fire.fire_id)  # sending now: no longer renewed
        if _send_armed(prepared, member):
            # every fire of the instant writes its request before any runs its path to the reply, and
            # fires taken over (LateSends) get theirs out before that path too: it is loop time their
            # preparation would queue behind
            await asyncio.sleep(0)
            await self.gate.late.wait()
        await self._execute(fire, prepared, member)
        return False

    async def _forfeit(self, fire: Fire, prepared: PreparedFire | None) -> None:
        """The claim's lease lapsed before the instant (frozen, starved, or taken over): send nothing and
        touch nothing of the fire or its run (a survivor may own both now); say the claim is given up."""
        from runner.journal.claim_leases import give_up

        # Noted locally first: this daemon knows the claim unsent and takes it back itself if no write
        # below lands (a journal outage lapses leases; an unnoted claim would stay CLAIMED for good).
        if self.leases is not None:
            self.leases.forfeit(fire.fire_id)
        log.error(
            "fire %s (%s): claim lease lapsed before the instant; not sent (a survivor takes it over)",
            fire.playbook.name,
            fire.run_id,
        )
        forfeit = getattr(prepared, "forfeit", None)
        try:
            if forfeit is not None:
                forfeit()  # gives the account lease back: a journal write
        except Exception as exc:
            if not self.health.trouble(exc, f"dropping the prepared run of fire {fire.fire_id}"):
                log.exception("fire %s: dropping the prepared run failed", fire.fire_id)
        try:
            await asyncio.to_thread(give_up, self.store, fire.fire_id, fire.scheduled_for)
        except Exception as exc:
            if not self.health.trouble(exc, f"giving up the lapsed claim of fire {fire.fire_id}"):
                log.exception("fire %s: giving up the lapsed claim failed", fire.fire_id)

    async def _prepare(self, fire: Fire) -> PreparedFire | None:
        """Let an executor that can (``prepare(fire)``) do its set-up work before the instant."""
        prepare = getattr(self.executor, "prepare", None)
        if prepare is None:
            return None
        for attempt in range(BUSY_RETRIES + 1):
            try:
                prepared: PreparedFire = await prepare(fire)
                return prepared
            except RunBusy:
                if attempt == BUSY_RETRIES or self.on_busy is None or not await self.on_busy(fire):
                    raise
        raise AssertionError("unreachable")

    async def _execute(
        self, fire: Fire, prepared: PreparedFire | None, member: Member | None = None
    ) -> None:
        running = Running(fire, self.clock.now(), asyncio.current_task())
        hooks.fire_started(fire.playbook.name, (running.started_at - fire.scheduled_for).total_seconds())
        self.running[fire.fire_id] = running
        self.on_change()
        # Mark RUNNING off the critical path: the executor's first broker call must not wait for it.
        marked = self.batcher.set_state_soon(fire.fire_id, FireState.RUNNING, None, running.started_at)
        result: FireResult
        try:
            with joined(member) if member is not None else contextlib.nullcontext():
                result = await (prepared.run() if prepared is not None else self.executor(fire))
        except asyncio.CancelledError:
            result = FireResult(FireState.UNKNOWN, "interrupted by shutdown; resolve via the run journal")
            await self._finish(fire, result, marked)
            raise
        except Exception as exc:
            if self.health.trouble(exc, f"running fire {fire.playbook.name} ({fire.run_id})"):
                # its intent may be committed and sent, its outcome not recorded: never reported FAILED
                why = f"journal unreachable during the run ({exc}); resolve via the run journal"
                result = FireResult(FireState.UNKNOWN, why)
            else:
                log.exception("fire %s (%s) raised", fire.playbook.name, fire.run_id)
                result = FireResult(FireState.FAILED, f"{type(exc).__name__}: {exc}")
            alerts.fire_failed(fire.playbook, fire.run_id, result.outcome or "")
        await self._finish(fire, result, marked)

    async def _finish(self, fire: Fire, result: FireResult, marked: asyncio.Future[bool]) -> None:
        try:
            await asyncio.shield(marked)
        except Exception as exc:
            if not self.health.trouble(exc, f"marking fire {fire.fire_id} running"):
                log.exception("marking fire %s running failed", fire.fire_id)
        self.running.pop(fire.fire_id, None)
        self.on_change()
        done = self.batcher.set_state(fire.fire_id, result.state, result.outcome, self.clock.now())
        try:
            await asyncio.shield(done)
        except Exception as exc:
            if not self.health.trouble(exc, f"recording fire {fire.fire_id} {result.state.value}"):
                raise
            # recorded once the journal is back: the fire is not left RUNNING
            self.health.when_back(lambda: self._later(self._record_later(fire, result)))
        lvl = logging.INFO if result.state is FireState.SUCCEEDED else logging.ERROR
        log.log(
            lvl,
            "fire %s run %s: %s %s",
            fire.playbook.name,
            fire.run_id,
            result.state.value,
            result.outcome or "",
        )


    def _later(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        _PENDING.add(task)
        task.add_done_callback(_PENDING.discard)

    async def _record_later(self, fire: Fire, result: FireResult) -> None:
        try:
            await self.batcher.set_state(fire.fire_id, result.state, result.outcome, self.clock.now())
        except Exception:
            log.exception("recording fire %s %s after the outage failed", fire.fire_id, result.state.value)


_PENDING: set[asyncio.Future[None]] = set()  # recordings put off by an outage, held until done


def _send_armed(prepared: PreparedFire | None, member: Member) -> bool:
    """An armed fire's primed request, written at once (its checks done: hold, lease)."""
    send = getattr(prepared, "send_armed", None)
    return send is not None and bool(send(member.burst.released_at))


async def _abandon(fire: Fire, prepared: PreparedFire, reason: str, halted: bool) -> None:
    """Abandon a prepared run; a journal failure is logged, never lets the fire go without its state."""
    try:
        await prepared.abandon(reason, halted=halted)
    except Exception:
        log.exception("fire %s (%s): abandoning the prepared run failed", fire.playbook.name, fire.run_id)
